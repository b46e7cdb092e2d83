package backend

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"syscall"
)

// fileDevice backs vdisk_fileio (page cache) and vdisk_blockio (O_DIRECT).
// All I/O is positional (pread/pwrite), so one descriptor serves every
// goroutine without locking.
type fileDevice struct {
	path      string
	f         *os.File
	durableFd *os.File // where FUA writes go; f itself when f is already O_DSYNC
	size      int64
	blockSize int64
	readOnly  bool
	nvCache   bool
	// syncOnFlush is false when no write can be left volatile: read-only,
	// non-volatile cache, or every write already O_DSYNC.
	syncOnFlush bool
	direct      bool
	// regular is true for a regular file (holes can be found with
	// SEEK_DATA/SEEK_HOLE), false for a block device.
	regular bool
	// rmw serialises the read-modify-write of partial blocks under O_DIRECT,
	// so two unaligned writers sharing an edge block cannot undo each other.
	// Aligned writes skip it: they never share a block with a concurrent
	// writer unless the initiator overlaps them, whose result SCSI leaves
	// undefined anyway.
	rmw sync.Mutex
}

// openFile opens the file or block device for vdisk_fileio (direct false) or
// vdisk_blockio (direct true).
func openFile(o Options, direct bool) (Device, error) {
	if o.Path == "" {
		return nil, fmt.Errorf("%s: path required", o.Handler)
	}
	if o.Size < 0 || o.Size%int64(o.BlockSize) != 0 {
		return nil, fmt.Errorf("%s: size %d: must be a multiple of block size %d", o.Path, o.Size, o.BlockSize)
	}
	created, err := createIfMissing(o)
	if err != nil {
		return nil, err
	}
	d, err := openExisting(o, direct)
	if err != nil && created {
		// A failed Open should not leave behind a file the caller never had.
		os.Remove(o.Path)
	}
	if err != nil {
		return nil, err
	}
	return d, nil
}

// createIfMissing creates a sparse file of o.Size bytes when none exists. It
// creates it without O_DIRECT so that a filesystem refusing direct I/O fails
// later with the clearer O_DIRECT error, not here.
func createIfMissing(o Options) (created bool, err error) {
	_, err = os.Stat(o.Path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	if o.Size == 0 {
		return false, fmt.Errorf("%s: does not exist and no size given to create it", o.Path)
	}
	if o.ReadOnly {
		return false, fmt.Errorf("%s: does not exist and a read-only device cannot create it", o.Path)
	}
	// O_EXCL: if someone else created it meanwhile, their data is not ours to
	// truncate or remove.
	f, err := os.OpenFile(o.Path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return false, err
	}
	err = f.Truncate(o.Size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(o.Path)
		return false, err
	}
	return true, nil
}

func openExisting(o Options, direct bool) (*fileDevice, error) {
	d := &fileDevice{
		path:      o.Path,
		blockSize: int64(o.BlockSize),
		readOnly:  o.ReadOnly,
		nvCache:   o.NVCache,
		direct:    direct,
	}
	// As SCST's vdisk: a non-volatile cache makes O_DSYNC pointless.
	writeThrough := o.WriteThrough && !o.NVCache
	d.syncOnFlush = !o.ReadOnly && !o.NVCache && !writeThrough
	var err error
	access := os.O_RDWR
	if o.ReadOnly {
		access = os.O_RDONLY
	}
	d.f, err = openFd(o.Path, ioFlags(access, direct, writeThrough))
	if err != nil {
		return nil, err
	}
	if err := d.setSize(o.Size); err != nil {
		d.f.Close()
		return nil, err
	}
	if err := d.openDurable(writeThrough); err != nil {
		d.f.Close()
		return nil, err
	}
	if direct {
		if err := d.probeDirect(); err != nil {
			d.Close()
			return nil, err
		}
	}
	return d, nil
}

func ioFlags(access int, direct, dsync bool) int {
	flags := access
	if direct {
		flags |= syscall.O_DIRECT
	}
	if dsync {
		flags |= syscall.O_DSYNC
	}
	return flags
}

func openFd(path string, flags int) (*os.File, error) {
	f, err := os.OpenFile(path, flags, 0)
	if err != nil && flags&syscall.O_DIRECT != 0 && errors.Is(err, syscall.EINVAL) {
		return nil, fmt.Errorf("%w: the filesystem refuses O_DIRECT; use %s for page-cache I/O", err, FileIO)
	}
	return f, err
}

// openDurable gives FUA writes their own O_DSYNC descriptor. An O_DSYNC
// pwrite syncs only the range it wrote (vfs_fsync_range), whereas pwrite plus
// fdatasync on the shared descriptor would also write back every other dirty
// page of the file: with a busy LUN one FUA write would cost a full flush
// (BenchmarkDurableWrite4K: about 1.6x slower with 256 KiB of other dirty
// data per FUA write, on ext4).
// Both descriptors share the inode's page cache, so reads see either's data.
func (d *fileDevice) openDurable(writeThrough bool) error {
	switch {
	case d.readOnly || d.nvCache:
		d.durableFd = d.f // durable writes need nothing extra (or are refused)
		return nil
	case writeThrough:
		d.durableFd = d.f
		return nil
	}
	var err error
	d.durableFd, err = openFd(d.path, ioFlags(os.O_WRONLY, d.direct, true))
	return err
}

// setSize decides the exported capacity from the file and the requested size.
// A file is extended (sparse) but never shrunk: a smaller Size exposes only
// the first Size bytes, leaving the rest of the file untouched.
func (d *fileDevice) setSize(want int64) error {
	have, isFile, err := backingSize(d.f)
	if err != nil {
		return fmt.Errorf("%s: %w", d.path, err)
	}
	d.regular = isFile
	switch {
	case want == 0:
		// Round down: a trailing partial block cannot be addressed by LBA.
		d.size = have - have%d.blockSize
		if d.size == 0 {
			return fmt.Errorf("%s: %d bytes is smaller than one %d-byte block", d.path, have, d.blockSize)
		}
	case want <= have:
		d.size = want
	case !isFile:
		return fmt.Errorf("%s: size %d exceeds device capacity %d", d.path, want, have)
	case d.readOnly:
		return fmt.Errorf("%s: size %d exceeds file size %d and a read-only device cannot extend it", d.path, want, have)
	default:
		if err := d.f.Truncate(want); err != nil {
			return fmt.Errorf("%s: extend to %d bytes: %w", d.path, want, err)
		}
		d.size = want
	}
	return nil
}

// backingSize returns the size of a regular file or block device; other kinds
// of file cannot hold a logical unit.
func backingSize(f *os.File) (size int64, isFile bool, err error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, false, err
	}
	mode := fi.Mode()
	switch {
	case mode.IsRegular():
		return fi.Size(), true, nil
	case mode&fs.ModeDevice != 0 && mode&fs.ModeCharDevice == 0:
		// Stat reports 0 for block devices; the end offset is their capacity.
		size, err := f.Seek(0, io.SeekEnd)
		return size, false, err
	default:
		return 0, false, fmt.Errorf("%v: not a regular file or block device", mode.Type())
	}
}

// probeDirect reads the first block directly. Filesystems that accept
// O_DIRECT at open but need a larger alignment than BlockSize (a 4Kn disk
// exported with 512-byte blocks) fail here, at Open, rather than on the
// first initiator command.
func (d *fileDevice) probeDirect() error {
	buf := getAligned(int(d.blockSize))
	defer putAligned(buf)
	_, err := d.f.ReadAt(*buf, 0)
	if errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("%s: O_DIRECT read of one %d-byte block refused; the storage needs a larger block size (or use %s): %w",
			d.path, d.blockSize, FileIO, err)
	}
	if err != nil {
		return fmt.Errorf("%s: O_DIRECT probe read: %w", d.path, err)
	}
	return nil
}

func (d *fileDevice) ReadAt(p []byte, off int64) error {
	if err := checkRange(d.path, off, int64(len(p)), d.size); err != nil {
		return err
	}
	if d.direct && !d.aligned(p, off) {
		return d.bounceRead(p, off)
	}
	return d.pread(p, off)
}

func (d *fileDevice) WriteAt(p []byte, off int64, durable bool) error {
	if d.readOnly {
		return fmt.Errorf("%s: write %d bytes at %d: %w", d.path, len(p), off, ErrReadOnly)
	}
	if err := checkRange(d.path, off, int64(len(p)), d.size); err != nil {
		return err
	}
	f := d.f
	if durable {
		f = d.durableFd
	}
	if d.direct && !d.aligned(p, off) {
		return d.bounceWrite(f, p, off)
	}
	return d.pwrite(f, p, off)
}

func (d *fileDevice) pread(p []byte, off int64) error {
	n, err := d.f.ReadAt(p, off)
	if err == io.EOF && n < len(p) {
		// The file was sized at Open, so it has shrunk under us: data the
		// initiator wrote is gone, which must not read back as zeros.
		err = io.ErrUnexpectedEOF
	} else if n == len(p) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("%s: pread %d bytes at %d: %w", d.path, len(p), off, err)
	}
	return nil
}

func (d *fileDevice) pwrite(f *os.File, p []byte, off int64) error {
	if _, err := f.WriteAt(p, off); err != nil {
		return fmt.Errorf("%s: pwrite %d bytes at %d: %w", d.path, len(p), off, err)
	}
	return nil
}

func (d *fileDevice) Flush() error {
	if !d.syncOnFlush {
		return nil
	}
	if err := fdatasync(d.f); err != nil {
		return fmt.Errorf("%s: fdatasync: %w", d.path, err)
	}
	return nil
}

// fdatasync goes through RawConn so a concurrent Close cannot hand us a
// recycled descriptor number.
func fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		for {
			serr = syscall.Fdatasync(int(fd))
			if serr != syscall.EINTR {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

func (d *fileDevice) Size() int64    { return d.size }
func (d *fileDevice) ReadOnly() bool { return d.readOnly }
func (d *fileDevice) NVCache() bool  { return d.nvCache }

func (d *fileDevice) Close() error {
	var err error
	if d.durableFd != nil && d.durableFd != d.f {
		err = d.durableFd.Close()
	}
	return errors.Join(d.f.Close(), err)
}

// checkRange keeps requests inside the device; it must not allocate on the
// success path, which every I/O takes.
func checkRange(path string, off, n, size int64) error {
	if off >= 0 && n >= 0 && off <= size && n <= size-off {
		return nil
	}
	return fmt.Errorf("%s: %d bytes at %d (size %d): %w", path, n, off, size, ErrOutOfRange)
}
