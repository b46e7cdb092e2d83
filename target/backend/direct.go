package backend

import (
	"math/bits"
	"os"
	"sync"
	"unsafe"
)

// memAlign is the buffer address alignment blockio requires. The kernel
// usually needs less (the device's DMA alignment), but a page satisfies every
// device and filesystem.
const memAlign = 4096

// maxBounce caps one bounce buffer; larger requests are bounced in pieces so
// a huge transfer does not pin a huge buffer in the pool. Buffers come in
// power-of-two classes from memAlign up to it.
const (
	bounceClasses = 9
	maxBounce     = memAlign << (bounceClasses - 1) // 1 MiB
)

// AlignedBuffer returns an n-byte slice whose first byte is 4096-aligned, so
// the transport can receive data straight into memory that vdisk_blockio
// hands to O_DIRECT without copying through a bounce buffer.
func AlignedBuffer(n int) []byte {
	// Go's allocator places 4 KiB-multiple sizes at page-aligned addresses,
	// so this usually succeeds without wasting memory; it does not promise
	// to, hence the fallback.
	if b := make([]byte, n); isAligned(b) {
		return b
	}
	b := make([]byte, n+memAlign)
	o := int(-uintptr(unsafe.Pointer(unsafe.SliceData(b))) & (memAlign - 1))
	return b[o : o+n : o+n]
}

func isAligned(b []byte) bool {
	return uintptr(unsafe.Pointer(unsafe.SliceData(b)))&(memAlign-1) == 0
}

// bouncePools holds aligned buffers by class. Pointers to slices are pooled
// so Put does not allocate.
var bouncePools [bounceClasses]sync.Pool

func init() {
	for i := range bouncePools {
		size := memAlign << i
		bouncePools[i].New = func() any {
			b := AlignedBuffer(size)
			return &b
		}
	}
}

func bounceClass(n int) int {
	if n <= memAlign {
		return 0
	}
	return bits.Len(uint(n-1) / memAlign)
}

// getAligned returns a pooled aligned buffer of length n (n <= maxBounce).
func getAligned(n int) *[]byte {
	b := bouncePools[bounceClass(n)].Get().(*[]byte)
	*b = (*b)[:n]
	return b
}

func putAligned(b *[]byte) {
	*b = (*b)[:cap(*b)]
	bouncePools[bounceClass(cap(*b))].Put(b)
}

// aligned reports whether p can go to O_DIRECT as it is.
func (d *fileDevice) aligned(p []byte, off int64) bool {
	if len(p) == 0 {
		return true // os.File makes no system call for it
	}
	return off%d.blockSize == 0 && int64(len(p))%d.blockSize == 0 && isAligned(p)
}

// span is one bounced piece of a request: the block-aligned device range
// [start, end) and the part of the caller's buffer that falls inside it.
type span struct {
	start, end int64
	user       []byte // caller's bytes for this piece
	skip       int    // offset of user within the aligned range
}

// spans splits the block-aligned range covering [off, off+len(p)) into pieces
// of at most maxBounce bytes and calls fn for each, stopping at an error.
func (d *fileDevice) spans(p []byte, off int64, fn func(span) error) error {
	bs := d.blockSize
	start := off - off%bs
	end := off + int64(len(p))
	end += (bs - end%bs) % bs // Size is a block multiple, so this stays inside
	for s := start; s < end; s += maxBounce {
		e := min(s+maxBounce, end)
		lo, hi := max(s, off), min(e, off+int64(len(p)))
		sp := span{start: s, end: e, user: p[lo-off : hi-off], skip: int(lo - s)}
		if err := fn(sp); err != nil {
			return err
		}
	}
	return nil
}

func (d *fileDevice) bounceRead(p []byte, off int64) error {
	return d.spans(p, off, func(sp span) error {
		buf := getAligned(int(sp.end - sp.start))
		defer putAligned(buf)
		if err := d.pread(*buf, sp.start); err != nil {
			return err
		}
		copy(sp.user, (*buf)[sp.skip:])
		return nil
	})
}

func (d *fileDevice) bounceWrite(f *os.File, p []byte, off int64) error {
	return d.spans(p, off, func(sp span) error {
		buf := getAligned(int(sp.end - sp.start))
		defer putAligned(buf)
		if d.partial(sp) {
			// Read-modify-write of the edge blocks; serialised so two
			// writers of different bytes of one block both survive.
			d.rmw.Lock()
			defer d.rmw.Unlock()
			if err := d.readEdges(*buf, sp); err != nil {
				return err
			}
		}
		copy((*buf)[sp.skip:], sp.user)
		return d.pwrite(f, *buf, sp.start)
	})
}

// partial reports whether the caller's bytes leave part of a block in the
// span uncovered, so the old contents must be read first.
func (d *fileDevice) partial(sp span) bool {
	return sp.skip != 0 || int64(sp.skip+len(sp.user)) != sp.end-sp.start
}

// readEdges fills the first and last blocks of buf from the device; the
// blocks between are wholly overwritten by the caller's data.
func (d *fileDevice) readEdges(buf []byte, sp span) error {
	bs := int(d.blockSize)
	if err := d.pread(buf[:bs], sp.start); err != nil {
		return err
	}
	if len(buf) == bs {
		return nil
	}
	return d.pread(buf[len(buf)-bs:], sp.end-int64(bs))
}
