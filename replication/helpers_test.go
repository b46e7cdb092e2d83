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

	"github.com/hatarget/hatarget/target/backend"
)

// memDevice is an in-memory backend.Device (and Unmapper) whose writes can
// be held at a gate.
type memDevice struct {
	mu      sync.Mutex
	data    []byte
	writes  int
	written int64 // bytes
	unmaps  int
	flushes int
	closed  bool

	// gate, when set, holds every write until it is closed; entered
	// receives one value per write that reached the gate.
	gate    chan struct{}
	entered chan struct{}
	failErr error
}

func newMemDevice(size int) *memDevice { return &memDevice{data: make([]byte, size)} }

var _ backend.Unmapper = (*memDevice)(nil)

// hold makes writes wait until the returned function is called (once).
func (d *memDevice) hold() (release func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gate = make(chan struct{})
	d.entered = make(chan struct{}, 1024)
	var once sync.Once
	gate := d.gate
	return func() { once.Do(func() { close(gate) }) }
}

func (d *memDevice) check(off, n int64) error {
	if d.closed {
		return os.ErrClosed
	}
	if off < 0 || n < 0 || off+n > int64(len(d.data)) {
		return backend.ErrOutOfRange
	}
	return nil
}

func (d *memDevice) ReadAt(p []byte, off int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(off, int64(len(p))); err != nil {
		return err
	}
	copy(p, d.data[off:])
	return nil
}

func (d *memDevice) WriteAt(p []byte, off int64, durable bool) error {
	d.mu.Lock()
	gate, entered := d.gate, d.entered
	d.mu.Unlock()
	if gate != nil {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-gate
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failErr != nil {
		return d.failErr
	}
	if err := d.check(off, int64(len(p))); err != nil {
		return err
	}
	copy(d.data[off:], p)
	d.writes++
	d.written += int64(len(p))
	return nil
}

func (d *memDevice) Unmap(off, n int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(off, n); err != nil {
		return err
	}
	clear(d.data[off : off+n])
	d.unmaps++
	return nil
}

func (d *memDevice) Flush() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.flushes++
	return nil
}

func (d *memDevice) Size() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return int64(len(d.data))
}

func (d *memDevice) ReadOnly() bool { return false }
func (d *memDevice) NVCache() bool  { return false }
func (d *memDevice) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	return nil
}

func (d *memDevice) bytesWritten() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.written
}

func (d *memDevice) setFail(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.failErr = err
}

func (d *memDevice) snapshot() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.data...)
}

func (d *memDevice) counts() (writes, unmaps, flushes int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.writes, d.unmaps, d.flushes
}

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
