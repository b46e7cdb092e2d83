package backend

import (
	"math/bits"
	"sync"
)

// Data buffers for commands come from power-of-two size classes, so that
// a busy transport reuses memory instead of allocating per command, and
// are 4 KiB aligned, so that blockio devices do O_DIRECT I/O straight into
// them. The iSCSI transport and the forwarding channel share the pools.
const (
	minBufShift = 12 // 4 KiB
	maxBufShift = 24 // 16 MiB, above the largest transfer
)

var bufPools [maxBufShift - minBufShift + 1]sync.Pool

func bufClass(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}

// Buffer is a pooled data buffer; B always has its full class capacity.
// The pointer itself is pooled so returning a buffer does not allocate.
type Buffer struct{ B []byte }

// GetBuffer returns a buffer of at least n bytes (n <= 16 MiB).
func GetBuffer(n int) *Buffer {
	class := bufClass(n)
	if p, ok := bufPools[class].Get().(*Buffer); ok {
		return p
	}
	return &Buffer{B: AlignedBuffer(1 << (class + minBufShift))}
}

// PutBuffer returns a buffer obtained from GetBuffer; nil is ignored.
func PutBuffer(p *Buffer) {
	if p != nil {
		bufPools[bufClass(cap(p.B))].Put(p)
	}
}
