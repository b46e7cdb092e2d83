package scsi

import (
	"sync"
	"testing"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/backend/backendtest"
)

// thinDevice is a backendtest.Thin that tracks which 4 KiB "filesystem
// blocks" are allocated, as a sparse file would, so UNMAP, WRITE SAME with
// UNMAP and GET LBA STATUS can be checked.
type thinDevice struct {
	*backendtest.Thin
	mu    sync.Mutex
	alloc []bool // per 4 KiB
}

const fsBlock = 4096

func newThinDevice(size int) *thinDevice {
	return &thinDevice{Thin: backendtest.NewThin(size), alloc: make([]bool, (size+fsBlock-1)/fsBlock)}
}

func (d *thinDevice) WriteAt(p []byte, off int64, durable bool) error {
	if err := d.Thin.WriteAt(p, off, durable); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for b := off / fsBlock; b < (off+int64(len(p))+fsBlock-1)/fsBlock; b++ {
		d.alloc[b] = true
	}
	return nil
}

// Unmap frees the filesystem blocks the range covers whole, as
// fallocate(PUNCH_HOLE) does.
func (d *thinDevice) Unmap(off, length int64) error {
	if err := d.Thin.Unmap(off, length); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for b := (off + fsBlock - 1) / fsBlock; (b+1)*fsBlock <= off+length; b++ {
		d.alloc[b] = false
	}
	return nil
}

func (d *thinDevice) Extent(off int64) (bool, int64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	size := d.Size()
	if off < 0 || off >= size {
		return false, 0, backend.ErrOutOfRange
	}
	b := off / fsBlock
	state := d.alloc[b]
	end := (b + 1) * fsBlock
	for ; end < size && d.alloc[end/fsBlock] == state; end += fsBlock {
	}
	return state, min(end, size) - off, nil
}

func (d *thinDevice) mapped(off int64) bool {
	m, _, _ := d.Extent(off)
	return m
}

var (
	_ backend.Unmapper = (*thinDevice)(nil)
	_ backend.Mapper   = (*thinDevice)(nil)
)

// newThinHarness is newHarness on a thinDevice.
func newThinHarness(t *testing.T, mod func(*LUConfig)) (*harness, *thinDevice) {
	t.Helper()
	dev := newThinDevice(testBlocks * 512)
	cfg := LUConfig{Device: dev, BlockSize: 512, Serial: "serial-thin", WriteCache: true, Thin: true}
	if mod != nil {
		mod(&cfg)
	}
	lu, err := NewLU(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, lu: lu, dev: dev.Mem, n: testNexus("iqn.1994-05.com.example:host1", 1)}
	h.clearUA(h.n)
	return h, dev
}

// CDB builders for the commands of this issue.

func cdbCAW(lba uint64, n byte, flags byte) []byte {
	c := make([]byte, 16)
	c[0], c[1] = opCompareAndWrite, flags
	putU64(c[2:], lba)
	c[13] = n
	return c
}

func cdbWriteAtomic(lba uint64, n uint16, flags byte) []byte {
	c := make([]byte, 16)
	c[0], c[1] = opWriteAtomic16, flags
	putU64(c[2:], lba)
	putU16(c[12:], n)
	return c
}

func cdbWS10(lba uint32, n uint16, flags byte) []byte {
	c := make([]byte, 10)
	c[0], c[1] = opWriteSame10, flags
	putU32(c[2:], lba)
	putU16(c[7:], n)
	return c
}

func cdbWS16(lba uint64, n uint32, flags byte) []byte {
	c := make([]byte, 16)
	c[0], c[1] = opWriteSame16, flags
	putU64(c[2:], lba)
	putU32(c[10:], n)
	return c
}

func cdbUnmap(anchor bool, paramLen uint16) []byte {
	c := make([]byte, 10)
	c[0] = opUnmap
	if anchor {
		c[1] = 1
	}
	putU16(c[7:], paramLen)
	return c
}

// unmapParams builds an UNMAP parameter list of (lba, blocks) pairs.
func unmapParams(ranges ...[2]uint64) []byte {
	b := make([]byte, 8+16*len(ranges))
	putU16(b[0:], uint16(len(b)-2))
	putU16(b[2:], uint16(16*len(ranges)))
	for i, r := range ranges {
		putU64(b[8+16*i:], r[0])
		putU32(b[8+16*i+8:], uint32(r[1]))
	}
	return b
}

func cdbGetLBAStatus(lba uint64, alloc uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1] = opServiceActionIn16, saGetLBAStatus
	putU64(c[2:], lba)
	putU32(c[10:], alloc)
	return c
}

func cdbSanitize(sa byte, immed bool, paramLen uint16) []byte {
	c := make([]byte, 10)
	c[0], c[1] = opSanitize, sa
	if immed {
		c[1] |= 0x80
	}
	putU16(c[7:], paramLen)
	return c
}

func owParams(owcount byte, pattern []byte) []byte {
	b := make([]byte, 4+len(pattern))
	b[0] = owcount
	putU16(b[2:], uint16(len(pattern)))
	copy(b[4:], pattern)
	return b
}

func cdbReadCapacity16(alloc uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1] = opServiceActionIn16, saReadCapacity16
	putU32(c[10:], alloc)
	return c
}
