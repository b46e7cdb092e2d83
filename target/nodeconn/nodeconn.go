// Package nodeconn holds what the node-to-node channels (command
// forwarding, replication) share: the accept loops of a server and the
// set of its connections, so that closing the server reaches every one of
// them; the worker pool of a connection; the frame header both protocols
// use; the writer that batches a connection's frames into one writev per
// round; and the watcher that declares a silent peer dead. What frames
// mean, and how long each may be, is each protocol's own.
package nodeconn

import (
	"errors"
	"net"
	"sync"
)

// ErrClosed is what Serve returns once the set is closed.
var ErrClosed = errors.New("nodeconn: closed")

// Set is the listeners and connections of one server; C is the server's
// own connection type. The zero value is ready to use.
type Set[C comparable] struct {
	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[C]struct{}
	closing   bool
	wg        sync.WaitGroup // Run calls in progress
}

// Serve accepts connections on l and hands each to serve in a goroutine of
// its own, until l fails (the accept error) or the set is closed
// (ErrClosed).
func (s *Set[C]) Serve(l net.Listener, serve func(net.Conn)) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.listeners == nil {
		s.listeners = map[net.Listener]struct{}{}
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.Closing() {
				return ErrClosed
			}
			return err
		}
		go serve(nc)
	}
}

// Run tracks c while run executes, and reports whether it ran: once the
// set is closing it runs nothing.
func (s *Set[C]) Run(c C, run func()) bool {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return false
	}
	if s.conns == nil {
		s.conns = map[C]struct{}{}
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()
	run()
	return true
}

// Each calls fn for every tracked connection, under the set's lock (fn
// must not block).
func (s *Set[C]) Each(fn func(C)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		fn(c)
	}
}

// Closing reports whether Close was called.
func (s *Set[C]) Closing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// Close stops every accept loop, calls end for each tracked connection
// (under the set's lock: end must not block) and waits until every Run
// returned.
func (s *Set[C]) Close(end func(C)) {
	s.mu.Lock()
	s.closing = true
	for l := range s.listeners {
		l.Close()
	}
	for c := range s.conns {
		end(c)
	}
	s.mu.Unlock()
	s.wg.Wait()
}
