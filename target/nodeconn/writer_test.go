package nodeconn

import (
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// TestWriter: frames sent, posted and copied from many goroutines arrive
// whole and once each, and every frame is released, written or not.
func TestWriter(t *testing.T) {
	for _, yieldBelow := range []int{0, 4} {
		c, s := net.Pipe()
		var w Writer
		w.Init(s, yieldBelow, func(error) { s.Close() })
		stop := make(chan struct{})
		go w.Run(stop)
		got := make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(c)
			got <- b
		}()
		const goroutines, each = 8, 240 // each fits the byte that names a frame
		var released atomic.Int64
		var wg sync.WaitGroup
		for g := range goroutines {
			wg.Go(func() {
				for i := range each {
					f := Frame{Head: []byte{byte(g), 'h'}, Data: []byte{byte(i), 'd'}, Done: func() { released.Add(1) }}
					switch i % 3 {
					case 0:
						if w.Send(f) {
							w.Flush()
						}
					case 1:
						w.Post(f)
					case 2:
						w.Copy([]byte{byte(g), 'h'}, string([]byte{byte(i), 'd'}))
						released.Add(1)
						w.Flush()
					}
				}
			})
		}
		wg.Wait()
		drain(&w)
		w.Shutdown()
		close(stop)
		s.Close()
		b := <-got
		if len(b) != goroutines*each*4 {
			t.Fatalf("yield below %d: %d bytes arrived, want %d", yieldBelow, len(b), goroutines*each*4)
		}
		seen := map[[2]byte]int{}
		for i := 0; i < len(b); i += 4 {
			if b[i+1] != 'h' || b[i+3] != 'd' {
				t.Fatalf("frame at %d garbled: % x", i, b[i:i+4])
			}
			seen[[2]byte{b[i], b[i+2]}]++
		}
		for k, n := range seen {
			if n != 1 {
				t.Fatalf("frame %v arrived %d times", k, n)
			}
		}
		if n := released.Load(); n != goroutines*each {
			t.Fatalf("%d frames released, want %d", n, goroutines*each)
		}
		c.Close()
	}
}

// drain flushes w until nothing is queued and no round is in progress:
// a Flush while Run's goroutine writes a round leaves the rest to that
// round, and Shutdown drops what is still queued.
func drain(w *Writer) {
	for {
		w.Flush()
		w.mu.Lock()
		idle := !w.writing && !w.pending()
		w.mu.Unlock()
		if idle {
			return
		}
		runtime.Gosched()
	}
}

// TestWriterClose: Unqueue takes back a frame no round took, Close
// releases the rest and refuses more, and a failed write closes the
// writer and reports the error once.
func TestWriterClose(t *testing.T) {
	c, s := net.Pipe()
	defer c.Close()
	var w Writer
	w.Init(s, 0, func(error) { t.Error("write error without a write") })
	var released atomic.Bool
	ref := new(int)
	w.Send(Frame{Head: []byte{1}, Ref: ref, Done: func() { t.Error("unqueued frame released") }})
	w.Send(Frame{Head: []byte{2}, Done: func() { released.Store(true) }})
	if !w.Unqueue(ref) || w.Unqueue(ref) {
		t.Fatal("Unqueue did not take the frame back exactly once")
	}
	w.Close()
	w.WaitFor(released.Load)
	if w.Send(Frame{}) || w.Post(Frame{}) || w.Copy(nil, "x") {
		t.Fatal("a closed writer took a frame")
	}

	c2, s2 := net.Pipe()
	c2.Close()
	var failed []error
	var w2 Writer
	w2.Init(s2, 0, func(err error) { failed = append(failed, err) })
	w2.Copy([]byte{1}, "")
	w2.Flush()
	if len(failed) != 1 || !errors.Is(failed[0], io.ErrClosedPipe) {
		t.Fatalf("write errors %v", failed)
	}
	if w2.Copy([]byte{1}, "") {
		t.Fatal("a failed writer took a frame")
	}
	w2.Flush()
	if len(failed) != 1 {
		t.Fatalf("write errors %v", failed)
	}
}
