package replication

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func testState(t testing.TB) replicaState {
	b, err := NewBitmap(devSize, region)
	if err != nil {
		t.Fatal(err)
	}
	b.Set(3*region, 2*region)
	b.Set(devSize-1, 1)
	return replicaState{node: "node-c", epoch: 7, compare: true, dirty: b}
}

// reseal recomputes the trailing CRC-32C of a state file after a test
// changed it, so that the decoder gets past the checksum.
func reseal(b []byte) []byte {
	binary.BigEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], crc32c))
	return b
}

func TestReplicaStateDecode(t *testing.T) {
	good, err := testState(t).marshal()
	if err != nil {
		t.Fatal(err)
	}
	st, err := decodeReplicaState(good)
	if err != nil {
		t.Fatal(err)
	}
	if st.node != "node-c" || st.epoch != 7 || !st.compare || st.dirty.Count() != 3 {
		t.Fatalf("decoded %+v (%d regions)", st, st.dirty.Count())
	}
	if again, _ := st.marshal(); !bytes.Equal(again, good) {
		t.Fatal("re-encoding differs")
	}
	for _, tc := range []struct {
		name   string
		change func([]byte) []byte
		want   string
	}{
		{"short", func(b []byte) []byte { return b[:10] }, "10 bytes"},
		{"magic", func(b []byte) []byte { b[0] = 'X'; return reseal(b) }, "magic"},
		{"unknown version", func(b []byte) []byte { b[5] = 2; return reseal(b) }, "unknown version 2"},
		{"checksum", func(b []byte) []byte { b[len(b)-5] ^= 1; return b }, "checksum"},
		{"unknown flag", func(b []byte) []byte { b[7] |= 2; return reseal(b) }, "unknown flags"},
		{"empty node", func(b []byte) []byte { b[16] = 0; return reseal(b) }, "node name of 0 bytes"},
		{"node past the end", func(b []byte) []byte { b[16] = 255; return reseal(b) }, "node name of 255 bytes"},
		{"bad bitmap", func(b []byte) []byte { b[stateHead+6+3] = 'X'; return reseal(b) }, "bad bitmap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeReplicaState(tc.change(slices.Clone(good)))
			if !errors.Is(err, ErrBadReplicaState) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("decode: %v, want ErrBadReplicaState about %q", err, tc.want)
			}
		})
	}
}

func FuzzReplicaState(f *testing.F) {
	good, err := testState(f).marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add([]byte("HTRS"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := decodeReplicaState(data)
		if err != nil {
			if !errors.Is(err, ErrBadReplicaState) {
				t.Fatalf("error %v is not ErrBadReplicaState", err)
			}
			return
		}
		again, err := st.marshal()
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", st, err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("re-encoding differs:\n%x\n%x", again, data)
		}
	})
}

// persistedCluster is an owner "a" with replicas b and c whose volume
// keeps its state files in dir.
func persistedCluster(t *testing.T, dir string) *cluster {
	t.Helper()
	c := newCluster(t, 200*time.Millisecond, "b", "c")
	c.vol = newPersistedVolume(t, c, dir, 1, c.peers, nil)
	return c
}

func newPersistedVolume(t *testing.T, c *cluster, dir string, epoch uint64, inSync, resync []*Peer) *Volume {
	t.Helper()
	v, err := NewVolume(VolumeConfig{Device: "lun", Local: c.local, Epoch: epoch, Self: "a", InSync: inSync,
		Resync: resync, Membership: c.members, Timeout: 200 * time.Millisecond, Logger: testLogger(t), StateDir: dir, ResumeState: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.StopResync)
	return v
}

// onDisk returns node's state file, nil when there is none.
func onDisk(t *testing.T, dir, node string) *replicaState {
	t.Helper()
	st, err := readReplicaState(filepath.Join(dir, dirtyFileName(node)))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return &st
}

// covers reports whether every region b marks is marked in disk.
func covers(disk, b *Bitmap) bool {
	for e, ok := b.Next(0); ok; e, ok = b.Next(e.End()) {
		for off := e.Off; off < e.End(); off += b.RegionSize() {
			if !disk.isSet(off) {
				return false
			}
		}
	}
	return true
}

func (b *Bitmap) isSet(off int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := off / b.region
	return b.words[r/64]&(1<<(r%64)) != 0
}

// TestDirtyBitmapSurvivesRestart: once a write is acknowledged without a
// replica, the regions it missed are in its state file; a volume of the
// same epoch started over the same directory (the owner restarted)
// resumes from them, copying only those, and removes the file once the
// replica is back; one of another epoch compares everything.
func TestDirtyBitmapSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	c := persistedCluster(t, dir)
	v := c.vol
	if err := v.WriteAt(pattern(64<<10, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, dirtyFilePrefix+"*")); len(files) != 0 || v.store.saved.Load() != 0 {
		t.Fatalf("all in sync, and the volume saved state: %v", files)
	}
	c.devs[1].FailWrites(errInjected)
	for i := range 12 {
		if err := v.WriteAt(pattern(8192, byte(10+i)), int64(i)*(384<<10)+4096, i%3 == 0); err != nil {
			t.Fatal(err)
		}
		st := onDisk(t, dir, "c")
		if st == nil || st.epoch != 1 || !covers(st.dirty, v.Dirty("c")) {
			t.Fatalf("after write %d acknowledged without c, its state file %+v does not cover its bitmap", i, st)
		}
	}
	if err := v.unmap(5<<20, 256<<10); err != nil {
		t.Fatal(err)
	}
	if st := onDisk(t, dir, "c"); !covers(st.dirty, v.Dirty("c")) {
		t.Fatal("an unmap missed by c is not in its state file")
	}
	want := v.Dirty("c").Count()
	c.devs[1].FailWrites(nil)

	// The owner restarts in the same epoch, c out of the in-sync set.
	v.StopResync()
	before := c.devs[1].Counts().Written
	v2 := newPersistedVolume(t, c, dir, 1, c.peers[:1], c.peers[1:])
	waitInSync(t, v2, "c")
	if copied := c.devs[1].Counts().Written - before; copied != want*region {
		t.Fatalf("the resumed resync wrote %d bytes to c, want its %d dirty regions", copied, want)
	}
	if !bytes.Equal(c.devs[1].Snapshot(), c.local.Snapshot()) {
		t.Fatal("c differs from the owner after its resync")
	}
	waitFor(t, "c's state file removed", func() bool { return onDisk(t, dir, "c") == nil })

	// c is dropped again; a volume of a later epoch (another owner may
	// have written meanwhile) does not trust the file.
	c.devs[1].FailWrites(errInjected)
	if err := v2.WriteAt(pattern(4096, 3), 0, false); err != nil {
		t.Fatal(err)
	}
	if onDisk(t, dir, "c") == nil {
		t.Fatal("no state file for c after its drop")
	}
	v2.StopResync()
	v3 := newPersistedVolume(t, c, dir, 2, c.peers[:1], nil)
	if v3.Dirty("c") != nil || onDisk(t, dir, "c") != nil {
		t.Fatal("the state file of epoch 1 was used in epoch 2")
	}
}

// TestDirtyStateNotResumed: an owner not allowed to resume its bitmaps (a
// cluster version before fsm.ClusterVersionReplicaState: an older binary
// may have run since) drops them, even in the same epoch.
func TestDirtyStateNotResumed(t *testing.T) {
	dir := t.TempDir()
	c := persistedCluster(t, dir)
	c.devs[1].FailWrites(errInjected)
	if err := c.vol.WriteAt(pattern(8192, 1), 4096, false); err != nil {
		t.Fatal(err)
	}
	if onDisk(t, dir, "c") == nil {
		t.Fatal("no state file for c after its drop")
	}
	c.vol.StopResync()
	v, err := NewVolume(VolumeConfig{Device: "lun", Local: c.local, Epoch: 1, Self: "a", InSync: c.peers[:1],
		Membership: c.members, Timeout: 200 * time.Millisecond, Logger: testLogger(t), StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.StopResync)
	if v.Dirty("c") != nil || onDisk(t, dir, "c") != nil {
		t.Fatal("a state file was resumed without ResumeState")
	}
}

// TestDirtyStateUnreadable: a corrupt state file means "unknown": the
// replica is compared in full, never taken as clean.
func TestDirtyStateUnreadable(t *testing.T) {
	dir := t.TempDir()
	c := newCluster(t, 200*time.Millisecond, "b", "c")
	st := testState(t)
	st.node, st.epoch, st.compare = "c", 1, false
	data, err := st.marshal()
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-1] ^= 1
	if err := os.WriteFile(filepath.Join(dir, dirtyFileName("c")), data, 0o600); err != nil {
		t.Fatal(err)
	}
	newPersistedVolume(t, c, dir, 1, c.peers[:1], c.peers[1:])
	// The volume counts c as a member before it proposes the readmission.
	waitFor(t, "c readmitted", func() bool { return len(c.members.readmitted()) > 0 })
	if got := c.members.readmitted(); !slices.Equal(got, []string{"lun@1:c"}) {
		t.Fatalf("readmissions %v", got)
	}
	if c.devs[1].Counts().Written != 0 {
		t.Fatal("identical copies, and the comparison copied something")
	}
}

// TestDirtyStateUnwritable: a write whose missed regions cannot reach the
// disk fails, and is not applied locally.
func TestDirtyStateUnwritable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	c := persistedCluster(t, dir)
	c.devs[1].FailWrites(errInjected)
	if err := c.vol.WriteAt(pattern(4096, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil { // a file where the directory was
		t.Fatal(err)
	}
	before := c.local.Snapshot()
	if err := c.vol.WriteAt(pattern(4096, 2), 1<<20, false); err == nil {
		t.Fatal("a write missed by c was acknowledged without its state file")
	}
	if !bytes.Equal(c.local.Snapshot(), before) {
		t.Fatal("the failed write reached the owner's copy")
	}
}

// TestRetainForgetsFormerReplicas: once a node is no longer a replica,
// the volume forgets its bitmap, on disk too, so that a node made a
// replica again is compared in full rather than trusted from a bitmap
// that ignores what happened to its disk meanwhile.
func TestRetainForgetsFormerReplicas(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	c := persistedCluster(t, dir)
	c.devs[1].FailWrites(errInjected)
	if err := c.vol.WriteAt(pattern(4096, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	if c.vol.Dirty("c") == nil {
		t.Fatal("no bitmap for the replica that failed")
	}
	file := filepath.Join(dir, dirtyFileName("c"))
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("the failed replica's bitmap is not on disk: %v", err)
	}

	c.vol.Retain([]string{"a", "b", "c"})
	if c.vol.Dirty("c") == nil {
		t.Fatal("the bitmap of a replica that still is one was forgotten")
	}
	c.vol.Retain([]string{"a", "b", "d"})
	if c.vol.Dirty("c") != nil {
		t.Fatal("the bitmap of a former replica is kept")
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the former replica's state file: %v, want it removed", err)
	}
}
