package scsi

import (
	"math/bits"
	"sync"
	"unsafe"
)

// rangeLock serialises commands that must be atomic against everything
// else touching the same LBAs (COMPARE AND WRITE, ORWRITE, WRITE ATOMIC,
// SANITIZE, and each chunk EXTENDED COPY writes) with the commands that
// read or modify those LBAs.
//
// The LU's byte range is cut into 1 MiB regions hashed onto 64 stripes,
// each an RWMutex on its own cache line. READ, WRITE, WRITE SAME and UNMAP
// take the stripes of their range shared, so they never wait for each
// other; the atomic commands take them exclusively, so while one runs no
// overlapping command is half done and none starts. The cost on the READ
// and WRITE path is one uncontended RLock/RUnlock pair per stripe touched
// (one for a 4 KiB command) and no allocation. Stripes are always taken in
// ascending index order, which keeps multi-stripe holders deadlock free.
//
// Regions that share a stripe (1 MiB apart modulo 64 MiB) are serialised
// together; that only costs concurrency while an exclusive holder runs.
type rangeLock struct {
	stripes [lockStripes]lockStripe
}

const (
	lockStripes     = 64 // one bit each in a uint64 mask
	lockRegionShift = 20 // 1 MiB regions
)

type lockStripe struct {
	sync.RWMutex
	_ [(64 - unsafe.Sizeof(sync.RWMutex{})%64) % 64]byte
}

// rangeHold is a taken range; release gives it back. It is a value so
// taking and releasing a range does not allocate.
type rangeHold struct {
	rl   *rangeLock
	mask uint64
	excl bool
}

// stripeMask returns the stripes covering the bytes [off, off+n).
func stripeMask(off, n int64) uint64 {
	if n <= 0 || off < 0 {
		return 0
	}
	first := uint64(off) >> lockRegionShift
	last := uint64(off+n-1) >> lockRegionShift
	if last-first >= lockStripes-1 {
		return ^uint64(0)
	}
	var m uint64
	for i := first; i <= last; i++ {
		m |= 1 << (i % lockStripes)
	}
	return m
}

// acquire takes the stripes of [off, off+n), exclusively or shared.
func (rl *rangeLock) acquire(off, n int64, excl bool) rangeHold {
	return rl.acquireMask(stripeMask(off, n), excl)
}

// acquireAll takes the whole LU (SANITIZE, capacity-wide operations).
func (rl *rangeLock) acquireAll(excl bool) rangeHold {
	return rl.acquireMask(^uint64(0), excl)
}

func (rl *rangeLock) acquireMask(mask uint64, excl bool) rangeHold {
	for m := mask; m != 0; m &= m - 1 {
		s := &rl.stripes[bits.TrailingZeros64(m)]
		if excl {
			s.Lock()
		} else {
			s.RLock()
		}
	}
	return rangeHold{rl: rl, mask: mask, excl: excl}
}

// tryAcquireShared takes the stripes of [off, off+n) shared if none is
// held exclusively or waited for; false, holding nothing, otherwise.
func (rl *rangeLock) tryAcquireShared(off, n int64) (rangeHold, bool) {
	mask := stripeMask(off, n)
	for m := mask; m != 0; m &= m - 1 {
		if !rl.stripes[bits.TrailingZeros64(m)].TryRLock() {
			rangeHold{rl: rl, mask: mask &^ m}.release()
			return rangeHold{}, false
		}
	}
	return rangeHold{rl: rl, mask: mask}, true
}

func (h rangeHold) release() {
	for m := h.mask; m != 0; m &= m - 1 {
		s := &h.rl.stripes[bits.TrailingZeros64(m)]
		if h.excl {
			s.Unlock()
		} else {
			s.RUnlock()
		}
	}
}

// lockBlocks takes the LBA range [lba, lba+blocks) of the LU.
func (r request) lockBlocks(lba uint64, blocks uint64, excl bool) rangeHold {
	sh := r.st.shift
	if blocks == 0 || lba>>(63-sh) != 0 || blocks>>(63-sh) != 0 {
		if blocks == 0 {
			return rangeHold{}
		}
		return r.lu.rl.acquireAll(excl)
	}
	return r.lu.rl.acquire(int64(lba<<sh), int64(blocks<<sh), excl)
}
