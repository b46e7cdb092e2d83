package replication

import (
	"fmt"
	"time"

	"github.com/hatarget/hatarget/target/backend"
)

// StartWrite is WriteAt for a transport that must not hold a goroutine
// per write in flight (backend.AsyncWriter). It sends p to the in-sync
// replicas, writes it to the local copy on the caller's goroutine, and
// returns; the last answer completes the write on its connection's reader
// and hands the outcome to done. It takes only the common case: a write
// that need not be durable yet, on a volume whose nodes are all in sync
// (no bitmap to save first), overlapping no write in flight, with a local
// copy that has been quick to write lately. For anything else it returns
// false having done nothing, and the caller uses WriteAt.
func (v *Volume) StartWrite(p []byte, off int64, durable bool, done backend.WriteDone, plug *backend.Plug) bool {
	n := int64(len(p))
	if durable || n == 0 || n > MaxDataLen || v.checkWrite(off, n) != nil || !v.inline.quick() {
		return false
	}
	ticket, free := v.ranges.tryLock(off, n, true)
	if !free {
		v.ranges.release(ticket)
		return false
	}
	op := v.getOp()
	epoch, ok := v.beginQuick(op)
	if !ok {
		v.ranges.release(ticket)
		v.putOp(op)
		return false
	}
	op.ticket, op.epoch, op.off, op.n, op.done = ticket, epoch, off, n, done
	op.left.Store(int32(len(op.peers)) + 1) // the calls and the local write
	seq := v.seq.Add(1)
	for _, peer := range op.peers {
		op.calls = append(op.calls, peer.startWriteNotify(v.cfg.Device, epoch, seq, off, p, false, op.callDone, plug))
	}
	op.timer.Reset(v.cfg.Timeout)
	start := time.Now()
	op.localErr = v.local.WriteAt(p, off, false)
	v.inline.observe(time.Since(start))
	op.step()
	return true
}

// beginQuick is begin for StartWrite: false when the volume is not in the
// state StartWrite takes.
func (v *Volume) beginQuick(op *volOp) (uint64, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.usable() != nil || len(v.outOfSync) > 0 || len(v.resyncs) > 0 || len(v.drops) > 0 || !v.dirtySaved() {
		return 0, false
	}
	op.peers = append(op.peers, v.members...)
	return v.epoch, true
}

// step counts down one of what a StartWrite waits for: the last one
// concludes it.
func (op *volOp) step() {
	if op.left.Add(-1) == 0 {
		op.v.finishStarted(op)
	}
}

// expire abandons the calls of a StartWrite that outlived the volume's
// timeout, which completes them with ErrTimeout.
func (op *volOp) expire() {
	for _, c := range op.calls {
		c.p.abandon(c, fmt.Errorf("%w: no answer from %s", ErrTimeout, c.p.cfg.Node))
	}
}

// finishStarted concludes a StartWrite whose calls and local write are
// all done, on the goroutine that saw the last of them: usually the
// reader of a replica's connection. Dropping a replica that failed waits
// for Raft, so a write with any failure is concluded on a goroutine of
// its own, leaving the reader to complete the other writes.
func (v *Volume) finishStarted(op *volOp) {
	// An op whose timer fired is not recycled: expire may still be
	// reading it.
	recycle := op.timer.Stop()
	failed := op.localErr != nil
	for _, c := range op.calls {
		err := c.result()
		op.errs = append(op.errs, err)
		failed = failed || err != nil
	}
	if failed {
		go v.concludeStarted(op, recycle)
		return
	}
	v.concludeStarted(op, recycle)
}

func (v *Volume) concludeStarted(op *volOp, recycle bool) {
	err := v.conclude(op, op.epoch, op.localErr, true, op.off, op.n)
	v.ranges.release(op.ticket)
	done := op.done
	if recycle {
		for _, c := range op.calls {
			c.p.putCall(c)
		}
		v.putOp(op)
	}
	done.WriteDone(err)
}
