package replication

import (
	"io"

	"github.com/hatarget/hatarget/target/backend"
)

// readerSize is a server connection's input buffer: several large writes
// arrive in one read, and an inline write's data is used where it landed.
const readerSize = 1 << 20

// frameReader is the server's buffered reader. Unlike bufio.Reader it
// lets a write's data be used in place (peek, then discard), it moves the
// bytes it holds to the start of its buffer only when a frame would not
// fit before the end, and it calls beforeRead before each read from the
// connection, which may block: the reader sends its answers then.
type frameReader struct {
	rd         io.Reader
	beforeRead func()
	pooled     *backend.Buffer
	buf        []byte
	r, w       int
}

func newFrameReader(rd io.Reader, beforeRead func()) *frameReader {
	p := backend.GetBuffer(readerSize)
	return &frameReader{rd: rd, beforeRead: beforeRead, pooled: p, buf: p.B[:readerSize]}
}

// free gives the buffer back; b is unusable afterwards.
func (b *frameReader) free() {
	backend.PutBuffer(b.pooled)
	b.pooled, b.buf, b.r, b.w = nil, nil, 0, 0
}

// detach returns a reader with its own buffer holding what b holds after
// its next skip bytes, and leaves b's buffer alone: an inline write that
// was taken over still writes from it.
func (b *frameReader) detach(skip int) *frameReader {
	nb := newFrameReader(b.rd, b.beforeRead)
	nb.w = copy(nb.buf, b.buf[b.r+skip:b.w])
	return nb
}

// fill reads at least once from the connection into the free space after
// b.w.
func (b *frameReader) fill() error {
	b.beforeRead()
	for range 100 {
		n, err := b.rd.Read(b.buf[b.w:])
		b.w += n
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}

// peek returns the next n bytes (at most readerSize) without consuming
// them; they stay valid until the next call.
func (b *frameReader) peek(n int) ([]byte, error) {
	if b.r == b.w {
		b.r, b.w = 0, 0
	}
	if b.r+n > len(b.buf) {
		b.w = copy(b.buf, b.buf[b.r:b.w])
		b.r = 0
	}
	for b.w-b.r < n {
		if err := b.fill(); err != nil {
			if b.w > b.r && err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return b.buf[b.r : b.r+n], nil
}

// discard consumes n bytes that peek returned.
func (b *frameReader) discard(n int) { b.r += n }

// readFull fills p: from the buffer, then, for what the buffer cannot
// hold, straight from the connection.
func (b *frameReader) readFull(p []byte) error {
	n := copy(p, b.buf[b.r:b.w])
	b.r += n
	p = p[n:]
	if len(p) == 0 {
		return nil
	}
	if len(p) >= len(b.buf)/2 {
		b.beforeRead()
		_, err := io.ReadFull(b.rd, p)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	q, err := b.peek(len(p))
	if err != nil {
		if err == io.EOF && n > 0 {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	b.r += copy(p, q)
	return nil
}
