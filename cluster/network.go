package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hatarget/hatarget/cluster/pki"
)

// Port names a node channel's listener in the logs of the connections it
// refuses.
type Port string

const (
	PortRaft        Port = "raft"
	PortAPI         Port = "api"
	PortForward     Port = "forward"
	PortReplication Port = "replication"
)

const (
	// handshakeTimeout bounds a peer's TLS handshake: one that stalls must
	// not hold a handshake slot for longer.
	handshakeTimeout = 10 * time.Second
	// maxHandshakes bounds the handshakes a listener runs at once, so that
	// a flood of connections that never finish theirs costs a bounded
	// number of goroutines and buffers; connections beyond it are closed.
	maxHandshakes = 128
)

// Network is the one way nodes listen for and dial each other: Raft, the
// management API (leader forwarding), I/O forwarding and replication all
// go through it, so that transport security and peer checks live in one
// place.
//
// With credentials, every connection is mutual TLS and a peer must
// present a node certificate of the cluster CA naming a current member
// (the API also takes operators, with or without a certificate). The
// handshake completes before Accept or DialContext returns the
// connection, so a refused peer never gets a byte of a channel's protocol
// through. Node-to-node HTTP therefore uses http:// URLs over
// DialContext: the bytes are TLS, and an https transport would wrap them
// a second time.
type Network struct {
	dialer net.Dialer
	creds  *pki.Credentials // nil: plain TCP
	log    *slog.Logger
	// members is the set of node names that may connect, kept up to date
	// by the node (tlsauth.go) so that a handshake never waits on Raft.
	// Until the node publishes one, every node peer is refused.
	members atomic.Pointer[map[string]struct{}]
	// refused counts the connections its listeners refused.
	refused atomic.Uint64
}

// NewNetwork returns plain TCP node networking.
func NewNetwork() *Network {
	return &Network{dialer: net.Dialer{Timeout: 5 * time.Second, KeepAlive: 15 * time.Second}, log: slog.Default()}
}

// NewTLSNetwork returns node networking secured with creds; log receives
// the refused connections.
func NewTLSNetwork(creds *pki.Credentials, log *slog.Logger) *Network {
	n := NewNetwork()
	n.creds = creds
	if log != nil {
		n.log = log
	}
	return n
}

// Refused is how many connections the network's listeners have refused.
func (n *Network) Refused() uint64 { return n.refused.Load() }

// TLS reports whether the network is secured.
func (n *Network) TLS() bool { return n.creds != nil }

// setMembers replaces the names of the nodes allowed to connect.
func (n *Network) setMembers(names map[string]struct{}) { n.members.Store(&names) }

// isMember is the pki.Membership of the node channels.
func (n *Network) isMember(name string) bool {
	m := n.members.Load()
	if m == nil {
		return false
	}
	_, ok := (*m)[name]
	return ok
}

// Listen opens the listener of a node channel on addr.
func (n *Network) Listen(port Port, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil || n.creds == nil {
		return ln, err
	}
	cfg := n.creds.ServerConfig(n.isMember)
	if port == PortAPI {
		cfg = n.creds.APIServerConfig(n.isMember)
	}
	log := n.log.With("port", string(port), "listen", ln.Addr().String())
	return newTLSListener(ln, cfg, newRefusalLog(log, &n.refused)), nil
}

// DialContext opens a node channel connection to addr; with TLS it
// returns once the server proved to be a member node.
func (n *Network) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := n.dialer.DialContext(ctx, network, addr)
	if err != nil || n.creds == nil {
		return c, err
	}
	tc := tls.Client(c, n.creds.ClientConfig(n.isMember))
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
	}
	return tc, nil
}

// tlsListener hands out connections whose TLS handshake succeeded. Each
// handshake runs on its own goroutine, so that a peer that stalls holds
// up nobody else.
type tlsListener struct {
	inner net.Listener
	cfg   *tls.Config
	log   *refusalLog
	slots chan struct{}
	ready chan net.Conn
	done  chan struct{}
	once  sync.Once
	// err is why the inner listener failed, set (under once) before done
	// is closed; nil when Close closed it.
	err error
}

func newTLSListener(inner net.Listener, cfg *tls.Config, log *refusalLog) *tlsListener {
	l := &tlsListener{
		inner: inner, cfg: cfg, log: log,
		slots: make(chan struct{}, maxHandshakes),
		ready: make(chan net.Conn),
		done:  make(chan struct{}),
	}
	go l.acceptLoop()
	return l
}

func (l *tlsListener) acceptLoop() {
	for {
		c, err := l.inner.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			l.once.Do(func() {
				l.err = err
				close(l.done)
			})
			return
		}
		select {
		case l.slots <- struct{}{}:
			go l.handshake(c)
		default:
			l.refuse(c, errors.New("too many TLS handshakes in progress"))
		}
	}
}

func (l *tlsListener) handshake(c net.Conn) {
	defer func() { <-l.slots }()
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	tc := tls.Server(c, l.cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		l.refuse(c, err)
		return
	}
	select {
	case l.ready <- tc:
	case <-l.done:
		tc.Close()
	}
}

// refuse closes a connection and logs why, with the peer's address: the
// trail an operator follows to a misconfigured node or an intruder.
func (l *tlsListener) refuse(c net.Conn, reason error) {
	l.log.refused(c.RemoteAddr().String(), reason)
	c.Close()
}

func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		if l.err != nil {
			return nil, l.err
		}
		return nil, net.ErrClosed
	}
}

func (l *tlsListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.inner.Close()
}

func (l *tlsListener) Addr() net.Addr { return l.inner.Addr() }

// raftStream adapts a Network listener to raft.StreamLayer.
type raftStream struct {
	net.Listener
	network   *Network
	advertise net.Addr
}

func (s *raftStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.network.DialContext(ctx, "tcp", string(addr))
}

// Addr is the address peers dial, not the wildcard the listener may use.
func (s *raftStream) Addr() net.Addr { return s.advertise }
