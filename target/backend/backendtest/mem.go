// Package backendtest is an in-memory backend.Device for the tests of the
// packages that drive one. A test needs more of a device than storage: to
// count what it was asked to do, to refuse or fail writes, and to hold I/O
// in flight so that it can look at a command between its start and its
// end, which a real device crosses too quickly to watch.
package backendtest

import (
	"os"
	"sync"

	"github.com/hatarget/hatarget/target/backend"
)

// Mem is an in-memory backend.Device. It is no backend.Unmapper, so that
// a target sees a fully provisioned disk and takes the paths that write
// zeros instead; Thin is the one that unmaps.
type Mem struct {
	mu       sync.Mutex
	data     []byte
	readOnly bool
	nvCache  bool
	closed   bool
	failErr  error
	counts   Counts
	gate     *gate
}

// Counts is what a Mem did that changed its data or made it durable, so
// that a test can tell whether a command reached the device, and how.
type Counts struct {
	Writes  int   // WriteAt calls that stored their data
	Durable int   // of those, the ones asked to be durable (FUA)
	Written int64 // bytes those calls stored
	Flushes int
	Unmaps  int // Unmap calls that deallocated (Thin)
}

type gate struct {
	reads   bool
	open    chan struct{}
	entered chan struct{}
}

// NewMem returns a device of size bytes, all zero.
func NewMem(size int) *Mem { return &Mem{data: make([]byte, size)} }

// ReadAt fails with os.ErrClosed once closed, as the real handlers do.
func (m *Mem) ReadAt(p []byte, off int64) error {
	m.wait(true)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.check(off, int64(len(p))); err != nil {
		return err
	}
	copy(p, m.data[off:])
	return nil
}

// WriteAt fails with the error FailWrites set before it checks anything
// else, so that a test can fail writes a real device would take.
func (m *Mem) WriteAt(p []byte, off int64, durable bool) error {
	m.wait(false)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failErr != nil {
		return m.failErr
	}
	if err := m.checkWrite(off, int64(len(p))); err != nil {
		return err
	}
	copy(m.data[off:], p)
	m.counts.Writes++
	m.counts.Written += int64(len(p))
	if durable {
		m.counts.Durable++
	}
	return nil
}

func (m *Mem) check(off, n int64) error {
	if m.closed {
		return os.ErrClosed
	}
	if off < 0 || n < 0 || off+n > int64(len(m.data)) {
		return backend.ErrOutOfRange
	}
	return nil
}

func (m *Mem) checkWrite(off, n int64) error {
	if m.closed {
		return os.ErrClosed
	}
	if m.readOnly {
		return backend.ErrReadOnly
	}
	return m.check(off, n)
}

// Flush only counts: memory is as durable as this device gets.
func (m *Mem) Flush() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counts.Flushes++
	return nil
}

func (m *Mem) Size() int64 { return int64(len(m.data)) }

func (m *Mem) ReadOnly() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.readOnly
}

func (m *Mem) NVCache() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.nvCache
}

// Close only marks the device closed, so that a test can tell whether
// its owner closed it, and can still look at its data.
func (m *Mem) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

// Closed reports whether Close was called.
func (m *Mem) Closed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// SetReadOnly makes writes fail with backend.ErrReadOnly, as a device
// opened read-only does.
func (m *Mem) SetReadOnly(ro bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.readOnly = ro
}

// SetNVCache makes the device report a non-volatile cache.
func (m *Mem) SetNVCache(nv bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nvCache = nv
}

// FailWrites makes every WriteAt return err, as a failing disk would,
// until it is called with nil.
func (m *Mem) FailWrites(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failErr = err
}

// Counts returns the counts so far.
func (m *Mem) Counts() Counts {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counts
}

// Bytes is the device's storage itself, so that a test can fill or check
// it without going through (and being counted by) ReadAt and WriteAt. It
// is not synchronized: use it only while no I/O is in flight, and
// Snapshot otherwise.
func (m *Mem) Bytes() []byte { return m.data }

// Snapshot returns a copy of the data, taken between I/Os, closed or not.
func (m *Mem) Snapshot() []byte { return m.SnapshotAt(0, len(m.data)) }

// SnapshotAt is Snapshot of n bytes at off: under -race, copying a whole
// device to check a few blocks costs a test seconds.
func (m *Mem) SnapshotAt(off int64, n int) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte(nil), m.data[off:off+int64(n)]...)
}

// HoldWrites makes every WriteAt wait until release is called, so that
// a test can see what a command does while its write is in flight.
// entered receives a value for each write that waits (as far as its
// buffer goes: a test waits for the first few). release may be called
// more than once, and a later Hold replaces this one.
func (m *Mem) HoldWrites() (entered <-chan struct{}, release func()) {
	return m.hold(false)
}

// HoldIO is HoldWrites for reads too.
func (m *Mem) HoldIO() (entered <-chan struct{}, release func()) {
	return m.hold(true)
}

func (m *Mem) hold(reads bool) (<-chan struct{}, func()) {
	g := &gate{reads: reads, open: make(chan struct{}), entered: make(chan struct{}, 1024)}
	m.mu.Lock()
	m.gate = g
	m.mu.Unlock()
	var once sync.Once
	return g.entered, func() {
		once.Do(func() {
			m.mu.Lock()
			if m.gate == g {
				m.gate = nil
			}
			m.mu.Unlock()
			close(g.open)
		})
	}
}

// wait holds an I/O at the gate, if there is one for its kind.
func (m *Mem) wait(read bool) {
	m.mu.Lock()
	g := m.gate
	m.mu.Unlock()
	if g == nil || read && !g.reads {
		return
	}
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-g.open
}

// Thin is a Mem that deallocates (backend.Unmapper), as a thin
// provisioned device does: unmapped bytes read back as zeros.
type Thin struct{ *Mem }

// NewThin returns a Thin device of size bytes, all zero.
func NewThin(size int) *Thin { return &Thin{NewMem(size)} }

// Unmap is neither held by HoldWrites nor failed by FailWrites: they
// stand for a disk slow or failing to store data, and unmapping stores
// none.
func (t *Thin) Unmap(off, length int64) error {
	m := t.Mem
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.checkWrite(off, length); err != nil {
		return err
	}
	clear(m.data[off : off+length])
	m.counts.Unmaps++
	return nil
}

var (
	_ backend.Device   = (*Mem)(nil)
	_ backend.Unmapper = (*Thin)(nil)
)
