package replication

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/backend/backendtest"
)

func testActivityFile() []byte {
	return encodeActivityLog([]activityEntry{
		{Extent{0, ActivityRegion}, 1},
		{Extent{5 * ActivityRegion, 2 * ActivityRegion}, 2},
		{Extent{9 * ActivityRegion, ActivityRegion}, ActivityEntries + 3}, // the ring wrapped
	})
}

func TestActivityLogDecode(t *testing.T) {
	entries, err := decodeActivityLog(testActivityFile())
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 || entries[2].Seq != ActivityEntries+3 || entries[1].Off != 5*ActivityRegion {
		t.Fatalf("decoded %v", entries)
	}
	if _, err := decodeActivityLog(encodeActivityLog(nil)); err != nil {
		t.Fatalf("empty log: %v", err)
	}
	slot := func(i int) int { return activitySlotLen * (1 + i) }
	for _, tc := range []struct {
		name   string
		change func([]byte) []byte
		want   string // "" when it decodes, without the torn slot
	}{
		{"short", func(b []byte) []byte { return b[:100] }, "100 bytes"},
		{"magic", func(b []byte) []byte { b[0] = 'X'; return b }, "magic"},
		{"unknown version", func(b []byte) []byte { b[5] = 2; return b }, "unknown version 2"},
		{"header checksum", func(b []byte) []byte { b[9] ^= 1; return b }, "header checksum"},
		{"torn slot", func(b []byte) []byte { b[slot(1)+3] ^= 1; return b }, ""},
		{"entry in the wrong slot", func(b []byte) []byte {
			putActivitySlot(b[slot(7):], activityEntry{Extent{0, ActivityRegion}, 1})
			return b
		}, "slot 7 holds entry 1"},
		{"unaligned entry", func(b []byte) []byte {
			putActivitySlot(b[slot(0):], activityEntry{Extent{512, ActivityRegion}, 1})
			return b
		}, "slot 0 holds entry 1"},
		{"empty extent", func(b []byte) []byte {
			putActivitySlot(b[slot(0):], activityEntry{Extent{0, 0}, 1})
			return b
		}, "slot 0 holds entry 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries, err := decodeActivityLog(tc.change(testActivityFile()))
			if tc.want == "" {
				if err != nil || len(entries) != 2 {
					t.Fatalf("decode: %v, %v; want the 2 entries not torn", entries, err)
				}
				return
			}
			if !errors.Is(err, ErrBadActivityLog) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("decode: %v, want ErrBadActivityLog about %q", err, tc.want)
			}
		})
	}
}

func FuzzActivityLog(f *testing.F) {
	f.Add(testActivityFile())
	f.Add(encodeActivityLog(nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := decodeActivityLog(data)
		if err != nil {
			if !errors.Is(err, ErrBadActivityLog) {
				t.Fatalf("error %v is not ErrBadActivityLog", err)
			}
			return
		}
		again, err := decodeActivityLog(encodeActivityLog(entries))
		if err != nil || !slices.Equal(again, entries) {
			t.Fatalf("re-encoded %v decodes to %v, %v", entries, again, err)
		}
	})
}

// TestActivityLogFile: the log survives a restart (a new log opened on
// the same file), past a wrapped ring; a write to an extent logged
// recently adds no entry; an unreadable file is replaced and the whole
// device reported active.
func TestActivityLogFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lun.repl", "activity")
	reopen := func() *activityLog {
		t.Helper()
		a := new(activityLog)
		if err := a.open(path, 1<<40); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.close() })
		return a
	}
	a := reopen()
	for _, e := range []Extent{{5, 10}, {ActivityRegion - 1, 2}, {10 * ActivityRegion, 1}} {
		if err := a.add(e.Off, e.Len); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.add(5*ActivityRegion, 1); err != nil {
		t.Fatal(err)
	}
	if err := a.add(0, 1); err != nil { // region 0, logged two entries ago
		t.Fatal(err)
	}
	if a.seq != 4 {
		t.Fatalf("%d entries, want 4", a.seq)
	}
	want := a.extents()
	if got := reopen().extents(); !equalExtents(got, want) {
		t.Fatalf("after a restart: %v, want %v", got, want)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != activityFileLen {
		t.Fatalf("log file %v, %v", fi, err)
	}

	a = reopen()
	for i := range ActivityEntries + 10 {
		if err := a.add(int64(100+i)*ActivityRegion, 1); err != nil {
			t.Fatal(err)
		}
	}
	want = a.extents()
	if len(want) != 1 || want[0] != (Extent{110 * ActivityRegion, ActivityEntries * ActivityRegion}) {
		t.Fatalf("after wrapping: %v", want)
	}
	b := reopen()
	if got := b.extents(); !equalExtents(got, want) {
		t.Fatalf("after wrapping and a restart: %v, want %v", got, want)
	}
	if err := b.add(3*ActivityRegion, 1); err != nil {
		t.Fatal(err)
	}
	// The new entry evicts the oldest.
	want = []Extent{{3 * ActivityRegion, ActivityRegion}, {111 * ActivityRegion, (ActivityEntries - 1) * ActivityRegion}}
	if got := reopen().extents(); !equalExtents(got, want) {
		t.Fatalf("after an entry added past a restart: %v, want %v", got, want)
	}

	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := new(activityLog)
	if err := c.open(path, 1<<40); !errors.Is(err, ErrBadActivityLog) {
		t.Fatalf("open of a corrupt log: %v", err)
	}
	defer c.close()
	if got := c.extents(); !equalExtents(got, []Extent{{0, 1 << 40}}) {
		t.Fatalf("a corrupt log reports %v, want the whole device", got)
	}
	if err := c.add(0, 1); err != nil {
		t.Fatalf("the replaced log refuses writes: %v", err)
	}
}

// TestServerActivityLogSurvivesRestart: a replica that restarts reports
// the regions of the writes it received before.
func TestServerActivityLogSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "activity")
	dev := backendtest.NewThin(devSize)
	r := newReplica(t, "b", "k")
	r.srv.SetDevices(map[string]ReplicaDevice{"lun": {Device: dev, Owner: "a", Epoch: 1, ActivityFile: path}})
	p := r.peer(t, "a", "k", time.Second)
	ctx := context.Background()
	if err := p.Write(ctx, "lun", 1, 1, 3*ActivityRegion+512, pattern(4096, 1), false); err != nil {
		t.Fatal(err)
	}
	if err := p.Unmap(ctx, "lun", 1, 2, 6*ActivityRegion, 4096); err != nil {
		t.Fatal(err)
	}
	want := []Extent{{3 * ActivityRegion, ActivityRegion}, {6 * ActivityRegion, ActivityRegion}}
	r2 := newReplica(t, "b", "k")
	r2.srv.SetDevices(map[string]ReplicaDevice{"lun": {Device: dev, Owner: "a", Epoch: 1, ActivityFile: path}})
	if got := r2.srv.ActivityLog("lun"); !equalExtents(got, want) {
		t.Fatalf("after a restart the log holds %v, want %v", got, want)
	}
	r2.srv.SetDevices(nil) // closes the file
}

// TestServerActivityLogUnwritable: a replica whose log cannot be kept
// refuses writes rather than apply them unlogged.
func TestServerActivityLogUnwritable(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dev := backendtest.NewThin(devSize)
	r := newReplica(t, "b", "k")
	r.srv.SetDevices(map[string]ReplicaDevice{"lun": {Device: dev, Owner: "a", Epoch: 1,
		ActivityFile: filepath.Join(blocker, "activity")}})
	p := r.peer(t, "a", "k", time.Second)
	if err := p.Write(context.Background(), "lun", 1, 1, 0, pattern(4096, 1), false); !errors.Is(err, ErrReplicaIO) {
		t.Fatalf("write without a log: %v, want ErrReplicaIO", err)
	}
	if !bytes.Equal(dev.Snapshot(), make([]byte, devSize)) {
		t.Fatal("the write reached the copy")
	}
}

// BenchmarkActivityAdd: what the log costs a replica's write. "recent" is
// a write to one of 256 regions logged recently (the common case); "new"
// one to a region not logged recently, which with a file waits for a
// write and an fdatasync of its slot (on the disk of TMPDIR); "parallel"
// has 32 writers share commits.
func BenchmarkActivityAdd(b *testing.B) {
	for _, bc := range []struct {
		name     string
		file     bool
		new      bool
		parallel bool
	}{
		{"memory/recent", false, false, false},
		{"memory/new", false, true, false},
		{"file/recent", true, false, false},
		{"file/new", true, true, false},
		{"file/new/parallel", true, true, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			a := new(activityLog)
			if bc.file {
				if err := a.open(filepath.Join(b.TempDir(), "activity"), MaxOffset); err != nil {
					b.Fatal(err)
				}
				defer a.close()
			}
			var n atomic.Int64
			add := func() {
				i := n.Add(1)
				off := (i % 256) * ActivityRegion
				if bc.new {
					off = (1024 + i) * ActivityRegion
				}
				if err := a.add(off, 4096); err != nil {
					b.Error(err)
				}
			}
			for range 256 {
				add()
			}
			b.ReportAllocs()
			b.ResetTimer()
			if bc.parallel {
				b.SetParallelism(16)
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						add()
					}
				})
				return
			}
			for range b.N {
				add()
			}
		})
	}
}
