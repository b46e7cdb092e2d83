package nodeconn

import (
	"fmt"
	"net"
	"runtime"
	"sync"
)

// Frame is one frame queued on a Writer: its header and fixed part, then
// its data, sent as two writev segments so that the data is never copied.
type Frame struct {
	Head []byte
	Data []byte
	// Done runs once the frame was written or never will be, outside the
	// writer's lock: it gives the buffers back.
	Done func()
	// Ref identifies the frame for Unqueue.
	Ref any
}

// Writer is the write side of a connection: a queue that anyone may add
// to without blocking, and rounds that each write everything queued
// meanwhile in one writev, so that under load many frames share a system
// call. A round is written by whoever flushes while nobody else is
// writing, and goes on until the queue is empty, so a frame queued during
// a round leaves with that writer's next one. Goroutines that must not
// block on the socket's write side (a reader: a peer blocked writing to us
// would deadlock with us) post instead, and the goroutine running Run
// flushes for them.
type Writer struct {
	nc    net.Conn
	onErr func(error)
	// yieldBelow: see Init.
	yieldBelow int
	kickc      chan struct{}

	mu      sync.Mutex
	idle    sync.Cond // a round ended
	q       []Frame
	small   []byte // copied frames, written before q
	writing bool
	closed  bool

	// Owned by the goroutine writing a round.
	spare []byte
	batch []Frame
	bufs  net.Buffers
	iov   net.Buffers
}

// Init readies w to write to nc. onErr learns of the write error that
// closes the writer; it must not wait for the writer, which calls it.
// Before a round of fewer than yieldBelow frames the writer yields the
// processor once: goroutines that are ready, under load, are about to
// queue frames, which then share the round's system call (0: never; a
// writer whose callers flush right before they block anyway gains
// nothing by it).
func (w *Writer) Init(nc net.Conn, yieldBelow int, onErr func(error)) {
	w.nc, w.onErr, w.yieldBelow = nc, onErr, yieldBelow
	w.idle.L = &w.mu
	w.kickc = make(chan struct{}, 1)
}

// Send queues f for the next round; false when the writer is closed, in
// which case f.Done has not run and f is the caller's again. Someone must
// flush after: the caller, or Run (Post).
func (w *Writer) Send(f Frame) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	w.q = append(w.q, f)
	return true
}

// Post queues f like Send, and has the goroutine running Run write it.
func (w *Writer) Post(f Frame) bool {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return false
	}
	w.q = append(w.q, f)
	w.mu.Unlock()
	// Even when frames are queued already: those may be held for a
	// Plug, which could be unplugged only later.
	w.Unplug()
	return true
}

// Unplug has the goroutine running Run write what Send queued
// (backend.Unplugger).
func (w *Writer) Unplug() {
	select {
	case w.kickc <- struct{}{}:
	default:
	}
}

// Copy queues a frame small enough to copy, head then tail, so that the
// caller's buffers are free at once; false when the writer is closed.
func (w *Writer) Copy(head []byte, tail string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	w.small = append(w.small, head...)
	w.small = append(w.small, tail...)
	return true
}

// Unqueue removes the frame whose Ref is ref if no round has taken it
// yet; true when it did (its Done does not run then).
func (w *Writer) Unqueue(ref any) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range w.q {
		if w.q[i].Ref == ref {
			w.q = append(w.q[:i], w.q[i+1:]...)
			w.q[len(w.q):cap(w.q)][0] = Frame{}
			return true
		}
	}
	return false
}

// Release runs release, which lets go of a frame that never reached the
// writer, so that WaitFor sees it as it sees a round's Done.
func (w *Writer) Release(release func()) {
	w.mu.Lock()
	release()
	w.idle.Broadcast()
	w.mu.Unlock()
}

// WaitFor returns once released reports true. A round runs the Done
// functions of its frames before it signals its end, so a Done that makes
// released true is seen here.
func (w *Writer) WaitFor(released func() bool) {
	w.mu.Lock()
	for !released() {
		w.idle.Wait()
	}
	w.mu.Unlock()
}

// Run flushes what is posted until stop is closed.
func (w *Writer) Run(stop <-chan struct{}) {
	for {
		select {
		case <-w.kickc:
			w.Flush()
		case <-stop:
			return
		}
	}
}

// Flush writes what is queued, in rounds until the queue is empty, unless
// someone else is writing (who then writes it in their next round). It
// may block until the peer reads.
func (w *Writer) Flush() {
	w.mu.Lock()
	if w.writing || !w.pending() {
		w.mu.Unlock()
		return
	}
	w.writing = true
	for w.pending() {
		if len(w.q) < w.yieldBelow {
			w.mu.Unlock()
			runtime.Gosched()
			w.mu.Lock()
			if !w.pending() {
				break
			}
		}
		small, q := w.small, w.q
		w.small, w.q = w.spare[:0], w.batch[:0]
		w.mu.Unlock()

		err := w.write(small, q)
		release(q)
		clear(q)

		w.mu.Lock()
		w.spare, w.batch = small[:0], q[:0]
		w.idle.Broadcast()
		if err != nil && !w.closed {
			w.closeLocked()
			w.mu.Unlock()
			w.onErr(fmt.Errorf("write: %w", err))
			w.mu.Lock()
		}
	}
	w.writing = false
	w.idle.Broadcast()
	w.mu.Unlock()
}

// pending reports whether a round has something to write. Called with
// w.mu held.
func (w *Writer) pending() bool {
	return !w.closed && (len(w.q) > 0 || len(w.small) > 0)
}

func (w *Writer) write(small []byte, q []Frame) error {
	if len(q) == 0 {
		_, err := w.nc.Write(small)
		return err
	}
	if len(small) > 0 {
		w.bufs = append(w.bufs, small)
	}
	for _, f := range q {
		w.bufs = append(w.bufs, f.Head)
		if len(f.Data) > 0 {
			w.bufs = append(w.bufs, f.Data)
		}
	}
	// WriteTo consumes its receiver; a field rather than a local, which
	// would escape and cost an allocation per round.
	w.iov = w.bufs
	_, err := w.iov.WriteTo(w.nc)
	clear(w.bufs)
	w.bufs = w.bufs[:0]
	return err
}

// Close refuses further frames and releases the queued ones, which will
// never be written. A round in progress ends when its write does: close
// the connection too to cut it short.
func (w *Writer) Close() {
	w.mu.Lock()
	w.closeLocked()
	w.mu.Unlock()
}

// Shutdown closes the writer and returns once no round is in progress, so
// that the caller may reuse every buffer a queued frame pointed to. The
// connection must be closed (or have a write deadline) first, or a round
// blocked on a peer that stopped reading would hold Shutdown.
func (w *Writer) Shutdown() {
	w.mu.Lock()
	w.closeLocked()
	for w.writing {
		w.idle.Wait()
	}
	w.mu.Unlock()
}

// closeLocked closes the writer and releases the queued frames, unlocked,
// before it signals the end of a round for WaitFor. Called with w.mu
// held.
func (w *Writer) closeLocked() {
	if w.closed {
		return
	}
	w.closed = true
	q := w.q
	w.q, w.small = nil, nil
	w.mu.Unlock()
	release(q)
	w.mu.Lock()
	w.idle.Broadcast()
}

func release(q []Frame) {
	for _, f := range q {
		if f.Done != nil {
			f.Done()
		}
	}
}
