package initiator

import (
	"net"
	"sync"

	"github.com/hatarget/hatarget/target/iscsi/pdu"
)

// writer serializes PDUs onto the connection with group commit: a sender
// queues its PDU and, if no write is in progress, writes everything queued
// in one writev; otherwise it waits for the writer in progress, whose next
// round carries its PDU. Under load many commands share a system call,
// and a sender still returns only once its PDU is on the wire, so callers'
// buffers are never referenced afterwards.
type writer struct {
	mu   sync.Mutex
	cond sync.Cond
	conn net.Conn
	// Digests are fixed at login, before the first write.
	headerDigest, dataDigest bool

	hdr      pdu.Header // built in place under mu: a local passed to a func value would escape
	trailer  [8]byte
	cur      *wbatch // collecting
	spare    *wbatch // last written, ready for reuse
	flushing bool
	flushed  uint64 // id of the last batch written
	err      error  // first write failure; every later send fails with it
}

// wbatch is the PDUs of one writev. Headers, digests and padding are
// copied into arena; data segments are referenced where they are.
type wbatch struct {
	id          uint64
	arena       []byte
	iov         net.Buffers
	out         net.Buffers // the copy of iov that WriteTo consumes
	tailIsArena bool        // the last iovec is a piece of arena
}

func newWriter(conn net.Conn, headerDigest, dataDigest bool) *writer {
	w := &writer{
		conn: conn, headerDigest: headerDigest, dataDigest: dataDigest,
		cur:   &wbatch{id: 1, arena: make([]byte, 0, 8192)},
		spare: &wbatch{arena: make([]byte, 0, 8192)},
	}
	w.cond.L = &w.mu
	return w
}

// queueLocked appends w.hdr with its AHS and data to the current batch and
// returns the batch's id.
func (w *writer) queueLocked(ahs, data []byte) uint64 {
	b, h := w.cur, &w.hdr
	h[4] = byte(len(ahs) / 4)
	h.SetDataSegmentLength(len(data))
	start := len(b.arena)
	b.arena = append(b.arena, h[:]...)
	b.arena = append(b.arena, ahs...)
	if w.headerDigest {
		d := pdu.DigestBytes(pdu.CRC32C(b.arena[start:]))
		b.arena = append(b.arena, d[:]...)
	}
	b.addArena(start)
	if len(data) == 0 {
		return b.id
	}
	b.iov = append(b.iov, data)
	b.tailIsArena = false
	start = len(b.arena)
	b.arena = append(b.arena, pdu.Trailer(&w.trailer, data, w.dataDigest)...)
	b.addArena(start)
	return b.id
}

// addArena adds arena[start:] to the iovecs, extending the previous iovec
// when it is arena ending right there, so a run of header-only PDUs is one
// iovec. Earlier iovecs stay valid when arena grows: they keep the old
// array, and writev only reads them.
func (b *wbatch) addArena(start int) {
	n := len(b.arena) - start
	if n == 0 {
		return
	}
	if k := len(b.iov); k > 0 && b.tailIsArena {
		last := b.iov[k-1]
		if cap(last)-len(last) >= n && &last[:len(last)+1][len(last)] == &b.arena[start] {
			b.iov[k-1] = last[:len(last)+n]
			return
		}
	}
	b.iov = append(b.iov, b.arena[start:])
	b.tailIsArena = true
}

// waitLocked returns once batch id is written, writing it (and whatever
// queued with it) when no one else is.
func (w *writer) waitLocked(id uint64) error {
	for w.flushed < id && w.err == nil {
		if w.flushing {
			w.cond.Wait()
			continue
		}
		w.flushLocked()
	}
	return w.err
}

// flushLocked writes the current batch with mu released, so new PDUs can
// queue for the next round meanwhile.
func (w *writer) flushLocked() {
	b := w.cur
	w.cur, w.spare = w.spare, nil
	w.cur.id = b.id + 1
	w.flushing = true
	w.mu.Unlock()

	b.out = b.iov
	_, err := b.out.WriteTo(w.conn)

	w.mu.Lock()
	clear(b.iov) // drop references to callers' buffers
	b.arena, b.iov, b.out, b.tailIsArena = b.arena[:0], b.iov[:0], nil, false
	w.spare = b
	w.flushed = b.id
	if err != nil && w.err == nil {
		w.err = err
	}
	w.flushing = false
	w.cond.Broadcast()
}
