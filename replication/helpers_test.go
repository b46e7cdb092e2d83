package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// replica is a replica node in a test: a server and its connections,
// reached over net.Pipe.
type replica struct {
	t    testing.TB
	name string
	srv  *Server

	mu    sync.Mutex
	conns []net.Conn // server ends
}

func newReplica(t testing.TB, name, secret string) *replica {
	t.Helper()
	r := &replica{t: t, name: name, srv: NewServer(ServerConfig{Secret: secret, Logger: testLogger(t)})}
	t.Cleanup(func() { r.srv.Close() })
	return r
}

// dial is a PeerConfig.Dial that connects to r over a pipe.
func (r *replica) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, s := net.Pipe()
	r.mu.Lock()
	r.conns = append(r.conns, s)
	r.mu.Unlock()
	go r.srv.ServeConn(s)
	return c, nil
}

// cut closes every connection to r.
func (r *replica) cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
	r.conns = nil
}

func (r *replica) peer(t testing.TB, self, secret string, timeout time.Duration) *Peer {
	t.Helper()
	p, err := Dial(context.Background(), PeerConfig{Node: r.name, Addr: "pipe", Self: self, Secret: secret,
		Dial: r.dial, Timeout: timeout, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// testLogger discards, unless REPLICATION_TEST_LOG is set: goroutines may
// log after their test ended, which t.Log does not allow.
func testLogger(testing.TB) *slog.Logger {
	if os.Getenv("REPLICATION_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// fakeMembership records drops and readmissions; err, when set, makes
// drops fail, readmitErr readmissions. onReadmit, when set, runs before a
// readmission returns.
type fakeMembership struct {
	mu         sync.Mutex
	drops      []string
	readmits   []string
	err        error
	readmitErr error
	onReadmit  func(node string)
}

func (m *fakeMembership) Drop(ctx context.Context, device string, epoch uint64, node string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.drops = append(m.drops, fmt.Sprintf("%s@%d:%s", device, epoch, node))
	return m.err
}

func (m *fakeMembership) Readmit(ctx context.Context, device string, epoch uint64, node string) error {
	m.mu.Lock()
	f := m.onReadmit
	m.mu.Unlock()
	if f != nil {
		f(node)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.readmits = append(m.readmits, fmt.Sprintf("%s@%d:%s", device, epoch, node))
	return m.readmitErr
}

func (m *fakeMembership) readmitted() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.readmits...)
}

func (m *fakeMembership) dropped() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.drops...)
}

var errInjected = errors.New("injected failure")

// waitFor polls cond until it holds or the test's patience runs out.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed + byte(i*7)
	}
	return p
}
