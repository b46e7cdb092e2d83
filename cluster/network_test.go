package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hatarget/hatarget/cluster/pki"
)

// lockedBuffer is a log sink the listener's goroutines write to while the
// test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testCreds issues a certificate of id by ca and loads it as a node
// would (operators' through a hand-made config, see clientTLS).
func testCreds(t *testing.T, ca *pki.CA, name string) *pki.Credentials {
	t.Helper()
	iss, err := ca.Issue(pki.CertRequest{Identity: pki.Node(name), IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	files, err := iss.Write(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	c, err := pki.Load(files, name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newTestCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(pki.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// tlsPair is a listening network n1 and the log of what it refused.
type tlsPair struct {
	ca  *pki.CA
	net *Network
	ln  net.Listener
	log *lockedBuffer
}

func listenTLS(t *testing.T, port Port, members ...string) *tlsPair {
	t.Helper()
	ca := newTestCA(t)
	log := &lockedBuffer{}
	n := NewTLSNetwork(testCreds(t, ca, "n1"), slog.New(slog.NewTextHandler(log, nil)))
	set := map[string]struct{}{}
	for _, m := range members {
		set[m] = struct{}{}
	}
	n.setMembers(set)
	ln, err := n.Listen(port, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &tlsPair{ca: ca, net: n, ln: ln, log: log}
}

// accepted returns the next connection the listener hands out, or nil
// within a short wait.
func accepted(ln net.Listener, wait time.Duration) net.Conn {
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- nil
			return
		}
		ch <- c
	}()
	select {
	case c := <-ch:
		return c
	case <-time.After(wait):
		return nil
	}
}

// dialAs dials the listener as a node network holding creds, trusting
// members; it returns the dial error.
func dialAs(t *testing.T, addr string, creds *pki.Credentials, members ...string) (net.Conn, error) {
	t.Helper()
	n := NewTLSNetwork(creds, slog.New(slog.DiscardHandler))
	set := map[string]struct{}{}
	for _, m := range members {
		set[m] = struct{}{}
	}
	n.setMembers(set)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return n.DialContext(ctx, "tcp", addr)
}

// rogueConfig presents a node certificate of ca and trusts any server.
func rogueConfig(t *testing.T, ca *pki.CA, name string) *tls.Config {
	t.Helper()
	iss, err := ca.Issue(pki.CertRequest{Identity: pki.Node(name)})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(iss.CertPEM, iss.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	// GetClientCertificate: Go's client sends a certificate only if the
	// server asks for its issuer, and this one must reach the server.
	return &tls.Config{
		InsecureSkipVerify:   true,
		MinVersion:           tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
	}
}

// firstRead sends a command on a dialed connection and reads the answer:
// in TLS 1.3 the client's handshake completes before the server has judged
// its certificate, so a refused client learns of it there.
func firstRead[C net.Conn](c C, err error) error {
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Write([]byte("RAFT APPEND ENTRIES\r\n\r\n"))
	_, err = c.Read(make([]byte, 1))
	return err
}

func TestNetworkTLSAcceptsMemberNode(t *testing.T) {
	p := listenTLS(t, PortRaft, "n1", "n2")
	c, err := dialAs(t, p.ln.Addr().String(), testCreds(t, p.ca, "n2"), "n1")
	if err != nil {
		t.Fatalf("member n2 refused: %v", err)
	}
	defer c.Close()
	sc := accepted(p.ln, 5*time.Second)
	if sc == nil {
		t.Fatalf("no connection accepted; log:\n%s", p.log)
	}
	defer sc.Close()
	cs := sc.(*tls.Conn).ConnectionState()
	if id, ok := pki.PeerIdentity(&cs); !ok || id != pki.Node("n2") {
		t.Errorf("peer identity = %v, %v; want node n2", id, ok)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "ping" {
		t.Errorf("read %q, %v", buf, err)
	}
}

// TestNetworkTLSRefusesRogues: a certificate of another CA, none, a
// member-less name and plain TCP are refused before Accept returns, and
// each refusal is logged with the peer's address.
func TestNetworkTLSRefusesRogues(t *testing.T) {
	p := listenTLS(t, PortForward, "n1", "n2")
	addr := p.ln.Addr().String()
	other := newTestCA(t)
	rogues := map[string]func() error{
		// The rogue trusts any server, so that the refusal tested is the
		// listener's.
		"other CA": func() error {
			return firstRead(tls.Dial("tcp", addr, rogueConfig(t, other, "n2")))
		},
		"not a member": func() error {
			return firstRead(dialAs(t, addr, testCreds(t, p.ca, "n9"), "n1"))
		},
		"no certificate": func() error {
			return firstRead(tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}))
		},
		"plain TCP": func() error {
			return firstRead(net.Dial("tcp", addr))
		},
	}
	for name, dial := range rogues {
		t.Run(name, func(t *testing.T) {
			if err := dial(); err == nil {
				t.Error("the rogue's connection succeeded")
			}
			if c := accepted(p.ln, 300*time.Millisecond); c != nil {
				c.Close()
				t.Fatal("the listener handed a rogue's connection out")
			}
		})
	}
	logs := p.log.String()
	if n := strings.Count(logs, "refused a connection"); n != len(rogues) {
		t.Errorf("%d refusals logged, want %d:\n%s", n, len(rogues), logs)
	}
	if !strings.Contains(logs, "unknown authority") {
		t.Errorf("the certificate of another CA was not refused as such:\n%s", logs)
	}
	if !strings.Contains(logs, "remote=127.0.0.1:") || !strings.Contains(logs, "port=forward") {
		t.Errorf("refusals do not name the peer's address and the port:\n%s", logs)
	}
}

// TestNetworkTLSAPIAcceptsCallersWithoutCertificates: operators may call
// the API with a token alone; a node certificate of a non-member is still
// refused there.
func TestNetworkTLSAPIAcceptsCallersWithoutCertificates(t *testing.T) {
	p := listenTLS(t, PortAPI, "n1")
	roots := x509Roots(t, p.ca)
	c, err := tls.Dial("tcp", p.ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("operator without a certificate refused: %v", err)
	}
	c.Close()
	if sc := accepted(p.ln, 5*time.Second); sc == nil {
		t.Fatal("not accepted")
	} else {
		sc.Close()
	}
	if err := firstRead(dialAs(t, p.ln.Addr().String(), testCreds(t, p.ca, "n9"), "n1")); err == nil {
		t.Error("a non-member node's certificate was accepted on the API")
	}
	if sc := accepted(p.ln, 300*time.Millisecond); sc != nil {
		sc.Close()
		t.Error("the listener handed a non-member node's connection out")
	}
}

func x509Roots(t *testing.T, ca *pki.CA) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool
}

// TestNetworkTLSDialRefusesNonMemberServer: the dialer checks whom the
// server's certificate names, not only its CA.
func TestNetworkTLSDialRefusesNonMemberServer(t *testing.T) {
	p := listenTLS(t, PortRaft, "n1", "n2")
	if _, err := dialAs(t, p.ln.Addr().String(), testCreds(t, p.ca, "n2"), "n3"); err == nil {
		t.Fatal("dialed a server whose certificate (n1) names no member")
	}
}

// TestNetworkTLSStalledHandshake: a peer that connects and sends nothing
// holds up no other peer.
func TestNetworkTLSStalledHandshake(t *testing.T) {
	p := listenTLS(t, PortReplication, "n1", "n2")
	stalled, err := net.Dial("tcp", p.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	c, err := dialAs(t, p.ln.Addr().String(), testCreds(t, p.ca, "n2"), "n1")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if sc := accepted(p.ln, 5*time.Second); sc == nil {
		t.Fatal("a stalled handshake held up a member's connection")
	} else {
		sc.Close()
	}
}

func TestNetworkTLSClose(t *testing.T) {
	p := listenTLS(t, PortRaft, "n1")
	done := make(chan error, 1)
	go func() {
		_, err := p.ln.Accept()
		done <- err
	}()
	p.ln.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close = %v; want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still blocked after Close")
	}
}

// TestNetworkPlain: without credentials connections are plain TCP.
func TestNetworkPlain(t *testing.T) {
	n := NewNetwork()
	ln, err := n.Listen(PortRaft, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if n.TLS() {
		t.Error("plain network says TLS")
	}
	c, err := n.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, ok := c.(*tls.Conn); ok {
		t.Error("plain network dialed TLS")
	}
}
