package scsi

import (
	"sync"
	"sync/atomic"

	"github.com/hatarget/hatarget/target/backend"
)

// SANITIZE (SBC-4 5.30), only for LUs with LUConfig.SanitizeAllowed.
//
// OVERWRITE writes the initialization pattern over every block, OWCOUNT
// times, inverting it between passes when INVERT is set. BLOCK ERASE (thin
// LUs only, since its result must read as deallocated) punches the whole
// device. CRYPTOGRAPHIC ERASE has no key to throw away, since blocks are
// stored in the clear: it destroys the data itself instead, by punching
// (thin LUs) or zeroing, which leaves the old data at least as
// unrecoverable as a discarded key would.
//
// The operation runs as a job of the LU, not of the command: task
// management, resets and lost sessions do not stop it. While it runs every
// command other than INQUIRY, REPORT LUNS and REQUEST SENSE is refused with
// NOT READY, SANITIZE IN PROGRESS and a progress indication, and REQUEST
// SENSE reports the same as its data. Without IMMED the command itself
// waits for the job. A job that fails leaves the LU in sanitize failure
// mode: media access fails with MEDIUM ERROR, SANITIZE COMMAND FAILED until
// a sanitize succeeds or EXIT FAILURE MODE is requested.

// Sanitize service actions.
const (
	saSanitizeOverwrite   = 0x01
	saSanitizeBlockErase  = 0x02
	saSanitizeCryptoErase = 0x03
	saSanitizeExitFail    = 0x1f
)

// flagSanitize marks the SANITIZE service actions, which stay allowed in
// sanitize failure mode. It sits far above the dispatch table's flags.
const flagSanitize cmdFlags = 1 << 15

// sanitizeTimeout is the recommended timeout reported for SANITIZE.
const sanitizeTimeout = 3600

var errSanitizeFailed = newSense(KeyMediumError, ascSanitizeFailed)

// sanitizeState is the LU's sanitize job and failure mode.
type sanitizeState struct {
	running  atomic.Bool
	failed   atomic.Bool
	progress atomic.Uint32 // 0..65535, of 65536

	mu   sync.Mutex
	done chan struct{} // closed when the running job ends
	err  error         // the last job's outcome
}

func (s *sanitizeState) active() bool { return s.running.Load() || s.failed.Load() }

func (s *sanitizeState) inProgress() Sense {
	sense := newSense(KeyNotReady, ascSanitizeInProgress)
	sense.HasProgress, sense.Progress = true, uint16(s.progress.Load())
	return sense
}

// sanitizeBlocks is the readiness check while a job runs or failed.
func (lu *LU) sanitizeBlocks(f cmdFlags) error {
	if lu.san.running.Load() {
		return lu.san.inProgress()
	}
	if lu.san.failed.Load() && f&flagMediaAccess != 0 && f&flagSanitize == 0 {
		return errSanitizeFailed
	}
	return nil
}

func sanitizeAvail(st *luState) bool   { return st.cfg.SanitizeAllowed }
func blockEraseAvail(st *luState) bool { return st.cfg.SanitizeAllowed && st.thin }

// sanitizeJob is what one SANITIZE asked for.
type sanitizeJob struct {
	erase   bool   // BLOCK ERASE; else OVERWRITE
	pattern []byte // one logical block of the initialization pattern
	passes  int
	invert  bool
}

func sanitize(r request) error {
	st, cdb := r.st, r.cdb
	sa := cdb[1] & 0x1f
	immed := cdb[1]&0x80 != 0
	paramLen := int(getU16(cdb[7:]))
	r.res.Transfer = paramLen

	if sa != saSanitizeOverwrite && paramLen != 0 {
		return invalidCDB(7, -1) // no parameter list for these
	}
	if sa == saSanitizeOverwrite && (paramLen <= 4 || paramLen > int(st.blockSize)+4) {
		return invalidCDB(7, -1)
	}
	if err := r.lu.writeProtected(st); err != nil {
		return err
	}
	if sa == saSanitizeExitFail {
		r.lu.san.failed.Store(false)
		return nil
	}
	job := sanitizeJob{erase: sa == saSanitizeBlockErase || sa == saSanitizeCryptoErase}
	if !job.erase {
		var err error
		if job, err = overwriteParams(st, r.cmd.DataOut, paramLen); err != nil {
			return err
		}
	}
	done, err := r.lu.startSanitize(st, job)
	if err != nil || immed {
		return err
	}
	<-done
	r.lu.san.mu.Lock()
	defer r.lu.san.mu.Unlock()
	return r.lu.san.err
}

// overwriteParams decodes the OVERWRITE parameter list.
func overwriteParams(st *luState, out []byte, paramLen int) (sanitizeJob, error) {
	if len(out) < paramLen {
		return sanitizeJob{}, errParamListLength
	}
	p := out[:paramLen]
	job := sanitizeJob{invert: p[0]&0x80 != 0, passes: int(p[0] & 0x1f)}
	switch {
	case p[0]&0x60 != 0:
		return job, invalidParam(0, 6) // TEST: only 00b is defined
	case job.passes == 0:
		return job, invalidParam(0, 4)
	}
	patLen := int(getU16(p[2:]))
	if patLen == 0 || patLen > int(st.blockSize) || patLen+4 != paramLen {
		return job, invalidParam(2, -1)
	}
	// The pattern is repeated to fill each logical block.
	job.pattern = make([]byte, st.blockSize)
	for i := 0; i < len(job.pattern); i += patLen {
		copy(job.pattern[i:], p[4:4+patLen])
	}
	return job, nil
}

// startSanitize starts the job unless one runs already, and returns a
// channel closed when it ends.
func (lu *LU) startSanitize(st *luState, job sanitizeJob) (<-chan struct{}, error) {
	s := &lu.san
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running.Load() {
		return nil, s.inProgress()
	}
	s.progress.Store(0)
	s.running.Store(true)
	done := make(chan struct{})
	s.done = done
	go func() {
		err := lu.runSanitize(st, job)
		s.mu.Lock()
		s.err = err
		s.failed.Store(err != nil)
		s.running.Store(false)
		close(done)
		s.mu.Unlock()
	}()
	return done, nil
}

// runSanitize does the work with the whole LU locked exclusively: commands
// that passed the readiness check before the job started finish first.
func (lu *LU) runSanitize(st *luState, job sanitizeJob) error {
	h := lu.rl.acquireAll(true)
	defer h.release()
	size := int64(st.blocks) << st.shift
	dev := st.dev
	if job.erase {
		u, ok := dev.(backend.Unmapper)
		if ok && u.Unmap(0, size) == nil {
			if err := dev.Flush(); err != nil {
				return leaseSense(err, errSanitizeFailed)
			}
			lu.san.progress.Store(0xffff)
			return nil
		}
		// Cannot punch: zeros read back the same.
		job.pattern, job.passes = make([]byte, st.blockSize), 1
	}
	buf := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(buf)
	chunk := *buf
	total := int64(job.passes) * size
	for pass := range job.passes {
		for i := 0; i < len(chunk); i += len(job.pattern) {
			copy(chunk[i:], job.pattern)
		}
		if job.invert && pass%2 == 1 {
			for i := range chunk {
				chunk[i] = ^chunk[i]
			}
		}
		for off := int64(0); off < size; {
			n := min(int64(len(chunk)), size-off)
			if err := dev.WriteAt(chunk[:n], off, false); err != nil {
				return leaseSense(err, errSanitizeFailed)
			}
			off += n
			lu.san.progress.Store(uint32((int64(pass)*size + off) * 0xffff / max(total, 1)))
		}
	}
	if err := dev.Flush(); err != nil {
		return leaseSense(err, errSanitizeFailed)
	}
	return nil
}
