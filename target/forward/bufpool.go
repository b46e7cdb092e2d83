package forward

import (
	"math/bits"
	"sync"
	"unsafe"
)

// The owner's data buffers come from power-of-two size classes, as in
// target/iscsi, so a busy connection reuses memory instead of allocating
// per command, and 4 KiB aligned so that a blockio device can do O_DIRECT
// I/O straight into them.
const (
	minBufShift = 12 // 4 KiB
	maxBufShift = 23 // 8 MiB: MaxDataLen
	bufAlign    = 4096
)

var bufPools [maxBufShift - minBufShift + 1]sync.Pool

func bufClass(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}

// buffer is a pooled data buffer; b always has its full class capacity. The
// pointer itself is pooled so returning a buffer does not allocate.
type buffer struct{ b []byte }

// getBuf returns a buffer of at least n bytes (n <= MaxDataLen).
func getBuf(n int) *buffer {
	class := bufClass(n)
	if p, ok := bufPools[class].Get().(*buffer); ok {
		return p
	}
	return &buffer{b: alignedBuf(1 << (class + minBufShift))}
}

// putBuf returns a buffer obtained from getBuf; nil is ignored.
func putBuf(p *buffer) {
	if p != nil {
		bufPools[bufClass(cap(p.b))].Put(p)
	}
}

func alignedBuf(size int) []byte {
	raw := make([]byte, size+bufAlign)
	off := bufAlign - int(uintptr(unsafe.Pointer(unsafe.SliceData(raw)))&(bufAlign-1))
	if off == bufAlign {
		off = 0
	}
	return raw[off : off+size : off+size]
}
