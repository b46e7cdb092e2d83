package replication

import (
	"net"
	"sync"
)

// outFrame is one frame queued for writing: its header and fixed part,
// then its data, sent as two writev segments so that the data is never
// copied.
type outFrame struct {
	head []byte
	data []byte
	// done runs once the frame was written or never will be, outside the
	// writer's lock: it gives the buffers back.
	done func()
	// ref identifies the frame for unqueue.
	ref any
}

// frameWriter is the write side of a connection: the one goroutine (run)
// that writes, and a queue that anyone may add to without blocking. Each
// round writes everything queued meanwhile in one writev, so that under
// load many frames share a system call.
type frameWriter struct {
	nc net.Conn

	mu      sync.Mutex
	more    sync.Cond // the queue got a frame, or the writer closed
	idle    sync.Cond // a round ended
	q       []outFrame
	writing bool
	closed  bool
	err     error // why it closed

	// Owned by run.
	batch []outFrame
	bufs  net.Buffers
	iov   net.Buffers
}

func (w *frameWriter) init(nc net.Conn) {
	w.nc = nc
	w.more.L = &w.mu
	w.idle.L = &w.mu
}

// send queues f; false when the writer is closed, in which case f.done has
// not run and f is the caller's again.
func (w *frameWriter) send(f outFrame) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	w.q = append(w.q, f)
	if len(w.q) == 1 {
		w.more.Signal()
	}
	return true
}

// unqueue removes the frame whose ref is ref if it has not been taken for
// writing yet; true when it did (f.done does not run then).
func (w *frameWriter) unqueue(ref any) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range w.q {
		if w.q[i].ref == ref {
			w.q = append(w.q[:i], w.q[i+1:]...)
			w.q[len(w.q):cap(w.q)][0] = outFrame{}
			return true
		}
	}
	return false
}

// waitFor returns once released reports true; the writer calls done
// functions before it signals the end of a round, so a done that makes
// released true is seen here.
func (w *frameWriter) waitFor(released func() bool) {
	w.mu.Lock()
	for !released() {
		w.idle.Wait()
	}
	w.mu.Unlock()
}

// close refuses further frames; run releases the queued ones and returns.
// A round in progress ends when its writev does: close the connection too
// to cut it short.
func (w *frameWriter) close(err error) {
	w.mu.Lock()
	if !w.closed {
		w.closed, w.err = true, err
		w.more.Broadcast()
	}
	w.mu.Unlock()
}

// run writes until the writer is closed or a write fails; onErr learns of
// a write error. When run returns every frame ever queued has been
// released.
func (w *frameWriter) run(onErr func(error)) {
	for {
		w.mu.Lock()
		for len(w.q) == 0 && !w.closed {
			w.more.Wait()
		}
		if w.closed {
			q := w.q
			w.q = nil
			w.mu.Unlock()
			release(q)
			w.mu.Lock()
			w.idle.Broadcast()
			w.mu.Unlock()
			return
		}
		w.batch, w.q = w.q, w.batch[:0]
		w.writing = true
		w.mu.Unlock()

		err := w.writeBatch()

		w.mu.Lock()
		w.writing = false
		if err != nil && !w.closed {
			w.closed, w.err = true, err
		}
		w.idle.Broadcast()
		w.mu.Unlock()
		if err != nil {
			onErr(err)
		}
	}
}

func (w *frameWriter) writeBatch() error {
	for _, f := range w.batch {
		w.bufs = append(w.bufs, f.head)
		if len(f.data) > 0 {
			w.bufs = append(w.bufs, f.data)
		}
	}
	// WriteTo consumes its receiver; a field rather than a local, which
	// would escape and cost an allocation per round.
	w.iov = w.bufs
	_, err := w.iov.WriteTo(w.nc)
	clear(w.bufs)
	w.bufs = w.bufs[:0]
	// Done functions run before the round's end is signalled (waitFor).
	release(w.batch)
	clear(w.batch)
	w.batch = w.batch[:0]
	return err
}

func release(q []outFrame) {
	for _, f := range q {
		if f.done != nil {
			f.done()
		}
	}
}
