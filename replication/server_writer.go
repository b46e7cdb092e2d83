package replication

import (
	"net"
	"sync"
)

// respWriter is the write side of a server connection. It has no goroutine
// of its own: answers are queued, and whoever flushes while nobody else is
// writing writes them -- the reader when its next read could block, a
// worker right after queuing its answer. A flusher keeps writing rounds
// until the queue is empty, so an answer queued while someone is writing
// goes out with that writer's next round, and each round is one writev of
// everything queued meanwhile.
//
// Answers without a payload (writes, unmaps, flushes, seals, refusals,
// pongs) are copied into one buffer, so their task is free at once; those
// with a payload (reads, checksums, activity) are queued as frames whose
// done gives the payload back once written.
//
// The Peer keeps frameWriter: there the callers' buffers must not be
// copied, and a dedicated goroutine lets Write return before its frame is
// on the wire.
type respWriter struct {
	nc    net.Conn
	onErr func(error) // learns of a write error, once

	mu      sync.Mutex
	buf     []byte     // small frames, copied
	q       []outFrame // frames with a payload
	writing bool
	closed  bool

	// Owned by the flusher.
	spare []byte
	batch []outFrame
	bufs  net.Buffers
	iov   net.Buffers
}

func (w *respWriter) init(nc net.Conn, onErr func(error)) {
	w.nc, w.onErr = nc, onErr
	w.buf = make([]byte, 0, 4096)
	w.spare = make([]byte, 0, 4096)
}

// answer queues a response without payload; false when the writer is
// closed.
func (w *respWriter) answer(tag uint32, status Status, epoch uint64, msg string) bool {
	if len(msg) > MaxMessageLen {
		msg = msg[:MaxMessageLen]
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	w.buf = AppendResponse(w.buf, tag, status, epoch, len(msg))
	w.buf = append(w.buf, msg...)
	return true
}

// pong queues the answer to a ping.
func (w *respWriter) pong(tag uint32) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	w.buf = AppendPing(w.buf, tag, true)
	return true
}

// send queues f, a frame whose data must not be copied; false when the
// writer is closed, in which case f.done has not run and f is the
// caller's again.
func (w *respWriter) send(f outFrame) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	w.q = append(w.q, f)
	return true
}

// flush writes what is queued unless someone else is writing (who then
// writes it in their next round). It may block until the peer reads.
func (w *respWriter) flush() {
	w.mu.Lock()
	if w.writing || w.closed || len(w.buf) == 0 && len(w.q) == 0 {
		w.mu.Unlock()
		return
	}
	w.writing = true
	for {
		buf, q := w.buf, w.q
		w.buf, w.q = w.spare[:0], w.batch[:0]
		w.mu.Unlock()

		err := w.write(buf, q)
		release(q)
		clear(q)

		w.mu.Lock()
		w.spare, w.batch = buf[:0], q[:0]
		if err != nil && !w.closed {
			w.closed = true
			w.mu.Unlock()
			w.onErr(err)
			w.mu.Lock()
		}
		if w.closed {
			w.writing = false
			q := w.q
			w.q = nil
			w.mu.Unlock()
			release(q)
			return
		}
		if len(w.buf) == 0 && len(w.q) == 0 {
			w.writing = false
			w.mu.Unlock()
			return
		}
	}
}

func (w *respWriter) write(buf []byte, q []outFrame) error {
	if len(q) == 0 {
		_, err := w.nc.Write(buf)
		return err
	}
	if len(buf) > 0 {
		w.bufs = append(w.bufs, buf)
	}
	for _, f := range q {
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
	return err
}

// close refuses further answers and releases the queued frames, at once
// or, when someone is writing, after their round. A round in progress ends
// when its write does: close the connection too to cut it short.
func (w *respWriter) close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	var q []outFrame
	if !w.writing {
		q, w.q = w.q, nil
	}
	w.mu.Unlock()
	release(q)
}
