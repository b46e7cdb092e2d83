package replication

import (
	"slices"
	"sync"
)

// The activity log is what a replica remembers of the last writes it
// received for a device: the regions (of ActivityRegion bytes) of its last
// ActivityEntries writes and unmaps, in flight or done. When an owner
// fails, the writes it had in flight may have reached some replicas and
// not others; those are among the last each replica received, so the new
// owner, after sealing the old epoch, reads every replica's log and makes
// the union of the regions identical on all of them (DRBD's activity log,
// kept in memory).
const (
	ActivityRegion  = 1 << 20
	ActivityEntries = 4096
)

type activityLog struct {
	mu   sync.Mutex
	ring [ActivityEntries]Extent
	n    int // entries used
	pos  int // next slot
}

// add records a write of n bytes at off (n > 0), in whole regions.
func (a *activityLog) add(off, n int64) {
	if n <= 0 {
		return
	}
	start := off &^ (ActivityRegion - 1)
	end := off + n
	if r := end & (ActivityRegion - 1); r != 0 && end <= MaxOffset-ActivityRegion {
		end += ActivityRegion - r
	}
	e := Extent{Off: start, Len: end - start}
	a.mu.Lock()
	defer a.mu.Unlock()
	// Sequential writes hit the same region many times in a row.
	if a.n > 0 {
		last := &a.ring[(a.pos+ActivityEntries-1)%ActivityEntries]
		if e.Off >= last.Off && e.End() <= last.End() {
			return
		}
	}
	a.ring[a.pos] = e
	a.pos = (a.pos + 1) % ActivityEntries
	a.n = min(a.n+1, ActivityEntries)
}

// extents returns the logged regions merged, in offset order.
func (a *activityLog) extents() []Extent {
	a.mu.Lock()
	ext := make([]Extent, a.n)
	copy(ext, a.ring[:a.n])
	a.mu.Unlock()
	return mergeExtents(ext)
}

// mergeExtents sorts ext and merges overlapping or touching extents, in
// place.
func mergeExtents(ext []Extent) []Extent {
	slices.SortFunc(ext, func(x, y Extent) int {
		switch {
		case x.Off < y.Off:
			return -1
		case x.Off > y.Off:
			return 1
		}
		return 0
	})
	out := ext[:0]
	for _, e := range ext {
		if e.Len <= 0 {
			continue
		}
		if k := len(out) - 1; k >= 0 && e.Off <= out[k].End() {
			out[k].Len = max(out[k].End(), e.End()) - out[k].Off
			continue
		}
		out = append(out, e)
	}
	return out
}
