package replication

import (
	"net"

	"github.com/hatarget/hatarget/target/nodeconn"
)

// respWriter is the write side of a server connection. It has no goroutine
// of its own: answers are queued, and whoever flushes while nobody else is
// writing writes them -- the reader when its next read could block, a
// worker right after queuing its answer -- without yielding first: both
// are about to block or to look for more work anyway.
//
// Answers without a payload (writes, unmaps, flushes, seals, refusals,
// pongs) are copied, so their task is free at once; those with a payload
// (reads, checksums, activity) are queued as frames whose done gives the
// payload back once written.
type respWriter struct {
	w nodeconn.Writer
}

// outFrame is an answer with a payload, sent as two writev segments so
// that the payload is never copied.
type outFrame struct {
	head []byte
	data []byte
	// done runs once the frame was written or never will be: it gives the
	// payload back.
	done func()
}

// init readies w to write to nc; onErr learns of a write error, once.
func (w *respWriter) init(nc net.Conn, onErr func(error)) {
	w.w.Init(nc, 0, onErr)
}

// answer queues a response without payload; false when the writer is
// closed.
func (w *respWriter) answer(tag uint32, status Status, epoch uint64, msg string) bool {
	if len(msg) > MaxMessageLen {
		msg = msg[:MaxMessageLen]
	}
	var b [HeaderLen + responseFixed]byte
	return w.w.Copy(AppendResponse(b[:0], tag, status, epoch, len(msg)), msg)
}

// pong queues the answer to a ping.
func (w *respWriter) pong(tag uint32) bool {
	var b [HeaderLen]byte
	return w.w.Copy(AppendPing(b[:0], tag, true), "")
}

// send queues f; false when the writer is closed, in which case f.done has
// not run and f is the caller's again.
func (w *respWriter) send(f outFrame) bool {
	return w.w.Send(nodeconn.Frame{Head: f.head, Data: f.data, Done: f.done})
}

// flush writes what is queued unless someone else is writing (who then
// writes it in their next round). It may block until the peer reads.
func (w *respWriter) flush() { w.w.Flush() }

// close refuses further answers and releases the queued frames. A round
// in progress ends when its write does: close the connection too to cut
// it short.
func (w *respWriter) close() { w.w.Close() }
