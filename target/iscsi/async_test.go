package iscsi

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/backend/backendtest"
	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/target/iscsi/pdu"
	"github.com/hatarget/hatarget/target/iscsi/pdu/pdutest"
	"github.com/hatarget/hatarget/target/scsi"
)

const (
	asyncIQN       = "iqn.2024-01.io.hatarget.test:async"
	asyncInitiator = "iqn.2024-01.io.hatarget.test:async-initiator"
)

var cdbTUR = []byte{0, 0, 0, 0, 0, 0}

// asyncDisk is an in-memory device that writes the way a replicated volume
// does (backend.AsyncWriter): a write started with a plug is held until
// the plug is unplugged, then completes later on a goroutine of its own,
// after a short delay or, in manual mode, when the test completes it. The
// data reaches memory only at completion, so a target that reused the
// buffer of a write in flight would be caught by the read back.
type asyncDisk struct {
	*backendtest.Mem
	mu     sync.Mutex
	held   []*diskWrite // started, waiting for the plug
	sent   []*diskWrite // manual: unplugged, waiting for the test
	manual bool

	starts, syncWrites atomic.Int64
}

type diskWrite struct {
	d   *asyncDisk
	p   []byte
	off int64
	// done is the target's; it must see exactly one outcome.
	done backend.WriteDone
}

func newAsyncDisk(size int, manual bool) *asyncDisk {
	return &asyncDisk{Mem: backendtest.NewMem(size), manual: manual}
}

func (d *asyncDisk) StartWrite(p []byte, off int64, durable bool, done backend.WriteDone, plug *backend.Plug) bool {
	if durable {
		return false
	}
	d.starts.Add(1)
	w := &diskWrite{d: d, p: p, off: off, done: done}
	if plug == nil {
		d.send(w)
		return true
	}
	d.mu.Lock()
	d.held = append(d.held, w)
	d.mu.Unlock()
	plug.Hold(d)
	return true
}

// Unplug sends every held write. Like a replica connection's writer, it
// is shared: any reader's unplug releases all that is held.
func (d *asyncDisk) Unplug() {
	d.mu.Lock()
	held := d.held
	d.held = nil
	d.mu.Unlock()
	for _, w := range held {
		d.send(w)
	}
}

func (d *asyncDisk) send(w *diskWrite) {
	d.mu.Lock()
	manual := d.manual
	if manual {
		d.sent = append(d.sent, w)
	}
	d.mu.Unlock()
	if !manual {
		// Latencies that differ from write to write, so that writes
		// complete out of order.
		delay := time.Duration(w.off>>9%7) * 50 * time.Microsecond
		time.AfterFunc(delay, func() { w.finish(nil) })
	}
}

// finish completes w with err, on the caller's goroutine.
func (w *diskWrite) finish(err error) {
	if err == nil {
		err = w.d.Mem.WriteAt(w.p, w.off, false)
	}
	w.done.WriteDone(err)
}

// heldBack is how many writes wait for the plug.
func (d *asyncDisk) heldBack() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.held)
}

// inFlight is how many writes wait for the test to complete them.
func (d *asyncDisk) inFlight() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.sent)
}

// completeSent completes every write in flight, each on a goroutine of its
// own, with the error errOf gives for its place in the queue.
func (d *asyncDisk) completeSent(errOf func(i int) error) {
	d.mu.Lock()
	sent := d.sent
	d.sent = nil
	d.mu.Unlock()
	for i, w := range sent {
		go w.finish(errOf(i))
	}
}

// releaseAll stops holding anything back, so that nothing the target
// waits for stays held at shutdown.
func (d *asyncDisk) releaseAll() {
	d.mu.Lock()
	d.manual = false
	d.mu.Unlock()
	d.Unplug()
	d.completeSent(func(int) error { return nil })
}

func (d *asyncDisk) WriteAt(p []byte, off int64, durable bool) error {
	d.syncWrites.Add(1)
	return d.Mem.WriteAt(p, off, durable)
}

func (d *asyncDisk) NetworkedWrites() bool { return true }

var (
	_ backend.AsyncWriter = (*asyncDisk)(nil)
	_ backend.Networked   = (*asyncDisk)(nil)
	_ backend.Unplugger   = (*asyncDisk)(nil)
)

// startAsyncTarget serves one LU on dev, with the write cache on so that
// plain WRITEs take the asynchronous path.
func startAsyncTarget(t *testing.T, dev *asyncDisk) (*Server, initiator.Config) {
	t.Helper()
	lu, err := scsi.NewLU(scsi.LUConfig{Device: dev, Serial: "async", WriteCache: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(Options{Logger: slog.New(slog.DiscardHandler)})
	srv.SetTargets([]*Target{{Name: asyncIQN, Limits: DefaultLimits(), RelativePort: 1, PortGroup: 1,
		Views: func(string) scsi.View { return oneLU{lu} }}}, nil)
	a := listenLoopback(t, srv)
	t.Cleanup(dev.releaseAll) // runs first: shutdown waits for held writes
	return srv, initiator.Config{Addr: a.String(), TargetName: asyncIQN, InitiatorName: asyncInitiator}
}

// dialAsync logs in and takes the unit attention of the new nexus, which
// would otherwise send the first WRITE the synchronous way.
func dialAsync(t *testing.T, ctx context.Context, cfg initiator.Config) *initiator.Session {
	t.Helper()
	s, err := initiator.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := command(ctx, s, cdbTUR); err != nil {
		t.Fatal(err)
	}
	return s
}

func write10(lba uint32, blocks uint16) []byte {
	c := make([]byte, 10)
	c[0] = 0x2a
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint16(c[7:], blocks)
	return c
}

// onlySession returns the server's one session.
func onlySession(t *testing.T, srv *Server) *session {
	t.Helper()
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.sessions) != 1 {
		t.Fatalf("%d sessions, want 1", len(srv.sessions))
	}
	for _, s := range srv.sessions {
		return s
	}
	return nil
}

// checkReadBack writes and reads back one block, through the async path.
func checkReadBack(t *testing.T, ctx context.Context, s *initiator.Session, lba uint64) {
	t.Helper()
	want := bytes.Repeat([]byte{byte(lba) | 1}, 512)
	if err := s.Write(ctx, 0, lba, 1, 512, want); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 512)
	if err := s.Read(ctx, 0, lba, 1, 512, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("LBA %d reads back other data than was written", lba)
	}
}

// TestAsyncWritesEndToEnd has 16 writers keep the queue full of WRITEs,
// of one block to beyond FirstBurstLength (so some gather their data
// through R2Ts), each in a region of its own, and read their region back.
// Every write must go through StartWrite and complete from the device's
// goroutines, out of order, with the data intact.
func TestAsyncWritesEndToEnd(t *testing.T) {
	const (
		writers   = 16
		perWriter = 24
		region    = 1 << 20
		bs        = 512
	)
	dev := newAsyncDisk(writers*region, false)
	_, cfg := startAsyncTarget(t, dev)
	ctx := testContext(t)
	s := dialAsync(t, ctx, cfg)
	starts0 := dev.starts.Load()

	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 0x5eed))
			image := make([]byte, region)
			base := uint64(g) * region / bs
			for i := range perWriter {
				blocks := 1 + rng.IntN(64)
				if i%8 == 0 {
					blocks = 512 + rng.IntN(region/bs-512) // 256 KiB to 1 MiB
				}
				lba := rng.IntN(region/bs - blocks + 1)
				buf := make([]byte, blocks*bs)
				for j := range buf {
					buf[j] = byte(rng.Uint32())
				}
				if err := s.Write(ctx, 0, base+uint64(lba), uint32(blocks), bs, buf); err != nil {
					errs <- fmt.Errorf("writer %d: %w", g, err)
					return
				}
				copy(image[lba*bs:], buf)
			}
			got := make([]byte, region)
			if err := s.Read(ctx, 0, base, region/bs, bs, got); err != nil {
				errs <- fmt.Errorf("writer %d: %w", g, err)
				return
			}
			if !bytes.Equal(got, image) {
				j := 0
				for got[j] == image[j] {
					j++
				}
				errs <- fmt.Errorf("writer %d: byte %d of its region reads %#x, wrote %#x", g, j, got[j], image[j])
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := dev.starts.Load() - starts0; n != writers*perWriter {
		t.Errorf("%d of %d writes went through StartWrite", n, writers*perWriter)
	}
	if n := dev.syncWrites.Load(); n != 0 {
		t.Errorf("%d writes went through WriteAt", n)
	}
}

// TestAsyncWritesOutliveConnection drops the connection while writes are
// in flight on the device. The session must wait for them before it ends
// (its I_T nexus loss comes after they are done), nothing may be answered
// on the dead connection or panic, and every task and buffer must be
// given back once the writes complete, some of them with an error.
func TestAsyncWritesOutliveConnection(t *testing.T) {
	const n = 8
	dev := newAsyncDisk(1<<20, true)
	srv, cfg := startAsyncTarget(t, dev)
	ctx := testContext(t)
	s := dialAsync(t, ctx, cfg)
	sess := onlySession(t, srv)

	waits := make(chan error, n)
	for i := range n {
		call, err := s.Start(ctx, initiator.Command{CDB: write10(uint32(8*i), 8), DataOut: bytes.Repeat([]byte{byte(i)}, 8*512)})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			_, err := call.Wait(ctx)
			waits <- err
		}()
	}
	waitFor(t, "every write is in flight on the device", func() bool { return dev.inFlight() == n })
	s.Close()
	for range n {
		if err := <-waits; err == nil {
			t.Error("a write answered although the connection is gone")
		}
	}
	waitFor(t, "the dropped session aborts its tasks", func() bool { return readerAborting(srv) })
	if srv.SessionCount() != 1 {
		t.Fatal("the session ended before the writes it started")
	}

	dev.completeSent(func(i int) error {
		if i%2 == 1 {
			return errors.New("replica did not answer")
		}
		return nil
	})
	waitFor(t, "the session ends", func() bool { return srv.SessionCount() == 0 && srv.ConnectionCount() == 0 })
	select {
	case <-sess.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the session is not done")
	}
	sess.mu.Lock()
	left := len(sess.tasks)
	var holding int
	for _, tk := range sess.freeList {
		if tk.buf != nil || len(tk.out) != 0 {
			holding++
		}
	}
	sess.mu.Unlock()
	if left != 0 || holding != 0 {
		t.Fatalf("after the session: %d tasks registered, %d recycled tasks still hold buffers", left, holding)
	}

	// The target goes on serving the initiator's next session.
	dev.releaseAll()
	checkReadBack(t, ctx, dialAsync(t, ctx, cfg), 100)
}

// TestAsyncWriteTaskManagement aborts a write that is in flight on the
// device: the function must be answered only once the write completed,
// and the write itself not at all.
func TestAsyncWriteTaskManagement(t *testing.T) {
	for _, tc := range []struct {
		name string
		fn   byte
	}{
		{"abort task", pdu.TMFAbortTask},
		{"abort task set", pdu.TMFAbortTaskSet},
		{"lun reset", pdu.TMFLUNReset},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := newAsyncDisk(1<<20, true)
			srv, cfg := startAsyncTarget(t, dev)
			ctx := testContext(t)
			s := dialAsync(t, ctx, cfg)
			call, err := s.Start(ctx, initiator.Command{CDB: write10(16, 1), DataOut: bytes.Repeat([]byte{0xab}, 512)})
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the write is in flight on the device", func() bool { return dev.inFlight() == 1 })

			type answer struct {
				resp byte
				err  error
			}
			tmf := make(chan answer, 1)
			go func() {
				resp, err := s.TaskMgmt(ctx, tc.fn, 0, call.ITT())
				tmf <- answer{resp, err}
			}()
			waitFor(t, "the reader waits for the aborted write", func() bool { return readerAborting(srv) })
			select {
			case a := <-tmf:
				t.Fatalf("answered (%d, %v) while the aborted write is still in flight", a.resp, a.err)
			default:
			}

			dev.completeSent(func(int) error { return nil })
			select {
			case a := <-tmf:
				if a.err != nil || a.resp != pdu.TMFRespComplete {
					t.Fatalf("response %d, %v; want function complete", a.resp, a.err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no answer after the aborted write completed")
			}
			if r, err := call.Wait(ctx); !errors.Is(err, initiator.ErrTaskAborted) {
				t.Fatalf("the aborted write: %+v, %v; want no response", r, err)
			}

			// The session goes on, the reset's unit attention aside.
			dev.releaseAll()
			if err := command(ctx, s, cdbTUR); err != nil {
				t.Fatal(err)
			}
			starts := dev.starts.Load()
			checkReadBack(t, ctx, s, 200)
			if dev.starts.Load() == starts {
				t.Fatal("the write after the abort did not take the async path")
			}
		})
	}
}

// TestAsyncWriteWithPipelinedRequest sends a WRITE and, in the same TCP
// segment, a request that the reader serves by waiting for the write: an
// ABORT TASK of it, a LUN RESET, a logout. The reader reads both from its
// buffer without a read from the socket in between, so the plug still
// holds what the write has to send to complete; it must be unplugged
// before the reader waits, or the write (and the reader) wait for good --
// for a replicated volume, until its write timeout fails the replicas.
func TestAsyncWriteWithPipelinedRequest(t *testing.T) {
	const itt, reqITT = 0x10, 0x11
	for _, tc := range []struct {
		name string
		// req builds the request that follows a WRITE with CmdSN writeSN.
		req func(c *pdutest.Conn, writeSN uint32) pdu.Header
		// answer is the opcode of the request's answer.
		answer pdu.Opcode
	}{
		{"abort task", func(c *pdutest.Conn, writeSN uint32) pdu.Header {
			var h pdu.Header
			(&pdu.TaskMgmtReq{Immediate: true, Function: pdu.TMFAbortTask, ITT: reqITT, RTT: itt,
				CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN, RefCmdSN: writeSN}).Marshal(&h)
			return h
		}, pdu.OpTaskMgmtResp},
		{"lun reset", func(c *pdutest.Conn, writeSN uint32) pdu.Header {
			var h pdu.Header
			(&pdu.TaskMgmtReq{Immediate: true, Function: pdu.TMFLUNReset, ITT: reqITT, RTT: pdu.ReservedTag,
				CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN, RefCmdSN: c.CmdSN}).Marshal(&h)
			return h
		}, pdu.OpTaskMgmtResp},
		{"logout", func(c *pdutest.Conn, writeSN uint32) pdu.Header {
			var h pdu.Header
			(&pdu.LogoutReq{Immediate: true, Reason: pdu.LogoutSession, ITT: reqITT,
				CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN}).Marshal(&h)
			return h
		}, pdu.OpLogoutResp},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := newAsyncDisk(1<<20, false)
			_, cfg := startAsyncTarget(t, dev)
			c := pdutest.DialLoggedIn(t, cfg.Addr, asyncInitiator, asyncIQN)

			data := bytes.Repeat([]byte{0xcd}, 512)
			cmd := pdutest.RW10(true, itt, 32, 1)
			cmd.CmdSN, cmd.ExpStatSN, cmd.DataLen = c.CmdSN, c.ExpStatSN, len(data)
			c.CmdSN++
			var wh pdu.Header
			cmd.Marshal(&wh)
			rh := tc.req(c, cmd.CmdSN)
			var tr [8]byte
			if _, err := c.NC.Write(slices.Concat(wh[:], data, pdu.Trailer(&tr, data, false), rh[:])); err != nil {
				t.Fatal(err)
			}

			h, _, _, err := c.ReadITT(reqITT, 2*time.Second)
			if err != nil {
				held := dev.heldBack()
				dev.releaseAll() // let the server end
				t.Fatalf("no answer to the %s (%v); %d writes still held by the reader's plug",
					tc.name, err, held)
			}
			if h.Opcode() != tc.answer || h[2] != 0 {
				t.Fatalf("answered with %v response %d; want %v, success", h.Opcode(), h[2], tc.answer)
			}
		})
	}
}
