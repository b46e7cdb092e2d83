package replication

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
)

// DefaultRegionSize is the granularity of dirty bitmaps: a write anywhere
// in a region marks all of it.
const DefaultRegionSize = 64 << 10

// Bitmap records which regions of a device a replica may lack. It is safe
// for concurrent use: the owner's writes set bits while a resync clears
// them.
type Bitmap struct {
	mu     sync.Mutex
	region int64
	size   int64
	words  []uint64
	count  int64
	// ver counts the changes, so that a persister rewrites only the
	// bitmaps that changed; marks, when set, is bumped whenever a region
	// becomes marked, so that a writer can tell whether a mark it made is
	// on disk yet (persist.go).
	ver   uint64
	marks *atomic.Uint64
}

// NewBitmap returns an empty bitmap of a device of size bytes in regions
// of region bytes (a power of two, at least 512).
func NewBitmap(size, region int64) (*Bitmap, error) {
	if region < 512 || region&(region-1) != 0 {
		return nil, fmt.Errorf("replication: bitmap region of %d bytes: want a power of two of at least 512", region)
	}
	if size < 0 || size > MaxOffset {
		return nil, fmt.Errorf("replication: bitmap of a %d-byte device", size)
	}
	n := (size + region - 1) / region
	if (n+63)/64 > maxBitmapWords {
		return nil, fmt.Errorf("replication: bitmap of a %d-byte device in %d-byte regions is too large", size, region)
	}
	return &Bitmap{region: region, size: size, words: make([]uint64, (n+63)/64)}, nil
}

// RegionSize is the bytes one bit stands for.
func (b *Bitmap) RegionSize() int64 { return b.region }

// Size is the size of the device the bitmap covers.
func (b *Bitmap) Size() int64 { return b.size }

// regions returns the regions [first, last] that [off, off+n) touches,
// clipped to the device; ok is false when none.
func (b *Bitmap) regions(off, n int64) (first, last int64, ok bool) {
	if n <= 0 || off >= b.size || off < 0 {
		return 0, 0, false
	}
	end := min(off+n, b.size)
	if end <= off { // overflow
		end = b.size
	}
	return off / b.region, (end - 1) / b.region, true
}

// Set marks every region [off, off+n) touches.
func (b *Bitmap) Set(off, n int64) { b.set(off, n, true) }

// setMoved is Set for regions the caller moves from another watched
// bitmap: they are not new marks to persist.
func (b *Bitmap) setMoved(off, n int64) { b.set(off, n, false) }

func (b *Bitmap) set(off, n int64, mark bool) {
	first, last, ok := b.regions(off, n)
	if !ok {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	count := b.count
	for r := first; r <= last; r++ {
		w, m := r/64, uint64(1)<<(r%64)
		if b.words[w]&m == 0 {
			b.words[w] |= m
			b.count++
		}
	}
	if mark {
		b.markedLocked(count)
	} else if b.count != count {
		b.ver++
	}
}

// markedLocked notes a change that marked regions if the count grew from
// before.
func (b *Bitmap) markedLocked(before int64) {
	if b.count == before {
		return
	}
	b.ver++
	if b.count > before && b.marks != nil {
		b.marks.Add(1)
	}
}

// Clear unmarks every region [off, off+n) touches: call it for a range
// copied in whole regions, as Next returns them.
func (b *Bitmap) Clear(off, n int64) {
	first, last, ok := b.regions(off, n)
	if !ok {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	count := b.count
	for r := first; r <= last; r++ {
		w, m := r/64, uint64(1)<<(r%64)
		if b.words[w]&m != 0 {
			b.words[w] &^= m
			b.count--
		}
	}
	b.markedLocked(count)
}

// ClearAll unmarks every region.
func (b *Bitmap) ClearAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.count != 0 {
		clear(b.words)
		b.count = 0
		b.ver++
	}
}

// Or marks every region o marks; o must have the same geometry.
func (b *Bitmap) Or(o *Bitmap) error {
	if b == o {
		return nil
	}
	if b.region != o.region || b.size != o.size {
		return fmt.Errorf("replication: bitmap of %d bytes in %d-byte regions cannot take one of %d in %d",
			b.size, b.region, o.size, o.region)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	b.mu.Lock()
	defer b.mu.Unlock()
	before := b.count
	var count int64
	for i, w := range o.words {
		b.words[i] |= w
		count += int64(bits.OnesCount64(b.words[i]))
	}
	b.count = count
	b.markedLocked(before)
	return nil
}

// version returns the count of changes so far.
func (b *Bitmap) version() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ver
}

// clone returns a copy of b, unwatched.
func (b *Bitmap) clone() *Bitmap {
	b.mu.Lock()
	defer b.mu.Unlock()
	return &Bitmap{region: b.region, size: b.size, words: slices.Clone(b.words), count: b.count}
}

// Count is the number of marked regions.
func (b *Bitmap) Count() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.count
}

// Next returns the first run of marked regions at or after byte from, as a
// byte extent clipped to the device, and false when there is none. A
// resync walks the bitmap with it: for e, ok := b.Next(0); ok; e, ok =
// b.Next(e.End()).
func (b *Bitmap) Next(from int64) (Extent, bool) {
	if from < 0 {
		from = 0
	}
	if from >= b.size {
		return Extent{}, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	nregions := int64(len(b.words)) * 64
	r := from / b.region
	// The first marked region at or after r...
	for r < nregions {
		if w := b.words[r/64] >> (r % 64); w != 0 {
			r += int64(bits.TrailingZeros64(w))
			break
		}
		r += 64 - r%64
	}
	if r >= nregions {
		return Extent{}, false
	}
	first := r
	// ...and the first unmarked one after it. Bits beyond the last region
	// are never set, so the run ends at the device's end at the latest.
	for r < nregions {
		if w := ^b.words[r/64] >> (r % 64); w != 0 {
			r += int64(bits.TrailingZeros64(w))
			break
		}
		r += 64 - r%64
	}
	off := max(first*b.region, from)
	last := (b.size + b.region - 1) / b.region
	end := min(min(r, last)*b.region, b.size)
	if end <= off {
		return Extent{}, false
	}
	return Extent{Off: off, Len: end - off}, true
}

// Bitmap persistence format, big-endian:
//
//	magic[4] "HTBM" | version u16 | reserved u16 | region u64 | size u64 |
//	words (u64 each, (size/region rounded up)/64 rounded up) | CRC-32C u32
//
// The CRC covers everything before it, so a torn or corrupted file is
// refused rather than believed.
const (
	bitmapMagic   = "HTBM"
	bitmapVersion = 1
	bitmapHead    = 24
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// ErrBadBitmap wraps every reason UnmarshalBinary refuses its input.
var ErrBadBitmap = errors.New("replication: bad bitmap")

// MarshalBinary encodes the bitmap for persistence.
func (b *Bitmap) MarshalBinary() ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]byte, 0, bitmapHead+8*len(b.words)+4)
	out = append(out, bitmapMagic...)
	out = binary.BigEndian.AppendUint16(out, bitmapVersion)
	out = binary.BigEndian.AppendUint16(out, 0)
	out = binary.BigEndian.AppendUint64(out, uint64(b.region))
	out = binary.BigEndian.AppendUint64(out, uint64(b.size))
	for _, w := range b.words {
		out = binary.BigEndian.AppendUint64(out, w)
	}
	return binary.BigEndian.AppendUint32(out, crc32.Checksum(out, crc32c)), nil
}

// maxBitmapWords bounds what UnmarshalBinary allocates: 2^62 bytes in 512-
// byte regions would be far more than any file we wrote.
const maxBitmapWords = 1 << 28

// UnmarshalBinary replaces b with the bitmap data encodes.
func (b *Bitmap) UnmarshalBinary(data []byte) error {
	if len(data) < bitmapHead+4 {
		return fmt.Errorf("%w: %d bytes", ErrBadBitmap, len(data))
	}
	body, sum := data[:len(data)-4], binary.BigEndian.Uint32(data[len(data)-4:])
	switch {
	case string(body[:4]) != bitmapMagic:
		return fmt.Errorf("%w: magic %q", ErrBadBitmap, body[:4])
	case binary.BigEndian.Uint16(body[4:]) != bitmapVersion:
		return fmt.Errorf("%w: unknown version %d (this build reads version %d)", ErrBadBitmap,
			binary.BigEndian.Uint16(body[4:]), bitmapVersion)
	case binary.BigEndian.Uint16(body[6:]) != 0:
		return fmt.Errorf("%w: reserved bits set", ErrBadBitmap)
	case crc32.Checksum(body, crc32c) != sum:
		return fmt.Errorf("%w: checksum mismatch", ErrBadBitmap)
	}
	region, size := binary.BigEndian.Uint64(body[8:]), binary.BigEndian.Uint64(body[16:])
	if region < 512 || region > MaxOffset || region&(region-1) != 0 || size > MaxOffset {
		return fmt.Errorf("%w: %d bytes in %d-byte regions", ErrBadBitmap, size, region)
	}
	nwords := ((size+region-1)/region + 63) / 64
	if nwords > maxBitmapWords || uint64(len(body)-bitmapHead) != nwords*8 {
		return fmt.Errorf("%w: %d bytes of bits for %d bytes in %d-byte regions", ErrBadBitmap,
			len(body)-bitmapHead, size, region)
	}
	words := make([]uint64, nwords)
	var count int64
	for i := range words {
		words[i] = binary.BigEndian.Uint64(body[bitmapHead+8*i:])
		count += int64(bits.OnesCount64(words[i]))
	}
	// Bits beyond the last region would make Next report extents past the
	// device.
	if n := (size + region - 1) / region; n%64 != 0 && nwords > 0 && words[nwords-1]>>(n%64) != 0 {
		return fmt.Errorf("%w: bits set beyond the device", ErrBadBitmap)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.region, b.size, b.words, b.count = int64(region), int64(size), words, count
	b.ver++
	if count > 0 && b.marks != nil {
		b.marks.Add(1)
	}
	return nil
}
