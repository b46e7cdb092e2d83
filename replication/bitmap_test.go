package replication

import (
	"errors"
	"testing"
	"time"
)

func extentsOf(b *Bitmap) []Extent {
	var out []Extent
	for e, ok := b.Next(0); ok; e, ok = b.Next(e.End()) {
		out = append(out, e)
	}
	return out
}

func TestBitmap(t *testing.T) {
	const r = 64 << 10
	size := int64(200*r + 1000) // a partial last region
	for _, tc := range []struct {
		name  string
		set   []Extent
		clear []Extent
		want  []Extent
		count int64
	}{
		{"empty", nil, nil, nil, 0},
		{"one byte", []Extent{{r + 5, 1}}, nil, []Extent{{r, r}}, 1},
		{"straddling", []Extent{{r - 1, 2}}, nil, []Extent{{0, 2 * r}}, 2},
		{"merged runs", []Extent{{0, r}, {r, r}, {5 * r, 1}}, nil, []Extent{{0, 2 * r}, {5 * r, r}}, 3},
		{"across words", []Extent{{60 * r, 10 * r}}, nil, []Extent{{60 * r, 10 * r}}, 10},
		{"whole words", []Extent{{0, 130 * r}}, nil, []Extent{{0, 130 * r}}, 130},
		{"last region clipped", []Extent{{size - 1, 100}}, nil, []Extent{{200 * r, 1000}}, 1},
		{"beyond the device ignored", []Extent{{size, r}, {-5, 3}, {0, 0}}, nil, nil, 0},
		{"overflowing length", []Extent{{199 * r, MaxOffset}}, nil, []Extent{{199 * r, r + 1000}}, 2},
		{"clear", []Extent{{0, 10 * r}}, []Extent{{3 * r, 2 * r}}, []Extent{{0, 3 * r}, {5 * r, 5 * r}}, 8},
		{"clear everything", []Extent{{0, size}}, []Extent{{0, size}}, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := NewBitmap(size, r)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range tc.set {
				b.Set(e.Off, e.Len)
			}
			for _, e := range tc.clear {
				b.Clear(e.Off, e.Len)
			}
			if got := extentsOf(b); !equalExtents(got, tc.want) {
				t.Fatalf("extents %v, want %v", got, tc.want)
			}
			if b.Count() != tc.count {
				t.Fatalf("count %d, want %d", b.Count(), tc.count)
			}
			data, err := b.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var again Bitmap
			if err := again.UnmarshalBinary(data); err != nil {
				t.Fatal(err)
			}
			if !equalExtents(extentsOf(&again), tc.want) || again.Count() != tc.count || again.RegionSize() != r || again.Size() != size {
				t.Fatal("bitmap changed through MarshalBinary")
			}
		})
	}
}

func TestBitmapNextFromInside(t *testing.T) {
	b, _ := NewBitmap(1<<20, 4096)
	b.Set(8192, 3*4096)
	if e, ok := b.Next(10000); !ok || e != (Extent{10000, 5*4096 - 10000}) {
		t.Fatalf("Next(10000) = %v, %v", e, ok)
	}
	if _, ok := b.Next(5 * 4096); ok {
		t.Fatal("a run after the last one")
	}
}

func TestBitmapOr(t *testing.T) {
	a, _ := NewBitmap(1<<20, 4096)
	b, _ := NewBitmap(1<<20, 4096)
	a.Set(0, 4096)
	b.Set(0, 8192)
	b.Set(1<<19, 1)
	if err := a.Or(b); err != nil {
		t.Fatal(err)
	}
	if a.Count() != 3 {
		t.Fatalf("count %d after Or", a.Count())
	}
	c, _ := NewBitmap(1<<20, 8192)
	if err := a.Or(c); err == nil {
		t.Fatal("Or of another geometry")
	}
}

func TestBitmapRefuses(t *testing.T) {
	if _, err := NewBitmap(1<<20, 1000); err == nil {
		t.Fatal("a region that is not a power of two")
	}
	if _, err := NewBitmap(MaxOffset, 512); err == nil {
		t.Fatal("a bitmap too large to hold")
	}
	b, _ := NewBitmap(1<<20, 4096)
	b.Set(0, 1<<20)
	data, _ := b.MarshalBinary()
	for name, bad := range map[string][]byte{
		"short":     data[:10],
		"truncated": data[:len(data)-8],
		"flipped":   append(append([]byte(nil), data[:30]...), append([]byte{data[30] ^ 1}, data[31:]...)...),
	} {
		var x Bitmap
		if err := x.UnmarshalBinary(bad); !errors.Is(err, ErrBadBitmap) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestRangeLock(t *testing.T) {
	var l rangeLock
	a := l.lock(0, 100, true)
	// Disjoint and shared-with-shared do not wait.
	b := l.lock(100, 100, true)
	l.release(b)
	r1 := l.lock(200, 100, false)
	r2 := l.lock(250, 100, false)
	l.release(r1)
	l.release(r2)
	// An overlapping one waits for the earlier one.
	done := make(chan struct{})
	go func() {
		id := l.lock(50, 100, false)
		l.release(id)
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("overlapping lock did not wait")
	case <-time.After(50 * time.Millisecond):
	}
	l.release(a)
	<-done
}

func TestActivityLog(t *testing.T) {
	var a activityLog
	a.add(5, 10)                    // region 0
	a.add(ActivityRegion-1, 2)      // regions 0 and 1
	a.add(10*ActivityRegion, 1)     // region 10
	a.add(10*ActivityRegion+100, 1) // same region, not logged twice
	want := []Extent{{0, 2 * ActivityRegion}, {10 * ActivityRegion, ActivityRegion}}
	if got := a.extents(); !equalExtents(got, want) {
		t.Fatalf("activity %v, want %v", got, want)
	}
	if a.seq != 3 {
		t.Fatalf("%d entries", a.seq)
	}
	// It keeps the last ActivityEntries writes only.
	for i := range ActivityEntries {
		a.add(int64(100+i)*ActivityRegion, 1)
	}
	got := a.extents()
	if len(got) != 1 || got[0] != (Extent{100 * ActivityRegion, ActivityEntries * ActivityRegion}) {
		t.Fatalf("after wrapping: %v", got)
	}
}
