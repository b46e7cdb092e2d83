package replication

import (
	"bytes"
	"context"
	"errors"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/backend/backendtest"
)

// patience bounds the wait for an event a test expects: far beyond what
// it takes, so that only a hang fails.
const patience = 5 * time.Second

// writeResult is a backend.WriteDone that keeps what it is given. Its
// channel has room for a second outcome, so that a write completed twice
// is caught rather than blocking the goroutine that completed it.
type writeResult struct {
	calls atomic.Int32
	ch    chan error
}

func newWriteResult() *writeResult { return &writeResult{ch: make(chan error, 2)} }

func (w *writeResult) WriteDone(err error) {
	if w.calls.Add(1) <= 2 {
		w.ch <- err
	}
}

// wait returns the write's outcome.
func (w *writeResult) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-w.ch:
		return err
	case <-time.After(patience):
		t.Fatal("a started write was never completed")
		return nil
	}
}

// pending fails the test if the write completes within d.
func (w *writeResult) pending(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case err := <-w.ch:
		t.Fatalf("the write completed (%v) while it should still wait", err)
	case <-time.After(d):
	}
}

// once fails the test unless the write was completed exactly once.
func (w *writeResult) once(t *testing.T) {
	t.Helper()
	if n := w.calls.Load(); n != 1 {
		t.Fatalf("done called %d times", n)
	}
}

// mustStart starts a write that StartWrite must take.
func mustStart(t *testing.T, v *Volume, p []byte, off int64, plug *backend.Plug) *writeResult {
	t.Helper()
	w := newWriteResult()
	if !v.StartWrite(p, off, false, w, plug) {
		t.Fatalf("StartWrite refused %d bytes at %d", len(p), off)
	}
	return w
}

// writeAPIs start a write through WriteAt or through StartWrite (plugged,
// as a transport does, and unplugged at once), so that the failure tests
// can hold StartWrite to what WriteAt does.
var writeAPIs = []struct {
	name  string
	start func(t *testing.T, v *Volume, p []byte, off int64) (wait func() error)
}{
	{"WriteAt", func(t *testing.T, v *Volume, p []byte, off int64) func() error {
		ch := make(chan error, 1)
		go func() { ch <- v.WriteAt(p, off, false) }()
		return func() error {
			t.Helper()
			select {
			case err := <-ch:
				return err
			case <-time.After(patience):
				t.Fatal("WriteAt never returned")
				return nil
			}
		}
	}},
	{"StartWrite", func(t *testing.T, v *Volume, p []byte, off int64) func() error {
		var plug backend.Plug
		w := mustStart(t, v, p, off, &plug)
		plug.Unplug()
		return func() error {
			t.Helper()
			err := w.wait(t)
			w.once(t)
			return err
		}
	}},
}

// quickLocal makes v deem its local copy quick for its next 200 writes
// at least, however long they take: under -race a 4 KiB write to a
// memDevice takes about inlineLatency, which would make StartWrite take
// or refuse writes by the machine's speed. TestInlineGauge tests the
// gauge itself.
func quickLocal(v *Volume) { v.inline.slow.Store(math.MinInt64 / 2) }

// entered waits until a write reached the gate of a device's HoldWrites.
func entered(t *testing.T, atDisk <-chan struct{}) {
	t.Helper()
	select {
	case <-atDisk:
	case <-time.After(patience):
		t.Fatal("the write never reached the replica's disk")
	}
}

// TestStartWriteConcurrent: writes started together, from several
// goroutines each with its own plug (or none), all complete with nil,
// and every copy has them.
func TestStartWriteConcurrent(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replicas []string
		plugged  bool
	}{
		{"two replicas, plugged", []string{"b", "c"}, true},
		{"two replicas, no plug", []string{"b", "c"}, false},
		{"no replica", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, patience, tc.replicas...)
			quickLocal(c.vol)
			const writers, perWriter, size = 4, 16, 4096
			results := make([]*writeResult, writers*perWriter)
			data := make([][]byte, writers*perWriter)
			var wg sync.WaitGroup
			for g := range writers {
				wg.Go(func() {
					var plug backend.Plug
					var pl *backend.Plug
					if tc.plugged {
						pl = &plug
					}
					for i := range perWriter {
						// Interleaved, so that adjacent ranges are in
						// flight at once from different goroutines.
						k := i*writers + g
						data[k] = pattern(size, byte(k))
						w := newWriteResult()
						if !c.vol.StartWrite(data[k], int64(k)*size, false, w, pl) {
							t.Errorf("StartWrite refused the write at %d", k*size)
							continue
						}
						results[k] = w
						// With nothing to wait for, the local write
						// concludes it on the caller's goroutine.
						if tc.replicas == nil && w.calls.Load() != 1 {
							t.Errorf("the write at %d without replicas was not done when StartWrite returned", k*size)
						}
					}
					plug.Unplug()
				})
			}
			started := make(chan struct{})
			go func() { wg.Wait(); close(started) }()
			select {
			case <-started:
			case <-time.After(patience):
				t.Fatal("StartWrite blocked")
			}
			for k, w := range results {
				if w == nil {
					continue
				}
				if err := w.wait(t); err != nil {
					t.Errorf("write at %d: %v", k*size, err)
				}
				w.once(t)
			}
			if t.Failed() {
				t.FailNow()
			}
			want := c.local.SnapshotAt(0, len(data)*size)
			for k, p := range data {
				if !bytes.Equal(want[k*size:(k+1)*size], p) {
					t.Fatalf("the local copy lacks the write at %d", k*size)
				}
			}
			for i, d := range c.devs {
				if !bytes.Equal(d.SnapshotAt(0, len(want)), want) {
					t.Fatalf("replica %s differs from the owner's copy", c.replicas[i].name)
				}
			}
			if got := c.members.dropped(); len(got) != 0 {
				t.Fatalf("drops %v", got)
			}
			if got := c.vol.InSync(); !slices.Equal(got, tc.replicas) {
				t.Fatalf("in sync %v, want %v", got, tc.replicas)
			}
		})
	}
}

// TestStartWritePlugHoldsFrames: what a plugged StartWrite sends waits for
// Unplug, so the write completes only then; the local copy has it at
// once.
func TestStartWritePlugHoldsFrames(t *testing.T) {
	c := newCluster(t, patience, "b", "c")
	quickLocal(c.vol)
	// An answer just received keeps the peers' watchdogs from pinging, and
	// flushing the held frame with the ping, during the wait below.
	if err := c.vol.WriteAt(pattern(4096, 1), 1<<20, false); err != nil {
		t.Fatal(err)
	}
	var before []int
	for _, d := range c.devs {
		n := d.Counts().Writes
		before = append(before, n)
	}
	var plug backend.Plug
	p := pattern(8192, 2)
	w := mustStart(t, c.vol, p, 0, &plug)
	if !bytes.Equal(c.local.SnapshotAt(0, 8192), p) {
		t.Fatal("StartWrite returned before writing the local copy")
	}
	w.pending(t, 100*time.Millisecond)
	for i, d := range c.devs {
		if n := d.Counts().Writes; n != before[i] {
			t.Fatalf("replica %s got the write before the plug was unplugged", c.replicas[i].name)
		}
	}
	plug.Unplug()
	if err := w.wait(t); err != nil {
		t.Fatal(err)
	}
	w.once(t)
	for i, d := range c.devs {
		if !bytes.Equal(d.SnapshotAt(0, 8192), p) {
			t.Fatalf("replica %s lacks the write", c.replicas[i].name)
		}
	}
}

// blockedDrops is a Membership whose drops wait for gate, so that a test
// sees the volume while a drop is in progress.
type blockedDrops struct {
	fakeMembership
	entered chan string
	gate    chan struct{}
}

func (m *blockedDrops) Drop(ctx context.Context, device string, epoch uint64, node string) error {
	m.entered <- node
	select {
	case <-m.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return m.fakeMembership.Drop(ctx, device, epoch, node)
}

// refusal is a write StartWrite must refuse, on a volume set up for it.
type refusal struct {
	v       *Volume
	copies  []*backendtest.Thin // whose writes are counted: the local one first
	p       []byte
	off     int64
	durable bool
	// finish, when set, ends the write in flight that made StartWrite
	// refuse, which adds extra[i] writes to copies[i] (nil: none).
	finish func()
	extra  []int
	// retry, when set, is where StartWrite takes a 4 KiB write once
	// finish ran: the refusal left no range locked.
	retry *int64
	// slowLocal: the refusal is the local copy's slowness, which the
	// test must not paper over with quickLocal.
	slowLocal bool
	// resyncing: a resync takes sequence numbers meanwhile.
	resyncing bool
}

func at(off int64) *int64 { return &off }

// TestStartWriteRefused: StartWrite returns false having done nothing
// (no copy written, done never called, no sequence number taken) for
// what it leaves to WriteAt.
func TestStartWriteRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) refusal
	}{
		{"durable", func(t *testing.T) refusal {
			c := newCluster(t, patience, "b", "c")
			return refusal{v: c.vol, copies: append([]*backendtest.Thin{c.local}, c.devs...), p: pattern(4096, 9), durable: true, retry: at(0)}
		}},
		{"empty", func(t *testing.T) refusal {
			c := newCluster(t, patience, "b", "c")
			return refusal{v: c.vol, copies: append([]*backendtest.Thin{c.local}, c.devs...), p: []byte{}, retry: at(0)}
		}},
		{"beyond the end", func(t *testing.T) refusal {
			c := newCluster(t, patience, "b", "c")
			return refusal{v: c.vol, copies: append([]*backendtest.Thin{c.local}, c.devs...), p: pattern(4096, 9), off: devSize - 2048, retry: at(0)}
		}},
		{"negative offset", func(t *testing.T) refusal {
			c := newCluster(t, patience, "b", "c")
			return refusal{v: c.vol, copies: append([]*backendtest.Thin{c.local}, c.devs...), p: pattern(4096, 9), off: -4096, retry: at(0)}
		}},
		{"more than MaxDataLen", func(t *testing.T) refusal {
			// A local copy large enough that only MaxDataLen refuses it.
			c := newCluster(t, patience, "b")
			local := backendtest.NewThin(MaxDataLen + 8192)
			v, err := NewVolume(VolumeConfig{Device: "lun", Local: local, Epoch: 1, Self: "a", InSync: c.peers,
				Membership: c.members, Timeout: patience, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			quickLocal(v)
			p := make([]byte, MaxDataLen+4096) // pattern is slow under -race
			p[0] = 9
			return refusal{v: v, copies: []*backendtest.Thin{local, c.devs[0]}, p: p, retry: at(0)}
		}},
		{"local copy slow lately", func(t *testing.T) refusal {
			c := newCluster(t, patience, "b", "c")
			for range 8 {
				c.vol.inline.observe(time.Second)
			}
			return refusal{v: c.vol, copies: append([]*backendtest.Thin{c.local}, c.devs...), p: pattern(4096, 9), slowLocal: true}
		}},
		{"overlaps a WriteAt in flight", func(t *testing.T) refusal {
			c := newCluster(t, patience, "b", "c")
			atDisk, release := c.devs[0].HoldWrites()
			t.Cleanup(release)
			done := make(chan error, 1)
			go func() { done <- c.vol.WriteAt(pattern(8192, 1), 0, false) }()
			entered(t, atDisk)
			// Only b's part of it is left once the others have it.
			waitFor(t, "the owner and c to have the write", func() bool {
				l := c.local.Counts().Writes
				n := c.devs[1].Counts().Writes
				return l == 1 && n == 1
			})
			return refusal{v: c.vol, copies: append([]*backendtest.Thin{c.local}, c.devs...), p: pattern(4096, 9), off: 4096,
				finish: func() {
					release()
					select {
					case err := <-done:
						if err != nil {
							t.Fatal(err)
						}
					case <-time.After(patience):
						t.Fatal("the WriteAt in flight never returned")
					}
				}, extra: []int{0, 1, 0}, retry: at(4096)}
		}},
		{"overlaps a StartWrite in flight", func(t *testing.T) refusal {
			c := newCluster(t, patience, "b", "c")
			quickLocal(c.vol)
			// Plugged: it stays in flight until finish unplugs.
			plug := new(backend.Plug)
			w := mustStart(t, c.vol, pattern(8192, 1), 0, plug)
			return refusal{v: c.vol, copies: append([]*backendtest.Thin{c.local}, c.devs...), p: pattern(4096, 9), off: 4096,
				finish: func() {
					plug.Unplug()
					if err := w.wait(t); err != nil {
						t.Fatal(err)
					}
					w.once(t)
				}, extra: []int{0, 1, 1}, retry: at(4096)}
		}},
		{"a node out of sync", func(t *testing.T) refusal {
			c := newCluster(t, patience, "b", "c")
			c.vol.Update(1, c.peers[:1], nil)
			return refusal{v: c.vol, copies: append([]*backendtest.Thin{c.local}, c.devs...), p: pattern(4096, 9)}
		}},
		{"a resync running", func(t *testing.T) refusal {
			// Slow enough that the resync is still running.
			o := newOutOfSync(t, patience, 1<<20, nil, nil, &fakeMembership{})
			if len(o.vol.Resync()) == 0 {
				t.Fatal("no resync running")
			}
			// d is written by its resync: only the others are counted.
			return refusal{v: o.vol, copies: []*backendtest.Thin{o.local, o.b}, p: pattern(4096, 9), resyncing: true}
		}},
		{"a drop in progress", func(t *testing.T) refusal {
			c := newCluster(t, patience, "b", "c")
			// Room for c too, should it time out as well under load.
			m := &blockedDrops{entered: make(chan string, 2), gate: make(chan struct{})}
			v, err := NewVolume(VolumeConfig{Device: "lun", Local: c.local, Epoch: 1, Self: "a", InSync: c.peers,
				Membership: m, Timeout: 50 * time.Millisecond, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			// b hangs: the write times out, and b's drop waits for gate.
			_, release := c.devs[0].HoldWrites()
			t.Cleanup(release)
			done := make(chan error, 1)
			go func() { done <- v.WriteAt(pattern(4096, 1), 1<<20, false) }()
			select {
			case <-m.entered:
			case <-time.After(patience):
				t.Fatal("b was never dropped")
			}
			waitFor(t, "c to have the write", func() bool { return c.devs[1].Counts().Writes == 1 })
			return refusal{v: v, copies: append([]*backendtest.Thin{c.local}, c.devs...), p: pattern(4096, 9),
				finish: func() {
					close(m.gate)
					release()
					select {
					case err := <-done:
						if err != nil {
							t.Fatal(err)
						}
					case <-time.After(patience):
						t.Fatal("the WriteAt that dropped b never returned")
					}
					// b applies the released write after the WriteAt gave
					// up on it.
					waitFor(t, "b to apply the released write", func() bool { return c.devs[0].Counts().Writes == 1 })
				}, extra: []int{0, 1, 0}}
		}},
		{"closed", func(t *testing.T) refusal {
			c := newCluster(t, patience, "b", "c")
			if err := c.vol.Close(); err != nil {
				t.Fatal(err)
			}
			return refusal{v: c.vol, copies: append([]*backendtest.Thin{c.local}, c.devs...), p: pattern(4096, 9)}
		}},
		{"fenced", func(t *testing.T) refusal {
			c := newCluster(t, patience, "b", "c")
			c.replicas[0].srv.SetDevices(map[string]ReplicaDevice{"lun": {Device: c.devs[0], Owner: "a", Epoch: 2}})
			if err := c.vol.WriteAt(pattern(4096, 1), 1<<20, false); !errors.Is(err, ErrFenced) {
				t.Fatalf("write after the epoch moved: %v", err)
			}
			return refusal{v: c.vol, copies: append([]*backendtest.Thin{c.local}, c.devs...), p: pattern(4096, 9)}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.setup(t)
			if !r.slowLocal {
				quickLocal(r.v)
			}
			var writes []int
			for _, d := range r.copies {
				n := d.Counts().Writes
				writes = append(writes, n)
			}
			seq := r.v.seq.Load()
			w := newWriteResult()
			if r.v.StartWrite(r.p, r.off, r.durable, w, nil) {
				t.Fatal("StartWrite took the write")
			}
			if got := r.v.seq.Load(); got != seq && !r.resyncing {
				t.Fatalf("a refused write took sequence number %d", got)
			}
			if r.finish != nil {
				r.finish()
			}
			for i, d := range r.copies {
				want := writes[i]
				if r.extra != nil {
					want += r.extra[i]
				}
				if n := d.Counts().Writes; n != want {
					t.Fatalf("copy %d got %d writes, want %d", i, n-writes[i], want-writes[i])
				}
				if len(r.p) > 0 && r.off >= 0 && r.off+int64(len(r.p)) <= d.Size() &&
					bytes.Equal(d.SnapshotAt(r.off, len(r.p)), r.p) {
					t.Fatalf("copy %d holds the refused write", i)
				}
			}
			if n := w.calls.Load(); n != 0 {
				t.Fatalf("done called %d times for a refused write", n)
			}
			if r.retry != nil {
				p := pattern(4096, 10)
				w := mustStart(t, r.v, p, *r.retry, nil)
				if err := w.wait(t); err != nil {
					t.Fatal(err)
				}
				w.once(t)
				for i, d := range r.copies {
					if !bytes.Equal(d.SnapshotAt(*r.retry, 4096), p) {
						t.Fatalf("copy %d lacks the write taken after the refusal", i)
					}
				}
			}
		})
	}
}

// replicaFailures break replica b of a two-replica cluster during a
// write; arm runs before the write starts and returns what runs once it
// has (nil: nothing).
var replicaFailures = []struct {
	name string
	arm  func(t *testing.T, c *cluster) (during func())
}{
	{"connection cut", func(t *testing.T, c *cluster) func() {
		atDisk, release := c.devs[0].HoldWrites()
		t.Cleanup(release)
		return func() {
			entered(t, atDisk)
			c.replicas[0].cut()
		}
	}},
	{"replica disk error", func(t *testing.T, c *cluster) func() {
		c.devs[0].FailWrites(errInjected)
		return nil
	}},
	// The call fails inside StartWrite, before StartWrite returns.
	{"peer closed", func(t *testing.T, c *cluster) func() {
		c.peers[0].Close()
		return nil
	}},
}

// TestStartWriteReplicaFails: a replica failing a write is dropped and
// the write succeeds without it, or, when the drop fails, the write
// fails with ErrNotReplicated and the replica stays in sync with the
// write recorded as missed, for StartWrite as for WriteAt.
func TestStartWriteReplicaFails(t *testing.T) {
	for _, f := range replicaFailures {
		for _, dropFails := range []bool{false, true} {
			for _, api := range writeAPIs {
				name := f.name + "/drop succeeds/" + api.name
				if dropFails {
					name = f.name + "/drop fails/" + api.name
				}
				t.Run(name, func(t *testing.T) {
					c := newCluster(t, patience, "b", "c")
					quickLocal(c.vol)
					if dropFails {
						c.members.mu.Lock()
						c.members.err = errInjected
						c.members.mu.Unlock()
					}
					during := f.arm(t, c)
					p := pattern(4096, 7)
					wait := api.start(t, c.vol, p, 0)
					if during != nil {
						during()
					}
					err := wait()
					checkFailedReplica(t, c, err, dropFails, p)
				})
			}
		}
	}
}

// checkFailedReplica checks the outcome of a write of p at 0 that b
// failed and c took.
func checkFailedReplica(t *testing.T, c *cluster, err error, dropFails bool, p []byte) {
	t.Helper()
	if dropFails {
		if !errors.Is(err, ErrNotReplicated) || !errors.Is(err, errInjected) {
			t.Fatalf("write b failed and that could not be dropped: %v", err)
		}
		if got := c.vol.InSync(); !slices.Equal(got, []string{"b", "c"}) {
			t.Fatalf("in sync %v: b must stay", got)
		}
	} else {
		if err != nil {
			t.Fatalf("write b failed: %v", err)
		}
		if got := c.vol.InSync(); !slices.Equal(got, []string{"c"}) {
			t.Fatalf("in sync %v, want c", got)
		}
	}
	if got := c.members.dropped(); !slices.Equal(got, []string{"lun@1:b"}) {
		t.Fatalf("drops %v, want b in epoch 1", got)
	}
	if bm := c.vol.Dirty("b"); bm == nil || !bm.isSet(0) {
		t.Fatal("the write b missed is not in its dirty bitmap")
	}
	if c.vol.Dirty("c") != nil {
		t.Fatal("c has a dirty bitmap")
	}
	if !bytes.Equal(c.local.SnapshotAt(0, len(p)), p) || !bytes.Equal(c.devs[1].SnapshotAt(0, len(p)), p) {
		t.Fatal("the owner or c lacks the write")
	}
}

// TestStartWriteReplicaHangs: a replica that never answers is given up
// after the volume's Timeout, then dropped (or the write fails with
// ErrNotReplicated), for StartWrite as for WriteAt.
func TestStartWriteReplicaHangs(t *testing.T) {
	const timeout = 100 * time.Millisecond
	for _, dropFails := range []bool{false, true} {
		for _, api := range writeAPIs {
			name := "drop succeeds/" + api.name
			if dropFails {
				name = "drop fails/" + api.name
			}
			t.Run(name, func(t *testing.T) {
				c := newCluster(t, timeout, "b", "c")
				quickLocal(c.vol)
				if dropFails {
					c.members.mu.Lock()
					c.members.err = errInjected
					c.members.mu.Unlock()
				}
				_, release := c.devs[0].HoldWrites()
				t.Cleanup(release)
				p := pattern(4096, 7)
				start := time.Now()
				err := api.start(t, c.vol, p, 0)()
				if took := time.Since(start); took < timeout {
					t.Fatalf("the write completed after %s, before the volume's timeout", took)
				}
				if dropFails && !errors.Is(err, ErrTimeout) {
					t.Fatalf("the error does not say b timed out: %v", err)
				}
				checkFailedReplica(t, c, err, dropFails, p)
			})
		}
	}
}

// TestStartWriteTimerRace runs writes whose timeout fires at about the
// time their answers arrive, so that under -race an op or a call reused
// while its timer's expire still reads it is reported. The drops fail,
// so that the replica stays in sync and StartWrite keeps taking writes.
func TestStartWriteTimerRace(t *testing.T) {
	var timedOut, ok atomic.Int64
	for _, timeout := range []time.Duration{time.Microsecond, 30 * time.Microsecond, 100 * time.Microsecond, 300 * time.Microsecond, time.Millisecond} {
		c := newCluster(t, timeout, "b")
		quickLocal(c.vol)
		c.members.mu.Lock()
		c.members.err = errInjected
		c.members.mu.Unlock()
		const inFlight, rounds = 8, 25
		for round := range rounds {
			var plug backend.Plug
			var results [inFlight]*writeResult
			for i := range inFlight {
				off := int64(i) * 4096
				p := pattern(4096, byte(round+i))
				results[i] = newWriteResult()
				if !c.vol.StartWrite(p, off, false, results[i], &plug) {
					// A drop in progress: WriteAt, as a transport does,
					// which must not wait behind frames this goroutine
					// holds back.
					plug.Unplug()
					results[i].WriteDone(c.vol.WriteAt(p, off, false))
				}
			}
			plug.Unplug()
			for _, w := range results {
				switch err := w.wait(t); {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, ErrNotReplicated):
					if errors.Is(err, ErrTimeout) {
						timedOut.Add(1)
					}
				default:
					t.Fatalf("timeout %s: %v", timeout, err)
				}
				w.once(t)
			}
		}
	}
	t.Logf("%d writes timed out, %d succeeded", timedOut.Load(), ok.Load())
	if timedOut.Load() == 0 {
		t.Fatal("no write timed out: the test did not run the timer")
	}
}

// TestStartWriteStaleEpoch: a replica in a newer epoch fences the volume
// and fails the write with ErrFenced, dropping nobody, for StartWrite as
// for WriteAt; StartWrite then refuses writes.
func TestStartWriteStaleEpoch(t *testing.T) {
	for _, api := range writeAPIs {
		t.Run(api.name, func(t *testing.T) {
			c := newCluster(t, patience, "b", "c")
			quickLocal(c.vol)
			c.replicas[0].srv.SetDevices(map[string]ReplicaDevice{"lun": {Device: c.devs[0], Owner: "a", Epoch: 2}})
			err := api.start(t, c.vol, pattern(4096, 1), 0)()
			var se *StaleEpochError
			if !errors.Is(err, ErrFenced) || !errors.As(err, &se) || se.Node != "b" || se.Epoch != 2 {
				t.Fatalf("write to a replica in a newer epoch: %v", err)
			}
			if !c.vol.Fenced() {
				t.Fatal("the volume is not fenced")
			}
			if got := c.members.dropped(); len(got) != 0 {
				t.Fatalf("a fenced volume dropped %v", got)
			}
			w := newWriteResult()
			if c.vol.StartWrite(pattern(4096, 2), 8192, false, w, nil) {
				t.Fatal("StartWrite took a write on a fenced volume")
			}
			if err := c.vol.WriteAt(pattern(4096, 2), 8192, false); !errors.Is(err, ErrFenced) {
				t.Fatalf("WriteAt on a fenced volume: %v", err)
			}
		})
	}
}

// TestStartWriteMaxDataLen: a write of exactly MaxDataLen bytes, the
// most one frame carries, is taken and reaches every copy whole.
func TestStartWriteMaxDataLen(t *testing.T) {
	c := newCluster(t, patience, "b")
	quickLocal(c.vol)
	p := make([]byte, MaxDataLen) // pattern is slow under -race
	p[0], p[len(p)-1] = 1, 2
	w := mustStart(t, c.vol, p, 0, nil)
	if err := w.wait(t); err != nil {
		t.Fatal(err)
	}
	w.once(t)
	// Its ends: comparing all of it is slow under -race.
	for _, d := range []*backendtest.Thin{c.local, c.devs[0]} {
		if !bytes.Equal(d.SnapshotAt(0, 4096), p[:4096]) || !bytes.Equal(d.SnapshotAt(MaxDataLen-4096, 4096), p[MaxDataLen-4096:]) {
			t.Fatal("a copy lacks the write")
		}
	}
}

// TestStartWriteLocalFails: the local copy's error is the write's, and
// no replica is dropped for it, for StartWrite as for WriteAt.
func TestStartWriteLocalFails(t *testing.T) {
	for _, api := range writeAPIs {
		t.Run(api.name, func(t *testing.T) {
			c := newCluster(t, patience, "b", "c")
			quickLocal(c.vol)
			c.local.FailWrites(errInjected)
			if err := api.start(t, c.vol, pattern(4096, 1), 0)(); !errors.Is(err, errInjected) {
				t.Fatalf("write with a failing local copy: %v", err)
			}
			if got := c.members.dropped(); len(got) != 0 {
				t.Fatalf("drops %v", got)
			}
			if got := c.vol.InSync(); !slices.Equal(got, []string{"b", "c"}) {
				t.Fatalf("in sync %v", got)
			}
		})
	}
}

// TestStartWriteMemberLeaves: a replica that leaves the in-sync set while
// a StartWrite is in flight to it may or may not have the write, which
// its dirty bitmap records; the write succeeds.
func TestStartWriteMemberLeaves(t *testing.T) {
	c := newCluster(t, patience, "b", "c")
	quickLocal(c.vol)
	var plug backend.Plug
	w := mustStart(t, c.vol, pattern(4096, 1), 0, &plug)
	c.vol.Update(1, c.peers[:1], nil)
	plug.Unplug()
	if err := w.wait(t); err != nil {
		t.Fatal(err)
	}
	w.once(t)
	if bm := c.vol.Dirty("c"); bm == nil || !bm.isSet(0) {
		t.Fatal("the write in flight when c left is not in its dirty bitmap")
	}
	if c.vol.Dirty("b") != nil {
		t.Fatal("b has a dirty bitmap")
	}
	if got := c.members.dropped(); len(got) != 0 {
		t.Fatalf("drops %v", got)
	}
}

// TestStartWriteUnreachableReplica: a member that cannot be reached, its
// call waiting for a connection, is dropped by the write, for StartWrite
// as for WriteAt. A dial that hangs leaves the call waiting until the
// volume's timeout abandons it.
func TestStartWriteUnreachableReplica(t *testing.T) {
	const timeout = 100 * time.Millisecond
	for _, tc := range []struct {
		name string
		dial func(ctx context.Context, network, addr string) (net.Conn, error)
		slow bool // the write waits for the volume's timeout
	}{
		{"dial fails", func(context.Context, string, string) (net.Conn, error) { return nil, errInjected }, false},
		{"dial hangs", func(ctx context.Context, _, _ string) (net.Conn, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}, true},
	} {
		for _, api := range writeAPIs {
			t.Run(tc.name+"/"+api.name, func(t *testing.T) {
				c := newCluster(t, timeout, "b")
				// Its own dial timeout is far beyond the volume's.
				down, err := NewPeer(PeerConfig{Node: "z", Addr: "nowhere", Self: "a", Dial: tc.dial, Timeout: patience,
					Logger: testLogger(t)})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { down.Close() })
				v, err := NewVolume(VolumeConfig{Device: "lun", Local: c.local, Epoch: 1, Self: "a",
					InSync: []*Peer{c.peers[0], down}, Membership: c.members, Timeout: timeout, Logger: testLogger(t)})
				if err != nil {
					t.Fatal(err)
				}
				quickLocal(v)
				p := pattern(4096, 1)
				start := time.Now()
				if err := api.start(t, v, p, 0)(); err != nil {
					t.Fatalf("write with an unreachable replica: %v", err)
				}
				if took := time.Since(start); tc.slow && took < timeout {
					t.Fatalf("the write completed after %s, before the volume's timeout", took)
				}
				if got := c.members.dropped(); !slices.Equal(got, []string{"lun@1:z"}) {
					t.Fatalf("drops %v, want z", got)
				}
				if got := v.InSync(); !slices.Equal(got, []string{"b"}) {
					t.Fatalf("in sync %v, want b", got)
				}
				if !bytes.Equal(c.devs[0].SnapshotAt(0, len(p)), p) {
					t.Fatal("b lacks the write")
				}
			})
		}
	}
}

// TestStartWriteConnectionLostWhileHeld: a replica whose connection ends
// while the write's frame is still held back by the plug fails the write
// without waiting for Unplug (the frame is given back with the
// connection), and is dropped.
func TestStartWriteConnectionLostWhileHeld(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(c *cluster)
	}{
		{"connection cut", func(c *cluster) { c.replicas[0].cut() }},
		{"peer closed", func(c *cluster) { c.peers[0].Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, patience, "b")
			quickLocal(c.vol)
			var plug backend.Plug
			w := mustStart(t, c.vol, pattern(4096, 1), 0, &plug)
			tc.end(c)
			if err := w.wait(t); err != nil {
				t.Fatalf("write whose replica's connection ended: %v", err)
			}
			plug.Unplug()
			w.once(t)
			if got := c.members.dropped(); !slices.Equal(got, []string{"lun@1:b"}) {
				t.Fatalf("drops %v, want b", got)
			}
			if got := c.vol.InSync(); len(got) != 0 {
				t.Fatalf("in sync %v", got)
			}
			if bm := c.vol.Dirty("b"); bm == nil || !bm.isSet(0) {
				t.Fatal("the write b missed is not in its dirty bitmap")
			}
			if n := c.devs[0].Counts().Writes; n != 0 {
				t.Fatal("b got the frame that was held back")
			}
		})
	}
}
