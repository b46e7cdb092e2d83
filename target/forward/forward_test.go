package forward

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hatarget/hatarget/alua"
	"github.com/hatarget/hatarget/target/backend/backendtest"
	"github.com/hatarget/hatarget/target/scsi"
)

// A forwarded command must get exactly the answer the owner gives to the
// same command from the same nexus: same status, sense, data and transfer.
func TestForwardedAnswersEqualTheOwners(t *testing.T) {
	r := newRig(t)
	remote, twin := nexus(1), nexus(1)
	// The twin is the same nexus seen locally; consume its POWER ON once
	// through the forwarder, which shares the owner's per-nexus state.
	res, _ := r.forward(remote, cdbTUR(), nil, 0)
	wantSense(t, res, scsi.KeyUnitAttention, 0x29, 0x00)
	for _, tc := range []struct {
		name string
		cdb  []byte
		edtl int
	}{
		{"inquiry", []byte{0x12, 0, 0, 0, 96, 0}, 96},
		{"vpd 83h", []byte{0x12, 1, 0x83, 0, 255, 0}, 255},
		{"vpd 80h", []byte{0x12, 1, 0x80, 0, 255, 0}, 255},
		{"report target port groups", []byte{0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, 256},
		{"read capacity 10", []byte{0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 8},
		{"read capacity 16", []byte{0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}, 32},
		{"read beyond the end", cdbRW10(opRead10, 2047, 2), 1024},
		{"invalid opcode", []byte{0xff, 0, 0, 0, 0, 0}, 0},
		{"short allocation length", []byte{0x12, 0, 0, 0, 5, 0}, 512},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fres, fdata := r.forward(remote, tc.cdb, nil, tc.edtl)
			lres, ldata := r.local(twin, tc.cdb, nil, tc.edtl)
			if fres.Status != lres.Status || !bytes.Equal(fres.Sense, lres.Sense) ||
				!bytes.Equal(fdata, ldata) || fres.Transfer != lres.Transfer {
				t.Fatalf("forwarded: status %#x sense %x transfer %d data %x\nlocal:     status %#x sense %x transfer %d data %x",
					fres.Status, fres.Sense, fres.Transfer, fdata, lres.Status, lres.Sense, lres.Transfer, ldata)
			}
		})
	}
}

// The owner answers VPD 83h for the port the command came in on, the
// other node's, not for its own.
func TestOwnerReportsTheRemotePort(t *testing.T) {
	r := newRig(t)
	remote := scsi.NewNexus("iqn.1994-05.com.example:host1", [6]byte{1}, "iqn.2024-01.org.hatarget:t1", 0x22, 0x0305, 0x0004)
	res, page := r.forward(remote, []byte{0x12, 1, 0x83, 0, 255, 0}, nil, 255)
	if res.Status != scsi.StatusGood {
		t.Fatalf("status %#x", res.Status)
	}
	for _, want := range [][]byte{
		{0x51, 0x94, 0, 4, 0, 0, 0x03, 0x05}, // relative target port 0305h
		{0x51, 0x95, 0, 4, 0, 0, 0x00, 0x04}, // target port group 4
		[]byte("iqn.2024-01.org.hatarget:t1,t,0x0022"),
	} {
		if !bytes.Contains(page, want) {
			t.Errorf("VPD 83h lacks %x:\n%x", want, page)
		}
	}
}

// The owner gates a forwarded command by the ALUA state of the port group
// it arrived through, which is the non-owner's: the owner's LU is the one
// place that decides, for every path.
func TestOwnerGatesByTheRemotePortGroup(t *testing.T) {
	groups := []alua.Group{
		{ID: 1, State: alua.ActiveOptimized, Ports: []uint16{1}, Preferred: true},
		{ID: 2, State: alua.ActiveNonOptimized, Ports: []uint16{9}},
		{ID: 3, State: alua.Standby, Ports: []uint16{12}},
	}
	r := newRig(t, func(r *rig, _ *ServerConfig, _ *ClientConfig) {
		lu, err := scsi.NewLU(scsi.LUConfig{Device: r.dev, Serial: "fwd-serial", PortGroups: groups})
		if err != nil {
			t.Fatal(err)
		}
		r.lu = lu
	})
	nonOptimized := scsi.NewNexus("iqn.1994-05.com.example:host1", [6]byte{1}, "iqn.2024-01.org.hatarget:t1", 2, 9, 2)
	standby := scsi.NewNexus("iqn.1994-05.com.example:host1", [6]byte{1}, "iqn.2024-01.org.hatarget:t1", 3, 12, 3)
	for _, n := range []*scsi.Nexus{nonOptimized, standby} {
		r.forward(n, cdbTUR(), nil, 0) // POWER ON, RESET
	}
	if res, _ := r.forward(nonOptimized, cdbRW10(opRead10, 0, 1), nil, 512); res.Status != scsi.StatusGood {
		t.Fatalf("read through an active/non-optimized group: status %#x sense %x", res.Status, res.Sense)
	}
	res, _ := r.forward(standby, cdbRW10(opRead10, 0, 1), nil, 512)
	wantSense(t, res, scsi.KeyNotReady, 0x04, 0x0b)

	rtpg := []byte{0xa3, 0x2a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0} // extended header
	fres, fdata := r.forward(standby, rtpg, nil, 256)
	lres, ldata := r.local(standby, rtpg, nil, 256)
	if fres.Status != scsi.StatusGood || lres.Status != scsi.StatusGood || !bytes.Equal(fdata, ldata) {
		t.Fatalf("REPORT TARGET PORT GROUPS: forwarded %#x %x, local %#x %x", fres.Status, fdata, lres.Status, ldata)
	}
}

func TestWriteThroughNonOwnerReadsBackEverywhere(t *testing.T) {
	r := newRig(t)
	// The non-owner node's own LU, on storage of its own, forwards
	// everything: only the owner's device may see the write.
	mine := backendtest.NewMem(2048 * 512)
	nonOwner := newLU(t, mine)
	nonOwner.SetForwarder(r.fwd)
	n := nexus(2)
	cmd := &scsi.Command{Nexus: n, CDB: cdbTUR()}
	res := &scsi.Result{}
	nonOwner.Execute(cmd, res) // POWER ON, RESET
	data := bytes.Repeat([]byte("forwarded block "), 64)
	cmd = &scsi.Command{Nexus: n, CDB: cdbRW10(opWrite10, 100, 2), DataOut: data}
	nonOwner.Execute(cmd, res)
	if res.Status != scsi.StatusGood || res.Transfer != 1024 {
		t.Fatalf("write: status %#x transfer %d", res.Status, res.Transfer)
	}
	cmd = &scsi.Command{Nexus: n, CDB: cdbRW10(opRead10, 100, 2), DataIn: make([]byte, 1024)}
	nonOwner.Execute(cmd, res)
	if res.Status != scsi.StatusGood || !bytes.Equal(cmd.DataIn[:res.DataInLen], data) {
		t.Fatalf("read through the non-owner: status %#x", res.Status)
	}
	if _, got := r.local(n, cdbRW10(opRead10, 100, 2), nil, 1024); !bytes.Equal(got, data) {
		t.Fatal("the owner does not read back what was written through the non-owner")
	}
	if mine.Counts().Writes != 0 || r.dev.Counts().Writes != 1 {
		t.Fatalf("writes: non-owner device %d, owner device %d", mine.Counts().Writes, r.dev.Counts().Writes)
	}
}

// Unit attentions are the owner's: a new remote nexus sees POWER ON, and
// one the owner raises (a LUN reset) reaches the remote nexus too.
func TestUnitAttentionsOfRemoteNexuses(t *testing.T) {
	r := newRig(t)
	n := nexus(3)
	res, _ := r.forward(n, cdbTUR(), nil, 0)
	wantSense(t, res, scsi.KeyUnitAttention, 0x29, 0x00)
	if res, _ = r.forward(n, cdbTUR(), nil, 0); res.Status != scsi.StatusGood {
		t.Fatalf("second TUR: status %#x", res.Status)
	}
	r.lu.ResetLU(nil)
	res, _ = r.forward(n, cdbTUR(), nil, 0)
	wantSense(t, res, scsi.KeyUnitAttention, 0x29, 0x03)
	// Another initiator port is another nexus, with its own POWER ON.
	res, _ = r.forward(nexus(4), cdbTUR(), nil, 0)
	wantSense(t, res, scsi.KeyUnitAttention, 0x29, 0x00)
}

func TestRefusalsBecomeTransitioning(t *testing.T) {
	r := newRig(t)
	n := nexus(5)
	r.epoch.Store(8) // the owner moved on to a new epoch
	res, _ := r.forward(n, cdbTUR(), nil, 0)
	wantTransitioning(t, res)

	r.epoch.Store(7)
	r.owns.Store(false)
	res, _ = r.forward(n, cdbTUR(), nil, 0)
	wantTransitioning(t, res)

	r.owns.Store(true)
	other := r.cli.ForLU("not-yet-here", func() uint64 { return 7 })
	res = &scsi.Result{}
	other.Forward(&scsi.Command{Nexus: n, CDB: cdbTUR()}, res)
	wantTransitioning(t, res)

	// None of these touched the LU: the nexus still has its POWER ON.
	res, _ = r.forward(n, cdbTUR(), nil, 0)
	wantSense(t, res, scsi.KeyUnitAttention, 0x29, 0x00)
	if len(r.dialled()) != 1 {
		t.Fatalf("%d connections, refusals must not cost the connection", len(r.dialled()))
	}
}

func TestConnectionLossAnswersRetryableAndReconnects(t *testing.T) {
	r := newRig(t)
	n := nexus(6)
	r.forward(n, cdbTUR(), nil, 0)
	entered, release := r.dev.HoldIO()
	done := make(chan *scsi.Result)
	go func() {
		res, _ := r.forward(n, cdbRW10(opRead10, 0, 1), nil, 512)
		done <- res
	}()
	<-entered // the owner is executing it
	r.dialled()[0].Close()
	wantTransitioning(t, <-done)
	release()

	res, _ := r.forward(n, cdbRW10(opRead10, 0, 1), nil, 512)
	if res.Status != scsi.StatusGood {
		t.Fatalf("after reconnecting: status %#x", res.Status)
	}
	if got := len(r.dialled()); got != 2 {
		t.Fatalf("%d connections dialled, want 2", got)
	}
}

func TestUnreachableOwnerFailsFast(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there any more
	var d net.Dialer
	cli, err := NewClient(ClientConfig{Addr: addr, Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	res := &scsi.Result{}
	cli.ForLU("disk", func() uint64 { return 1 }).Forward(&scsi.Command{CDB: cdbTUR()}, res)
	wantTransitioning(t, res)
}

// A stopped owner keeps its TCP connection up but answers nothing, not even
// pings: the client must give up on it after PeerTimeout.
func TestSilentOwnerIsDeclaredDead(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		var hello [HelloLen]byte
		io.ReadFull(nc, hello[:])
		nc.Write(AppendHello(nil, Version))
		io.Copy(io.Discard, nc) // then silence
	}()
	var d net.Dialer
	cli, err := NewClient(ClientConfig{Addr: ln.Addr().String(), Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	}, PeerTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	start := time.Now()
	res := &scsi.Result{}
	cli.ForLU("disk", func() uint64 { return 1 }).Forward(&scsi.Command{CDB: cdbTUR()}, res)
	wantTransitioning(t, res)
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("took %s to give up", took)
	}
}

// A slow command is not silence: the owner answers pings meanwhile.
func TestSlowCommandOutlivesPeerTimeout(t *testing.T) {
	r := newRig(t, func(_ *rig, _ *ServerConfig, c *ClientConfig) { c.PeerTimeout = 200 * time.Millisecond })
	n := nexus(7)
	r.forward(n, cdbTUR(), nil, 0)
	entered, release := r.dev.HoldIO()
	done := make(chan *scsi.Result)
	go func() {
		res, _ := r.forward(n, cdbRW10(opRead10, 0, 1), nil, 512)
		done <- res
	}()
	<-entered
	time.Sleep(600 * time.Millisecond) // three peer timeouts
	release()
	if res := <-done; res.Status != scsi.StatusGood {
		t.Fatalf("slow command: status %#x", res.Status)
	}
}

func TestAbortQueuedAndRunningCommands(t *testing.T) {
	r := newRig(t, func(_ *rig, s *ServerConfig, _ *ClientConfig) { s.Workers = 1 })
	n := nexus(8)
	r.forward(n, cdbTUR(), nil, 0)
	entered, release := r.dev.HoldIO()
	results := make(chan *scsi.Result, 2)
	write := func(tag uint32, lba uint32) {
		cmd := &scsi.Command{Nexus: n, TaskTag: tag, CDB: cdbRW10(opWrite10, lba, 1), DataOut: make([]byte, 512)}
		res := &scsi.Result{}
		r.fwd.Forward(cmd, res)
		results <- res
	}
	go write(1, 10)
	<-entered // tag 1 runs on the only worker
	go write(2, 11)
	eventually(t, "tag 2 queued at the owner", func() bool {
		return connHolds(r.srv, func(sc *serverConn) bool { return len(sc.tasks) == 2 })
	})
	if got := r.fwd.Abort(n, 2) + r.fwd.Abort(n, 1); got != 2 {
		t.Fatalf("aborts sent for %d commands, want 2", got)
	}
	if got := r.fwd.Abort(nexus(9), 1); got != 0 {
		t.Fatalf("another nexus's task tag matched %d commands", got)
	}
	// Abort frames travel behind the requests; once the owner has marked
	// both, the running write may finish.
	eventually(t, "both commands marked aborted", func() bool {
		return connHolds(r.srv, func(sc *serverConn) bool {
			marked := 0
			for _, task := range sc.tasks {
				if task.aborted.Load() {
					marked++
				}
			}
			return marked == 2
		})
	})
	release()
	for range 2 {
		if res := <-results; res.Status != scsi.StatusTaskAborted || res.Sense != nil {
			t.Fatalf("aborted command: status %#x sense %x", res.Status, res.Sense)
		}
	}
	// The running write ran to completion; the queued one never ran.
	if w := r.dev.Counts().Writes; w != 1 {
		t.Fatalf("%d writes reached the device, want 1", w)
	}
}

// Close lets running commands finish and refuses the queued ones with the
// retryable sense; afterwards nothing executes.
func TestServerCloseDrains(t *testing.T) {
	r := newRig(t, func(_ *rig, s *ServerConfig, _ *ClientConfig) { s.Workers = 1 })
	n := nexus(10)
	r.forward(n, cdbTUR(), nil, 0)
	entered, release := r.dev.HoldIO()
	results := make(chan *scsi.Result, 2)
	go func() {
		res, _ := r.forward(n, cdbRW10(opWrite10, 1, 1), make([]byte, 512), 0)
		results <- res
	}()
	<-entered
	go func() {
		res, _ := r.forward(n, cdbRW10(opWrite10, 2, 1), make([]byte, 512), 0)
		results <- res
	}()
	eventually(t, "second write queued", func() bool {
		return connHolds(r.srv, func(sc *serverConn) bool { return len(sc.tasks) == 2 })
	})
	closed := make(chan struct{})
	go func() {
		r.srv.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("Close returned while a command was executing")
	case <-time.After(50 * time.Millisecond):
	}
	release()
	<-closed
	var good, refused int
	for range 2 {
		switch res := <-results; res.Status {
		case scsi.StatusGood:
			good++
		case scsi.StatusCheckCondition:
			wantTransitioning(t, res)
			refused++
		}
	}
	if good != 1 || refused != 1 || r.dev.Counts().Writes != 1 {
		t.Fatalf("%d good, %d refused, %d writes; want 1 each", good, refused, r.dev.Counts().Writes)
	}
	res, _ := r.forward(n, cdbTUR(), nil, 0)
	wantTransitioning(t, res)
}

func TestManyConcurrentCommands(t *testing.T) {
	r := newRig(t, func(_ *rig, _ *ServerConfig, c *ClientConfig) { c.MaxInFlight = 8 })
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := nexus(byte(100 + g))
			r.forward(n, cdbTUR(), nil, 0)
			for i := range 20 {
				lba := uint32(g*40 + i)
				block := bytes.Repeat([]byte{byte(g), byte(i)}, 256)
				if res, _ := r.forward(n, cdbRW10(opWrite10, lba, 1), block, 0); res.Status != scsi.StatusGood {
					t.Errorf("write %d: status %#x", lba, res.Status)
					return
				}
				res, got := r.forward(n, cdbRW10(opRead10, lba, 1), nil, 512)
				if res.Status != scsi.StatusGood || !bytes.Equal(got, block) {
					t.Errorf("read %d: status %#x, data differs", lba, res.Status)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestHelloVersionNegotiation(t *testing.T) {
	r := newRig(t)
	exchange := func(version uint16) (uint16, error) {
		nc, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.Write(AppendHello(nil, version))
		var b [HelloLen]byte
		if _, err := io.ReadFull(nc, b[:]); err != nil {
			return 0, err
		}
		return DecodeHello(b[:])
	}
	if v, err := exchange(0); err != nil || v != 0 {
		t.Fatalf("version 0: answered %d, %v; want a refusal (0)", v, err)
	}
	if v, err := exchange(Version + 5); err != nil || v != Version {
		t.Fatalf("a newer client: answered %d, %v; want %d", v, err, Version)
	}
}

// A peer that breaks the protocol loses its own connection, nobody else's.
func TestProtocolErrorEndsOnlyThatConnection(t *testing.T) {
	r := newRig(t)
	n := nexus(11)
	r.forward(n, cdbTUR(), nil, 0)
	nc, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.Write(AppendHello(nil, Version))
	nc.Write([]byte("this is not a frame header"))
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, nc); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Fatalf("bad peer's connection: %v, want it closed", err)
	}
	if res, _ := r.forward(n, cdbTUR(), nil, 0); res.Status != scsi.StatusGood {
		t.Fatalf("good peer: status %#x", res.Status)
	}
}

// connHolds reports whether fn holds for a connection of s, asked with
// the connection's lock taken.
func connHolds(s *Server, fn func(sc *serverConn) bool) bool {
	held := false
	s.conns.Each(func(sc *serverConn) {
		sc.mu.Lock()
		held = held || fn(sc)
		sc.mu.Unlock()
	})
	return held
}
