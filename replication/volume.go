package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hatarget/hatarget/target/backend"
)

// Membership is the volume's narrow view of the cluster.
type Membership interface {
	// Drop removes node from the in-sync set of device, conditional on
	// epoch still being the device's epoch. It returns nil only once the
	// removal is committed (or node was not in the set); an error means
	// it was not, for instance for want of a quorum.
	Drop(ctx context.Context, device string, epoch uint64, node string) error
	// Readmit adds node to the in-sync set of device, conditional on
	// epoch still being the device's epoch. It returns nil only once the
	// addition is committed; an error means it may or may not be (the
	// volume then makes sure it is not, with Drop, before it counts
	// without node again).
	Readmit(ctx context.Context, device string, epoch uint64, node string) error
}

// VolumeConfig describes the owner's replicated device.
type VolumeConfig struct {
	// Device is the device's name, as replicas know it.
	Device string
	// Local is this node's copy.
	Local backend.Device
	// Epoch is the device's epoch in which this node owns it.
	Epoch uint64
	// Self is this node's name.
	Self string
	// InSync are the other members of the device's in-sync set.
	InSync []*Peer
	// Resync are replicas of the device out of its in-sync set that can
	// be reached: the volume brings each up to date while it serves, and
	// readmits it through Membership (resync.go).
	Resync []*Peer
	// Membership drops a replica that fails. Nil: a failing replica makes
	// the write fail.
	Membership Membership
	// Timeout bounds a replica's answer; one that does not answer in time
	// is dropped. Default 1 s.
	Timeout time.Duration
	// DropTimeout bounds one Membership.Drop. Default 10 s.
	DropTimeout time.Duration
	// RegionSize is the granularity of dirty bitmaps. Default
	// DefaultRegionSize.
	RegionSize int64
	// ResyncRate bounds the bytes per second all the volume's resyncs
	// together read and compare or copy. Zero: DefaultResyncRate;
	// negative: unlimited.
	ResyncRate int64
	// Logger receives membership and fencing events; nil discards them.
	Logger *slog.Logger
	// StateDir keeps the replicas' dirty bitmaps, so that the volume of a
	// later run in the same epoch resumes their resyncs (persist.go); only
	// this volume's files are kept in it. Empty: bitmaps live in memory.
	StateDir string
	// ResumeState lets the volume resume the bitmaps it finds in StateDir.
	// Without it they are dropped: a binary that does not keep them may
	// have written the copies since (fsm.ClusterVersionReplicaState).
	ResumeState bool
}

const (
	defaultVolumeTimeout = time.Second
	defaultDropTimeout   = 10 * time.Second
	// DefaultResyncRate is VolumeConfig.ResyncRate's default: 400 MiB/s.
	DefaultResyncRate = 400 << 20
)

var (
	// ErrFenced: a replica has seen a newer epoch of the device, so this
	// node no longer owns it. The volume refuses all I/O until Update
	// gives it a newer epoch.
	ErrFenced = errors.New("replication: fenced: the device has a newer epoch elsewhere")
	// ErrNotReplicated: a replica failed the request and could not be
	// dropped from the in-sync set (Membership.Drop failed): the request
	// is not acknowledged, so that an isolated owner stalls instead of
	// diverging.
	ErrNotReplicated = errors.New("replication: not replicated")
	// ErrVolumeClosed: the volume was closed.
	ErrVolumeClosed = errors.New("replication: volume closed")
)

// Volume is the owner's replicated device: it writes locally and to every
// in-sync replica in parallel, and completes a write only once all have
// it, or once a replica that failed has been dropped from the in-sync set
// through Membership. It implements backend.Device; Device returns it
// with the optional interfaces Local has.
//
// Writes to overlapping ranges are ordered: one waits for an earlier one
// it overlaps to complete everywhere, so that all copies apply them in the
// same order.
type Volume struct {
	cfg   VolumeConfig
	log   *slog.Logger
	local backend.Device
	size  int64

	seq     atomic.Uint64
	ranges  rangeLock
	inline  inlineGauge // local writes, for StartWrite
	flushMu sync.Mutex  // one flush at a time

	fenced atomic.Bool // mirrors; changed under mu
	// networked mirrors len(members) > 0 for NetworkedWrites; changed
	// under mu.
	networked atomic.Bool
	closed    atomic.Bool

	mu      sync.Mutex
	epoch   uint64
	members []*Peer
	// dirty holds, per node, the regions it may lack: those of writes it
	// missed since it was dropped or failed, and those it had not made
	// durable when it was dropped.
	dirty map[string]*Bitmap
	// outOfSync are the bitmaps of nodes not in members: every write
	// marks them.
	outOfSync []*Bitmap
	// unflushed marks the regions of completed writes no flush has made
	// durable on the replicas yet; flushing those of a flush in progress.
	// A replica dropped may have lost them from a volatile cache, so they
	// join its dirty bitmap.
	unflushed, flushing *Bitmap
	drops               map[string]*dropOp

	// Resyncs (resync.go). resyncs are the nodes being brought up to
	// date, by node; joining the members whose readmission is not known
	// to be committed yet, which Update keeps among the members whatever
	// the in-sync set it is given says (as it does readmitted ones until
	// it has seen them in it); verify the nodes whose dirty regions must
	// be compared by checksum rather than copied (the volume does not
	// know what they hold); volatile, per node being resynced, the
	// regions it acknowledged without making them durable.
	resyncs       map[string]*resync
	joining       map[string]*joinOp
	readmitted    map[string]bool
	verify        map[string]bool
	volatile      map[string]*Bitmap
	resyncStopped bool
	resyncIdle    sync.Cond // on mu: an asynchronous write to a resyncing node completed
	resyncWG      sync.WaitGroup
	limiter       rateLimiter
	store         *dirtyStore // nil without StateDir
	stopReconcile context.CancelFunc

	ops sync.Pool
}

// dropOp is a Membership.Drop in progress, which concurrent failures of
// the same node wait for rather than repeat.
type dropOp struct {
	done chan struct{}
	err  error
}

// NewVolume returns the volume cfg describes.
func NewVolume(cfg VolumeConfig) (*Volume, error) {
	if cfg.Local == nil || checkName("device", len(cfg.Device)) != nil {
		return nil, errors.New("replication: a volume needs a device name of 1 to 255 bytes and a local device")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultVolumeTimeout
	}
	if cfg.DropTimeout <= 0 {
		cfg.DropTimeout = defaultDropTimeout
	}
	if cfg.RegionSize == 0 {
		cfg.RegionSize = DefaultRegionSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ResyncRate == 0 {
		cfg.ResyncRate = DefaultResyncRate
	}
	size := cfg.Local.Size()
	unflushed, err := NewBitmap(size, cfg.RegionSize)
	if err != nil {
		return nil, err
	}
	flushing, _ := NewBitmap(size, cfg.RegionSize)
	v := &Volume{
		cfg:       cfg,
		log:       cfg.Logger.With("device", cfg.Device),
		local:     cfg.Local,
		size:      size,
		epoch:     cfg.Epoch,
		dirty:     make(map[string]*Bitmap),
		unflushed: unflushed,
		flushing:  flushing,
		drops:     make(map[string]*dropOp),

		resyncs:    make(map[string]*resync),
		joining:    make(map[string]*joinOp),
		readmitted: make(map[string]bool),
		verify:     make(map[string]bool),
		volatile:   make(map[string]*Bitmap),
		limiter:    rateLimiter{rate: float64(cfg.ResyncRate)},
	}
	v.resyncIdle.L = &v.mu
	v.setMembersLocked(v.uniquePeers(cfg.InSync))
	if cfg.StateDir != "" {
		v.store = &dirtyStore{dir: cfg.StateDir, written: make(map[string]savedState)}
		if err := v.loadDirty(); err != nil {
			return nil, err
		}
	}
	v.mu.Lock()
	v.setResyncsLocked(cfg.Resync)
	v.mu.Unlock()
	return v, nil
}

// uniquePeers copies peers without nils, duplicates and this node.
func (v *Volume) uniquePeers(peers []*Peer) []*Peer {
	out := make([]*Peer, 0, len(peers))
	for _, p := range peers {
		if p == nil || p.Node() == v.cfg.Self || slices.ContainsFunc(out, func(q *Peer) bool { return q.Node() == p.Node() }) {
			continue
		}
		out = append(out, p)
	}
	return out
}

// Device returns the volume as a backend.Device that implements
// backend.Unmapper and backend.Mapper exactly when Local does, as callers
// decide thin provisioning by asserting for them.
func (v *Volume) Device() backend.Device {
	_, u := v.local.(backend.Unmapper)
	_, m := v.local.(backend.Mapper)
	switch {
	case u && m:
		return unmapperMapperVolume{v}
	case u:
		return unmapperVolume{v}
	case m:
		return mapperVolume{v}
	}
	return v
}

type unmapperVolume struct{ *Volume }

func (u unmapperVolume) Unmap(off, length int64) error { return u.unmap(off, length) }

type mapperVolume struct{ *Volume }

func (m mapperVolume) Extent(off int64) (bool, int64, error) { return m.extent(off) }

type unmapperMapperVolume struct{ *Volume }

func (u unmapperMapperVolume) Unmap(off, length int64) error         { return u.unmap(off, length) }
func (u unmapperMapperVolume) Extent(off int64) (bool, int64, error) { return u.extent(off) }

// Epoch is the epoch the volume writes in.
func (v *Volume) Epoch() uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.epoch
}

// InSync returns the nodes the volume writes to and waits for.
func (v *Volume) InSync() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	nodes := make([]string, len(v.members))
	for i, p := range v.members {
		nodes[i] = p.Node()
	}
	return nodes
}

// Fenced reports whether a replica has refused the volume's epoch.
func (v *Volume) Fenced() bool { return v.fenced.Load() }

// Dirty returns the bitmap of the regions node may lack, nil when it
// lacks none the volume knows of. It is live: writes keep marking it
// while node is out of the in-sync set, and a resync clears what it
// copied.
func (v *Volume) Dirty(node string) *Bitmap {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.dirty[node]
}

// Update applies a new committed state: the epoch this node owns the
// device in, its in-sync set (the other members) and the replicas out of
// the set to resync (those that can be reached). An older epoch is
// ignored; a newer one lifts the fence and restarts every resync. A node
// that leaves the set gets a dirty bitmap (with the regions not yet
// flushed); one that joins keeps any bitmap it has until a resync clears
// it. A node the volume is readmitting stays a member whatever inSync
// says, until the readmission is settled: Update may be given a state
// committed before it.
func (v *Volume) Update(epoch uint64, inSync, resync []*Peer) {
	members := v.uniquePeers(inSync)
	v.mu.Lock()
	defer v.mu.Unlock()
	if epoch < v.epoch {
		v.log.Warn("replication volume update ignored: older epoch", "epoch", epoch, "current", v.epoch)
		return
	}
	if epoch > v.epoch {
		v.epoch = epoch
		if v.fenced.Swap(false) {
			v.log.Info("replication volume unfenced", "epoch", epoch)
		}
		// The new epoch's set is the whole truth: readmissions of the
		// old one are settled in it, and resyncs sealed the old epoch.
		for node, rs := range v.resyncs {
			rs.cancel()
			delete(v.resyncs, node)
		}
		clear(v.joining)
		clear(v.readmitted)
	}
	for _, p := range members {
		node := p.Node()
		delete(v.readmitted, node)
		if j := v.joining[node]; j != nil && j.started {
			delete(v.joining, node) // its readmission committed
		}
	}
	for _, p := range v.members {
		if node := p.Node(); !containsNode(members, node) && (v.joining[node] != nil || v.readmitted[node]) {
			members = append(members, p)
		}
	}
	for _, p := range v.members {
		if !containsNode(members, p.Node()) {
			v.markLeftLocked(p.Node())
		}
	}
	v.setMembersLocked(members)
	v.setResyncsLocked(resync)
	v.rebuildOutOfSyncLocked()
}

// Retain forgets what the volume knows of the copies of nodes that are no
// longer replicas (their dirty bitmaps, kept and on disk): a node that
// becomes a replica again later may have had anything done to its disk
// meanwhile, so its resync must compare the whole copy rather than trust
// an old bitmap. replicas names every node holding a copy; an empty list
// (a configuration that does not say) forgets nothing.
func (v *Volume) Retain(replicas []string) {
	if len(replicas) == 0 {
		return
	}
	v.mu.Lock()
	forgot := false
	for _, m := range []map[string]*Bitmap{v.dirty, v.volatile} {
		for node := range m {
			if !slices.Contains(replicas, node) && !containsNode(v.members, node) && v.resyncs[node] == nil {
				delete(m, node)
				delete(v.verify, node)
				forgot = true
			}
		}
	}
	if forgot {
		v.rebuildOutOfSyncLocked()
	}
	v.mu.Unlock()
	if forgot {
		if err := v.saveDirty(); err != nil {
			v.log.Error("removing the state of a former replica", "err", err)
		}
	}
}

// setMembersLocked makes m the replicas writes wait for.
func (v *Volume) setMembersLocked(m []*Peer) {
	v.members = m
	v.networked.Store(len(m) > 0)
}

// NetworkedWrites reports whether a write waits for another node now
// (backend.Networked): not while this copy is the only one in sync.
func (v *Volume) NetworkedWrites() bool { return v.networked.Load() }

func containsNode(peers []*Peer, node string) bool {
	return slices.ContainsFunc(peers, func(p *Peer) bool { return p.Node() == node })
}

// dirtyLocked returns node's bitmap, creating it.
func (v *Volume) dirtyLocked(node string) *Bitmap {
	b := v.dirty[node]
	if b == nil {
		b, _ = NewBitmap(v.size, v.cfg.RegionSize) // the geometry of unflushed, which was accepted
		v.dirty[node] = v.watch(b)
	}
	return b
}

// watch makes b count its marks for the volume's state files.
func (v *Volume) watch(b *Bitmap) *Bitmap {
	if v.store != nil {
		b.marks = &v.store.marks
	}
	return b
}

// markLeftLocked records that node left the in-sync set: what it may not
// have made durable joins its bitmap.
func (v *Volume) markLeftLocked(node string) {
	b := v.dirtyLocked(node)
	b.Or(v.unflushed)
	b.Or(v.flushing)
}

// rebuildOutOfSyncLocked lists the bitmaps every write marks: those of
// the nodes that do not get writes, neither as members nor as resyncing
// nodes.
func (v *Volume) rebuildOutOfSyncLocked() {
	clear(v.outOfSync)
	v.outOfSync = v.outOfSync[:0]
	for node, b := range v.dirty {
		if containsNode(v.members, node) {
			continue
		}
		if rs := v.resyncs[node]; rs != nil && rs.sending {
			continue
		}
		v.outOfSync = append(v.outOfSync, b)
	}
}

// volOp is the state of one replicated request, recycled.
type volOp struct {
	v     *Volume
	peers []*Peer
	calls []*call
	errs  []error
	// async are the resyncing nodes the request also goes to, without
	// waiting for them (resync.go).
	async []*resync

	// A StartWrite's (async.go): what it wrote, what it waits for, and
	// whom it tells.
	ticket, epoch uint64
	off, n        int64
	localErr      error
	left          atomic.Int32
	timer         *time.Timer // runs expire
	callDone      func(*call)
	done          backend.WriteDone
}

func (v *Volume) getOp() *volOp {
	op, _ := v.ops.Get().(*volOp)
	if op == nil {
		op = &volOp{v: v}
		op.timer = time.AfterFunc(time.Hour, op.expire)
		op.timer.Stop()
		op.callDone = func(*call) { op.step() }
	}
	return op
}

func (v *Volume) putOp(op *volOp) {
	clear(op.peers)
	clear(op.calls)
	clear(op.errs)
	clear(op.async)
	op.peers, op.calls, op.errs, op.async = op.peers[:0], op.calls[:0], op.errs[:0], op.async[:0]
	op.localErr, op.done = nil, nil
	v.ops.Put(op)
}

// begin checks that the volume may write and snapshots its members into
// op, and the resyncing nodes that get the request too; it marks [off,
// off+n) in the bitmaps of the nodes that do not. data is the bytes the
// request carries.
func (v *Volume) begin(op *volOp, off, n, data int64) (uint64, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.usable(); err != nil {
		return 0, err
	}
	for _, b := range v.outOfSync {
		b.Set(off, n)
	}
	op.peers = append(op.peers, v.members...)
	if len(v.resyncs) > 0 {
		v.reserveAsyncLocked(op, off, n, data)
	}
	return v.epoch, nil
}

func (v *Volume) usable() error {
	switch {
	case v.closed.Load():
		return ErrVolumeClosed
	case v.fenced.Load():
		return fmt.Errorf("%w (%s)", ErrFenced, v.cfg.Device)
	}
	return nil
}

func (v *Volume) checkWrite(off, n int64) error {
	if v.local.ReadOnly() {
		return fmt.Errorf("replication: %s: %w", v.cfg.Device, backend.ErrReadOnly)
	}
	if off < 0 || n < 0 || off > v.size || n > v.size-off {
		return fmt.Errorf("replication: %s: %d bytes at %d (size %d): %w", v.cfg.Device, n, off, v.size, backend.ErrOutOfRange)
	}
	return nil
}

// opKind is what a replicated request does.
type opKind uint8

const (
	opWrite opKind = iota
	opUnmap
)

// ReadAt reads the local copy, which has every acknowledged write.
func (v *Volume) ReadAt(p []byte, off int64) error {
	if err := v.usable(); err != nil {
		return err
	}
	if err := v.local.ReadAt(p, off); err != nil {
		return err
	}
	// A read that overlapped the discovery of a newer epoch may hold data
	// the new owner has overwritten since.
	return v.usable()
}

// WriteAt writes p at off locally and on every in-sync replica, durably
// when durable is set, and returns once all have it or a replica that
// failed has been dropped.
func (v *Volume) WriteAt(p []byte, off int64, durable bool) error {
	if err := v.checkWrite(off, int64(len(p))); err != nil {
		return err
	}
	if err := v.usable(); err != nil {
		return err
	}
	for len(p) > MaxDataLen {
		if err := v.replicate(opWrite, p[:MaxDataLen], off, MaxDataLen, durable); err != nil {
			return err
		}
		p, off = p[MaxDataLen:], off+MaxDataLen
	}
	return v.replicate(opWrite, p, off, int64(len(p)), durable)
}

func (v *Volume) unmap(off, length int64) error {
	if err := v.checkWrite(off, length); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	return v.replicate(opUnmap, nil, off, length, false)
}

func (v *Volume) extent(off int64) (bool, int64, error) {
	if err := v.usable(); err != nil {
		return false, 0, err
	}
	return v.local.(backend.Mapper).Extent(off)
}

// replicate runs one write or unmap everywhere.
func (v *Volume) replicate(kind opKind, data []byte, off, n int64, durable bool) error {
	ticket := v.ranges.lock(off, n, true)
	defer v.ranges.release(ticket)
	op := v.getOp()
	defer v.putOp(op)
	epoch, err := v.begin(op, off, n, int64(len(data)))
	if err != nil {
		return err
	}
	seq := v.seq.Add(1)
	deadline := time.Now().Add(v.cfg.Timeout)
	for _, p := range op.peers {
		if kind == opWrite {
			op.calls = append(op.calls, p.startWrite(v.cfg.Device, epoch, seq, off, data, durable))
		} else {
			op.calls = append(op.calls, p.startUnmap(v.cfg.Device, epoch, seq, off, n))
		}
	}
	if len(op.async) > 0 {
		v.sendAsync(op, kind, epoch, seq, off, n, data, durable)
	}
	// What the nodes that do not get it miss is on disk before this copy
	// has it (persist.go).
	localErr := v.syncDirty()
	switch {
	case localErr != nil:
	case kind == opWrite:
		localErr = v.local.WriteAt(data, off, durable)
	default:
		localErr = v.local.(backend.Unmapper).Unmap(off, n)
	}
	v.awaitAll(op, deadline)
	return v.conclude(op, epoch, localErr, kind == opUnmap || !durable, off, n)
}

// conclude settles a request on [off, off+n) whose calls all have their
// outcome; unflushed says whether a flush has yet to make it durable.
func (v *Volume) conclude(op *volOp, epoch uint64, localErr error, unflushed bool, off, n int64) error {
	v.mu.Lock()
	if unflushed {
		v.unflushed.Set(off, n)
	}
	// A node dropped while this was in flight may or may not have it; one
	// being dropped may lose it from a volatile cache.
	for _, p := range op.peers {
		if !containsNode(v.members, p.Node()) || v.drops[p.Node()] != nil {
			v.dirtyLocked(p.Node()).Set(off, n)
		}
	}
	v.mu.Unlock()
	return v.settle(op, epoch, localErr, func(b *Bitmap) { b.Set(off, n) })
}

// awaitAll waits for every call of op until deadline.
func (v *Volume) awaitAll(op *volOp, deadline time.Time) {
	for i, c := range op.calls {
		op.errs = append(op.errs, op.peers[i].await(context.Background(), c, deadline))
		op.peers[i].putCall(c)
	}
}

// settle decides the outcome of a replicated request from the local
// error and the replicas' answers: a stale epoch fences the volume; a
// replica that failed has mark applied to its bitmap and is dropped.
func (v *Volume) settle(op *volOp, epoch uint64, localErr error, mark func(*Bitmap)) error {
	var stale *StaleEpochError
	failed := 0
	for i, err := range op.errs {
		if err == nil {
			continue
		}
		if se := asStale(err); se != nil {
			stale = se
			continue
		}
		failed++
		v.log.Warn("replica failed", "replica", op.peers[i].Node(), "epoch", epoch, "err", err)
	}
	if stale != nil {
		v.fence(epoch, stale)
		return fmt.Errorf("%w (%s): %w", ErrFenced, v.cfg.Device, stale)
	}
	if failed > 0 {
		v.mu.Lock()
		for i, err := range op.errs {
			if err != nil {
				mark(v.dirtyLocked(op.peers[i].Node()))
			}
		}
		v.rebuildOutOfSyncLocked()
		v.mu.Unlock()
	}
	// Nothing is acknowledged without a node before what it missed is on
	// disk.
	if err := v.syncDirty(); err != nil {
		return err
	}
	if localErr != nil {
		return localErr
	}
	if failed == 0 {
		return nil
	}
	return v.dropFailed(op, epoch)
}

// asStale returns err's StaleEpochError, if it has one. Apart, so that
// the hot path without errors does not allocate a target for errors.As.
func asStale(err error) *StaleEpochError {
	var se *StaleEpochError
	if errors.As(err, &se) {
		return se
	}
	return nil
}

// dropFailed drops every replica that failed op, in parallel; nil when
// all of them are out of the in-sync set.
func (v *Volume) dropFailed(op *volOp, epoch uint64) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for i, err := range op.errs {
		if err == nil {
			continue
		}
		node, cause := op.peers[i].Node(), err
		wg.Go(func() {
			if err := v.drop(node, epoch); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("replica %s failed (%w) and could not be dropped: %w", node, cause, err))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s: %w", ErrNotReplicated, v.cfg.Device, errors.Join(errs...))
	}
	return nil
}

// drop removes node from the in-sync set through Membership, once for
// all the requests that saw it fail at the same time. A node being
// readmitted is dropped only once its readmission is settled, so that the
// removal commits after the addition; one never proposed for readmission
// is not in the set, and leaves the members at once.
func (v *Volume) drop(node string, epoch uint64) error {
	v.mu.Lock()
	if d := v.drops[node]; d != nil {
		v.mu.Unlock()
		<-d.done
		return d.err
	}
	if !containsNode(v.members, node) {
		v.mu.Unlock()
		return nil
	}
	j := v.joining[node]
	if j != nil && !j.started {
		v.removeMemberLocked(node)
		v.log.Warn("replica failed while rejoining the in-sync set", "replica", node, "epoch", epoch)
		v.mu.Unlock()
		return v.syncDirty()
	}
	d := &dropOp{done: make(chan struct{})}
	v.drops[node] = d
	// What it may not have made durable is on disk before it may leave
	// the set; writes it completes meanwhile mark its bitmap too.
	v.markLeftLocked(node)
	v.mu.Unlock()

	if j != nil {
		<-j.done
	}
	err := v.syncDirty()
	switch {
	case err != nil:
	case v.cfg.Membership == nil:
		err = errors.New("no membership to drop it through")
	default:
		ctx, cancel := context.WithTimeout(context.Background(), v.cfg.DropTimeout)
		err = v.cfg.Membership.Drop(ctx, v.cfg.Device, epoch, node)
		cancel()
	}

	v.mu.Lock()
	if err == nil {
		v.removeMemberLocked(node)
		v.log.Warn("replica dropped from the in-sync set", "replica", node, "epoch", epoch)
	} else {
		v.log.Error("cannot drop failed replica: not acknowledging", "replica", node, "epoch", epoch, "err", err)
	}
	delete(v.drops, node)
	d.err = err
	close(d.done)
	v.mu.Unlock()
	return err
}

// removeMemberLocked takes node out of the members: it gets a dirty
// bitmap and writes mark it.
func (v *Volume) removeMemberLocked(node string) {
	if containsNode(v.members, node) {
		v.setMembersLocked(slices.DeleteFunc(slices.Clone(v.members), func(p *Peer) bool { return p.Node() == node }))
		v.markLeftLocked(node)
	}
	delete(v.joining, node)
	delete(v.readmitted, node)
	v.rebuildOutOfSyncLocked()
}

// fence stops the volume: a replica has seen a newer epoch than epoch.
func (v *Volume) fence(epoch uint64, cause *StaleEpochError) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.epoch == epoch && !v.fenced.Swap(true) {
		v.log.Warn("replication volume fenced: a replica is in a newer epoch", "epoch", epoch,
			"replica", cause.Node, "replica epoch", cause.Epoch)
	}
}

// Flush makes every completed write durable locally and on every in-sync
// replica.
func (v *Volume) Flush() error {
	v.flushMu.Lock()
	defer v.flushMu.Unlock()
	op := v.getOp()
	defer v.putOp(op)
	v.mu.Lock()
	if err := v.usable(); err != nil {
		v.mu.Unlock()
		return err
	}
	epoch := v.epoch
	op.peers = append(op.peers, v.members...)
	v.unflushed, v.flushing = v.flushing, v.unflushed
	v.mu.Unlock()

	seq := v.seq.Add(1)
	deadline := time.Now().Add(v.cfg.Timeout)
	for _, p := range op.peers {
		op.calls = append(op.calls, p.startFlush(v.cfg.Device, epoch, seq))
	}
	localErr := v.local.Flush()
	v.awaitAll(op, deadline)
	// A replica that failed the flush may not have made durable what the
	// flush covered.
	flushing := v.flushing
	err := v.settle(op, epoch, localErr, func(b *Bitmap) { b.Or(flushing) })

	v.mu.Lock()
	if err != nil {
		v.unflushed.Or(v.flushing)
	}
	v.flushing.ClearAll()
	v.mu.Unlock()
	return err
}

// Seal announces the volume's epoch to every in-sync replica, which then
// refuses anything older: a new owner calls it before serving. A replica
// that has not learned yet that this node owns the device (ErrNotOwner),
// or that the device exists at all (ErrUnknownDevice: it applies the same
// Raft entry a moment later), is asked again until sealWait; one that
// fails is dropped.
func (v *Volume) Seal(ctx context.Context) error {
	op := v.getOp()
	defer v.putOp(op)
	v.mu.Lock()
	if err := v.usable(); err != nil {
		v.mu.Unlock()
		return err
	}
	epoch := v.epoch
	op.peers = append(op.peers, v.members...)
	v.mu.Unlock()

	for range op.peers {
		op.errs = append(op.errs, nil)
	}
	var wg sync.WaitGroup
	for i, p := range op.peers {
		wg.Go(func() { op.errs[i] = v.sealOne(ctx, p, epoch) })
	}
	wg.Wait()
	// A replica that cannot be sealed is dropped before the regions the
	// old owner had in flight are reconciled: what it holds that this
	// copy does not may be anywhere, so its resync compares everything.
	v.mu.Lock()
	for i, err := range op.errs {
		if err != nil && asStale(err) == nil {
			v.verify[op.peers[i].Node()] = true
		}
	}
	v.mu.Unlock()
	return v.settle(op, epoch, nil, func(b *Bitmap) { b.Set(0, v.size) })
}

// sealWait bounds how long a new owner waits for a replica to learn of
// the device or its ownership: a replica applies Raft entries a few
// milliseconds after the owner, seconds when it is catching up.
const sealWait = 3 * time.Second

func (v *Volume) sealOne(ctx context.Context, p *Peer, epoch uint64) error {
	deadline := time.Now().Add(max(v.cfg.Timeout, sealWait))
	for {
		c := p.startSeal(v.cfg.Device, epoch)
		err := p.await(ctx, c, time.Now().Add(v.cfg.Timeout))
		p.putCall(c)
		if !(errors.Is(err, ErrNotOwner) || errors.Is(err, ErrUnknownDevice)) || time.Now().After(deadline) {
			return err
		}
		t := time.NewTimer(v.cfg.Timeout / 20)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Reconcile makes the in-sync replicas' copies of the extents identical
// to the local one, by writing the local data to them: a new owner calls
// it, after Seal, for the union of the activity logs of every member
// (Peer.Activity, Server.ActivityLog), before serving.
func (v *Volume) Reconcile(ctx context.Context, ext []Extent) error {
	buf := backend.GetBuffer(ActivityRegion)
	defer backend.PutBuffer(buf)
	for _, e := range ext {
		off, end := max(e.Off, 0), min(e.End(), v.size)
		for off < end {
			if err := ctx.Err(); err != nil {
				return err
			}
			n := min(end-off, ActivityRegion)
			if err := v.copyOut(buf.B[:n], off); err != nil {
				return err
			}
			off += n
		}
	}
	return nil
}

// copyOut reads [off, off+len(p)) locally and writes it everywhere, with
// no other write to the range in between.
// ReconcileInBackground runs Reconcile(ext) while the volume serves, until
// it is done or the volume stops resyncing (StopResync, Close). A new
// owner seals the old epoch first, which is what keeps a zombie write out;
// rewriting the regions the old owner had writes in flight to can take
// long (up to the whole LUN), and its copy is the one every read and
// write now goes to: like DRBD's resync of activity-log extents after a
// primary crash, it need not wait. A copy that fails it is dropped, its
// region marked for its resync.
func (v *Volume) ReconcileInBackground(ext []Extent) {
	if len(ext) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	v.mu.Lock()
	if v.resyncStopped || v.closed.Load() {
		v.mu.Unlock()
		cancel()
		return
	}
	v.stopReconcile = cancel
	v.resyncWG.Add(1)
	v.mu.Unlock()
	go func() {
		defer v.resyncWG.Done()
		defer cancel()
		var total int64
		for _, e := range ext {
			total += e.Len
		}
		start := time.Now()
		if err := v.Reconcile(ctx, ext); err != nil {
			v.log.Warn("rewriting the regions the former owner had writes in flight to", "bytes", total, "err", err)
			return
		}
		v.log.Info("regions the former owner had writes in flight to rewritten on every copy",
			"bytes", total, "took", time.Since(start).Round(time.Millisecond))
	}()
}

func (v *Volume) copyOut(p []byte, off int64) error {
	n := int64(len(p))
	ticket := v.ranges.lock(off, n, true)
	defer v.ranges.release(ticket)
	if err := v.local.ReadAt(p, off); err != nil {
		return err
	}
	op := v.getOp()
	defer v.putOp(op)
	epoch, err := v.begin(op, off, n, n)
	if err != nil {
		return err
	}
	seq := v.seq.Add(1)
	deadline := time.Now().Add(v.cfg.Timeout)
	for _, peer := range op.peers {
		op.calls = append(op.calls, peer.startWrite(v.cfg.Device, epoch, seq, off, p, true))
	}
	if len(op.async) > 0 {
		v.sendAsync(op, opWrite, epoch, seq, off, n, p, true)
	}
	v.awaitAll(op, deadline)
	return v.settle(op, epoch, nil, func(b *Bitmap) { b.Set(off, n) })
}

// Size is the capacity in bytes.
func (v *Volume) Size() int64 { return v.size }

// ReadOnly reports whether the local copy refuses writes.
func (v *Volume) ReadOnly() bool { return v.local.ReadOnly() }

// NVCache reports the local copy's cache; replicas are configured alike.
func (v *Volume) NVCache() bool { return v.local.NVCache() }

// Close refuses further I/O, stops the resyncs, waits for them and
// closes the local copy. The peers are the caller's.
func (v *Volume) Close() error {
	v.mu.Lock()
	if v.closed.Swap(true) {
		v.mu.Unlock()
		return nil
	}
	v.mu.Unlock()
	v.StopResync()
	v.resyncWG.Wait()
	v.saveDirtyLazily(true)
	return v.local.Close()
}
