package scsi

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/hatarget/hatarget/target/backend"
)

// Lease is a node's owner lease as the command path sees it: a deadline,
// extended by the cluster while the node is in contact with a quorum.
// Times are measured on the monotonic clock, so wall clock steps neither
// extend nor cut it.
type Lease struct {
	until atomic.Int64 // nanoseconds since leaseClock
}

var leaseClock = time.Now()

// NewLease returns a lease that has already run out.
func NewLease() *Lease { return &Lease{} }

// Extend moves the deadline to until, never back.
func (l *Lease) Extend(until time.Time) {
	n := int64(until.Sub(leaseClock))
	for {
		cur := l.until.Load()
		if n <= cur || l.until.CompareAndSwap(cur, n) {
			return
		}
	}
}

// Valid reports whether the deadline is still ahead.
func (l *Lease) Valid() bool { return int64(time.Since(leaseClock)) < l.until.Load() }

// The lease also fences the device. checkALUA only admits commands, and a
// command admitted in time may reach the storage much later (a node frozen
// by SIGSTOP, a stalled disk) when another node owns the LU and may share
// that storage: a late write would overwrite what the new owner wrote, and
// data read may be older than what it wrote.

// errLeaseLost is the device error of I/O the lease refused.
var errLeaseLost = errors.New("scsi: owner lease ran out")

// errTransitioning is what a node that may have lost the LU answers, so
// that initiators retry on another path, where the new owner serves it.
var errTransitioning = newSense(KeyNotReady, ascALUATransition)

// leaseSense is the sense for a failed device call: errTransitioning when
// the lease refused it, whatever the caller chose otherwise.
func leaseSense(err error, otherwise error) error {
	if errors.Is(err, errLeaseLost) {
		return errTransitioning
	}
	return otherwise
}

// fence returns dev guarded by l, or dev itself on a node without a lease.
// The result implements the optional interfaces exactly when dev does: the
// LU decides thin provisioning by asserting for them.
func fence(dev backend.Device, l *Lease) backend.Device {
	if l == nil {
		return dev
	}
	f := fenced{dev, l}
	_, u := dev.(backend.Unmapper)
	_, m := dev.(backend.Mapper)
	switch {
	case u && m:
		return fencedUnmapperMapper{f}
	case u:
		return fencedUnmapper{f}
	case m:
		return fencedMapper{f}
	}
	return f
}

// fenced checks the lease before anything that changes the storage and
// after anything that reads it: a read may overlap a takeover, and only
// its end tells whether its data are still the owner's.
//
// The check before a write cannot cover a freeze between it and the system
// call; the cluster's margin between a lease running out and another node
// taking over bounds only a delay there.
type fenced struct {
	backend.Device
	lease *Lease
}

func (f fenced) ReadAt(p []byte, off int64) error {
	err := f.Device.ReadAt(p, off)
	if !f.lease.Valid() {
		return errLeaseLost
	}
	return err
}

func (f fenced) WriteAt(p []byte, off int64, durable bool) error {
	if !f.lease.Valid() {
		return errLeaseLost
	}
	return f.Device.WriteAt(p, off, durable)
}

// Flush is fenced like a write: it would write back what this node still
// caches over what the new owner wrote since, and its GOOD would promise a
// durability that is no longer this node's to give.
func (f fenced) Flush() error {
	if !f.lease.Valid() {
		return errLeaseLost
	}
	return f.Device.Flush()
}

func (f fenced) unmap(off, length int64) error {
	if !f.lease.Valid() {
		return errLeaseLost
	}
	return f.Device.(backend.Unmapper).Unmap(off, length)
}

func (f fenced) extent(off int64) (bool, int64, error) {
	mapped, n, err := f.Device.(backend.Mapper).Extent(off)
	if !f.lease.Valid() {
		return false, 0, errLeaseLost
	}
	return mapped, n, err
}

type fencedUnmapper struct{ fenced }

func (f fencedUnmapper) Unmap(off, length int64) error { return f.unmap(off, length) }

type fencedMapper struct{ fenced }

func (f fencedMapper) Extent(off int64) (bool, int64, error) { return f.extent(off) }

type fencedUnmapperMapper struct{ fenced }

func (f fencedUnmapperMapper) Unmap(off, length int64) error         { return f.unmap(off, length) }
func (f fencedUnmapperMapper) Extent(off int64) (bool, int64, error) { return f.extent(off) }
