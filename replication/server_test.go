package replication

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/backend/backendtest"
)

const devSize = 8 << 20

// replicaWith returns a replica holding a device "lun" owned by owner in
// epoch, and that device.
func replicaWith(t *testing.T, name, secret, owner string, epoch uint64) (*replica, *backendtest.Thin) {
	t.Helper()
	r := newReplica(t, name, secret)
	d := backendtest.NewThin(devSize)
	r.srv.SetDevices(map[string]ReplicaDevice{"lun": {Device: d, Owner: owner, Epoch: epoch}})
	return r, d
}

func TestAuthentication(t *testing.T) {
	for _, tc := range []struct {
		name           string
		server, client string
		ok             bool
	}{
		{"same secret", "s3cret", "s3cret", true},
		{"no secret on either side", "", "", true},
		{"wrong secret", "s3cret", "guess", false},
		{"client without secret", "s3cret", "", false},
		{"server without secret", "", "s3cret", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := replicaWith(t, "b", tc.server, "a", 1)
			p, err := Dial(context.Background(), PeerConfig{Node: "b", Addr: "pipe", Self: "a", Secret: tc.client,
				Dial: r.dial, Timeout: time.Second})
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				defer p.Close()
				if err := p.Write(context.Background(), "lun", 1, 1, 0, pattern(512, 1), false); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrAuthentication) {
				t.Fatalf("Dial: %v, want an authentication error", err)
			}
			t.Log(err)
		})
	}
}

// TestImpostorReplica checks that the owner refuses a replica that does
// not know the secret even when it claims to accept the owner.
func TestImpostorReplica(t *testing.T) {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, s := net.Pipe()
		go func() {
			defer s.Close()
			var hb [ClientHelloLen + MaxNameLen]byte
			if _, err := io.ReadFull(s, hb[:ClientHelloLen]); err != nil {
				return
			}
			io.ReadFull(s, hb[ClientHelloLen:ClientHelloLen+int(hb[ClientHelloLen-1])])
			s.Write(AppendServerHello(nil, ServerHello{Version: Version, Flags: FlagAuth}))
			var proof [ProofLen]byte
			io.ReadFull(s, proof[:])
			s.Write(AppendVerdict(nil, ServerVerdict{Status: VerdictOK}))
			io.Copy(io.Discard, s)
		}()
		return c, nil
	}
	_, err := Dial(context.Background(), PeerConfig{Node: "b", Addr: "pipe", Self: "a", Secret: "s", Dial: dial})
	if !errors.Is(err, ErrAuthentication) {
		t.Fatalf("Dial: %v, want an authentication error", err)
	}
}

func TestOldVersionRefused(t *testing.T) {
	r, _ := replicaWith(t, "b", "", "a", 1)
	c, _ := r.dial(context.Background(), "", "")
	defer c.Close()
	b, _ := AppendClientHello(nil, ClientHello{Version: 0, Name: []byte("a")})
	go c.Write(b)
	var sb [ServerHelloLen]byte
	if _, err := io.ReadFull(c, sb[:]); err != nil {
		t.Fatal(err)
	}
	if sh, err := DecodeServerHello(sb[:]); err != nil || sh.Version != 0 {
		t.Fatalf("server hello %+v, %v: want version 0", sh, err)
	}
}

func TestNotOwnerRefused(t *testing.T) {
	r, d := replicaWith(t, "b", "", "a", 1)
	p := r.peer(t, "mallory", "", time.Second)
	ctx := context.Background()
	for name, err := range map[string]error{
		"write":    p.Write(ctx, "lun", 1, 1, 0, pattern(512, 1), false),
		"unmap":    p.Unmap(ctx, "lun", 1, 1, 0, 512),
		"flush":    p.Flush(ctx, "lun", 1),
		"seal":     p.Seal(ctx, "lun", 5),
		"seal now": p.Seal(ctx, "lun", 1),
		"read":     p.Read(ctx, "lun", 1, 0, make([]byte, 512)),
		"checksum": second(nil, errOf(p.Checksums(ctx, "lun", 1, 0, 4096, 4096))),
		"activity": second(nil, errOf(p.Activity(ctx, "lun", 1))),
	} {
		if !errors.Is(err, ErrNotOwner) {
			t.Errorf("%s: %v, want ErrNotOwner", name, err)
		}
	}
	if n := d.Counts(); n.Writes+n.Unmaps+n.Flushes != 0 {
		t.Fatalf("the device saw %d writes, %d unmaps, %d flushes", n.Writes, n.Unmaps, n.Flushes)
	}
	if e, _ := r.srv.Epoch("lun"); e != 1 {
		t.Fatalf("a non-owner's seal moved the epoch to %d", e)
	}
}

func errOf[T any](_ T, err error) error { return err }

func TestUnknownAndRemovedDevice(t *testing.T) {
	r, d := replicaWith(t, "b", "", "a", 1)
	p := r.peer(t, "a", "", time.Second)
	ctx := context.Background()
	if err := p.Write(ctx, "other", 1, 1, 0, pattern(512, 1), false); !errors.Is(err, ErrUnknownDevice) {
		t.Fatalf("write to an unknown device: %v", err)
	}
	if err := p.Write(ctx, "lun", 1, 1, 0, pattern(512, 1), false); err != nil {
		t.Fatal(err)
	}
	r.srv.SetDevices(nil)
	if err := p.Write(ctx, "lun", 1, 2, 0, pattern(512, 2), false); !errors.Is(err, ErrUnknownDevice) {
		t.Fatalf("write to a removed device: %v", err)
	}
	// Added again: it serves again, with the epoch it is given.
	r.srv.SetDevices(map[string]ReplicaDevice{"lun": {Device: d, Owner: "a", Epoch: 2}})
	if err := p.Write(ctx, "lun", 1, 3, 0, pattern(512, 3), false); !isStale(err, 2) {
		t.Fatalf("write in epoch 1 after the device came back in epoch 2: %v", err)
	}
	if err := p.Write(ctx, "lun", 2, 3, 0, pattern(512, 3), false); err != nil {
		t.Fatal(err)
	}
}

func isStale(err error, epoch uint64) bool {
	var se *StaleEpochError
	return errors.As(err, &se) && se.Epoch == epoch
}

func TestBadRequests(t *testing.T) {
	r, d := replicaWith(t, "b", "", "a", 1)
	p := r.peer(t, "a", "", time.Second)
	ctx := context.Background()
	if err := p.Write(ctx, "lun", 1, 1, devSize-256, pattern(512, 1), false); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("write beyond the end: %v", err)
	}
	if err := p.Read(ctx, "lun", 1, devSize, make([]byte, 1)); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("read beyond the end: %v", err)
	}
	d.FailWrites(errInjected)
	err := p.Write(ctx, "lun", 1, 2, 0, pattern(512, 1), false)
	if !errors.Is(err, ErrReplicaIO) {
		t.Fatalf("failing device: %v", err)
	}
	t.Log(err)
}

// TestEpochs checks the replica's epoch rules: older refused, newer from
// the owner accepted and remembered, seal raises it, SetDevices never
// lowers it.
func TestEpochs(t *testing.T) {
	r, d := replicaWith(t, "b", "", "a", 3)
	p := r.peer(t, "a", "", time.Second)
	ctx := context.Background()
	steps := []struct {
		name  string
		do    func() error
		stale uint64 // want a StaleEpochError with this epoch; 0: success
		epoch uint64 // the server's epoch afterwards
	}{
		{"older write refused", func() error { return p.Write(ctx, "lun", 2, 1, 0, pattern(512, 1), false) }, 3, 3},
		{"current write", func() error { return p.Write(ctx, "lun", 3, 1, 0, pattern(512, 1), false) }, 0, 3},
		{"newer write accepted", func() error { return p.Write(ctx, "lun", 4, 2, 0, pattern(512, 2), false) }, 0, 4},
		{"then the older refused", func() error { return p.Write(ctx, "lun", 3, 3, 0, pattern(512, 3), false) }, 4, 4},
		{"seal", func() error { return p.Seal(ctx, "lun", 6) }, 0, 6},
		{"sealed epoch refused", func() error { return p.Write(ctx, "lun", 4, 3, 0, pattern(512, 3), false) }, 6, 6},
		{"older seal refused", func() error { return p.Seal(ctx, "lun", 5) }, 6, 6},
		{"older flush refused", func() error { return p.Flush(ctx, "lun", 5) }, 6, 6},
		{"older unmap refused", func() error { return p.Unmap(ctx, "lun", 5, 4, 0, 512) }, 6, 6},
		{"configuration cannot lower it", func() error {
			r.srv.SetDevices(map[string]ReplicaDevice{"lun": {Device: d, Owner: "a", Epoch: 2}})
			return nil
		}, 0, 6},
		{"configuration raises it", func() error {
			r.srv.SetDevices(map[string]ReplicaDevice{"lun": {Device: d, Owner: "a", Epoch: 9}})
			return p.Write(ctx, "lun", 6, 5, 0, pattern(512, 4), false)
		}, 9, 9},
	}
	for _, s := range steps {
		err := s.do()
		switch {
		case s.stale == 0 && err != nil:
			t.Fatalf("%s: %v", s.name, err)
		case s.stale != 0 && !isStale(err, s.stale):
			t.Fatalf("%s: %v, want stale epoch %d", s.name, err, s.stale)
		}
		if e, _ := r.srv.Epoch("lun"); e != s.epoch {
			t.Fatalf("%s: server epoch %d, want %d", s.name, e, s.epoch)
		}
	}
	if n := d.Counts(); n.Writes != 2 || n.Unmaps != 0 {
		t.Fatalf("%d writes and %d unmaps reached the device, want the 2 accepted writes", n.Writes, n.Unmaps)
	}
	if got := d.Snapshot()[:512]; !bytes.Equal(got, pattern(512, 2)) {
		t.Fatal("a refused write reached the disk")
	}
}

// TestSealWaitsForOlderWrites checks the no-zombie rule: once a seal of a
// newer epoch is answered, no write of an older one is executing.
func TestSealWaitsForOlderWrites(t *testing.T) {
	r, d := replicaWith(t, "b", "", "a", 1)
	p := r.peer(t, "a", "", 5*time.Second)
	ctx := context.Background()
	atDisk, release := d.HoldWrites()
	defer release()
	wrote := make(chan error, 1)
	go func() { wrote <- p.Write(ctx, "lun", 1, 1, 0, pattern(512, 1), false) }()
	<-atDisk // the epoch-1 write is at the disk
	sealed := make(chan error, 1)
	go func() { sealed <- p.Seal(ctx, "lun", 2) }()
	select {
	case err := <-sealed:
		t.Fatalf("seal answered (%v) while a write of the older epoch was executing", err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if err := <-sealed; err != nil {
		t.Fatal(err)
	}
	if err := p.Write(ctx, "lun", 1, 2, 0, pattern(512, 2), false); !isStale(err, 2) {
		t.Fatalf("write of the sealed epoch: %v", err)
	}
}

func TestResyncRequests(t *testing.T) {
	r, d := replicaWith(t, "b", "", "a", 1)
	p := r.peer(t, "a", "", time.Second)
	ctx := context.Background()
	data := pattern(3<<20, 9)
	for off := 0; off < len(data); off += 1 << 20 {
		if err := p.Write(ctx, "lun", 1, uint64(off), int64(off)+(2<<20), data[off:off+1<<20], false); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Unmap(ctx, "lun", 1, 9, 7<<20, 4096); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1<<20)
	if err := p.Read(ctx, "lun", 1, 3<<20, got); err != nil || !bytes.Equal(got, data[1<<20:2<<20]) {
		t.Fatalf("read: %v", err)
	}
	const chunk = 256 << 10
	length := int64(3<<20 + 1000)
	sums, err := p.Checksums(ctx, "lun", 1, 2<<20, length, chunk)
	if err != nil {
		t.Fatal(err)
	}
	local := d.Snapshot()
	if len(sums) != chunks(length, chunk) {
		t.Fatalf("%d sums, want %d", len(sums), chunks(length, chunk))
	}
	for i, s := range sums {
		off := 2<<20 + int64(i)*chunk
		end := min(off+chunk, 2<<20+length)
		if s != sha256.Sum256(local[off:end]) {
			t.Fatalf("sum %d differs", i)
		}
	}
	ext, err := p.Activity(ctx, "lun", 1)
	if err != nil {
		t.Fatal(err)
	}
	want := []Extent{{2 << 20, 3 << 20}, {7 << 20, 1 << 20}}
	if !equalExtents(ext, want) || !equalExtents(r.srv.ActivityLog("lun"), want) {
		t.Fatalf("activity %v (server %v), want %v", ext, r.srv.ActivityLog("lun"), want)
	}
}

func equalExtents(a, b []Extent) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestConnectionLoss(t *testing.T) {
	r, d := replicaWith(t, "b", "", "a", 1)
	p := r.peer(t, "a", "", time.Second)
	ctx := context.Background()
	atDisk, release := d.HoldWrites()
	wrote := make(chan error, 1)
	go func() { wrote <- p.Write(ctx, "lun", 1, 1, 0, pattern(512, 1), false) }()
	<-atDisk
	r.cut()
	select {
	case err := <-wrote:
		if !errors.Is(err, ErrConnection) {
			t.Fatalf("write in flight on a failed connection: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("write in flight did not fail with its connection")
	}
	release()
	// The peer reconnects by itself.
	waitFor(t, "reconnection", func() bool {
		return p.Write(ctx, "lun", 1, 2, 0, pattern(512, 2), false) == nil
	})
}

func TestRequestTimeout(t *testing.T) {
	r, d := replicaWith(t, "b", "", "a", 1)
	p := r.peer(t, "a", "", time.Second)
	_, release := d.HoldWrites()
	defer release()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := p.Write(ctx, "lun", 1, 1, 0, pattern(512, 1), false); !errors.Is(err, ErrTimeout) {
		t.Fatalf("write to a hung replica: %v", err)
	}
	// The connection survives a timeout: a slow disk is not a dead peer.
	if !p.Connected() {
		t.Fatal("connection closed by a timeout")
	}
	if err := p.Seal(context.Background(), "lun", 1); err != nil {
		t.Fatal(err)
	}
}

// TestSilentReplica checks that a replica that stops answering
// altogether (pings included) fails the requests in flight after about
// twice the Timeout.
func TestSilentReplica(t *testing.T) {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, s := net.Pipe()
		go func() {
			var hb [ClientHelloLen + MaxNameLen]byte
			io.ReadFull(s, hb[:ClientHelloLen])
			io.ReadFull(s, hb[ClientHelloLen:ClientHelloLen+int(hb[ClientHelloLen-1])])
			s.Write(AppendServerHello(nil, ServerHello{Version: Version}))
			var proof [ProofLen]byte
			io.ReadFull(s, proof[:])
			s.Write(AppendVerdict(nil, ServerVerdict{}))
			io.Copy(io.Discard, s) // reads, never answers
		}()
		return c, nil
	}
	p, err := Dial(context.Background(), PeerConfig{Node: "b", Addr: "pipe", Self: "a", Dial: dial, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	start := time.Now()
	err = p.Write(context.Background(), "lun", 1, 1, 0, pattern(512, 1), false)
	if !errors.Is(err, ErrConnection) {
		t.Fatalf("write to a silent replica: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("silence detected after %s", d)
	}
}

func TestServeTCP(t *testing.T) {
	srv := NewServer(ServerConfig{Secret: "k"})
	d := backendtest.NewThin(devSize)
	srv.SetDevices(map[string]ReplicaDevice{"lun": {Device: d, Owner: "a", Epoch: 1}})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	p, err := Dial(context.Background(), PeerConfig{Node: "b", Addr: l.Addr().String(), Self: "a", Secret: "k"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Write(context.Background(), "lun", 1, 1, 4096, pattern(8192, 5), true); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d.Snapshot()[4096:4096+8192], pattern(8192, 5)) {
		t.Fatal("data did not land")
	}
	srv.Close()
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
}

// FuzzServerConn feeds a byte stream after a valid handshake to a server:
// whatever arrives, the server must neither panic nor hang, and it must
// end the connection.
func FuzzServerConn(f *testing.F) {
	for _, tc := range sampleFrames(f, 16) {
		f.Add(tc.frame)
	}
	srv := NewServer(ServerConfig{})
	srv.SetDevices(map[string]ReplicaDevice{"lun": {Device: backendtest.NewThin(1 << 20), Owner: "node", Epoch: 1}})
	w, _ := AppendWrite(nil, Write{Tag: 1, Epoch: 1, Offset: 512, Data: make([]byte, 16)}, "lun")
	f.Add(append(w, make([]byte, 16)...))
	rd, _ := AppendRead(nil, Read{Tag: 2, Epoch: 1, Offset: 0, Length: 512}, "lun")
	f.Add(append(rd, rd...))
	f.Fuzz(func(t *testing.T, stream []byte) {
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			srv.ServeConn(server)
			close(done)
		}()
		go io.Copy(io.Discard, client)
		client.SetWriteDeadline(time.Now().Add(time.Second))
		ch, _ := AppendClientHello(nil, ClientHello{Version: Version, Name: []byte("node")})
		client.Write(ch)
		var proof [ProofLen]byte
		client.Write(proof[:])
		client.Write(stream)
		client.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("server still serving a closed connection")
		}
	})
}

// TestNewPeer checks a Peer that connects in the background: requests
// made before its connection wait for it, and fail with a failed attempt.
func TestNewPeer(t *testing.T) {
	r, d := replicaWith(t, "b", "", "a", 1)
	gate := make(chan struct{})
	p, err := NewPeer(PeerConfig{Node: "b", Addr: "pipe", Self: "a", Timeout: time.Second,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			<-gate
			return r.dial(ctx, network, addr)
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	wrote := make(chan error, 1)
	go func() { wrote <- p.Write(context.Background(), "lun", 1, 1, 0, pattern(512, 1), false) }()
	close(gate)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if w := d.Counts().Writes; w != 1 {
		t.Fatalf("%d writes", w)
	}

	down, err := NewPeer(PeerConfig{Node: "c", Addr: "nowhere", Self: "a",
		Dial: func(context.Context, string, string) (net.Conn, error) { return nil, errInjected }})
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	if err := down.Write(context.Background(), "lun", 1, 1, 0, pattern(512, 1), false); !errors.Is(err, ErrConnection) || !errors.Is(err, errInjected) {
		t.Fatalf("write to a replica that cannot be reached: %v", err)
	}
	down.Close()
	if err := down.Seal(context.Background(), "lun", 1); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("request on a closed peer: %v", err)
	}
}

// TestNewerConnectionSupersedes: once an owner's new connection is served,
// nothing of its old one runs any more. A write the owner gave up on,
// still in the network when it reconnected and resynced the copy, would
// otherwise overwrite newer data in the same epoch.
func TestNewerConnectionSupersedes(t *testing.T) {
	r, d := replicaWith(t, "b", "", "a", 1)
	oldEnd, srvEnd := net.Pipe()
	defer oldEnd.Close()
	go r.srv.ServeConn(srvEnd)
	stale := &Peer{cfg: PeerConfig{Node: "b", Self: "a"}}
	if err := stale.handshake(oldEnd); err != nil {
		t.Fatal(err)
	}

	p := r.peer(t, "a", "", time.Second)
	if err := p.Write(context.Background(), "lun", 1, 2, 0, pattern(4096, 2), false); err != nil {
		t.Fatal(err)
	}
	frame, err := AppendWrite(nil, Write{Tag: 1, Epoch: 1, Seq: 1, Offset: 0, Data: pattern(4096, 1)}, "lun")
	if err != nil {
		t.Fatal(err)
	}
	oldEnd.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := oldEnd.Write(append(frame, pattern(4096, 1)...)); err == nil {
		t.Fatal("the superseded connection still takes requests")
	}
	// A request through the live connection is ordered after whatever
	// the old one could still have run.
	if err := p.Flush(context.Background(), "lun", 1); err != nil {
		t.Fatal(err)
	}
	if got := d.Snapshot()[:4096]; !bytes.Equal(got, pattern(4096, 2)) {
		t.Fatal("the superseded connection's write landed over the newer one")
	}
}
