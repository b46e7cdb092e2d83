// Package iscsi is the iSCSI transport of the target (RFC 7143): portals,
// login with CHAP and operational negotiation, discovery, sessions and their
// CmdSN window, data transfer (immediate, unsolicited and R2T-solicited
// Data-Out; Data-In with status collapse), task management and logout. SCSI
// commands are executed by package scsi.
//
// Each connection has one reader goroutine (decodes PDUs, gathers write data)
// and one writer goroutine (drains every queued PDU into one writev).
// Commands run on their own goroutine so a slow one never stalls the reader.
package iscsi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Server.
type Options struct {
	Logger *slog.Logger
	// PortalGroupTag is this node's target portal group tag.
	PortalGroupTag uint16
	// LoginTimeout bounds a whole login, so a silent peer cannot hold a
	// connection open before authenticating.
	LoginTimeout time.Duration
	// NOPInterval is how long a connection may stay silent before we ping it
	// with a NOP-In; NOPTimeout how long we wait for the answer before
	// dropping the connection. Zero disables pings.
	NOPInterval, NOPTimeout time.Duration
	// MaxConnections caps concurrent connections (before and after login).
	MaxConnections int
}

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.PortalGroupTag == 0 {
		o.PortalGroupTag = 1
	}
	if o.LoginTimeout == 0 {
		o.LoginTimeout = 15 * time.Second
	}
	if o.NOPInterval == 0 {
		o.NOPInterval = 30 * time.Second
	}
	if o.NOPTimeout == 0 {
		o.NOPTimeout = 30 * time.Second
	}
	if o.MaxConnections == 0 {
		o.MaxConnections = 4096
	}
}

// Server accepts iSCSI connections on any number of portals.
type Server struct {
	opts    Options
	log     *slog.Logger
	targets atomic.Pointer[targetSet]

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	sessions  map[sessionKey]*session
	nextTSIH  uint16
	closing   bool
	connWG    sync.WaitGroup
}

// NewServer returns a server with no targets and no portals.
func NewServer(opts Options) *Server {
	opts.setDefaults()
	s := &Server{
		opts:      opts,
		log:       opts.Logger,
		listeners: map[net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
		sessions:  map[sessionKey]*session{},
	}
	s.targets.Store(&targetSet{byName: map[string]*Target{}})
	return s
}

// SetTargets replaces the served targets. Sessions of targets that are gone
// are closed; sessions of the others see the new configuration (LUNs, ACLs
// for new logins) from their next command on.
func (s *Server) SetTargets(targets []*Target, discoveryUsers []CHAPUser) {
	old := s.targets.Load()
	ts := &targetSet{
		gen:            old.gen + 1,
		byName:         make(map[string]*Target, len(targets)),
		discoveryUsers: discoveryUsers,
	}
	for _, t := range targets {
		ts.byName[t.Name] = t
		ts.names = append(ts.names, t.Name)
	}
	s.targets.Store(ts)

	s.mu.Lock()
	var gone []*session
	for _, sess := range s.sessions {
		if sess.discovery {
			continue
		}
		if _, ok := ts.byName[sess.targetName]; !ok {
			gone = append(gone, sess)
		}
	}
	s.mu.Unlock()
	for _, sess := range gone {
		s.log.Info("target removed, closing session", "target", sess.targetName, "initiator", sess.initiator)
		sess.close(errTargetRemoved)
	}
}

var errTargetRemoved = errors.New("target removed from configuration")

// Listen opens a portal on addr (host:port; IPv6 hosts in brackets) and
// serves it until Shutdown.
func (s *Server) Listen(addr string) (net.Addr, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("portal %s: %w", addr, err)
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		l.Close()
		return nil, fmt.Errorf("portal %s: server is shutting down", addr)
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	s.log.Info("iSCSI portal listening", "addr", l.Addr().String())
	go s.acceptLoop(l)
	return l.Addr(), nil
}

// Portals returns the addresses the server listens on.
func (s *Server) Portals() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for l := range s.listeners {
		out = append(out, l.Addr())
	}
	return out
}

func (s *Server) acceptLoop(l net.Listener) {
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and similar: slow down, keep serving.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed", "addr", l.Addr().String(), "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.startConn(nc)
	}
}

func (s *Server) startConn(nc net.Conn) {
	s.mu.Lock()
	if s.closing || len(s.conns) >= s.opts.MaxConnections {
		s.mu.Unlock()
		s.log.Warn("refusing connection", "remote", nc.RemoteAddr().String(), "reason", "connection limit or shutdown")
		nc.Close()
		return
	}
	c := newConn(s, nc)
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.connWG.Done()
		c.serve()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
}

// Shutdown stops accepting connections, lets in-flight commands finish and
// their responses reach the initiators, then closes every connection. It
// returns when all connections are gone or ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for l := range s.listeners {
		l.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.drain()
	}
	done := make(chan struct{})
	go func() { s.connWG.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		for _, c := range conns {
			c.close(errShutdown)
		}
		<-done
		return ctx.Err()
	}
}

var errShutdown = errors.New("target shutting down")

// ConnectionCount reports open connections, for tests and metrics.
func (s *Server) ConnectionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// SessionCount reports sessions in full feature phase.
func (s *Server) SessionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// SessionsPerTarget counts the sessions in full feature phase of every
// configured target, zero included, for metrics; discovery sessions belong
// to no target.
func (s *Server) SessionsPerTarget() map[string]int {
	ts := s.targets.Load()
	out := make(map[string]int, len(ts.names))
	for _, name := range ts.names {
		out[name] = 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sess := range s.sessions {
		if _, ok := out[sess.targetName]; ok && !sess.discovery {
			out[sess.targetName]++
		}
	}
	return out
}
