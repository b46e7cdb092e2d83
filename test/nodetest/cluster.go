package nodetest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/cluster/pki"
)

// ClusterOptions tune StartCluster.
type ClusterOptions struct {
	// Args are extra `agent` arguments for every node.
	Args []string
	// NodeArgs are extra arguments for one node, by its 1-based index
	// (e.g. {3: {"--advertise-protocol", "1"}}).
	NodeArgs map[int][]string
	// ReadyTimeout bounds how long a node may take to answer its API after
	// start (default 15 s).
	ReadyTimeout time.Duration
	// Netns runs every node in its own network namespace (netns.go), so
	// that Isolate can cut a node off its peers. Needs root.
	Netns bool
	// PrivateStorage gives every node its own --storage-dir (Agent's
	// StorageDir) instead of one shared by all: nodes with their own disks,
	// as replicated LUNs assume.
	PrivateStorage bool
	// Binary is the hatarget binary every node starts with (default
	// Binary()); Agent.Bin changes it for one node, e.g. to upgrade it.
	Binary string
	// TLS makes a cluster CA (Cluster.CA) and a certificate per node,
	// passed with --tls-ca/--tls-cert/--tls-key; API clients and CLI
	// then use HTTPS with the CA (tls.go).
	TLS bool
	// Token is passed to every node as --token, and used by Client and
	// CLI.
	Token string
}

// Ports are a cluster's six ports. Every node listens on the same ports
// on its own loopback address, as real nodes do on their own hosts.
type Ports struct{ ISCSI, API, Raft, Gossip, Forward, Replication int }

// Cluster is a set of `hatarget agent` processes on 127.0.0.1..127.0.0.n,
// or on 10.78.K.1..n in network namespaces (ClusterOptions.Netns).
type Cluster struct {
	t          testing.TB
	bin        string
	opts       ClusterOptions
	Ports      Ports
	StorageDir string // --storage-dir shared by every node (unless PrivateStorage)
	root       string
	net        *network // nil on loopback
	// CA signs the nodes' certificates with ClusterOptions.TLS; nil
	// otherwise.
	CA *pki.CA

	mu    sync.Mutex
	nodes []*Agent
}

// Agent is one `hatarget agent` process of a Cluster. It survives restarts:
// Start runs the process again with the same data directory and flags.
type Agent struct {
	c       *Cluster
	Name    string
	IP      string
	DataDir string
	// StorageDir is the node's --storage-dir: the cluster's, or its own
	// with PrivateStorage.
	StorageDir string
	index      int // 1-based position in the cluster
	// Extra are the node's own extra flags; a test may change them before
	// Start (e.g. drop --advertise-protocol to "upgrade" the node).
	Extra []string
	// Bin is the binary the next Start runs: the cluster's unless a test
	// changes it (a rolling upgrade).
	Bin string
	// TLS are the node's certificate files with ClusterOptions.TLS.
	TLS  pki.Files
	base []string // flags fixed at creation: name, ports, join, bootstrap
	logs *SyncBuffer

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	err      error
	starts   int
	stopped  bool // the test stopped or killed it on purpose
	isolated bool // Isolate cut its links
}

// StartCluster starts n agents that form a cluster by themselves
// (--bootstrap-expect n, each joining all the others) and waits until
// every one answers its API. Nodes are named n1..nN; indexes are 1-based
// to match. Everything stops when the test ends, and every node's log is
// printed if the test failed.
func StartCluster(t testing.TB, n int, opts ClusterOptions) *Cluster {
	t.Helper()
	if n < 1 || n > 250 {
		t.Fatalf("StartCluster: %d nodes", n)
	}
	root := t.TempDir() // before the cleanup below, so removed after the processes stop
	bin := opts.Binary
	if bin == "" {
		bin = Binary(t)
	}
	c := &Cluster{t: t, bin: bin, opts: opts, root: root, StorageDir: filepath.Join(root, "storage")}
	t.Cleanup(c.cleanup)
	if opts.TLS {
		c.CA = newTestCA(t, filepath.Join(root, "ca"))
	}
	if opts.Netns {
		// Every node has its own port space: the default ports.
		c.net = newNetwork(t)
		c.Ports = Ports{ISCSI: 3260, API: 9260, Raft: 9261, Gossip: 9262, Replication: 9263, Forward: 9264}
	} else {
		// One spare address so that AddNode finds the ports free as well.
		c.Ports = freePorts(t, hostRange(n+1))
	}
	for i := 1; i <= n; i++ {
		var join []string
		for j := 1; j <= n; j++ {
			if j != i {
				join = append(join, "--join", net.JoinHostPort(c.hostIP(j), strconv.Itoa(c.Ports.Gossip)))
			}
		}
		a := c.newAgent(i, fmt.Sprintf("n%d", i), append(join, "--bootstrap-expect", strconv.Itoa(n)), opts.NodeArgs[i])
		a.spawn()
	}
	for _, a := range c.Nodes() {
		a.waitReady()
	}
	return c
}

// AddNode starts one more agent, on the next loopback address, that joins
// the running cluster through every existing node (and does not bootstrap).
func (c *Cluster) AddNode(t testing.TB, name string) *Agent {
	t.Helper()
	var join []string
	for _, a := range c.Nodes() {
		join = append(join, "--join", net.JoinHostPort(a.IP, strconv.Itoa(c.Ports.Gossip)))
	}
	a := c.newAgent(len(c.Nodes())+1, name, join, nil)
	a.spawn()
	a.waitReady()
	return a
}

func (c *Cluster) newAgent(i int, name string, extraBase, extra []string) *Agent {
	if c.net != nil {
		c.net.addHost(c.t, i)
	}
	a := &Agent{
		c: c, Name: name, index: i, IP: c.hostIP(i), DataDir: filepath.Join(c.root, name), StorageDir: c.StorageDir,
		Extra: append([]string(nil), extra...), Bin: c.bin, logs: &SyncBuffer{},
	}
	if c.opts.PrivateStorage {
		a.StorageDir = filepath.Join(a.DataDir, "luns")
	}
	if c.opts.Token != "" {
		extraBase = append(extraBase, "--token", c.opts.Token)
	}
	if c.CA != nil {
		a.TLS = a.IssueCert(false)
		extraBase = append(extraBase, "--tls-ca", a.TLS.CA, "--tls-cert", a.TLS.Cert, "--tls-key", a.TLS.Key)
	}
	a.base = append([]string{"--name", a.Name, "--data-dir", a.DataDir, "--bind", a.IP,
		"--iscsi-port", strconv.Itoa(c.Ports.ISCSI), "--api-port", strconv.Itoa(c.Ports.API),
		"--raft-port", strconv.Itoa(c.Ports.Raft), "--gossip-port", strconv.Itoa(c.Ports.Gossip),
		"--forward-port", strconv.Itoa(c.Ports.Forward), "--replication-port", strconv.Itoa(c.Ports.Replication),
		"--storage-dir", a.StorageDir}, extraBase...)
	c.mu.Lock()
	c.nodes = append(c.nodes, a)
	c.mu.Unlock()
	return a
}

func hostIP(i int) string { return fmt.Sprintf("127.0.0.%d", i) }

// hostIP is node i's address.
func (c *Cluster) hostIP(i int) string {
	if c.net != nil {
		return c.net.ip(i)
	}
	return hostIP(i)
}

func hostRange(n int) []string {
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = hostIP(i + 1)
	}
	return hosts
}

// freePorts picks six distinct ports free on every host.
func freePorts(t testing.TB, hosts []string) Ports {
	seen := map[int]bool{}
	pick := func() int {
		for {
			p := FreePort(t, hosts)
			if !seen[p] {
				seen[p] = true
				return p
			}
		}
	}
	return Ports{ISCSI: pick(), API: pick(), Raft: pick(), Gossip: pick(), Forward: pick(), Replication: pick()}
}

// Node returns node i (1-based: Node(1) is n1).
func (c *Cluster) Node(i int) *Agent {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < 1 || i > len(c.nodes) {
		c.t.Fatalf("no node %d (cluster has %d)", i, len(c.nodes))
	}
	return c.nodes[i-1]
}

// Nodes returns every node, running or not.
func (c *Cluster) Nodes() []*Agent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Agent(nil), c.nodes...)
}

// ByName returns the node called name, or nil.
func (c *Cluster) ByName(name string) *Agent {
	for _, a := range c.Nodes() {
		if a.Name == name {
			return a
		}
	}
	return nil
}

// Index returns the 1-based index of the node called name, or 0.
func (c *Cluster) Index(name string) int {
	for i, a := range c.Nodes() {
		if a.Name == name {
			return i + 1
		}
	}
	return 0
}

// Running returns the nodes whose process runs (paused ones included).
func (c *Cluster) Running() []*Agent {
	var out []*Agent
	for _, a := range c.Nodes() {
		if a.Running() {
			out = append(out, a)
		}
	}
	return out
}

// CLI runs a control command of the binary against node i's API and
// returns its combined output.
func (c *Cluster) CLI(t testing.TB, i int, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args = append(args, "--addr", c.Node(i).APIAddr())
	if c.opts.Token != "" {
		args = append(args, "--token", c.opts.Token)
	}
	if c.CA != nil {
		args = append(args, "--ca-cert", c.CACertFile())
	}
	cmd := exec.CommandContext(ctx, c.bin, args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// WaitLeader waits until every running node names the same leader and
// that node says it leads, and returns its name.
func (c *Cluster) WaitLeader(t testing.TB, timeout time.Duration) string {
	t.Helper()
	var last string
	ok := Poll(timeout, 50*time.Millisecond, func() bool {
		leader, why := c.agreedLeader()
		last = why
		return leader != ""
	})
	if !ok {
		t.Fatalf("no agreed leader after %s: %s", timeout, last)
	}
	leader, _ := c.agreedLeader()
	return leader
}

func (c *Cluster) agreedLeader() (string, string) {
	running := c.Running()
	if len(running) == 0 {
		return "", "no node runs"
	}
	leader := ""
	for _, a := range running {
		ls, err := a.Local()
		if err != nil {
			return "", fmt.Sprintf("%s: %v", a.Name, err)
		}
		switch {
		case ls.Leader == "":
			return "", a.Name + " knows no leader"
		case leader == "":
			leader = ls.Leader
		case leader != ls.Leader:
			return "", fmt.Sprintf("%s says the leader is %s, others %s", a.Name, ls.Leader, leader)
		}
		if ls.Leader == a.Name && ls.RaftRole != "leader" {
			return "", fmt.Sprintf("%s is named leader but is %s", a.Name, ls.RaftRole)
		}
	}
	if l := c.ByName(leader); l == nil || !l.Running() {
		return "", "the named leader " + leader + " does not run"
	}
	return leader, ""
}

// WaitGenerations waits until every running node reports the same
// configuration generation (GET /v1/local) and returns it.
func (c *Cluster) WaitGenerations(t testing.TB, timeout time.Duration) uint64 {
	t.Helper()
	var gen uint64
	var last string
	ok := Poll(timeout, 50*time.Millisecond, func() bool {
		gen, last = 0, ""
		seen := map[string]uint64{}
		for _, a := range c.Running() {
			ls, err := a.Local()
			if err != nil {
				last = fmt.Sprintf("%s: %v", a.Name, err)
				return false
			}
			seen[a.Name] = ls.Generation
			if gen == 0 {
				gen = ls.Generation
			}
			if ls.Generation != gen || ls.Generation == 0 {
				last = fmt.Sprintf("generations %v", seen)
				return false
			}
		}
		return gen != 0
	})
	if !ok {
		t.Fatalf("generations did not converge within %s: %s", timeout, last)
	}
	return gen
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// cleanup stops every node (in parallel: a sequential stop waits out the
// quorum loss of the last ones) and prints the logs if the test failed.
func (c *Cluster) cleanup() {
	// A node that exited without being told to crashed: that fails the
	// test even if every assertion passed.
	for _, a := range c.Nodes() {
		a.mu.Lock()
		crashed := a.cmd != nil && !a.stopped && a.done != nil && isClosed(a.done)
		err := a.err
		a.mu.Unlock()
		if crashed {
			c.t.Errorf("%s exited on its own: %v", a.Name, err)
		}
	}
	var wg sync.WaitGroup
	for _, a := range c.Nodes() {
		wg.Go(func() {
			if a.Running() && !a.stop(5*time.Second) {
				c.t.Logf("%s did not stop within 5s of SIGTERM at the end of the test; killed it", a.Name)
			}
		})
	}
	wg.Wait()
	if c.net != nil {
		c.net.remove()
	}
	if c.t.Failed() {
		for _, a := range c.Nodes() {
			c.t.Logf("===== log of %s (%s) =====\n%s", a.Name, a.IP, a.Logs())
		}
	}
}

// APIAddr is the node's management API, host:port.
func (a *Agent) APIAddr() string { return net.JoinHostPort(a.IP, strconv.Itoa(a.c.Ports.API)) }

// ISCSIAddr is the node's iSCSI portal, host:port.
func (a *Agent) ISCSIAddr() string { return net.JoinHostPort(a.IP, strconv.Itoa(a.c.Ports.ISCSI)) }

// Logs returns everything the node printed, over all its runs.
func (a *Agent) Logs() string { return a.logs.String() }

// Client is an API client for polling: short timeouts, no retries, so a
// paused or dead node answers with an error quickly.
func (a *Agent) Client() *api.Client {
	cl := api.NewClient(a.APIAddr(), a.c.opts.Token)
	cl.HTTP.Timeout = 2 * time.Second
	cl.RetryNoLeader = 0
	if a.c.CA != nil {
		cl.UseTLS(a.c.clientTLS())
	}
	return cl
}

// Local returns GET /v1/local of the node.
func (a *Agent) Local() (*api.LocalStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return a.Client().Local(ctx)
}

// Running reports whether the process runs (a paused one does).
func (a *Agent) Running() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return false
	}
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

// Start runs the node again with the same data directory and flags, and
// waits until its API answers.
func (a *Agent) Start() {
	a.c.t.Helper()
	if a.Running() {
		a.c.t.Fatalf("%s: Start while running", a.Name)
	}
	a.spawn()
	a.waitReady()
}

// StartFailing runs the node, expecting it to exit by itself within
// timeout (a binary refusing its data dir, say), and returns what it
// printed and how it exited. The test fails if it is still running then.
func (a *Agent) StartFailing(timeout time.Duration) (string, error) {
	a.c.t.Helper()
	if a.Running() {
		a.c.t.Fatalf("%s: StartFailing while running", a.Name)
	}
	from := len(a.Logs())
	a.spawn()
	if !a.wait(timeout) {
		a.stop(5 * time.Second)
		a.c.t.Fatalf("%s still running %s after start; it was expected to exit:\n%s", a.Name, timeout, a.Logs()[from:])
	}
	a.mu.Lock()
	a.stopped = true
	a.mu.Unlock()
	return a.Logs()[from:], a.exitErr()
}

func (a *Agent) spawn() {
	a.c.t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.starts++
	run := a.starts
	args := append(append([]string{"agent"}, a.base...), a.c.opts.Args...)
	args = append(args, a.Extra...)
	fmt.Fprintf(a.logs, "===== start #%d: hatarget %s\n", run, strings.Join(args, " "))
	cmd := exec.Command(a.Bin, args...)
	if a.c.net != nil {
		cmd = a.c.net.command(a.index, a.Bin, args...)
	}
	cmd.Stdout, cmd.Stderr = a.logs, a.logs
	// Only the flags above: not a configuration file of this machine's
	// (/etc/hatarget/agent.toml). Older binaries ignore the variable.
	cmd.Env = append(os.Environ(), "HATARGET_CONFIG=")
	// A test binary that dies (a panic, the go test timeout) runs no
	// cleanup: its agents must not outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		a.c.t.Fatalf("%s: %v", a.Name, err)
	}
	done := make(chan struct{})
	a.cmd, a.done, a.err, a.stopped = cmd, done, nil, false
	go func() {
		err := cmd.Wait()
		a.mu.Lock()
		a.err = err
		a.mu.Unlock()
		fmt.Fprintf(a.logs, "===== exit of start #%d: %v\n", run, err)
		close(done)
	}()
}

// waitReady waits until the API answers. The iSCSI portal opens later,
// once the node has caught up with the cluster: tests wait for what they
// use.
func (a *Agent) waitReady() {
	a.c.t.Helper()
	timeout := a.c.opts.ReadyTimeout
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	a.mu.Lock()
	done := a.done
	a.mu.Unlock()
	exited := false
	ok := Poll(timeout, 50*time.Millisecond, func() bool {
		select {
		case <-done:
			exited = true
			return true
		default:
		}
		_, err := a.Local()
		return err == nil
	})
	switch {
	case exited:
		a.c.t.Fatalf("%s exited before its API answered: %v\n%s", a.Name, a.exitErr(), a.Logs())
	case !ok:
		a.c.t.Fatalf("%s: API %s not answering after %s\n%s", a.Name, a.APIAddr(), timeout, a.Logs())
	}
}

func (a *Agent) exitErr() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

func (a *Agent) signal(sig syscall.Signal) {
	a.mu.Lock()
	cmd := a.cmd
	a.mu.Unlock()
	if cmd != nil && a.Running() {
		_ = cmd.Process.Signal(sig)
	}
}

// Kill ends the process with SIGKILL and waits for it.
func (a *Agent) Kill() {
	a.mu.Lock()
	a.stopped = true
	a.mu.Unlock()
	a.signal(syscall.SIGKILL)
	a.wait(0)
}

// Stop ends the process with SIGTERM (a graceful leave) and waits for it;
// after 30 s it is killed and the test fails.
func (a *Agent) Stop() time.Duration {
	a.c.t.Helper()
	start := time.Now()
	if !a.stop(30 * time.Second) {
		a.c.t.Errorf("%s did not stop within 30s of SIGTERM; killed it", a.Name)
	}
	return time.Since(start)
}

// stop sends SIGCONT (a paused process cannot handle SIGTERM) and SIGTERM,
// and kills the process after grace. It reports whether it exited in time.
func (a *Agent) stop(grace time.Duration) bool {
	a.mu.Lock()
	a.stopped = true
	a.mu.Unlock()
	a.signal(syscall.SIGCONT)
	a.signal(syscall.SIGTERM)
	if a.wait(grace) {
		return true
	}
	a.signal(syscall.SIGKILL)
	a.wait(0)
	return false
}

// wait waits for the process to exit, at most timeout (0: for ever).
func (a *Agent) wait(timeout time.Duration) bool {
	a.mu.Lock()
	done := a.done
	a.mu.Unlock()
	if done == nil {
		return true
	}
	if timeout == 0 {
		<-done
		return true
	}
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Pause stops the process with SIGSTOP: it holds its sockets but answers
// nothing, like a hung host.
func (a *Agent) Pause() { a.signal(syscall.SIGSTOP) }

// Resume continues a paused process.
func (a *Agent) Resume() { a.signal(syscall.SIGCONT) }

// Isolate cuts the node's links to every other node, both ways, while the
// test still reaches it (netns clusters only); Heal restores them.
func (a *Agent) Isolate() {
	a.eachLink(a.c.net.cut)
	a.mu.Lock()
	a.isolated = true
	a.mu.Unlock()
}

// Heal restores the links Isolate cut.
func (a *Agent) Heal() {
	a.eachLink(a.c.net.heal)
	a.mu.Lock()
	a.isolated = false
	a.mu.Unlock()
}

// CutTo drops every packet the node sends to b while b's packets still
// reach it (netns clusters only): a one-way cut of one link. No TCP
// connection between the two completes either way, since its answers are
// lost, but gossip sees the asymmetry: b's probes arrive, the node's
// answers do not, and both still reach the third node. HealTo undoes it.
func (a *Agent) CutTo(b *Agent) {
	a.c.t.Helper()
	a.needNet()
	a.c.net.cutOneWay(a.c.t, a.index, b.index)
}

// HealTo restores the link CutTo cut.
func (a *Agent) HealTo(b *Agent) {
	a.c.t.Helper()
	a.needNet()
	a.c.net.healOneWay(a.c.t, a.index, b.index)
}

func (a *Agent) needNet() {
	a.c.t.Helper()
	if a.c.net == nil {
		a.c.t.Fatalf("%s: links can be cut only in a netns cluster (ClusterOptions.Netns)", a.Name)
	}
}

// Isolated reports whether Isolate cut the node off and Heal has not
// restored it yet.
func (a *Agent) Isolated() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.isolated
}

func (a *Agent) eachLink(fn func(t testing.TB, i, j int)) {
	a.c.t.Helper()
	a.needNet()
	for _, b := range a.c.Nodes() {
		if b != a {
			fn(a.c.t, a.index, b.index)
		}
	}
}
