package backend

import (
	"fmt"
	"os"
	"sync/atomic"
)

// nullDevice backs vdisk_nullio: a device of the given size with no storage,
// for benchmarking the target without a disk in the way.
type nullDevice struct {
	size     int64
	readOnly bool
	nvCache  bool
	closed   atomic.Bool
}

func openNull(o Options) (Device, error) {
	if o.Size <= 0 || o.Size%int64(o.BlockSize) != 0 {
		return nil, fmt.Errorf("%s: size %d: must be a positive multiple of block size %d", NullIO, o.Size, o.BlockSize)
	}
	return &nullDevice{size: o.Size, readOnly: o.ReadOnly, nvCache: o.NVCache}, nil
}

// check mirrors the file handlers' refusals so callers see the same errors
// whichever handler backs the unit.
func (d *nullDevice) check(n, off int64) error {
	if d.closed.Load() {
		return os.ErrClosed
	}
	return checkRange(string(NullIO), off, n, d.size)
}

// ReadAt returns zeros, as reads of never-written blocks of a real disk would.
func (d *nullDevice) ReadAt(p []byte, off int64) error {
	if err := d.check(int64(len(p)), off); err != nil {
		return err
	}
	clear(p)
	return nil
}

func (d *nullDevice) WriteAt(p []byte, off int64, durable bool) error {
	if d.readOnly {
		return fmt.Errorf("%s: write %d bytes at %d: %w", NullIO, len(p), off, ErrReadOnly)
	}
	return d.check(int64(len(p)), off)
}

func (d *nullDevice) Unmap(off, length int64) error {
	if d.readOnly {
		return fmt.Errorf("%s: unmap %d bytes at %d: %w", NullIO, length, off, ErrReadOnly)
	}
	return d.check(length, off)
}

func (d *nullDevice) Flush() error   { return nil }
func (d *nullDevice) Size() int64    { return d.size }
func (d *nullDevice) ReadOnly() bool { return d.readOnly }
func (d *nullDevice) NVCache() bool  { return d.nvCache }

func (d *nullDevice) Close() error {
	d.closed.Store(true)
	return nil
}
