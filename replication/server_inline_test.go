package replication

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/backend/backendtest"
)

// gatedDevice is a backendtest.Mem whose writes block while their
// predicate holds, until released, and can be made slow.
type gatedDevice struct {
	*backendtest.Mem
	mu      sync.Mutex
	blocks  func(off int64, durable bool) bool
	gate    chan struct{}
	entered chan int64
	delay   time.Duration
}

func newGatedDevice(size int) *gatedDevice {
	return &gatedDevice{Mem: backendtest.NewMem(size), gate: make(chan struct{}), entered: make(chan int64, 64)}
}

// block makes the writes that match wait until release.
func (d *gatedDevice) block(match func(off int64, durable bool) bool) (release func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.blocks = match
	var once sync.Once
	gate := d.gate
	return func() { once.Do(func() { close(gate) }) }
}

func (d *gatedDevice) WriteAt(p []byte, off int64, durable bool) error {
	d.mu.Lock()
	blocked := d.blocks != nil && d.blocks(off, durable)
	gate, delay := d.gate, d.delay
	d.mu.Unlock()
	if blocked {
		d.entered <- off
		<-gate
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	return d.Mem.WriteAt(p, off, durable)
}

func gatedReplica(t *testing.T) (*replica, *gatedDevice) {
	t.Helper()
	r := newReplica(t, "b", "")
	d := newGatedDevice(devSize)
	r.srv.SetDevices(map[string]ReplicaDevice{"lun": {Device: d, Owner: "a", Epoch: 1}})
	return r, d
}

// TestInlineWriteTakenOver checks that a write the reader executes itself
// and that hangs does not hold up the connection: pings are answered (the
// owner, with a short timeout, keeps it), and requests on other ranges are
// served meanwhile.
func TestInlineWriteTakenOver(t *testing.T) {
	r, d := gatedReplica(t)
	release := d.block(func(off int64, _ bool) bool { return off == 0 })
	defer release()
	p := r.peer(t, "a", "", 100*time.Millisecond)
	ctx := context.Background()
	wrote := make(chan error, 1)
	go func() { wrote <- p.Write(ctx, "lun", 1, 1, 0, pattern(4096, 1), false) }()
	<-d.entered
	// Beyond the peer's silence limit (2 × 100 ms).
	deadline := time.Now().Add(500 * time.Millisecond)
	for i := 0; time.Now().Before(deadline); i++ {
		off := int64(64<<10) * int64(1+i%8)
		if err := p.Write(ctx, "lun", 1, uint64(2+i), off, pattern(4096, byte(i)), false); err != nil {
			t.Fatalf("write beside a hung one: %v", err)
		}
		if err := p.Read(ctx, "lun", 1, off, make([]byte, 4096)); err != nil {
			t.Fatalf("read beside a hung write: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !p.Connected() {
		t.Fatal("the connection ended while a write hung")
	}
	select {
	case err := <-wrote:
		t.Fatalf("the hung write returned: %v", err)
	default:
	}
	release()
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d.SnapshotAt(0, 4096), pattern(4096, 1)) {
		t.Fatal("the hung write did not land")
	}
	// The connection goes back to inline writes once the slow one is done.
	waitFor(t, "inline writes again", func() bool {
		before := inlineWrites(r.srv)
		if err := p.Write(ctx, "lun", 1, 1000, 8192, pattern(4096, 9), false); err != nil {
			t.Fatal(err)
		}
		return inlineWrites(r.srv) > before
	})
}

// inlineWrites counts the writes the readers of srv executed themselves.
func inlineWrites(srv *Server) uint64 {
	var n uint64
	srv.conns.Each(func(sc *serverConn) { n += sc.inlineSeq.Load() / 2 })
	return n
}

// rawConn is a hand-driven owner connection: frames go out as given, and
// answers are read in order.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, srv *Server, node string) *rawConn {
	t.Helper()
	c, s := net.Pipe()
	go srv.ServeConn(s)
	t.Cleanup(func() { c.Close() })
	rc := &rawConn{t: t, nc: c, br: bufio.NewReader(c)}
	ch, _ := AppendClientHello(nil, ClientHello{Version: Version, Name: []byte(node)})
	go c.Write(ch)
	var sb [ServerHelloLen]byte
	if _, err := io.ReadFull(rc.br, sb[:]); err != nil {
		t.Fatal(err)
	}
	sh, err := DecodeServerHello(sb[:])
	if err != nil {
		t.Fatal(err)
	}
	proof := ClientProof("", sh.Nonce, []byte(node))
	go c.Write(proof[:])
	var vb [VerdictLen]byte
	if _, err := io.ReadFull(rc.br, vb[:]); err != nil {
		t.Fatal(err)
	}
	return rc
}

// send writes frames in one go, in the background (a pipe has no buffer).
func (rc *rawConn) send(frames ...[]byte) {
	b := bytes.Join(frames, nil)
	go rc.nc.Write(b)
}

// next reads the next answer.
func (rc *rawConn) next(timeout time.Duration) (Header, Response, error) {
	rc.nc.SetReadDeadline(time.Now().Add(timeout))
	var hb [HeaderLen]byte
	if _, err := io.ReadFull(rc.br, hb[:]); err != nil {
		return Header{}, Response{}, err
	}
	h, err := DecodeHeader(hb[:])
	if err != nil {
		return h, Response{}, err
	}
	payload := make([]byte, h.Length)
	if _, err := io.ReadFull(rc.br, payload); err != nil {
		return h, Response{}, err
	}
	if h.Type == FramePong {
		return h, Response{}, nil
	}
	r, err := DecodeResponse(h, payload)
	return h, r, err
}

func writeFrame(t *testing.T, tag uint32, off int64, data []byte, durable bool) []byte {
	t.Helper()
	b, err := AppendWrite(nil, Write{Tag: tag, Epoch: 1, Seq: uint64(tag), Offset: off, Durable: durable, Data: data}, "lun")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, data...)
}

// TestInlineOrder checks that a quick write overlapping one still in
// flight waits for it (overlapping writes land in arrival order), while
// one on another range is executed, and answered, at once.
func TestInlineOrder(t *testing.T) {
	r, d := gatedReplica(t)
	release := d.block(func(_ int64, durable bool) bool { return durable })
	defer release()
	rc := dialRaw(t, r.srv, "a")
	rc.send(
		writeFrame(t, 1, 0, pattern(8192, 1), true),     // to a worker, held
		writeFrame(t, 2, 4096, pattern(8192, 2), false), // overlaps 1: waits
		writeFrame(t, 3, 65536, pattern(4096, 3), false),
		AppendPing(nil, 4, false),
	)
	<-d.entered
	for _, want := range []uint32{3, 4} {
		h, resp, err := rc.next(5 * time.Second)
		if err != nil || h.Tag != want || resp.Status != StatusOK {
			t.Fatalf("answer %+v %+v, %v: want tag %d, ok", h, resp, err, want)
		}
	}
	if _, _, err := rc.next(100 * time.Millisecond); err == nil {
		t.Fatal("an answer to a write behind the held one")
	}
	release()
	// Write 1 lets go of its range before its answer is queued, so write
	// 2 may be answered first: the order that matters is the one they
	// landed in, checked below.
	answered := map[uint32]bool{}
	for range 2 {
		h, resp, err := rc.next(5 * time.Second)
		if err != nil || h.Tag != 1 && h.Tag != 2 || answered[h.Tag] || resp.Status != StatusOK {
			t.Fatalf("answer %+v %+v, %v: want tags 1 and 2, ok", h, resp, err)
		}
		answered[h.Tag] = true
	}
	want := append(pattern(8192, 1)[:4096:4096], pattern(8192, 2)...)
	if !bytes.Equal(d.SnapshotAt(0, len(want)), want) {
		t.Fatal("overlapping writes landed out of order")
	}
	if !bytes.Equal(d.SnapshotAt(65536, 4096), pattern(4096, 3)) {
		t.Fatal("write 3 did not land")
	}
}

// TestInlineManyFrames sends many writes and pings in one stream, of
// sizes around the reader's buffer and the inline limit, some durable,
// some overlapping, and checks every answer and the final data.
func TestInlineManyFrames(t *testing.T) {
	r, d := gatedReplica(t)
	rc := dialRaw(t, r.srv, "a")
	rng := rand.New(rand.NewPCG(1, 2))
	shadow := make([]byte, devSize)
	sizes := []int{0, 512, 4096, 65536, maxInlineWrite, maxInlineWrite + 512, readerSize/2 - 100, readerSize + 4096}
	var frames [][]byte
	var want int
	for tag := uint32(1); tag <= 300; tag++ {
		if tag%17 == 0 {
			frames = append(frames, AppendPing(nil, tag, false))
			want++
			continue
		}
		n := sizes[rng.IntN(len(sizes))]
		off := int64(rng.IntN((devSize-n)/512)) * 512
		data := pattern(n, byte(tag))
		copy(shadow[off:], data)
		frames = append(frames, writeFrame(t, tag, off, data, tag%5 == 0))
		want++
	}
	rc.send(frames...)
	for range want {
		h, resp, err := rc.next(10 * time.Second)
		if err != nil || h.Type != FramePong && resp.Status != StatusOK {
			t.Fatalf("answer %+v %+v, %v", h, resp, err)
		}
	}
	if !bytes.Equal(d.Snapshot(), shadow) {
		t.Fatal("the device differs from the writes applied in order")
	}
}

// TestInlineSlowDevice checks that writes to a device whose writes are
// slow go to workers, but for a probe now and then.
func TestInlineSlowDevice(t *testing.T) {
	r, d := gatedReplica(t)
	d.delay = time.Millisecond
	p := r.peer(t, "a", "", time.Second)
	const n = 200
	for i := range n {
		if err := p.Write(context.Background(), "lun", 1, uint64(i+1), int64(i)*4096, pattern(4096, byte(i)), false); err != nil {
			t.Fatal(err)
		}
	}
	// 6 slow inline writes make most of the recent ones slow, then one in
	// probeEvery goes inline.
	const first = 6
	if got, max := inlineWrites(r.srv), uint64(first+n/probeEvery+1); got < first || got > max {
		t.Fatalf("%d of %d writes inline, want %d to %d", got, n, first, max)
	}
}

func TestFrameReader(t *testing.T) {
	stream := pattern(8<<20, 7)
	for _, chunk := range []int{1, 7, 4096, 100000, 1 << 30} {
		t.Run(fmt.Sprint(chunk), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(chunk), 3))
			reads := 0
			b := newFrameReader(&chunkReader{b: stream, chunk: chunk}, func() { reads++ })
			defer func() { b.free() }()
			pos := 0
			for pos < len(stream) {
				n := min(rng.IntN(readerSize/2+readerSize/4), len(stream)-pos)
				switch rng.IntN(4) {
				case 0:
					p, err := b.peek(n)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(p, stream[pos:pos+n]) {
						t.Fatalf("peek of %d at %d: wrong bytes", n, pos)
					}
					b.discard(n)
				case 1:
					n = min(rng.IntN(64), len(stream)-pos)
					fallthrough
				case 2:
					p := make([]byte, n)
					if err := b.readFull(p); err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(p, stream[pos:pos+n]) {
						t.Fatalf("readFull of %d at %d: wrong bytes", n, pos)
					}
				case 3:
					// A peeked frame stays where it is in the old buffer.
					p, err := b.peek(n)
					if err != nil {
						t.Fatal(err)
					}
					kept := bytes.Clone(p)
					nb := b.detach(n)
					if m := min(4096, len(stream)-pos-n); m > 0 {
						q := make([]byte, m)
						if err := nb.readFull(q); err != nil {
							t.Fatal(err)
						}
						if !bytes.Equal(q, stream[pos+n:pos+n+m]) {
							t.Fatalf("after detach at %d: wrong bytes", pos+n)
						}
						n += m
					}
					if !bytes.Equal(p, kept) {
						t.Fatal("detach changed the peeked bytes")
					}
					b = nb
				}
				pos += n
			}
			if _, err := b.peek(1); err != io.EOF {
				t.Fatalf("peek at the end: %v, want EOF", err)
			}
			if err := b.readFull(make([]byte, 1)); err != io.EOF {
				t.Fatalf("readFull at the end: %v, want EOF", err)
			}
			if reads == 0 {
				t.Fatal("beforeRead never ran")
			}
		})
	}
	b := newFrameReader(&chunkReader{b: stream[:100], chunk: 10}, func() {})
	if err := b.readFull(make([]byte, 200)); err != io.ErrUnexpectedEOF {
		t.Fatalf("a short stream: %v", err)
	}
	b = newFrameReader(&chunkReader{b: stream[:100], chunk: 10}, func() {})
	if err := b.readFull(make([]byte, readerSize)); err != io.ErrUnexpectedEOF {
		t.Fatalf("a short stream read directly: %v", err)
	}
}

type chunkReader struct {
	b     []byte
	chunk int
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), r.chunk)], r.b)
	r.b = r.b[n:]
	return n, nil
}

// TestRespWriter checks that answers queued and flushed from many
// goroutines all arrive whole, and that every payload frame is released,
// written or not.
func TestRespWriter(t *testing.T) {
	c, s := net.Pipe()
	defer c.Close()
	var w respWriter
	w.init(s, func(error) { s.Close() })
	const goroutines, each = 8, 200
	var released atomic.Int64
	got := make(chan map[uint32]int, 1)
	go func() {
		seen := make(map[uint32]int)
		br := bufio.NewReader(c)
		for {
			var hb [HeaderLen]byte
			if _, err := io.ReadFull(br, hb[:]); err != nil {
				got <- seen
				return
			}
			h, err := DecodeHeader(hb[:])
			if err != nil {
				t.Error(err)
				got <- seen
				return
			}
			payload := make([]byte, h.Length)
			io.ReadFull(br, payload)
			if h.Type == FrameResponse && len(payload) > responseFixed {
				if msg := payload[responseFixed:]; !bytes.Equal(msg, pattern(len(msg), byte(h.Tag))) {
					t.Errorf("frame %d: payload garbled", h.Tag)
				}
			}
			seen[h.Tag]++
		}
	}()
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				tag := uint32(g*each + i)
				switch i % 3 {
				case 0:
					w.answer(tag, StatusIOError, 1, string(pattern(i%50, byte(tag))))
				case 1:
					w.pong(tag)
				case 2:
					data := pattern(1+i*37%5000, byte(tag))
					head := AppendResponse(nil, tag, StatusOK, 1, len(data))
					if !w.send(outFrame{head: head, data: data, done: func() { released.Add(1) }}) {
						released.Add(1)
					}
				}
				w.flush()
			}
		})
	}
	wg.Wait()
	w.close()
	s.Close()
	seen := <-got
	if len(seen) != goroutines*each {
		t.Fatalf("%d frames arrived, want %d", len(seen), goroutines*each)
	}
	for tag, n := range seen {
		if n != 1 {
			t.Fatalf("frame %d arrived %d times", tag, n)
		}
	}
	if n := released.Load(); n != goroutines*(each/3) {
		t.Fatalf("%d payload frames released", n)
	}

	// Closed: nothing more is taken, and what was queued is released.
	c2, s2 := net.Pipe()
	defer c2.Close()
	var w2 respWriter
	w2.init(s2, func(error) {})
	released.Store(0)
	w2.send(outFrame{head: []byte{1}, done: func() { released.Add(1) }})
	w2.close()
	if released.Load() != 1 {
		t.Fatal("close did not release a queued frame")
	}
	if w2.answer(1, StatusOK, 1, "") || w2.pong(1) || w2.send(outFrame{}) {
		t.Fatal("a closed writer took an answer")
	}
	// A failed write closes the writer and reports the error.
	c3, s3 := net.Pipe()
	c3.Close()
	var failed error
	var w3 respWriter
	w3.init(s3, func(err error) { failed = err })
	w3.answer(1, StatusOK, 1, "")
	w3.flush()
	if failed == nil || !errors.Is(failed, io.ErrClosedPipe) {
		t.Fatalf("write error %v", failed)
	}
	if w3.answer(2, StatusOK, 1, "") {
		t.Fatal("a failed writer took an answer")
	}
}

func TestRangeLockTry(t *testing.T) {
	var l rangeLock
	a, ok := l.tryLock(0, 100, true)
	if !ok {
		t.Fatal("first lock not granted")
	}
	if _, ok := l.tryLock(100, 100, true); !ok {
		t.Fatal("disjoint lock not granted")
	}
	b, ok := l.tryLock(50, 10, false)
	if ok {
		t.Fatal("a share overlapping an exclusive lock granted")
	}
	c, ok := l.tryLock(50, 10, false)
	if ok {
		t.Fatal("a share behind a waiting share, both behind an exclusive lock, granted")
	}
	done := make(chan struct{})
	go func() {
		l.wait(b)
		l.wait(c)
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("waited past a conflicting lock")
	case <-time.After(20 * time.Millisecond):
	}
	l.release(a)
	<-done
	l.release(b)
	l.release(c)
	if _, ok := l.tryLock(0, 150, true); ok {
		t.Fatal("granted over the lock on [100, 200)")
	}
}
