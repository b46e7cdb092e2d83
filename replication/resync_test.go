package replication

import (
	"bytes"
	"context"
	"math/rand"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/backend/backendtest"
)

const region = DefaultRegionSize

// outOfSync is an owner "a" with a local copy, an in-sync replica "b"
// holding the same bytes, and an out-of-sync replica "d" whose copy
// starts as dInit; the volume resyncs d from the start.
type outOfSync struct {
	local, b, d *backendtest.Thin
	bp, dp      *Peer
	dr          *replica
	members     *fakeMembership
	vol         *Volume
}

func newOutOfSync(t *testing.T, timeout time.Duration, rate int64, localInit, dInit []byte, m *fakeMembership) *outOfSync {
	t.Helper()
	o := &outOfSync{local: backendtest.NewThin(devSize), members: m}
	copy(o.local.Bytes(), localInit)
	br, b := replicaWith(t, "b", "k", "a", 1)
	copy(b.Bytes(), localInit)
	dr, d := replicaWith(t, "d", "k", "a", 1)
	copy(d.Bytes(), dInit)
	o.b, o.d, o.dr = b, d, dr
	o.bp = br.peer(t, "a", "k", time.Second)
	o.dp = dr.peer(t, "a", "k", time.Second)
	v, err := NewVolume(VolumeConfig{Device: "lun", Local: o.local, Epoch: 1, Self: "a", InSync: []*Peer{o.bp},
		Resync: []*Peer{o.dp}, Membership: m, Timeout: timeout, ResyncRate: rate, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	o.vol = v
	return o
}

func (o *outOfSync) sameCopies(t *testing.T) {
	t.Helper()
	want := o.local.Snapshot()
	if !bytes.Equal(o.b.Snapshot(), want) {
		t.Error("b differs from the owner's copy")
	}
	if got := o.d.Snapshot(); !bytes.Equal(got, want) {
		n := 0
		for off := 0; off < len(want); off += region {
			if !bytes.Equal(got[off:off+region], want[off:off+region]) {
				n++
			}
		}
		t.Errorf("d differs from the owner's copy in %d regions", n)
	}
}

func waitInSync(t *testing.T, v *Volume, node string) {
	t.Helper()
	waitFor(t, node+" back in the in-sync set", func() bool { return slices.Contains(v.InSync(), node) })
	waitFor(t, "the resync of "+node+" to end", func() bool { return len(v.Resync()) == 0 })
}

// TestResyncDirtyBitmap: a replica this volume dropped gets exactly the
// regions of its dirty bitmap copied, and is readmitted.
func TestResyncDirtyBitmap(t *testing.T) {
	c := newCluster(t, time.Second, "b", "c")
	v := c.vol
	for i := range 32 {
		if err := v.WriteAt(pattern(64<<10, byte(i)), int64(i)*(128<<10), false); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	c.devs[1].FailWrites(errInjected)
	if err := v.WriteAt(pattern(4096, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	if got := v.InSync(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("in sync %v after c failed", got)
	}
	c.devs[1].FailWrites(nil)
	for i := range 10 {
		if err := v.WriteAt(pattern(8192, byte(100+i)), int64(i)*(512<<10)+4096, false); err != nil {
			t.Fatal(err)
		}
	}
	dirty := v.Dirty("c").Count()
	if dirty != 10 { // region 0 holds one of the ten writes as well as the failed one
		t.Fatalf("%d dirty regions for c, want 10", dirty)
	}
	before := c.devs[1].Counts().Written
	v.Update(1, c.peers[:1], c.peers[1:])
	waitInSync(t, v, "c")
	if got := c.members.readmitted(); !slices.Equal(got, []string{"lun@1:c"}) {
		t.Fatalf("readmissions %v", got)
	}
	if copied := c.devs[1].Counts().Written - before; copied != dirty*region {
		t.Fatalf("the resync wrote %d bytes to c, want its %d dirty regions (%d bytes)", copied, dirty, dirty*region)
	}
	if v.Dirty("c") != nil {
		t.Fatal("c still has a dirty bitmap")
	}
	if !bytes.Equal(c.devs[1].Snapshot(), c.local.Snapshot()) {
		t.Fatal("c differs from the owner after its resync")
	}
	// c counts again: a write reaches it before it is acknowledged.
	if err := v.WriteAt(pattern(4096, 9), 7<<20, true); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.devs[1].Snapshot(), c.local.Snapshot()) {
		t.Fatal("c missed a write after its readmission")
	}
	if got := c.members.dropped(); !slices.Equal(got, []string{"lun@1:c"}) {
		t.Fatalf("drops %v", got)
	}
}

// TestResyncChecksumPass: a replica the volume knows nothing of is
// compared region by region, only the regions that differ are sent, and
// the pass keeps to the rate limit.
func TestResyncChecksumPass(t *testing.T) {
	data := pattern(devSize, 3)
	dInit := slices.Clone(data)
	differ := []int64{0, 5, 17, 64, 127} // regions
	for _, r := range differ {
		dInit[r*region+100] ^= 0xff
	}
	const rate = 16 << 20
	start := time.Now()
	o := newOutOfSync(t, time.Second, rate, data, dInit, &fakeMembership{})
	var sawComparing atomic.Bool
	waitFor(t, "d readmitted", func() bool {
		if p, ok := o.vol.Resync()["d"]; ok && p.State == ResyncComparing && p.Done > 0 && p.Total == devSize {
			sawComparing.Store(true)
		}
		return slices.Contains(o.vol.InSync(), "d")
	})
	took := time.Since(start)
	if !sawComparing.Load() {
		t.Error("the progress never showed a comparison of the whole device")
	}
	if min := time.Duration(float64(devSize-resyncChunk) / rate * float64(time.Second)); took < min {
		t.Errorf("compared %d bytes in %s: faster than %d B/s", devSize, took, rate)
	}
	if got, want := o.d.Counts().Written, int64(len(differ))*region; got != want {
		t.Errorf("the resync wrote %d bytes to d, want the %d regions that differ (%d bytes)", got, len(differ), want)
	}
	o.sameCopies(t)
	t.Logf("compared %d MiB in %s (limit %d MiB/s)", devSize>>20, took.Round(time.Millisecond), rate>>20)
}

// TestResyncConcurrentWrites: writes, unmaps and flushes run throughout
// the resync of a replica whose copy differs everywhere: none is lost on
// it, and none waits for it.
func TestResyncConcurrentWrites(t *testing.T) {
	for _, tc := range []struct {
		name string
		cut  bool // cut d's connections in the middle of the resync
	}{{"steady", false}, {"connection cut", true}} {
		t.Run(tc.name, func(t *testing.T) {
			data := pattern(devSize, 3)
			o := newOutOfSync(t, 5*time.Second, 24<<20, data, pattern(devSize, 77), &fakeMembership{})
			dev := o.vol.Device()
			var (
				wg   sync.WaitGroup
				stop atomic.Bool
				errs = make(chan error, 16)
				ops  atomic.Int64
			)
			for g := range 6 {
				wg.Go(func() {
					r := rand.New(rand.NewSource(int64(g)))
					for i := 0; !stop.Load(); i++ {
						var off int64
						if g%2 == 0 {
							off = int64(r.Intn(64)) * 4096 // a hot area: many overlaps
						} else {
							off = int64(r.Intn(devSize/4096-32)) * 4096
						}
						n := (r.Intn(32) + 1) * 4096
						var err error
						switch {
						case i%29 == 0:
							err = dev.(backend.Unmapper).Unmap(off, int64(n))
						case i%31 == 0:
							err = dev.Flush()
						default:
							err = dev.WriteAt(pattern(n, byte(g*64+i)), off, i%7 == 0)
						}
						if err != nil {
							errs <- err
							return
						}
						ops.Add(1)
					}
				})
			}
			if tc.cut {
				waitFor(t, "the resync to be under way", func() bool { return o.vol.Resync()["d"].Done >= 2<<20 })
				o.dr.cut()
			}
			waitInSync(t, o.vol, "d")
			time.Sleep(100 * time.Millisecond) // d counts now
			stop.Store(true)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if got := o.members.dropped(); len(got) != 0 {
				t.Fatalf("drops %v", got)
			}
			o.sameCopies(t)
			t.Logf("%d requests during the resync", ops.Load())
		})
	}
}

// TestResyncingReplicaNeverDelays: a replica being resynced that hangs or
// fails neither delays nor fails a write, nor is dropped; it catches up
// once it works again.
func TestResyncingReplicaNeverDelays(t *testing.T) {
	data := pattern(devSize, 3)
	o := newOutOfSync(t, 200*time.Millisecond, 8<<20, data, pattern(devSize, 5), &fakeMembership{})
	waitFor(t, "the resync to be under way", func() bool { return o.vol.Resync()["d"].Done > 0 })
	_, release := o.d.HoldWrites()
	for i := range 20 {
		start := time.Now()
		if err := o.vol.WriteAt(pattern(4096, byte(i)), int64(i)*(256<<10), false); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 150*time.Millisecond {
			t.Fatalf("a write took %s with the resyncing replica hung", d)
		}
	}
	o.d.FailWrites(errInjected)
	release()
	for i := range 20 {
		if err := o.vol.WriteAt(pattern(4096, byte(i+50)), int64(i)*(256<<10)+8192, false); err != nil {
			t.Fatal(err)
		}
	}
	if got := o.members.dropped(); len(got) != 0 {
		t.Fatalf("drops %v", got)
	}
	if slices.Contains(o.vol.InSync(), "d") {
		t.Fatal("a failing replica was readmitted")
	}
	waitFor(t, "the resync to retry", func() bool { return o.vol.Resync()["d"].State == ResyncRetrying })
	o.d.FailWrites(nil)
	waitInSync(t, o.vol, "d")
	o.sameCopies(t)
}

// TestReadmitOnlyAfterCatchUp: Readmit is proposed only once the replica
// holds everything, and by then writes already wait for it.
func TestReadmitOnlyAfterCatchUp(t *testing.T) {
	data := pattern(devSize, 3)
	m := &fakeMembership{}
	var o *outOfSync
	ready := make(chan struct{})
	var problems []string
	m.onReadmit = func(node string) {
		<-ready
		if !bytes.Equal(o.d.Snapshot(), o.local.Snapshot()) {
			problems = append(problems, "d differs from the owner when it is readmitted")
		}
		if !slices.Contains(o.vol.InSync(), "d") {
			problems = append(problems, "writes do not wait for d while it is readmitted")
		}
		if err := o.vol.WriteAt(pattern(4096, 42), 3<<20, false); err != nil {
			problems = append(problems, err.Error())
		}
		if !bytes.Equal(o.d.Snapshot()[3<<20:3<<20+4096], pattern(4096, 42)) {
			problems = append(problems, "a write acknowledged during the readmission is not on d")
		}
	}
	o = newOutOfSync(t, time.Second, 0, data, nil, m)
	close(ready)
	waitInSync(t, o.vol, "d")
	if len(problems) > 0 {
		t.Fatal(strings.Join(problems, "; "))
	}
	o.sameCopies(t)
}

// TestReadmitFailureKeepsOut: a readmission that fails leaves the replica
// out (dropped again, for the Readmit may have committed after all), and
// the resync retries until one succeeds.
func TestReadmitFailureKeepsOut(t *testing.T) {
	data := pattern(devSize, 3)
	m := &fakeMembership{readmitErr: errInjected}
	o := newOutOfSync(t, time.Second, 0, data, data, m)
	waitFor(t, "a failed readmission", func() bool {
		return len(m.readmitted()) >= 2 && len(m.dropped()) >= 1
	})
	if got := m.dropped(); got[0] != "lun@1:d" {
		t.Fatalf("drops %v", got)
	}
	waitFor(t, "d out, retrying", func() bool {
		return o.vol.Resync()["d"].State == ResyncRetrying && !slices.Contains(o.vol.InSync(), "d")
	})
	if err := o.vol.WriteAt(pattern(4096, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	m.readmitErr = nil
	m.mu.Unlock()
	waitInSync(t, o.vol, "d")
	o.sameCopies(t)
}

// TestResyncStops: a stopped resync ends its goroutines, and writes stop
// going to the node; its bitmap marks them instead.
func TestResyncStops(t *testing.T) {
	data := pattern(devSize, 3)
	o := newOutOfSync(t, time.Second, 4<<20, data, pattern(devSize, 9), &fakeMembership{})
	waitFor(t, "the resync to be under way", func() bool { return o.vol.Resync()["d"].Done > 0 })
	o.vol.Update(1, []*Peer{o.bp}, nil) // d went away
	o.vol.resyncWG.Wait()
	if len(o.vol.Resync()) != 0 {
		t.Fatal("a resync is still reported")
	}
	// Resync chunks sent before the stop may still land on d: what must
	// not is the write below.
	fresh := pattern(4096, 1)
	if err := o.vol.WriteAt(fresh, 6<<20, false); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(fresh))
	if err := o.d.ReadAt(got, 6<<20); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(got, fresh) {
		t.Fatal("a write went to a node no longer resynced")
	}
	if bm := o.vol.Dirty("d"); bm == nil || bm.Count() == 0 {
		t.Fatal("d has no dirty regions left")
	}
	// And it resumes (the whole comparison again: the bitmap stayed full).
	o.vol.Update(1, []*Peer{o.bp}, []*Peer{o.dp})
	waitInSync(t, o.vol, "d")
	o.sameCopies(t)
	o.vol.StopResync()
	if err := o.vol.Close(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkResync measures a resync over loopback TCP between in-memory
// copies of 64 MiB: copying a full dirty bitmap, and comparing copies that
// differ in one region out of 16.
func BenchmarkResync(b *testing.B) {
	const size = 64 << 20
	for _, mode := range []string{"copy", "compare"} {
		b.Run(mode, func(b *testing.B) {
			b.SetBytes(size)
			for range b.N {
				b.StopTimer()
				local := backendtest.NewThin(size)
				copy(local.Bytes(), pattern(size, 1))
				remote := backendtest.NewThin(size)
				if mode == "compare" {
					copy(remote.Bytes(), local.Bytes())
					for off := 0; off < size; off += 16 * region {
						remote.Bytes()[off] ^= 1
					}
				}
				srv := NewServer(ServerConfig{})
				srv.SetDevices(map[string]ReplicaDevice{"lun": {Device: remote, Owner: "a", Epoch: 1}})
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				go srv.Serve(l)
				p, err := Dial(context.Background(), PeerConfig{Node: "d", Addr: l.Addr().String(), Self: "a"})
				if err != nil {
					b.Fatal(err)
				}
				m := &fakeMembership{}
				v, err := NewVolume(VolumeConfig{Device: "lun", Local: local, Epoch: 1, Self: "a", Membership: m, ResyncRate: -1})
				if err != nil {
					b.Fatal(err)
				}
				if mode == "copy" {
					v.mu.Lock()
					v.dirtyLocked("d").Set(0, size)
					v.mu.Unlock()
				}
				b.StartTimer()
				v.Update(1, nil, []*Peer{p})
				for len(m.readmitted()) == 0 {
					time.Sleep(time.Millisecond)
				}
				b.StopTimer()
				if !bytes.Equal(remote.Snapshot(), local.Snapshot()) {
					b.Fatal("copies differ")
				}
				v.Close()
				p.Close()
				srv.Close()
			}
		})
	}
}

// TestSealFailureComparesAll: a member that cannot be sealed at promotion
// is dropped before the old owner's in-flight regions are reconciled, so
// it may differ anywhere: its resync compares the whole copy.
func TestSealFailureComparesAll(t *testing.T) {
	c := newCluster(t, 200*time.Millisecond, "b", "c")
	c.devs[1].Bytes()[5<<20] ^= 1     // an old owner's write only c got
	c.replicas[1].srv.SetDevices(nil) // c does not know the device: the seal fails
	if err := c.vol.Seal(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := c.vol.InSync(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("in sync %v after c failed the seal", got)
	}
	if bm := c.vol.Dirty("c"); bm == nil || bm.Count() != devSize/region {
		t.Fatal("c's bitmap does not cover the whole device")
	}
	c.replicas[1].srv.SetDevices(map[string]ReplicaDevice{"lun": {Device: c.devs[1], Owner: "a", Epoch: 1}})
	var phases []string
	c.vol.Update(1, c.peers[:1], c.peers[1:])
	waitFor(t, "c readmitted", func() bool {
		if p, ok := c.vol.Resync()["c"]; ok && (len(phases) == 0 || phases[len(phases)-1] != p.State) {
			phases = append(phases, p.State)
		}
		return slices.Contains(c.vol.InSync(), "c")
	})
	if slices.Contains(phases, ResyncCopying) {
		t.Errorf("phases %v: want a comparison, not a copy", phases)
	}
	if !bytes.Equal(c.devs[1].Snapshot(), c.local.Snapshot()) {
		t.Fatal("c differs from the owner after its resync")
	}
	if w := c.devs[1].Counts().Written; w != region {
		t.Fatalf("the resync wrote %d bytes to c, want the one region that differs", w)
	}
}
