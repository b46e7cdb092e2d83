package clustertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hatarget/hatarget/cluster"
	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/target"
)

// Defaults of Options.
const (
	DefaultRaftTimeout  = 300 * time.Millisecond
	DefaultStartTimeout = 30 * time.Second
	DefaultVersion      = "clustertest"
)

// maxFailureLog bounds the log tail a failed test prints.
const maxFailureLog = 64 << 10

// Options tune New. The zero value is a plain cluster.
type Options struct {
	// Token is every node's API token (cluster.Config.Token); Client sends
	// it.
	Token string
	// RaftTimeout is every node's cluster.Config.RaftTimeout (default
	// DefaultRaftTimeout).
	RaftTimeout time.Duration
	// Version is every node's release string (default DefaultVersion).
	Version string
	// Configure, when set, adjusts node i's (1-based) configuration once,
	// before its first start: a lower Protocol for one node, say. Later
	// starts use Member.Config, which a test may change while the node is
	// stopped.
	Configure func(i int, c *cluster.Config)
	// Crash, when set, is how Kill stops a node abruptly. Only package
	// cluster's tests can reach the node's internals; without it Kill is
	// Stop (see the package documentation).
	Crash func(*cluster.Node) error
	// NoWait makes New return once every node started, without waiting for
	// a leader and for every node's registration in the replicated state.
	NoWait bool
	// StartTimeout bounds New's wait (default DefaultStartTimeout).
	StartTimeout time.Duration
	// LogLevel of the nodes' logs (default Info). The logs are kept in
	// memory and printed when the test fails; with CLUSTERTEST_LOG=1 in the
	// environment they go to stderr as they are written.
	LogLevel slog.Level
}

// Cluster is N in-process nodes.
type Cluster struct {
	t    testing.TB
	opts Options
	// StorageDir is the storage directory every node shares.
	StorageDir string
	logs       *logSink

	mu      sync.Mutex
	members []*Member
	closed  bool
}

// Member is one node of a Cluster; it survives restarts.
type Member struct {
	Index int
	Name  string
	// Config is what the next Start of the node uses: the same name,
	// addresses and data directory every time. A test may change it while
	// the node is stopped (Protocol, say).
	Config cluster.Config
	// Dataplane records what the node reconciles; it is kept across
	// restarts, so that its history covers every run of the node.
	Dataplane *Dataplane

	mu   sync.Mutex
	node *cluster.Node // nil while stopped
	prs  *cluster.Reservations
}

// Reservations returns the reservation provider the running node was
// started with (a fresh one per start unless Config.Reservations is set),
// as the dataplane would use it: Store(device, lu) gives the device's
// replicated reservation store. Nil while the node is stopped.
func (m *Member) Reservations() *cluster.Reservations {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.node == nil {
		return nil
	}
	return m.prs
}

// Node returns the running node, nil while it is stopped.
func (m *Member) Node() *cluster.Node {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.node
}

// Running reports whether the node runs.
func (m *Member) Running() bool { return m.Node() != nil }

// New starts n nodes that form a cluster by themselves and, unless
// opts.NoWait, waits until they agree on a leader and every node is
// registered (with its port group) in every node's replicated state.
// Everything is shut down when the test ends.
func New(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	if n < 1 || n > 250 {
		t.Fatalf("clustertest.New: %d nodes", n)
	}
	if opts.RaftTimeout == 0 {
		opts.RaftTimeout = DefaultRaftTimeout
	}
	if opts.Version == "" {
		opts.Version = DefaultVersion
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	root := t.TempDir()
	c := &Cluster{t: t, opts: opts, StorageDir: filepath.Join(root, "storage"), logs: newLogSink(os.Getenv("CLUSTERTEST_LOG") != "")}
	t.Cleanup(func() {
		c.Cleanup()
		if t.Failed() {
			logs := c.Logs()
			if len(logs) > maxFailureLog {
				logs = "[earlier lines dropped]\n" + logs[len(logs)-maxFailureLog:]
			}
			t.Logf("cluster logs:\n%s", logs)
		}
	})
	addrs := make([]nodeAddrs, n)
	for i := range addrs {
		addrs[i] = freeAddrs(t, hostIP(i+1))
	}
	for i := 1; i <= n; i++ {
		var join []string
		for j := 1; j <= n; j++ {
			if j != i {
				join = append(join, addrs[j-1].gossip)
			}
		}
		name := "n" + strconv.Itoa(i)
		a := addrs[i-1]
		m := &Member{Index: i, Name: name, Dataplane: NewDataplane()}
		m.Config = cluster.Config{
			Name: name, DataDir: filepath.Join(root, name),
			ISCSIAddr: a.iscsi, APIAddr: a.api, RaftAddr: a.raft, GossipAddr: a.gossip,
			Join: join, BootstrapExpect: n,
			Version: opts.Version, Token: opts.Token, StorageDir: c.StorageDir,
			RaftTimeout: opts.RaftTimeout,
		}
		if opts.Configure != nil {
			opts.Configure(i, &m.Config)
		}
		c.members = append(c.members, m)
	}
	for i := 1; i <= n; i++ {
		c.start(t, i)
	}
	if !opts.NoWait {
		c.WaitLeader(t, opts.StartTimeout)
		c.WaitRegistered(t, opts.StartTimeout)
	}
	return c
}

// N is the number of nodes, running or not.
func (c *Cluster) N() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.members)
}

// Member returns node i (1-based).
func (c *Cluster) Member(i int) *Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < 1 || i > len(c.members) {
		panic(fmt.Sprintf("clustertest: no node %d in a cluster of %d", i, len(c.members)))
	}
	return c.members[i-1]
}

// Node returns node i's running *cluster.Node, nil while it is stopped.
func (c *Cluster) Node(i int) *cluster.Node { return c.Member(i).Node() }

// Index returns the index of the node named name, or 0.
func (c *Cluster) Index(name string) int {
	for _, m := range c.all() {
		if m.Name == name {
			return m.Index
		}
	}
	return 0
}

// Running lists the indexes of the running nodes.
func (c *Cluster) Running() []int {
	var out []int
	for _, m := range c.all() {
		if m.Running() {
			out = append(out, m.Index)
		}
	}
	return out
}

func (c *Cluster) all() []*Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.members)
}

// Client returns an API client for node i, with the cluster's token.
func (c *Cluster) Client(i int) *api.Client {
	return api.NewClient(c.Member(i).Config.APIAddr, c.opts.Token)
}

// start runs node i with its Member.Config.
func (c *Cluster) start(t testing.TB, i int) {
	t.Helper()
	m := c.Member(i)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.node != nil {
		t.Fatalf("clustertest: %s is already running", m.Name)
	}
	cfg := m.Config
	cfg.Join = slices.Clone(cfg.Join)
	cfg.Dataplane = m.Dataplane
	cfg.Logger = slog.New(slog.NewTextHandler(c.logs, &slog.HandlerOptions{Level: c.opts.LogLevel}))
	cfg.Registry = nil // a fresh registry per start: metrics register once per registry
	if cfg.Reservations == nil {
		cfg.Reservations = cluster.NewReservations()
	}
	node, err := cluster.Start(cfg)
	if err != nil {
		t.Fatalf("clustertest: starting %s: %v", m.Name, err)
	}
	m.node, m.prs = node, cfg.Reservations
}

// Restart starts stopped node i again, with the same data directory and
// addresses (and whatever the test changed in its Member.Config).
func (c *Cluster) Restart(t testing.TB, i int) {
	t.Helper()
	c.start(t, i)
}

// Stop shuts node i down gracefully (cluster.Node.Shutdown): leadership
// is handed over if it leads, and it leaves the gossip pool.
func (c *Cluster) Stop(t testing.TB, i int) {
	t.Helper()
	if err := c.stop(i, false); err != nil {
		t.Fatalf("clustertest: stopping n%d: %v", i, err)
	}
}

// Kill stops node i abruptly through Options.Crash, or gracefully like
// Stop when no Crash hook is set (see the package documentation).
func (c *Cluster) Kill(t testing.TB, i int) {
	t.Helper()
	if err := c.stop(i, true); err != nil {
		t.Fatalf("clustertest: killing n%d: %v", i, err)
	}
}

func (c *Cluster) stop(i int, crash bool) error {
	m := c.Member(i)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.node == nil {
		return fmt.Errorf("%s is not running", m.Name)
	}
	node := m.node
	m.node = nil
	if crash && c.opts.Crash != nil {
		return c.opts.Crash(node)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return node.Shutdown(ctx)
}

// Cleanup shuts every running node down; New registers it with
// t.Cleanup, and it may be called earlier. Errors are reported.
//
// The nodes stop one after the other: a node leaving the gossip pool waits
// (up to two seconds) for its departure to reach an alive member, which
// never happens when all of them leave at once.
func (c *Cluster) Cleanup() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.mu.Unlock()
	var errs []error
	for _, m := range c.all() {
		if !m.Running() {
			continue
		}
		if err := c.stop(m.Index, false); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		c.t.Errorf("clustertest: shutting the cluster down: %v", err)
	}
}

// Logs returns every node's log so far.
func (c *Cluster) Logs() string { return c.logs.String() }

// Local returns node i's own status (GET /v1/local), with a short
// timeout.
func (c *Cluster) Local(i int) (*api.LocalStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return c.Client(i).Local(ctx)
}

// Leader waits (up to DefaultStartTimeout) until the running nodes agree
// on a leader and returns its index.
func (c *Cluster) Leader(t testing.TB) int {
	t.Helper()
	return c.WaitLeader(t, DefaultStartTimeout)
}

// WaitLeader waits until exactly one running node is the Raft leader and
// every running node names it, and returns its index.
func (c *Cluster) WaitLeader(t testing.TB, timeout time.Duration) int {
	t.Helper()
	var leader int
	why := Poll(timeout, func() (bool, string) {
		var msg string
		leader, msg = c.agreedLeader()
		return leader != 0, msg
	})
	if why != "" {
		t.Fatalf("clustertest: no agreed leader after %s: %s", timeout, why)
	}
	return leader
}

func (c *Cluster) agreedLeader() (int, string) {
	running := c.Running()
	if len(running) == 0 {
		return 0, "no node runs"
	}
	name, leaders := "", 0
	for _, i := range running {
		ls, err := c.Local(i)
		if err != nil {
			return 0, fmt.Sprintf("n%d: %v", i, err)
		}
		if ls.RaftRole == "leader" {
			leaders++
		}
		switch {
		case ls.Leader == "":
			return 0, ls.Name + " knows no leader"
		case name == "":
			name = ls.Leader
		case ls.Leader != name:
			return 0, fmt.Sprintf("nodes name different leaders: %s and %s", name, ls.Leader)
		}
	}
	idx := c.Index(name)
	if idx == 0 || !c.Member(idx).Running() {
		return 0, fmt.Sprintf("the named leader %s does not run", name)
	}
	if leaders != 1 {
		return 0, fmt.Sprintf("%d nodes say they lead", leaders)
	}
	return idx, ""
}

// Followers lists the running nodes other than leader.
func (c *Cluster) Followers(leader int) []int {
	return slices.DeleteFunc(c.Running(), func(i int) bool { return i == leader })
}

// WaitRegistered waits until every running node's replicated state holds
// a record, with a port group, of every node of the cluster.
func (c *Cluster) WaitRegistered(t testing.TB, timeout time.Duration) {
	t.Helper()
	why := Poll(timeout, func() (bool, string) {
		for _, i := range c.Running() {
			n := c.Node(i)
			if n == nil {
				continue
			}
			s := n.State()
			for _, m := range c.all() {
				rec := s.Nodes[m.Name]
				if rec == nil || rec.PortGroup == 0 {
					return false, fmt.Sprintf("n%d's state has no record of %s (%d records)", i, m.Name, len(s.Nodes))
				}
			}
		}
		return true, ""
	})
	if why != "" {
		t.Fatalf("clustertest: nodes not registered after %s: %s", timeout, why)
	}
}

// WaitGenerations waits until every running node's dataplane serves the
// same generation (LocalStatus.Generation), at least atLeast, and returns
// it.
func (c *Cluster) WaitGenerations(t testing.TB, atLeast uint64, timeout time.Duration) uint64 {
	t.Helper()
	var gen uint64
	why := Poll(timeout, func() (bool, string) {
		gen = 0
		seen := map[string]uint64{}
		for _, i := range c.Running() {
			ls, err := c.Local(i)
			if err != nil {
				return false, fmt.Sprintf("n%d: %v", i, err)
			}
			seen[ls.Name] = ls.Generation
			if gen == 0 {
				gen = ls.Generation
			}
			if ls.Generation != gen || ls.Generation < atLeast {
				return false, fmt.Sprintf("generations %v, want all equal and at least %d", seen, atLeast)
			}
		}
		return gen >= atLeast && gen > 0, fmt.Sprintf("generations %v", seen)
	})
	if why != "" {
		t.Fatalf("clustertest: generations did not converge within %s: %s", timeout, why)
	}
	return gen
}

// Poll calls cond every 10 ms until it holds or timeout passes; it
// returns "" on success, else cond's last explanation.
func Poll(timeout time.Duration, cond func() (bool, string)) string {
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return ""
		}
		if time.Now().After(deadline) {
			if why == "" {
				why = "condition not met"
			}
			return why
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Dataplane is a fake cluster.Dataplane: it records every configuration
// it is given and lets tests wait for one. Apply checks the configuration
// with target.Config.Validate, as the real dataplane does, and refuses it
// (after recording it) when invalid or when an error was set with Fail.
// It runs no resync, but reports the progress a test sets with SetResync.
type Dataplane struct {
	mu      sync.Mutex
	configs []target.Config
	errs    []error
	fail    error
	changed chan struct{}
	resyncs map[string]map[string]target.ResyncProgress
	// resyncHeld, while set, is what ResyncProgress waits for.
	resyncHeld chan struct{}
}

var _ cluster.Dataplane = (*Dataplane)(nil)

// NewDataplane returns an empty recorder.
func NewDataplane() *Dataplane { return &Dataplane{changed: make(chan struct{})} }

// Apply implements cluster.Dataplane.
func (d *Dataplane) Apply(cfg target.Config) error {
	err := cfg.Validate()
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		err = d.fail
	}
	d.configs = append(d.configs, cfg)
	if err != nil {
		d.errs = append(d.errs, err)
	}
	close(d.changed)
	d.changed = make(chan struct{})
	return err
}

// Fail makes every later Apply fail with err (nil: succeed again).
func (d *Dataplane) Fail(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail = err
}

// Configs returns every configuration received, oldest first.
func (d *Dataplane) Configs() []target.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.configs)
}

// Errors returns the errors Apply returned.
func (d *Dataplane) Errors() []error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.errs)
}

// Latest returns the last configuration received, if any.
func (d *Dataplane) Latest() (target.Config, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.configs) == 0 {
		return target.Config{}, false
	}
	return d.configs[len(d.configs)-1], true
}

// Wait waits until pred holds on the latest configuration and returns
// that configuration, or reports false after timeout.
func (d *Dataplane) Wait(timeout time.Duration, pred func(target.Config) bool) (target.Config, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		d.mu.Lock()
		ch := d.changed
		var cfg target.Config
		have := len(d.configs) > 0
		if have {
			cfg = d.configs[len(d.configs)-1]
		}
		d.mu.Unlock()
		if have && pred(cfg) {
			return cfg, true
		}
		select {
		case <-ch:
		case <-timer.C:
			return cfg, false
		}
	}
}

// SetResync makes ResyncProgress report p for device, as the dataplane
// of its owner resyncing its replicas would; nil p reports none.
func (d *Dataplane) SetResync(device string, p map[string]target.ResyncProgress) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.resyncs == nil {
		d.resyncs = map[string]map[string]target.ResyncProgress{}
	}
	d.resyncs[device] = maps.Clone(p)
}

// HoldResync makes ResyncProgress wait until release is called, so that
// the node's answers about its resyncs hang, as those of a node that
// stopped answering would.
func (d *Dataplane) HoldResync() (release func()) {
	held := make(chan struct{})
	d.mu.Lock()
	d.resyncHeld = held
	d.mu.Unlock()
	return sync.OnceFunc(func() {
		d.mu.Lock()
		if d.resyncHeld == held {
			d.resyncHeld = nil
		}
		d.mu.Unlock()
		close(held)
	})
}

// ResyncProgress reports what SetResync set for device, as the real
// dataplane reports the resyncs it runs (target.Server.ResyncProgress).
func (d *Dataplane) ResyncProgress(device string) map[string]target.ResyncProgress {
	d.mu.Lock()
	held := d.resyncHeld
	d.mu.Unlock()
	if held != nil {
		<-held
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.resyncs[device])
}

// WaitFor is Wait that fails the test on timeout.
func (d *Dataplane) WaitFor(t testing.TB, timeout time.Duration, pred func(target.Config) bool) target.Config {
	t.Helper()
	cfg, ok := d.Wait(timeout, pred)
	if !ok {
		t.Fatalf("clustertest: the dataplane's latest configuration does not match after %s: %+v", timeout, cfg)
	}
	return cfg
}

// FindTarget returns the target named iqn in cfg.
func FindTarget(cfg target.Config, iqn string) (target.Target, bool) {
	for _, t := range cfg.Targets {
		if t.Name == iqn {
			return t, true
		}
	}
	return target.Target{}, false
}

// FindDevice returns the device named name in cfg.
func FindDevice(cfg target.Config, name string) (target.Device, bool) {
	for _, d := range cfg.Devices {
		if d.Name == name {
			return d, true
		}
	}
	return target.Device{}, false
}

// nodeAddrs are one node's four listen addresses.
type nodeAddrs struct{ iscsi, api, raft, gossip string }

func hostIP(i int) string { return fmt.Sprintf("127.0.0.%d", i) }

// freeAddrs picks four distinct ports free on ip; the gossip port is free
// for TCP and UDP both, as memberlist uses both. The listeners stay open
// until all four are chosen, so that no port is picked twice.
func freeAddrs(t testing.TB, ip string) nodeAddrs {
	t.Helper()
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			_ = c.Close()
		}
	}()
	tcp := func() string {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("clustertest: no free port on %s: %v", ip, err)
		}
		closers = append(closers, l)
		return l.Addr().String()
	}
	a := nodeAddrs{iscsi: tcp(), api: tcp(), raft: tcp()}
	for range 100 {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatalf("clustertest: no free port on %s: %v", ip, err)
		}
		closers = append(closers, l)
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			continue
		}
		closers = append(closers, u)
		a.gossip = l.Addr().String()
		return a
	}
	t.Fatalf("clustertest: no port on %s is free for both TCP and UDP", ip)
	return a
}

// logSink collects the nodes' logs; slog handlers serialise their own
// writes, but several handlers share one sink.
type logSink struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	stderr bool
}

func newLogSink(stderr bool) *logSink { return &logSink{stderr: stderr} }

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stderr {
		_, _ = os.Stderr.Write(p)
	}
	return s.buf.Write(p)
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.TrimRight(s.buf.String(), "\n")
}
