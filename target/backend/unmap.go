package backend

import (
	"fmt"
	"syscall"
)

// Unmapper is implemented by devices that can deallocate blocks (SCSI UNMAP,
// WRITE SAME with UNMAP). Unmapped blocks read back as zeros. Every handler
// implements it; callers assert for it so that a handler added later without
// thin provisioning simply does not advertise it.
type Unmapper interface {
	// Unmap deallocates [off, off+length). The capacity does not change.
	Unmap(off, length int64) error
}

// Linux fallocate(2) modes; the syscall package does not name them.
const (
	fallocKeepSize  = 0x1
	fallocPunchHole = 0x2
)

// Unmap punches a hole, which on a file frees its blocks and on a block device
// discards them (Linux 4.9+). Both drop the range from the page cache, so a
// fileio read afterwards sees the zeros too.
func (d *fileDevice) Unmap(off, length int64) error {
	if d.readOnly {
		return fmt.Errorf("%s: unmap %d bytes at %d: %w", d.path, length, off, ErrReadOnly)
	}
	if err := checkRange(d.path, off, length, d.size); err != nil || length == 0 {
		return err
	}
	if err := punchHole(d, off, length); err != nil {
		return fmt.Errorf("%s: punch hole of %d bytes at %d: %w", d.path, length, off, err)
	}
	return nil
}

func punchHole(d *fileDevice, off, length int64) error {
	rc, err := d.f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	err = rc.Control(func(fd uintptr) {
		for {
			ferr = syscall.Fallocate(int(fd), fallocPunchHole|fallocKeepSize, off, length)
			if ferr != syscall.EINTR {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return ferr
}
