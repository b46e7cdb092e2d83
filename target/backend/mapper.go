package backend

import (
	"errors"
	"fmt"
	"syscall"
)

// Mapper is implemented by devices that can tell allocated storage from
// holes (SCSI GET LBA STATUS). Callers assert for it; a device without it
// is reported as fully mapped.
type Mapper interface {
	// Extent reports whether the byte at off is backed by allocated storage
	// (mapped) or reads as a hole, and how many bytes from off, up to the
	// device size, share that state. Holes come in filesystem blocks; a
	// caller working in logical blocks rounds a partly mapped block up to
	// mapped. off must be within [0, Size).
	Extent(off int64) (mapped bool, length int64, err error)
}

// lseek(2) whence values the syscall package does not name.
const (
	seekData = 3
	seekHole = 4
)

// Extent uses SEEK_DATA and SEEK_HOLE on regular files. A block device has
// no holes the kernel reports (a discarded range still reads through the
// device), and a filesystem without SEEK_HOLE support answers as if the
// whole file were data: both report everything mapped.
func (d *fileDevice) Extent(off int64) (bool, int64, error) {
	if off < 0 || off >= d.size {
		return false, 0, fmt.Errorf("%s: extent at %d (size %d): %w", d.path, off, d.size, ErrOutOfRange)
	}
	if !d.regular {
		return true, d.size - off, nil
	}
	data, err := d.seek(off, seekData)
	switch {
	case errors.Is(err, syscall.ENXIO):
		// No data at or after off: a hole to the end of the file.
		return false, d.size - off, nil
	case errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.EOPNOTSUPP):
		return true, d.size - off, nil
	case err != nil:
		return false, 0, fmt.Errorf("%s: SEEK_DATA at %d: %w", d.path, off, err)
	}
	if data > off {
		return false, min(data, d.size) - off, nil
	}
	hole, err := d.seek(off, seekHole)
	if err != nil {
		return false, 0, fmt.Errorf("%s: SEEK_HOLE at %d: %w", d.path, off, err)
	}
	return true, min(hole, d.size) - off, nil
}

// seek runs lseek through RawConn, like fdatasync. The file offset it
// moves is never used: all I/O is positional.
func (d *fileDevice) seek(off int64, whence int) (int64, error) {
	rc, err := d.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var pos int64
	var serr error
	err = rc.Control(func(fd uintptr) {
		for {
			pos, serr = syscall.Seek(int(fd), off, whence)
			if serr != syscall.EINTR {
				return
			}
		}
	})
	if err != nil {
		return 0, err
	}
	return pos, serr
}

// Extent reports nullio as fully mapped: it has no storage to deallocate,
// and its reads return zeros either way.
func (d *nullDevice) Extent(off int64) (bool, int64, error) {
	if err := d.check(1, off); err != nil {
		return false, 0, err
	}
	return true, d.size - off, nil
}
