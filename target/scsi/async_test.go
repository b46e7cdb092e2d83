package scsi

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/backend/backendtest"
)

// asyncDevice is a backendtest.Mem that also takes writes through
// backend.AsyncWriter, as a replicated volume does, and completes them
// only when the test says so: a test sees the command between its start
// and its end, which a real device would cross too quickly to look at.
type asyncDevice struct {
	*backendtest.Mem
	refuse atomic.Bool // StartWrite declines, as a volume out of sync does
	// syncErr, when set, is what WriteAt returns, so that the synchronous
	// path can be made to fail exactly as a started write does.
	syncErr error

	startMu sync.Mutex
	calls   int // StartWrite calls, refused ones included
	started []*asyncWrite
}

// asyncWrite is one write StartWrite accepted.
type asyncWrite struct {
	dev     *asyncDevice
	p       []byte
	off     int64
	durable bool
	done    backend.WriteDone
	plug    *backend.Plug
}

func newAsyncDevice(size int) *asyncDevice { return &asyncDevice{Mem: backendtest.NewMem(size)} }

func (d *asyncDevice) WriteAt(p []byte, off int64, durable bool) error {
	if d.syncErr != nil {
		return d.syncErr
	}
	return d.Mem.WriteAt(p, off, durable)
}

func (d *asyncDevice) StartWrite(p []byte, off int64, durable bool, done backend.WriteDone, plug *backend.Plug) bool {
	d.startMu.Lock()
	defer d.startMu.Unlock()
	d.calls++
	if d.refuse.Load() {
		return false
	}
	d.started = append(d.started, &asyncWrite{dev: d, p: p, off: off, durable: durable, done: done, plug: plug})
	return true
}

// NetworkedWrites makes the device look like the replicated volumes that
// implement AsyncWriter.
func (d *asyncDevice) NetworkedWrites() bool { return true }

// starts returns how often StartWrite was called and the writes it took.
func (d *asyncDevice) starts() (int, []*asyncWrite) {
	d.startMu.Lock()
	defer d.startMu.Unlock()
	return d.calls, append([]*asyncWrite(nil), d.started...)
}

// complete finishes w with err on a goroutine of its own, as the reader of
// a replica's connection would; a write that succeeds reaches the medium
// only then, so that p is read while the target must still leave it alone.
func (w *asyncWrite) complete(err error) {
	go func() {
		if err == nil {
			err = w.dev.Mem.WriteAt(w.p, w.off, w.durable)
		}
		w.done.WriteDone(err)
	}()
}

var (
	_ backend.AsyncWriter = (*asyncDevice)(nil)
	_ backend.Networked   = (*asyncDevice)(nil)
)

// newAsyncHarness is newHarness with an asyncDevice of testBlocks blocks.
func newAsyncHarness(t *testing.T, mod func(*LUConfig)) (*harness, *asyncDevice) {
	t.Helper()
	dev := newAsyncDevice(testBlocks * 512)
	h := newHarness(t, func(c *LUConfig) {
		c.Device = dev
		if mod != nil {
			mod(c)
		}
	})
	if d, ok := h.lu.state.Load().cfg.Device.(*asyncDevice); ok {
		dev = d // mod brought a device of its own
	}
	return h, dev
}

// asyncCall is one ExecuteAsync and what became of it.
type asyncCall struct {
	cmd *Command
	res *Result
	// started is what ExecuteAsync returned, doneEarly whether done had
	// run by then.
	started, doneEarly bool
	dones              atomic.Int32
	done               chan struct{}
}

// startAsync runs cdb through ExecuteAsync on nexus n of v with plug.
func startAsync(v View, n *Nexus, cdb, out []byte, plug *backend.Plug) *asyncCall {
	c := &asyncCall{cmd: &Command{Nexus: n, CDB: cdb, DataOut: out}, res: &Result{}, done: make(chan struct{})}
	c.started = ExecuteAsync(v, c.cmd, c.res, c.onDone, plug)
	select {
	case <-c.done:
		c.doneEarly = true
	default:
	}
	return c
}

// onDone closes done the first time only, so that a second call is
// counted instead of crashing the test binary.
func (c *asyncCall) onDone() {
	if c.dones.Add(1) == 1 {
		close(c.done)
	}
}

func (c *asyncCall) finished() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// wait waits for done, which the device's completion must bring about.
func (c *asyncCall) wait(t *testing.T) {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("cdb % x: done never ran", c.cmd.CDB)
	}
	if n := c.dones.Load(); n != 1 {
		t.Fatalf("cdb % x: done ran %d times", c.cmd.CDB, n)
	}
}

// sameOutcome fails unless got is what Execute produced in want.
func sameOutcome(t *testing.T, got, want *Result) {
	t.Helper()
	if got.Status != want.Status || !bytes.Equal(got.Sense, want.Sense) || got.Transfer != want.Transfer || got.DataInLen != want.DataInLen {
		t.Fatalf("ExecuteAsync: status %#x sense % x transfer %d; Execute: status %#x sense % x transfer %d",
			got.Status, got.Sense, got.Transfer, want.Status, want.Sense, want.Transfer)
	}
}

// stripesFree reports whether nothing holds any stripe of the bytes
// [off, off+n) of lu, shared or exclusive.
func stripesFree(lu *LU, off, n int64) bool {
	mask := stripeMask(off, n)
	for i := range lockStripes {
		if mask&(1<<i) == 0 {
			continue
		}
		s := &lu.rl.stripes[i]
		if !s.TryLock() {
			return false
		}
		s.Unlock()
	}
	return true
}

// errReplicaLost stands for whatever a replicated write fails with that is
// not one of the errors the backend package names.
var errReplicaLost = errors.New("replica did not answer")

func TestExecuteAsyncWrites(t *testing.T) {
	const bs = 512
	for _, tc := range []struct {
		name    string
		cdb     []byte
		out     []byte
		off     int64 // where the device must be asked to write
		written int   // bytes it must be asked to write
	}{
		{"write10", cdbRW10(opWrite10, 5, 4, 0), fill(4*bs, 'a'), 5 * bs, 4 * bs},
		{"write16", cdbRW16(opWrite16, testBlocks-3, 3, 0), fill(3*bs, 'b'), (testBlocks - 3) * bs, 3 * bs},
		{"write16 dpo", cdbRW16(opWrite16, 7, 1, bitDPO), fill(bs, 'c'), 7 * bs, bs},
		{"write12", cdbRW12(opWrite12, 9, 2, 0), fill(2*bs, 'd'), 9 * bs, 2 * bs},
		{"write6", cdbRW6(opWrite6, 11, 1), fill(bs, 'e'), 11 * bs, bs},
		// Data beyond the transfer length, or a trailing partial block, is
		// not written, as by Execute.
		{"write10 with more data than the CDB", cdbRW10(opWrite10, 20, 1, 0), fill(3*bs, 'f'), 20 * bs, bs},
		{"write10 with a partial block", cdbRW10(opWrite10, 30, 2, 0), fill(bs+100, 'g'), 30 * bs, bs},
	} {
		for _, devErr := range []error{nil, errReplicaLost, backend.ErrReadOnly, backend.ErrOutOfRange, errLeaseLost} {
			name := tc.name
			if devErr != nil {
				name += "/" + devErr.Error()
			}
			t.Run(name, func(t *testing.T) {
				h, dev := newAsyncHarness(t, nil)
				v := testView{0: h.lu}
				plug := &backend.Plug{}
				c := startAsync(v, h.n, tc.cdb, tc.out, plug)
				if !c.started {
					t.Fatal("ExecuteAsync did not take a plain WRITE with the write cache on")
				}
				if c.doneEarly {
					t.Fatal("done ran before the device completed the write")
				}
				calls, started := dev.starts()
				if calls != 1 || len(started) != 1 {
					t.Fatalf("StartWrite called %d times, took %d writes; want 1", calls, len(started))
				}
				w := started[0]
				if w.off != tc.off || len(w.p) != tc.written || w.durable || w.plug != plug {
					t.Fatalf("StartWrite(%d bytes at %d, durable %v, plug %p); want %d bytes at %d, not durable, plug %p",
						len(w.p), w.off, w.durable, w.plug, tc.written, tc.off, plug)
				}
				if !bytes.Equal(w.p, tc.out[:tc.written]) {
					t.Fatal("StartWrite was not given the command's data")
				}
				if stripesFree(h.lu, w.off, int64(len(w.p))) {
					t.Fatal("the blocks of a write in flight are not locked")
				}
				if c.finished() {
					t.Fatal("done ran before the device completed the write")
				}

				w.complete(devErr)
				c.wait(t)
				checkResult(t, c.cmd, c.res, nil, 0)
				if !stripesFree(h.lu, w.off, int64(len(w.p))) {
					t.Fatal("the blocks stay locked after the write completed")
				}
				written := bytes.Equal(dev.Bytes()[tc.off:tc.off+int64(tc.written)], tc.out[:tc.written])
				if written != (devErr == nil) {
					t.Fatalf("data on the medium: %v, device error %v", written, devErr)
				}
				if durable := dev.Counts().Durable; durable != 0 {
					t.Fatal("a cached write reached the device as durable")
				}

				// Execute on the same LU, whose device's WriteAt fails the
				// same way, is the reference.
				dev.syncErr = devErr
				want, _ := h.run(tc.cdb, tc.out, 0)
				sameOutcome(t, c.res, want)
				if devErr == nil {
					good.check(t, c.res)
				}
			})
		}
	}
}

// TestExecuteAsyncDeclines covers the commands ExecuteAsync leaves to
// Execute: it must return false without calling the device or done, and
// without consuming anything Execute then reports.
func TestExecuteAsyncDeclines(t *testing.T) {
	const bs = 512
	block := fill(bs, 'x')
	for _, tc := range []struct {
		name string
		mod  func(*LUConfig)
		// setup prepares the LU and returns the nexus to use (nil: the
		// harness's) and what undoes it before Execute runs the command.
		setup func(t *testing.T, h *harness, dev *asyncDevice) (*Nexus, func())
		cdb   []byte
		out   []byte
		in    int
		// startCalls is how often StartWrite may be called.
		startCalls int
		want       want // what Execute then answers
	}{
		{name: "read", cdb: cdbRW10(opRead10, 0, 1, 0), in: bs, want: good},
		{name: "write same", cdb: cdbWS10(0, 4, 0), out: block, want: good},
		{name: "write and verify", cdb: cdbRW10(opWriteVerify10, 0, 1, 0), out: block, want: good},
		{name: "compare and write", cdb: cdbCAW(0, 1, 0), out: append(fill(bs, 0), block...), want: good},
		{name: "fua write", cdb: cdbRW10(opWrite10, 0, 1, bitFUA), out: block, want: good},
		{name: "fua write16", cdb: cdbRW16(opWrite16, 0, 1, bitFUA), out: block, want: good},
		{name: "write cache off", mod: func(c *LUConfig) { c.WriteCache = false },
			cdb: cdbRW10(opWrite10, 0, 1, 0), out: block, want: good},
		{name: "no whole block of data", cdb: cdbRW10(opWrite10, 0, 1, 0), out: fill(100, 'x'), want: good},
		{name: "empty cdb", cdb: []byte{}, want: wantSense(KeyIllegalRequest, ascInvalidOpcode)},
		{name: "new nexus with POWER ON, RESET pending",
			setup: func(t *testing.T, h *harness, dev *asyncDevice) (*Nexus, func()) {
				return testNexus("iqn.1994-05.com.example:host2", 2), nil
			},
			cdb: cdbRW10(opWrite10, 0, 1, 0), out: block, want: wantSense(KeyUnitAttention, ascPowerOnReset)},
		{name: "unit attention raised by a LUN reset",
			setup: func(t *testing.T, h *harness, dev *asyncDevice) (*Nexus, func()) {
				h.lu.ResetLU(h.n)
				return nil, nil
			},
			cdb: cdbRW10(opWrite10, 0, 1, 0), out: block, want: wantSense(KeyUnitAttention, ascBusDeviceReset)},
		{name: "device refuses",
			setup: func(t *testing.T, h *harness, dev *asyncDevice) (*Nexus, func()) {
				dev.refuse.Store(true)
				return nil, nil
			},
			cdb: cdbRW10(opWrite10, 0, 1, 0), out: block, startCalls: 1, want: good},
		{name: "blocks held exclusively",
			setup: func(t *testing.T, h *harness, dev *asyncDevice) (*Nexus, func()) {
				hold := request{lu: h.lu, st: h.lu.state.Load()}.lockBlocks(0, 1, true)
				return nil, hold.release
			},
			cdb: cdbRW10(opWrite10, 0, 1, 0), out: block, want: good},
		{name: "one of the stripes held exclusively",
			setup: func(t *testing.T, h *harness, dev *asyncDevice) (*Nexus, func()) {
				// The write crosses from the first 1 MiB region into the
				// second; only the second is held.
				hold := request{lu: h.lu, st: h.lu.state.Load()}.lockBlocks(2048, 1, true)
				return nil, hold.release
			},
			mod: func(c *LUConfig) { c.Device = newAsyncDevice(4 << 20) },
			cdb: cdbRW10(opWrite10, 2047, 2, 0), out: fill(2*bs, 'y'), want: good},
		{name: "forwarded LU",
			setup: func(t *testing.T, h *harness, dev *asyncDevice) (*Nexus, func()) {
				h.lu.SetForwarder(&recordingForwarder{})
				return nil, func() { h.lu.SetForwarder(nil) }
			},
			cdb: cdbRW10(opWrite10, 0, 1, 0), out: block, want: good},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, dev := newAsyncHarness(t, tc.mod)
			n := h.n
			var undo func()
			if tc.setup != nil {
				if m, u := tc.setup(t, h, dev); m != nil {
					n = m
				} else {
					undo = u
				}
			}
			writes0 := dev.Counts().Writes
			rec := &asyncCall{cmd: &Command{Nexus: n, CDB: tc.cdb, DataOut: tc.out, DataIn: make([]byte, tc.in)}, res: &Result{}, done: make(chan struct{})}
			if ExecuteAsync(testView{0: h.lu}, rec.cmd, rec.res, rec.onDone, &backend.Plug{}) {
				t.Fatal("ExecuteAsync took the command")
			}
			if rec.dones.Load() != 0 {
				t.Fatal("ExecuteAsync declined the command but ran done")
			}
			calls, started := dev.starts()
			if calls != tc.startCalls || len(started) != 0 {
				t.Fatalf("StartWrite called %d times and took %d writes; want %d calls, none taken", calls, len(started), tc.startCalls)
			}
			if w := dev.Counts().Writes; w != writes0 {
				t.Fatal("ExecuteAsync declined the command but wrote through WriteAt")
			}
			if undo != nil {
				undo()
			}
			// Execute still reports what ExecuteAsync saw, the unit
			// attentions included.
			rec.cmd.DataIn = make([]byte, tc.in)
			h.lu.Execute(rec.cmd, rec.res)
			tc.want.check(t, rec.res)

			// A declined write leaves its blocks free: an exclusive command
			// on them runs at once.
			cawDone := make(chan *Result, 1)
			go func() {
				out := append(fill(bs, 0), fill(bs, 0)...)
				res := &Result{}
				h.lu.Execute(&Command{Nexus: h.n, CDB: cdbCAW(0, 1, 0), DataOut: out}, res)
				cawDone <- res
			}()
			select {
			case <-cawDone:
			case <-time.After(5 * time.Second):
				t.Fatal("COMPARE AND WRITE waits for the blocks of a declined write")
			}
			if !stripesFree(h.lu, 0, 8<<20) {
				t.Fatal("the range lock is held after a declined write")
			}
		})
	}
}

// TestExecuteAsyncRefusedAtOnce covers writes that admission or the CDB
// checks refuse: ExecuteAsync answers them itself, before it returns, as
// Execute would, and the device never sees them.
func TestExecuteAsyncRefusedAtOnce(t *testing.T) {
	const bs = 512
	block := fill(bs, 'r')
	other := testNexus("iqn.1994-05.com.example:holder", 9)
	for _, tc := range []struct {
		name  string
		mod   func(*LUConfig)
		setup func(t *testing.T, h *harness)
		cdb   []byte
		out   []byte
		want  want
	}{
		{name: "lba past the end", cdb: cdbRW10(opWrite10, testBlocks, 1, 0), out: block,
			want: wantSense(KeyIllegalRequest, ascLBAOutOfRange)},
		{name: "range crossing the end", cdb: cdbRW16(opWrite16, testBlocks-1, 2, 0), out: fill(2*bs, 'r'),
			want: wantSense(KeyIllegalRequest, ascLBAOutOfRange)},
		{name: "lba -1", cdb: cdbRW16(opWrite16, ^uint64(0), 1, 0), out: block,
			want: wantSense(KeyIllegalRequest, ascLBAOutOfRange)},
		{name: "transfer beyond the maximum", mod: func(c *LUConfig) { c.Device = newAsyncDevice(2 * MaxTransferBytes) }, cdb: cdbRW16(opWrite16, 0, MaxTransferBytes/bs+1, 0), out: block,
			want: wantCDB(10, -1)},
		{name: "wrprotect", cdb: cdbRW10(opWrite10, 0, 1, 0x20), out: block, want: wantCDB(1, 7)},
		{name: "read-only LU", mod: func(c *LUConfig) { c.ReadOnly = true }, cdb: cdbRW10(opWrite10, 0, 1, 0), out: block,
			want: wantSense(KeyDataProtect, ascWriteProtected)},
		{name: "software write protect", setup: func(t *testing.T, h *harness) { h.lu.swp.Store(true) },
			cdb: cdbRW10(opWrite10, 0, 1, 0), out: block, want: wantSense(KeyDataProtect, ascSoftwareWriteProtected)},
		{name: "reserved by another nexus", setup: func(t *testing.T, h *harness) {
			h.clearUA(other)
			good.check(t, first(h.exec(other, cdbReserve(opReserve6), nil, 0)))
		}, cdb: cdbRW10(opWrite10, 0, 1, 0), out: block},
		{name: "LU closed", setup: func(t *testing.T, h *harness) { h.lu.Close() },
			cdb: cdbRW10(opWrite10, 0, 1, 0), out: block, want: wantSense(KeyNotReady, ascNotReadyCauseUnknown)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recordingStats{}
			h, dev := newAsyncHarness(t, func(c *LUConfig) {
				c.Stats = rec
				if tc.mod != nil {
					tc.mod(c)
				}
			})
			if tc.setup != nil {
				tc.setup(t, h)
			}
			rec.calls = 0
			writes0 := dev.Counts().Writes
			c := startAsync(testView{0: h.lu}, h.n, tc.cdb, tc.out, nil)
			if !c.started {
				t.Fatal("ExecuteAsync left a refused write to Execute")
			}
			if !c.doneEarly {
				t.Fatal("a refused write was not answered before ExecuteAsync returned")
			}
			c.wait(t)
			checkResult(t, c.cmd, c.res, nil, 0)
			if tc.name == "reserved by another nexus" {
				if c.res.Status != StatusReservationConflict {
					t.Fatalf("status %#x, want RESERVATION CONFLICT", c.res.Status)
				}
			} else {
				tc.want.check(t, c.res)
			}
			if calls, _ := dev.starts(); calls != 0 {
				t.Fatalf("StartWrite called %d times for a refused write", calls)
			}
			if w := dev.Counts().Writes; w != writes0 {
				t.Fatal("a refused write reached WriteAt")
			}
			if rec.calls != 1 || rec.kind != KindWrite || rec.bytes != 0 || rec.status != c.res.Status {
				t.Fatalf("Stats told %d times, last %v %d bytes status %#x; want once, a write of 0 bytes with status %#x",
					rec.calls, rec.kind, rec.bytes, rec.status, c.res.Status)
			}
			if !stripesFree(h.lu, 0, 8<<20) {
				t.Fatal("the range lock is held after a refused write")
			}
			want, _ := h.run(tc.cdb, tc.out, 0)
			sameOutcome(t, c.res, want)
		})
	}
}

// TestExecuteAsyncStats checks that a started write is counted once, when
// it completes, with its bytes, and that a declined one is left to
// Execute to count.
func TestExecuteAsyncStats(t *testing.T) {
	const bs = 512
	for _, tc := range []struct {
		name   string
		cdb    []byte
		out    []byte
		err    error
		bytes  int
		status Status
	}{
		{"write10", cdbRW10(opWrite10, 0, 4, 0), fill(4*bs, 1), nil, 4 * bs, StatusGood},
		{"write16 with more data than the CDB", cdbRW16(opWrite16, 8, 1, 0), fill(2*bs, 2), nil, bs, StatusGood},
		{"failed write", cdbRW10(opWrite10, 0, 2, 0), fill(2*bs, 3), errReplicaLost, 0, StatusCheckCondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recordingStats{}
			h, dev := newAsyncHarness(t, func(c *LUConfig) { c.Stats = rec })
			rec.calls = 0
			c := startAsync(testView{0: h.lu}, h.n, tc.cdb, tc.out, nil)
			if !c.started || c.doneEarly {
				t.Fatalf("ExecuteAsync: started %v, done at once %v", c.started, c.doneEarly)
			}
			// The write is counted when it ends, not when it starts; the
			// device's goroutine is not running yet, so this read is safe.
			if rec.calls != 0 {
				t.Fatalf("Stats told %d times before the write completed", rec.calls)
			}
			_, started := dev.starts()
			started[0].complete(tc.err)
			c.wait(t)
			if rec.calls != 1 {
				t.Fatalf("Stats told %d times, want once", rec.calls)
			}
			if rec.kind != KindWrite || rec.bytes != tc.bytes || rec.status != tc.status {
				t.Fatalf("Stats got %v %d bytes status %#x, want %v %d bytes status %#x",
					rec.kind, rec.bytes, rec.status, KindWrite, tc.bytes, tc.status)
			}
			if rec.d < 0 {
				t.Fatalf("negative duration %v", rec.d)
			}
		})
	}

	t.Run("declined write counted by Execute alone", func(t *testing.T) {
		rec := &recordingStats{}
		h, _ := newAsyncHarness(t, func(c *LUConfig) { c.Stats = rec })
		rec.calls = 0
		cmd := &Command{Nexus: h.n, CDB: cdbRW10(opWrite10, 0, 1, bitFUA), DataOut: fill(bs, 4)}
		res := &Result{}
		if ExecuteAsync(testView{0: h.lu}, cmd, res, func() { t.Error("done ran") }, nil) {
			t.Fatal("ExecuteAsync took a FUA write")
		}
		if rec.calls != 0 {
			t.Fatalf("a declined write was counted %d times", rec.calls)
		}
		h.lu.Execute(cmd, res)
		if rec.calls != 1 || rec.kind != KindWrite || rec.bytes != bs || rec.status != StatusGood {
			t.Fatalf("Stats told %d times, last %v %d bytes status %#x", rec.calls, rec.kind, rec.bytes, rec.status)
		}
	})
}

// TestExecuteAsyncReusesCommand runs writes one after the other through
// one Command and Result, as a transport recycling its tasks does: a
// failure must not leak into the next command's outcome.
func TestExecuteAsyncReusesCommand(t *testing.T) {
	h, dev := newAsyncHarness(t, nil)
	v := testView{0: h.lu}
	cmd, res := &Command{Nexus: h.n}, &Result{}
	for i, devErr := range []error{errReplicaLost, nil, backend.ErrOutOfRange, nil} {
		cmd.CDB, cmd.DataOut = cdbRW10(opWrite10, uint32(i), 1, 0), fill(512, byte(i+1))
		done := make(chan struct{})
		if !ExecuteAsync(v, cmd, res, func() { close(done) }, nil) {
			t.Fatalf("write %d: not started", i)
		}
		_, started := dev.starts()
		started[i].complete(devErr)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("write %d: done never ran", i)
		}
		checkResult(t, cmd, res, nil, 0)
		if (res.Status == StatusGood) != (devErr == nil) {
			t.Fatalf("write %d with device error %v: status %#x", i, devErr, res.Status)
		}
		if cmd.started.lu != nil || cmd.started.done != nil {
			t.Fatalf("write %d: the command still holds its started write after done", i)
		}
	}
}

// TestExecuteAsyncWritesShareBlocks checks that overlapping writes start
// side by side, as Execute runs them, and that an exclusive command on
// their blocks waits for the last of them.
func TestExecuteAsyncWritesShareBlocks(t *testing.T) {
	h, dev := newAsyncHarness(t, nil)
	v := testView{0: h.lu}
	a := startAsync(v, h.n, cdbRW10(opWrite10, 0, 2, 0), fill(1024, 'a'), nil)
	b := startAsync(v, h.n, cdbRW10(opWrite10, 1, 2, 0), fill(1024, 'b'), nil)
	if !a.started || !b.started {
		t.Fatalf("overlapping writes started: %v, %v", a.started, b.started)
	}
	_, started := dev.starts()
	if len(started) != 2 {
		t.Fatalf("%d writes reached the device, want 2", len(started))
	}
	caw := make(chan *Result, 1)
	go func() {
		res := &Result{}
		out := append(fill(512, 'b'), fill(512, 'c')...)
		h.lu.Execute(&Command{Nexus: h.n, CDB: cdbCAW(1, 1, 0), DataOut: out}, res)
		caw <- res
	}()
	started[0].complete(nil)
	a.wait(t)
	select {
	case <-caw:
		t.Fatal("COMPARE AND WRITE ran while a write of its blocks was in flight")
	default:
	}
	started[1].complete(nil)
	b.wait(t)
	select {
	case res := <-caw:
		good.check(t, res) // it saw b's data: it ran after b
	case <-time.After(5 * time.Second):
		t.Fatal("COMPARE AND WRITE still waits after the writes completed")
	}
}
