package scsi

import (
	"time"

	"github.com/hatarget/hatarget/target/backend"
)

// ExecuteAsync runs cmd like Execute when it is a plain WRITE that the
// LU's device takes through backend.AsyncWriter (a replicated volume):
// it starts the write and returns true, and done runs once res holds the
// outcome, on whatever goroutine completed the write -- possibly this
// one, before ExecuteAsync returns. What the write sends to other nodes
// may wait for plug (see backend.Plug). For anything else it returns
// false, having changed nothing that Execute does not set again, and the
// caller runs cmd through Execute.
//
// The transport calls it where blocking would hold up other commands (a
// connection's reader), so nothing here waits: a command whose blocks
// are locked, or that the device wants written through WriteAt, goes the
// common way.
func ExecuteAsync(v View, cmd *Command, res *Result, done func(), plug *backend.Plug) bool {
	if v == nil || !plainWrite(cmd.CDB) {
		return false
	}
	lu := v.LU(cmd.LUN)
	if lu == nil || !lu.executesHere() {
		return false
	}
	st := lu.state.Load()
	if st.async == nil {
		return false
	}
	ns := lu.nexusFor(cmd.Nexus)
	if ns.pending.Load() != 0 {
		// A unit attention is reported the common way.
		return false
	}
	cmd.View = v
	resetResult(res)
	w := &cmd.started
	*w = startedWrite{lu: lu, st: st, cmd: cmd, res: res, done: done}
	if st.cfg.Stats != nil {
		w.start = time.Now()
	}
	if _, err := lu.admit(st, ns, cmd); err != nil {
		// Refused as Execute would refuse it (admit may also have taken a
		// unit attention raised since the check above, which this command
		// must report now).
		w.finish(err)
		return true
	}
	r := request{lu: lu, st: st, ns: ns, cmd: cmd, res: res, cdb: cmd.CDB}
	b, durable, err := r.checkWrite()
	if err != nil {
		w.finish(err)
		return true
	}
	data := r.wholeBlocks(b.blocks)
	if durable || data == nil || !st.leaseValid() {
		*w = startedWrite{}
		return false
	}
	off := int64(b.lba) << st.shift
	hold, ok := lu.rl.tryAcquireShared(off, int64(len(data)))
	if !ok {
		*w = startedWrite{}
		return false
	}
	w.hold = hold
	if !st.async.StartWrite(data, off, false, w, plug) {
		w.hold.release()
		*w = startedWrite{}
		return false
	}
	return true
}

// leaseValid is the fence of a write that bypasses st.dev.
func (st *luState) leaseValid() bool {
	return st.cfg.Lease == nil || st.cfg.Lease.Valid()
}

// startedWrite is a WRITE that ExecuteAsync started. It lives in its
// Command, so that starting one does not allocate.
type startedWrite struct {
	lu    *LU
	st    *luState
	cmd   *Command
	res   *Result
	hold  rangeHold
	start time.Time
	done  func()
}

// WriteDone completes the command with the device's outcome.
func (w *startedWrite) WriteDone(err error) {
	if err != nil {
		err = writeError(err)
	}
	w.finish(err)
}

// finish completes the command with err, or GOOD.
func (w *startedWrite) finish(err error) {
	w.hold.release()
	if err != nil {
		w.lu.fail(w.res, err)
	}
	if w.st.cfg.Stats != nil {
		w.st.observe(KindWrite, w.cmd, w.res, w.start)
	}
	done := w.done
	*w = startedWrite{}
	done()
}

var _ backend.WriteDone = (*startedWrite)(nil)
