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
	"net/netip"
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
	// MaxConnections caps concurrent connections (before and after login):
	// each costs a socket, a goroutine and a buffer, so an unbounded number
	// of idle ones would exhaust the process before any authentication.
	MaxConnections int
	// MaxConnectionsPerSource caps the connections from one IP address, so
	// a single host cannot take every slot of MaxConnections and lock the
	// other initiators out.
	MaxConnectionsPerSource int
	// MaxSessionsPerTarget and MaxSessionsPerInitiator cap the sessions in
	// full feature phase; a login beyond them is refused with "out of
	// resources" (0x0302). Discovery sessions count for their initiator
	// only.
	MaxSessionsPerTarget, MaxSessionsPerInitiator int
	// MaxTextBytes caps the key=value text accumulated over the continued
	// PDUs of one login or one Text Request.
	MaxTextBytes int
}

// Default limits. An initiator opens one session per target and portal, and
// deployments that give every volume its own target (OpenStack Cinder, most
// Kubernetes CSI drivers) put a few hundred on one hypervisor, all from one
// address and under one initiator name: 256 leaves them room, and 16 such
// hosts fill the 4096 connections a node accepts. 1024 sessions on one
// target is more initiators than any shared LUN has; the login timeout is
// open-iscsi's own; 64 KiB of text is eight times the 8 KiB a login PDU may
// carry (RFC 7143 13.12) and far above what any initiator sends.
const (
	DefaultLoginTimeout            = 15 * time.Second
	DefaultMaxConnections          = 4096
	DefaultMaxConnectionsPerSource = 256
	DefaultMaxSessionsPerTarget    = 1024
	DefaultMaxSessionsPerInitiator = 256
	DefaultMaxTextBytes            = 64 * 1024
)

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.PortalGroupTag == 0 {
		o.PortalGroupTag = 1
	}
	if o.LoginTimeout == 0 {
		o.LoginTimeout = DefaultLoginTimeout
	}
	if o.NOPInterval == 0 {
		o.NOPInterval = 30 * time.Second
	}
	if o.NOPTimeout == 0 {
		o.NOPTimeout = 30 * time.Second
	}
	setDefault(&o.MaxConnections, DefaultMaxConnections)
	setDefault(&o.MaxConnectionsPerSource, DefaultMaxConnectionsPerSource)
	setDefault(&o.MaxSessionsPerTarget, DefaultMaxSessionsPerTarget)
	setDefault(&o.MaxSessionsPerInitiator, DefaultMaxSessionsPerInitiator)
	setDefault(&o.MaxTextBytes, DefaultMaxTextBytes)
}

func setDefault(v *int, def int) {
	if *v <= 0 {
		*v = def
	}
}

// Server accepts iSCSI connections on any number of portals.
type Server struct {
	opts    Options
	log     *slog.Logger
	targets atomic.Pointer[targetSet]

	// refusals rate-limits the log of refused connections: a flood of
	// them must not turn into a flood of log lines.
	refusals refusalLog

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	perSource map[netip.Addr]int // open connections by remote address
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
		perSource: map[netip.Addr]int{},
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
	src := sourceAddr(nc)
	s.mu.Lock()
	if reason := s.connLimit(src); reason != "" {
		s.mu.Unlock()
		s.refusals.warn(s.log, "refusing connection", "remote", nc.RemoteAddr().String(), "reason", reason)
		nc.Close()
		return
	}
	c := newConn(s, nc)
	s.conns[c] = struct{}{}
	s.perSource[src]++
	s.connWG.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.connWG.Done()
		c.serve()
		s.mu.Lock()
		delete(s.conns, c)
		if s.perSource[src]--; s.perSource[src] <= 0 {
			delete(s.perSource, src)
		}
		s.mu.Unlock()
	}()
}

// connLimit says why a new connection from src must be refused, or ""
// (called with s.mu held). Refusing at accept, before reading anything,
// keeps a flood from costing more than an accept and a close.
func (s *Server) connLimit(src netip.Addr) string {
	switch {
	case s.closing:
		return "shutting down"
	case len(s.conns) >= s.opts.MaxConnections:
		return fmt.Sprintf("%d connections open, the limit", len(s.conns))
	case s.perSource[src] >= s.opts.MaxConnectionsPerSource:
		return fmt.Sprintf("%d connections open from %s, the limit per source address", s.perSource[src], src)
	}
	return ""
}

// sourceAddr is the IP address a connection comes from; connections that
// are not TCP (tests over pipes) share the zero address.
func sourceAddr(nc net.Conn) netip.Addr {
	if a, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// refusalLog logs at most one refusal per second and counts the others,
// which the next line reports as "suppressed".
type refusalLog struct {
	last       atomic.Int64 // unix nanos of the last line logged
	suppressed atomic.Int64
}

func (r *refusalLog) warn(log *slog.Logger, msg string, args ...any) {
	now := time.Now().UnixNano()
	last := r.last.Load()
	if now-last < int64(time.Second) || !r.last.CompareAndSwap(last, now) {
		r.suppressed.Add(1)
		return
	}
	log.Warn(msg, append(args, "suppressed", r.suppressed.Swap(0))...)
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
