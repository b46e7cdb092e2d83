// Package backend stores the blocks of a logical unit. It implements SCST's
// vdisk handlers: fileio (page cache), blockio (O_DIRECT) and nullio (no
// storage). It knows nothing of SCSI or iSCSI; offsets and lengths are bytes.
package backend

import (
	"errors"
	"fmt"
)

// Handler names a storage handler, spelled as in SCST's scst.conf.
type Handler string

const (
	FileIO  Handler = "vdisk_fileio"
	BlockIO Handler = "vdisk_blockio"
	NullIO  Handler = "vdisk_nullio"
)

// Options describe one device. They mirror the scst.conf device attributes
// that change how blocks are stored.
type Options struct {
	Handler Handler
	// Path is the backing file or block device; empty for nullio.
	Path string
	// Size in bytes, a multiple of BlockSize. Zero means "the size of the file
	// or device", rounded down to whole blocks; for nullio it is required. A
	// file smaller than Size is extended (sparse), a missing one created; a
	// larger file or device is never shrunk, only its first Size bytes used.
	Size int64
	// BlockSize is the logical block size (512 or 4096); blockio aligns its
	// direct I/O buffers to it.
	BlockSize uint32
	ReadOnly  bool
	// NVCache reports a non-volatile cache: Flush and synchronous writes do not
	// need to reach stable storage (SCST's nv_cache).
	NVCache bool
	// WriteThrough makes every write durable before it returns.
	WriteThrough bool
}

// Device is the storage of one logical unit. Implementations are safe for
// concurrent use; callers keep requests within Size and BlockSize-aligned.
type Device interface {
	// ReadAt fills p from offset off; short reads are errors.
	ReadAt(p []byte, off int64) error
	// WriteAt stores p at off. With durable set the data is on stable storage
	// when it returns (FUA), unless the device has a non-volatile cache.
	WriteAt(p []byte, off int64, durable bool) error
	// Flush makes every completed write durable (SYNCHRONIZE CACHE).
	Flush() error
	// Size is the capacity in bytes.
	Size() int64
	// ReadOnly reports whether writes are refused.
	ReadOnly() bool
	// NVCache reports whether the device's cache is non-volatile, so the
	// target may advertise a write cache that needs no flushing.
	NVCache() bool
	// Close releases the backing file.
	Close() error
}

// Networked is implemented by devices whose writes wait for other
// machines, such as a replicated volume: a write takes a network round
// trip, so a transport must not run one where it holds up reading the
// commands behind it.
type Networked interface {
	NetworkedWrites() bool
}

// AsyncWriter is implemented by devices that can start a write and
// complete it later, such as a replicated volume whose write waits for
// its replicas' answers: a transport then keeps no goroutine blocked per
// write in flight, and the answers that arrive together complete their
// writes together.
type AsyncWriter interface {
	// StartWrite starts storing p at off, as WriteAt would, and returns
	// true; done.WriteDone then gets WriteAt's outcome, once, on any
	// goroutine, and p must stay untouched until it has. It may do part
	// of the work on the caller's goroutine, as long as that part is
	// quick, and hold back what it sends until plug is unplugged (nil:
	// it sends at once). It returns false having done nothing when the
	// write should go through WriteAt instead.
	StartWrite(p []byte, off int64, durable bool, done WriteDone, plug *Plug) bool
}

// Plug holds back what the writes a transport starts in a row send to
// other machines, so that they leave together, in one system call per
// connection, when the transport unplugs before it waits for more
// commands -- as a block layer plug batches requests to a disk. A Plug
// belongs to one goroutine.
type Plug struct {
	held []Unplugger
}

// Unplugger sends what was held back for a Plug.
type Unplugger interface {
	Unplug()
}

// Hold adds u to what Unplug releases; u is released once however often
// it is held.
func (p *Plug) Hold(u Unplugger) {
	for _, h := range p.held {
		if h == u {
			return
		}
	}
	p.held = append(p.held, u)
}

// Unplug releases everything held.
func (p *Plug) Unplug() {
	for i, u := range p.held {
		u.Unplug()
		p.held[i] = nil
	}
	p.held = p.held[:0]
}

// WriteDone receives the outcome of a write started by StartWrite.
type WriteDone interface {
	WriteDone(err error)
}

// ErrReadOnly is returned by writes to a read-only device.
var ErrReadOnly = errors.New("device is read-only")

// ErrOutOfRange is returned for a request beyond the device's size.
var ErrOutOfRange = errors.New("request beyond end of device")

// Open opens the device the options describe.
func Open(o Options) (Device, error) {
	if o.BlockSize == 0 {
		o.BlockSize = 512
	}
	if o.BlockSize != 512 && o.BlockSize != 4096 {
		return nil, fmt.Errorf("block size %d: must be 512 or 4096", o.BlockSize)
	}
	switch o.Handler {
	case FileIO:
		return openFile(o, false)
	case BlockIO:
		return openFile(o, true)
	case NullIO:
		return openNull(o)
	default:
		return nil, fmt.Errorf("handler %q: unsupported (want %s, %s or %s)", o.Handler, FileIO, BlockIO, NullIO)
	}
}
