package replication

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hatarget/hatarget/target/backend"
)

// Resync brings a replica out of the in-sync set up to date while the
// volume serves, then readmits it through Membership. One goroutine per
// replica runs attempts until one succeeds:
//
//  1. seal the replica in the volume's epoch: from then on it refuses
//     every request of an older owner;
//  2. from then on every write and unmap also goes to it, without being
//     waited for: its failures mark its dirty bitmap and end the attempt,
//     never fail, delay or drop anything (a "catching up" node);
//  3. copy its dirty regions from the local copy, each under the volume's
//     range lock, so that a concurrent write is ordered before or after
//     the copy on every copy; regions of a replica the volume knows
//     nothing of (not dropped by it: a new owner, a replaced node) are
//     compared by SHA-256 first and only those that differ are sent;
//  4. once nothing is dirty: make it a member (writes now wait for it, and
//     its failure drops it), wait for the writes sent to it without
//     waiting, flush it, and commit it to the in-sync set (Readmit).
//
// A member added to the in-sync set in Raft before the volume waited for
// it could miss acknowledged writes, so the volume counts it first: if it
// fails before Readmit is proposed it leaves at once (it is not in the
// set); after, its drop waits for Readmit's outcome and commits after it.
// A Readmit that fails may still commit, so the volume commits a Drop
// before it stops counting the node.
//
// What a replica acknowledged without making durable is tracked
// (volatile) until the flush of step 4; an attempt that fails sends those
// regions again.

// ResyncProgress is where the resync of one replica stands.
type ResyncProgress struct {
	// Done is the bytes the current attempt has processed (copied, or
	// compared and copied where they differed); Total is Done plus the
	// bytes still dirty. Both restart with each attempt.
	Done, Total int64
	// Copied is the bytes the current attempt wrote to the replica.
	Copied int64
	// State is one of the Resync* states.
	State string
	// Err is why the last attempt failed, while the resync waits to retry.
	Err string
}

// Resync states.
const (
	ResyncSealing     = "sealing"
	ResyncCopying     = "copying"   // dirty regions known: copied
	ResyncComparing   = "comparing" // unknown: compared by checksum
	ResyncReadmitting = "readmitting"
	ResyncRetrying    = "retrying"
)

const (
	// resyncChunk is what a resync reads, compares and sends at once; it
	// has at most resyncWindow bytes (resyncWindowChunks chunks, for the
	// small ones of a fragmented bitmap) in flight.
	resyncChunk        = 1 << 20
	resyncWindow       = 4 << 20
	resyncWindowChunks = 32
	// A node being resynced gets at most maxAsyncWrites writes of at most
	// maxAsyncBytes in flight; beyond, writes mark its bitmap instead.
	maxAsyncWrites = 256
	maxAsyncBytes  = 32 << 20
	minResyncRetry = 100 * time.Millisecond
	maxResyncRetry = 5 * time.Second
)

var (
	errResyncStopped = errors.New("replication: resync stopped")
	errNotCaughtUp   = errors.New("replication: regions left to copy")
)

// resync is the resync of one node.
type resync struct {
	node   string
	peer   *Peer
	ctx    context.Context // cancelled when the resync is stopped
	cancel context.CancelFunc
	// q takes the writes sent to the node without waiting, for track.
	q chan asyncWrite

	// Guarded by Volume.mu.
	sending  bool  // writes go to the node
	inflight int   // writes in q or being awaited
	bytes    int64 // their data
	broken   error // a write sent to it failed in this attempt
	state    string
	err      string
	done     int64
	copied   int64
}

// joinOp is a node rejoining the members, whose readmission may be in
// flight.
type joinOp struct {
	started bool          // Readmit proposed; guarded by Volume.mu
	done    chan struct{} // closed once Readmit returned, or the join was abandoned before
	err     error         // Readmit's; set before done is closed
}

// asyncWrite is a write or unmap sent to a resyncing node and not waited
// for.
type asyncWrite struct {
	c        *call
	buf      *backend.Buffer // the data's copy
	off, n   int64
	data     int64
	deadline time.Time
}

// Resync reports the resync of every replica being resynced, by node.
func (v *Volume) Resync() map[string]ResyncProgress {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make(map[string]ResyncProgress, len(v.resyncs))
	for node, rs := range v.resyncs {
		var left int64
		if b := v.dirty[node]; b != nil {
			left = min(b.Count()*b.RegionSize(), v.size)
		}
		out[node] = ResyncProgress{Done: rs.done, Total: rs.done + left, Copied: rs.copied, State: rs.state, Err: rs.err}
	}
	return out
}

// StopResync stops every resync for good, without waiting: a caller that
// stops using the volume calls it. Nodes being readmitted stay members.
func (v *Volume) StopResync() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.resyncStopped = true
	if v.stopReconcile != nil {
		v.stopReconcile()
	}
	for node, rs := range v.resyncs {
		rs.cancel()
		delete(v.resyncs, node)
	}
	v.rebuildOutOfSyncLocked()
}

// setResyncsLocked makes peers (those not members) the nodes resynced:
// it starts a resync for each new one and stops those of nodes no longer
// listed, except those being readmitted.
func (v *Volume) setResyncsLocked(peers []*Peer) {
	want := make(map[string]*Peer, len(peers))
	for _, p := range peers {
		if p == nil || p.Node() == v.cfg.Self || containsNode(v.members, p.Node()) {
			continue
		}
		if _, dup := want[p.Node()]; !dup {
			want[p.Node()] = p
		}
	}
	for node, rs := range v.resyncs {
		if v.joining[node] != nil {
			continue
		}
		if want[node] != rs.peer {
			rs.cancel()
			delete(v.resyncs, node)
		}
	}
	if !v.resyncStopped && !v.closed.Load() {
		for node, p := range want {
			if v.resyncs[node] == nil {
				v.startResyncLocked(node, p)
			}
		}
	}
	v.rebuildOutOfSyncLocked()
}

func (v *Volume) startResyncLocked(node string, p *Peer) {
	if v.dirty[node] == nil {
		// Never dropped by this volume: it may lack anything.
		v.dirtyLocked(node).Set(0, v.size)
		v.verify[node] = true
	}
	rs := &resync{node: node, peer: p, q: make(chan asyncWrite, maxAsyncWrites), state: ResyncSealing}
	rs.ctx, rs.cancel = context.WithCancel(context.Background())
	v.resyncs[node] = rs
	v.log.Info("resync of an out-of-sync replica", "replica", node, "epoch", v.epoch,
		"dirty", v.dirty[node].Count()*v.dirty[node].RegionSize(), "compare", v.verify[node])
	v.resyncWG.Add(2)
	go v.runResync(rs)
	go v.track(rs)
}

// volatileLocked returns node's volatile bitmap, creating it.
func (v *Volume) volatileLocked(node string) *Bitmap {
	b := v.volatile[node]
	if b == nil {
		b, _ = NewBitmap(v.size, v.cfg.RegionSize)
		v.volatile[node] = v.watch(b)
	}
	return b
}

// reserveAsyncLocked adds to op the nodes being resynced that take
// writes, within their bounds; a node beyond them gets the range in its
// bitmap instead.
func (v *Volume) reserveAsyncLocked(op *volOp, off, n, data int64) {
	for node, rs := range v.resyncs {
		if !rs.sending {
			continue
		}
		if rs.inflight >= maxAsyncWrites || rs.bytes+data > maxAsyncBytes {
			v.dirtyLocked(node).Set(off, n)
			continue
		}
		rs.inflight++
		rs.bytes += data
		// Not durable there until the flush before its readmission (a
		// write the initiator made durable is, but counting it apart is
		// not worth it).
		v.volatileLocked(node).Set(off, n)
		op.async = append(op.async, rs)
	}
}

// sendAsync sends a request to the resyncing nodes of op, with a copy of
// its data, and hands it to their trackers. It runs under the request's
// range lock, so that the copies of the resync and the writes reach the
// node in the order they reach the local copy.
func (v *Volume) sendAsync(op *volOp, kind opKind, epoch, seq uint64, off, n int64, data []byte, durable bool) {
	deadline := time.Now().Add(v.resyncTimeout())
	for _, rs := range op.async {
		a := asyncWrite{off: off, n: n, data: int64(len(data)), deadline: deadline}
		if kind == opWrite {
			a.buf = backend.GetBuffer(len(data))
			b := a.buf.B[:len(data)]
			copy(b, data)
			a.c = rs.peer.startWrite(v.cfg.Device, epoch, seq, off, b, durable)
		} else {
			a.c = rs.peer.startUnmap(v.cfg.Device, epoch, seq, off, n)
		}
		rs.q <- a // never blocks: reserveAsyncLocked bounds the writes in flight
	}
}

// resyncTimeout bounds one request of a resync, and a write to a node
// being resynced.
func (v *Volume) resyncTimeout() time.Duration { return 10 * v.cfg.Timeout }

// track awaits the writes sent to a resyncing node: one that fails marks
// its bitmap and ends the attempt. It returns once the resync is stopped
// and nothing is in flight.
func (v *Volume) track(rs *resync) {
	defer v.resyncWG.Done()
	for {
		var a asyncWrite
		select {
		case a = <-rs.q:
		case <-rs.ctx.Done():
			v.mu.Lock()
			n := rs.inflight
			v.mu.Unlock()
			if n == 0 {
				return
			}
			a = <-rs.q // reserved, so on its way
		}
		err := rs.peer.await(rs.ctx, a.c, a.deadline)
		rs.peer.putCall(a.c)
		backend.PutBuffer(a.buf)
		v.mu.Lock()
		if err != nil {
			v.dirtyLocked(rs.node).Set(a.off, a.n)
			if rs.broken == nil {
				rs.broken = fmt.Errorf("a write to the replica failed: %w", err)
			}
		}
		rs.inflight--
		rs.bytes -= a.data
		if rs.inflight == 0 {
			v.resyncIdle.Broadcast()
		}
		v.mu.Unlock()
	}
}

// runResync runs attempts until one readmits the node or the resync is
// stopped.
func (v *Volume) runResync(rs *resync) {
	defer v.resyncWG.Done()
	var backoff time.Duration
	for attempt := 1; ; attempt++ {
		start := time.Now()
		err := v.resyncOnce(rs, start)
		if err == nil || rs.ctx.Err() != nil {
			return
		}
		v.mu.Lock()
		rs.state, rs.err = ResyncRetrying, err.Error()
		v.mu.Unlock()
		if attempt <= 3 || attempt%20 == 0 {
			v.log.Warn("resync attempt failed", "replica", rs.node, "attempt", attempt, "err", err)
		}
		backoff = min(max(2*backoff, minResyncRetry), maxResyncRetry)
		t := time.NewTimer(backoff)
		select {
		case <-rs.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// resyncOnce is one attempt: seal, catch up, readmit.
func (v *Volume) resyncOnce(rs *resync, start time.Time) (err error) {
	node := rs.node
	v.mu.Lock()
	if err := v.usable(); err != nil {
		v.mu.Unlock()
		return err
	}
	if v.resyncs[node] != rs {
		v.mu.Unlock()
		return errResyncStopped
	}
	epoch := v.epoch
	rs.state, rs.done, rs.copied = ResyncSealing, 0, 0
	v.mu.Unlock()

	if err := v.sealOne(rs.ctx, rs.peer, epoch); err != nil {
		if se := asStale(err); se != nil {
			v.fence(epoch, se)
		}
		return fmt.Errorf("sealing: %w", err)
	}

	v.mu.Lock()
	if v.epoch != epoch || v.resyncs[node] != rs || containsNode(v.members, node) {
		v.mu.Unlock()
		return errResyncStopped
	}
	// A replica that restarts loses what it had not made durable, and the
	// volume may not notice it between two requests: the flush before the
	// readmission counts only if the connection stayed the same.
	conns := rs.peer.conns.Load()
	bm := v.dirtyLocked(node)
	v.orVolatileLocked(node)
	verify := v.verify[node]
	rs.sending, rs.broken, rs.err = true, nil, ""
	rs.state = ResyncCopying
	if verify {
		rs.state = ResyncComparing
	}
	v.rebuildOutOfSyncLocked()
	v.mu.Unlock()
	defer func() {
		if err != nil {
			v.mu.Lock()
			rs.sending = false
			v.orVolatileLocked(node)
			v.rebuildOutOfSyncLocked()
			v.mu.Unlock()
		}
	}()

	copyStart := time.Now()
	if err := v.copyRegions(rs, epoch, bm, verify); err != nil {
		return err
	}
	return v.rejoin(rs, epoch, conns, start, copyStart)
}

// orVolatileLocked adds to node's bitmap what it has not made durable.
func (v *Volume) orVolatileLocked(node string) {
	if b := v.volatile[node]; b != nil && b.Count() > 0 {
		v.dirtyLocked(node).Or(b)
		b.ClearAll()
	}
}

// pendingCopy is a chunk being written to a resyncing node.
type pendingCopy struct {
	buf    *backend.Buffer
	n      int64 // the chunk's size
	writes []pieceWrite
}

type pieceWrite struct {
	c      *call
	off, n int64
}

// copyRegions copies the regions bm marks until none is left, comparing
// checksums first when verify is set. Regions marked again meanwhile (a
// write to the node failed) are copied in a further pass.
func (v *Volume) copyRegions(rs *resync, epoch uint64, bm *Bitmap, verify bool) (err error) {
	region := bm.RegionSize()
	chunk := max(region, resyncChunk/region*region)
	var window []*pendingCopy
	var inflight int64 // bytes of the chunks in window
	defer func() {
		for _, pc := range window {
			v.awaitCopy(rs, epoch, bm, pc) // the buffers are in flight
		}
	}()
	pos := int64(0)
	for {
		if err := rs.ctx.Err(); err != nil {
			return err
		}
		if err := v.brokenResync(rs); err != nil {
			return err
		}
		e, ok := bm.Next(pos)
		if !ok {
			if pos > 0 {
				pos = 0
				continue
			}
			for len(window) > 0 {
				pc := window[0]
				window, inflight = window[1:], inflight-pc.n
				if err := v.awaitCopy(rs, epoch, bm, pc); err != nil {
					return err
				}
			}
			if bm.Count() == 0 {
				return nil
			}
			continue
		}
		off, n := e.Off, min(e.Len, chunk)
		if err := v.limiter.wait(rs.ctx, n); err != nil {
			return err
		}
		var sums [][ChecksumLen]byte
		if verify {
			ctx, cancel := context.WithTimeout(rs.ctx, v.resyncTimeout())
			sums, err = rs.peer.Checksums(ctx, v.cfg.Device, epoch, off, n, int(region))
			cancel()
			if err != nil {
				if se := asStale(err); se != nil {
					v.fence(epoch, se)
				}
				return fmt.Errorf("checksums: %w", err)
			}
		}
		pc, err := v.copyChunk(rs, epoch, bm, off, n, region, sums)
		if err != nil {
			return err
		}
		v.mu.Lock()
		rs.done += n
		v.mu.Unlock()
		v.saveDirtyLazily(false)
		if pc != nil {
			window, inflight = append(window, pc), inflight+pc.n
			for inflight >= resyncWindow || len(window) >= resyncWindowChunks {
				pc := window[0]
				window, inflight = window[1:], inflight-pc.n
				if err := v.awaitCopy(rs, epoch, bm, pc); err != nil {
					return err
				}
			}
		}
		pos = off + n
	}
}

func (v *Volume) brokenResync(rs *resync) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return rs.broken
}

// copyChunk sends [off, off+n) of the local copy to the node, or with
// sums (its checksums, per region) only the regions that differ. It
// reads and sends under the range lock: a write to the range waits, and
// reaches the node after the copy.
func (v *Volume) copyChunk(rs *resync, epoch uint64, bm *Bitmap, off, n, region int64, sums [][ChecksumLen]byte) (*pendingCopy, error) {
	ticket := v.ranges.lock(off, n, true)
	defer v.ranges.release(ticket)
	if err := v.usable(); err != nil {
		return nil, err
	}
	buf := backend.GetBuffer(int(n))
	p := buf.B[:n]
	if err := v.local.ReadAt(p, off); err != nil {
		backend.PutBuffer(buf)
		return nil, err
	}
	piece := n
	if sums != nil {
		piece = region
	}
	pc := &pendingCopy{buf: buf, n: n}
	for o := int64(0); o < n; o += piece {
		k := min(piece, n-o)
		if sums != nil && int(o/piece) < len(sums) && sha256.Sum256(p[o:o+k]) == sums[o/piece] {
			continue
		}
		pc.writes = append(pc.writes, pieceWrite{off: off + o, n: k})
	}
	// The regions sent move from the dirty bitmap to the volatile one at
	// once, so that a saved state file has them in either (persist.go).
	v.mu.Lock()
	for _, w := range pc.writes {
		v.volatileLocked(rs.node).setMoved(w.off, w.n)
	}
	bm.Clear(off, n)
	v.mu.Unlock()
	seq := v.seq.Add(1)
	for i, w := range pc.writes {
		pc.writes[i].c = rs.peer.startWrite(v.cfg.Device, epoch, seq, w.off, p[w.off-off:][:w.n], false)
	}
	if len(pc.writes) == 0 {
		backend.PutBuffer(buf)
		return nil, nil
	}
	return pc, nil
}

// awaitCopy waits for a chunk's writes; a range that failed is dirty
// again.
func (v *Volume) awaitCopy(rs *resync, epoch uint64, bm *Bitmap, pc *pendingCopy) error {
	var first error
	var copied int64
	for _, w := range pc.writes {
		err := rs.peer.await(rs.ctx, w.c, time.Now().Add(v.resyncTimeout()))
		rs.peer.putCall(w.c)
		if err != nil {
			bm.Set(w.off, w.n)
			if se := asStale(err); se != nil {
				v.fence(epoch, se)
			}
			if first == nil {
				first = fmt.Errorf("copying: %w", err)
			}
			continue
		}
		copied += w.n
	}
	backend.PutBuffer(pc.buf)
	v.mu.Lock()
	rs.copied += copied
	v.mu.Unlock()
	return first
}

// caughtUpLocked is nil when nothing is left to send the node.
func (v *Volume) caughtUpLocked(rs *resync) error {
	if rs.broken != nil {
		return rs.broken
	}
	if b := v.dirty[rs.node]; b != nil && b.Count() > 0 {
		return errNotCaughtUp
	}
	return nil
}

// joinedLocked is nil while the join j of the resync rs in epoch still
// holds and the node has everything.
func (v *Volume) joinedLocked(rs *resync, j *joinOp, epoch uint64) error {
	switch {
	case v.epoch != epoch || v.resyncs[rs.node] != rs:
		return errResyncStopped
	case v.joining[rs.node] != j:
		return errors.New("the replica failed a write while rejoining")
	}
	return v.caughtUpLocked(rs)
}

// abortJoinLocked undoes a join whose Readmit was never proposed: the
// node is not in the in-sync set, so it leaves the members at once.
func (v *Volume) abortJoinLocked(node string, j *joinOp) {
	if v.joining[node] == j {
		v.removeMemberLocked(node)
	}
	close(j.done)
}

// rejoin makes the caught-up node a member, then readmits it.
func (v *Volume) rejoin(rs *resync, epoch, conns uint64, start, copyStart time.Time) error {
	node := rs.node
	v.mu.Lock()
	if v.epoch != epoch || v.resyncs[node] != rs || containsNode(v.members, node) {
		v.mu.Unlock()
		return errResyncStopped
	}
	if err := v.caughtUpLocked(rs); err != nil {
		v.mu.Unlock()
		return err
	}
	// From here every write waits for the node, and one it fails drops
	// it; what was sent to it without waiting must be acknowledged before
	// it is readmitted.
	j := &joinOp{done: make(chan struct{})}
	v.joining[node] = j
	v.setMembersLocked(append(slices.Clone(v.members), rs.peer))
	rs.sending = false
	rs.state = ResyncReadmitting
	v.rebuildOutOfSyncLocked()
	for rs.inflight > 0 {
		v.resyncIdle.Wait()
	}
	if err := v.joinedLocked(rs, j, epoch); err != nil {
		v.abortJoinLocked(node, j)
		v.mu.Unlock()
		return err
	}
	v.mu.Unlock()

	// What it acknowledged without making it durable must be, before the
	// set counts on it.
	ctx, cancel := context.WithTimeout(rs.ctx, v.resyncTimeout())
	err := rs.peer.Flush(ctx, v.cfg.Device, epoch)
	cancel()
	v.mu.Lock()
	if err == nil && rs.peer.conns.Load() != conns {
		err = errors.New("the connection to the replica was renewed during the resync")
	}
	if err == nil {
		err = v.joinedLocked(rs, j, epoch)
	}
	if err != nil {
		v.abortJoinLocked(node, j)
		v.mu.Unlock()
		return fmt.Errorf("before readmission: %w", err)
	}
	j.started = true
	if b := v.volatile[node]; b != nil {
		b.ClearAll()
	}
	done, copied := rs.done, rs.copied
	copying := time.Since(copyStart)
	v.mu.Unlock()

	if v.cfg.Membership == nil {
		err = errors.New("no membership to readmit it through")
	} else {
		ctx, cancel := context.WithTimeout(rs.ctx, v.cfg.DropTimeout)
		err = v.cfg.Membership.Readmit(ctx, v.cfg.Device, epoch, node)
		cancel()
	}

	v.mu.Lock()
	j.err = err
	close(j.done)
	if v.epoch != epoch {
		v.mu.Unlock()
		return errResyncStopped
	}
	if err == nil || (v.joining[node] != j && containsNode(v.members, node)) {
		// In the set (an Update saw it there if Readmit failed).
		if v.joining[node] == j {
			delete(v.joining, node)
			v.readmitted[node] = true
		}
		v.finishResyncLocked(rs)
		v.mu.Unlock()
		rs.cancel()
		v.saveDirtyLazily(true)
		v.log.Info("replica resynchronised and readmitted to the in-sync set", "replica", node, "epoch", epoch,
			"took", time.Since(start).Round(time.Millisecond), "sealed", copyStart.Sub(start).Round(time.Millisecond),
			"copying", copying.Round(time.Millisecond), "processed", done, "copied", copied,
			"rate", fmt.Sprintf("%.1fMB/s", float64(done)/copying.Seconds()/1e6))
		return nil
	}
	if v.joining[node] != j {
		v.mu.Unlock()
		return fmt.Errorf("readmission: %w", err) // dropped meanwhile
	}
	v.mu.Unlock()

	// The node may or may not be in the set: make sure it is not before
	// counting without it.
	v.log.Warn("readmission failed: dropping the replica again", "replica", node, "epoch", epoch, "err", err)
	var backoff time.Duration
	for {
		derr := v.drop(node, epoch)
		if derr == nil {
			return fmt.Errorf("readmission: %w", err)
		}
		backoff = min(max(2*backoff, minResyncRetry), maxResyncRetry)
		t := time.NewTimer(backoff)
		select {
		case <-rs.ctx.Done():
			t.Stop()
			return fmt.Errorf("readmission: %w; and dropping: %w", err, derr)
		case <-t.C:
		}
		v.mu.Lock()
		if v.epoch != epoch || v.joining[node] != j {
			inSet := v.epoch == epoch && containsNode(v.members, node)
			if inSet {
				v.finishResyncLocked(rs)
			}
			v.mu.Unlock()
			if inSet {
				rs.cancel()
				return nil
			}
			return fmt.Errorf("readmission: %w", err)
		}
		v.mu.Unlock()
	}
}

// finishResyncLocked forgets the resync rs of a node now in the set.
func (v *Volume) finishResyncLocked(rs *resync) {
	node := rs.node
	if v.resyncs[node] == rs {
		delete(v.resyncs, node)
	}
	delete(v.verify, node)
	delete(v.volatile, node)
	if b := v.dirty[node]; b != nil && b.Count() == 0 {
		delete(v.dirty, node)
	}
	v.rebuildOutOfSyncLocked()
}

// rateLimiter paces resyncs to a byte rate.
type rateLimiter struct {
	mu   sync.Mutex
	rate float64 // bytes per second; not positive: unlimited
	next time.Time
}

// wait returns when n more bytes fit the rate.
func (l *rateLimiter) wait(ctx context.Context, n int64) error {
	if l.rate <= 0 {
		return nil
	}
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	at := l.next
	l.next = at.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	l.mu.Unlock()
	d := time.Until(at)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
