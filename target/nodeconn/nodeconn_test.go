package nodeconn

import (
	"errors"
	"net"
	"testing"
	"time"
)

// TestSet: connections accepted by Serve run tracked; Close ends each one
// through end, makes Serve return ErrClosed, waits for every Run, and
// refuses to run anything after.
func TestSet(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var s Set[net.Conn]
	served := make(chan error, 1)
	running := make(chan struct{})
	go func() {
		served <- s.Serve(l, func(nc net.Conn) {
			s.Run(nc, func() {
				close(running)
				buf := make([]byte, 1)
				_, _ = nc.Read(buf) // until Close ends it
			})
		})
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-running
	n := 0
	s.Each(func(net.Conn) { n++ })
	if n != 1 {
		t.Fatalf("%d connections tracked, want 1", n)
	}
	ended := 0
	s.Close(func(nc net.Conn) { ended++; nc.Close() })
	if ended != 1 {
		t.Errorf("Close ended %d connections, want 1", ended)
	}
	select {
	case err := <-served:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("Serve returned %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
	if s.Run(nil, func() { t.Error("ran after Close") }) {
		t.Error("Run reported running after Close")
	}
	if err := s.Serve(l, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Serve after Close: %v, want ErrClosed", err)
	}
}
