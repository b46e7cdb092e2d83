package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hatarget/hatarget/fsm"
	"github.com/hatarget/hatarget/target"
	"github.com/hatarget/hatarget/target/scsi"
)

// Config configures one cluster node.
type Config struct {
	Name    string
	DataDir string
	// Listen addresses (host:port) of the node's services; ForwardAddr is
	// where the dataplane accepts commands other nodes forward to the LUNs
	// this node owns (empty: the node does not take part in forwarding).
	ISCSIAddr, APIAddr, RaftAddr, GossipAddr string
	ForwardAddr                              string
	// ReplicationAddr is where the dataplane's replication server takes
	// the writes of replicated LUNs' owners.
	ReplicationAddr string
	// Membership, when set, is bound to the node: the dataplane drops
	// failed replicas from the in-sync set through it.
	Membership *Membership
	// Network is how node channels listen and dial (nil: plain TCP); the
	// dataplane's forwarding uses the same one.
	Network *Network
	// GossipKey, when set, encrypts gossip (AES, 16, 24 or 32 bytes) on
	// a node that has not saved a keyring yet; after that the saved
	// keyring, which `cluster keyring` rotates, is used (keyring.go).
	GossipKey []byte
	// Join lists gossip addresses of other nodes to join through.
	Join []string
	// BootstrapExpect forms a new cluster once this many fresh nodes see
	// each other; zero never bootstraps (the node joins an existing one).
	BootstrapExpect int
	// Version is the release; Protocol the fsm command protocol advertised
	// (zero: fsm.Protocol; lower only to test the version gate).
	Version  string
	Protocol uint16
	// Token, when set, is required as a bearer token on every API call.
	Token string
	// StorageDir receives the backing files of LUNs created with a size
	// but no path. On shared storage it must be the same path everywhere.
	StorageDir string
	Logger     *slog.Logger
	// Registry receives the cluster's metrics and is served on /metrics.
	Registry *prometheus.Registry
	// Dataplane serves the configuration this node reconciles, with its
	// reservations in Reservations (nil: a private provider).
	Dataplane    Dataplane
	Reservations *Reservations
	// Lease is the dataplane's owner lease, which the node extends while
	// it is in contact with a quorum (nil: the dataplane has none).
	Lease *scsi.Lease
	// RaftTimeout scales Raft's heartbeat and election timeouts (default
	// 1 s).
	RaftTimeout time.Duration
	// AutoFinalize lets the node, while it leads, finalize an upgrade by
	// itself once every node runs a release that supports it
	// (autofinalize.go).
	AutoFinalize bool
	// MetricsPublic serves /metrics without a token once tokens are on.
	MetricsPublic bool
}

// Dataplane is what the cluster drives: the iSCSI target.
type Dataplane interface {
	Apply(target.Config) error
}

// Node is a running cluster member.
type Node struct {
	cfg Config
	// fresh: this node bootstrapped a new cluster and has not seen
	// another node lead it; if it is the first leader, it starts the
	// cluster at this binary's cluster version (autoFinalizer).
	fresh atomic.Bool
	// incarnation names this node's data directory (incarnation.go).
	incarnation string
	// settledTerm is the last term in which this node, leading, committed
	// an entry (settle).
	settledTerm atomic.Uint64
	log         *slog.Logger
	network     *Network
	fsm         *raftFSM
	raft        *raft.Raft
	store       *raftboltdb.BoltStore
	trans       *raft.NetworkTransport
	ml          *memberlist.Memberlist
	meta        *metaDelegate
	api         *http.Server
	apiLn       net.Listener
	forward     *http.Client
	metrics     *metrics
	prs         *Reservations

	// keyring encrypts gossip (nil: plain); keyringMu orders its changes
	// and their saving.
	keyring   *memberlist.Keyring
	keyringMu sync.Mutex

	// served is the generation the dataplane serves: the index of the
	// last state applied to it successfully.
	served atomic.Uint64
	// attempted is the generation the dataplane was last handed, whether
	// it took it or not; ready is closed once the node has caught up.
	attempted atomic.Uint64
	ready     chan struct{}

	// memberEvents wakes the leader loop on membership changes;
	// reconcileWake the reconcile loop (membership and lease changes
	// change ALUA states and where commands are forwarded); dataDirWake
	// the data directory's migration (datadir.go).
	memberEvents  chan struct{}
	reconcileWake chan struct{}
	dataDirWake   chan struct{}
	// peersWake refreshes the names the node channels accept
	// (tlsauth.go).
	peersWake chan struct{}
	// gossip holds copies of the gossip members (see memberEvents).
	gossip *memberEvents
	// leases is the owner lease bookkeeping (lease.go); ownerMu orders
	// the leader's failovers and lease grants.
	leases  leases
	ownerMu sync.Mutex
	// renewed is, per replicated LUN, the epoch the leader loop gave it
	// so that its owner forgets a rejoining replica's copy (leader.go);
	// only the leader loop uses it.
	renewed      map[string]uint64
	stop         chan struct{}
	wg           sync.WaitGroup
	shutdownOnce sync.Once
}

// Start opens the node's stores, starts Raft, gossip and the API, and
// begins bootstrapping or joining.
func Start(cfg Config) (*Node, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	// Before anything is created in the data directory: a refused start
	// leaves it as it was.
	marker, err := loadMarker(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	n := &Node{
		cfg:           cfg,
		log:           cfg.Logger.With("node", cfg.Name),
		network:       cfg.Network,
		memberEvents:  make(chan struct{}, 1),
		reconcileWake: make(chan struct{}, 1),
		dataDirWake:   make(chan struct{}, 1),
		peersWake:     make(chan struct{}, 1),
		stop:          make(chan struct{}),
		ready:         make(chan struct{}),
	}
	n.fsm = newRaftFSM(fsm.Env{Reservations: prMachine{}})
	n.fsm.observe(n.observeClusterVersion)
	n.fsm.committed = newAuditLog(cfg.DataDir, n.log).record
	n.fsm.observe(func(fsm.Command, any, *fsm.State) { n.wakePeers() })
	n.prs = cfg.Reservations
	if n.prs == nil {
		n.prs = NewReservations()
	}
	n.prs.bind(n)
	if cfg.Membership != nil {
		cfg.Membership.bind(n)
	}
	n.forward = &http.Client{Transport: &http.Transport{DialContext: n.network.DialContext}, Timeout: 60 * time.Second}
	ok := false
	defer func() {
		if !ok {
			n.closeAll()
		}
	}()
	// Replicated LUNs' copies are created there by the dataplane.
	if err := os.MkdirAll(n.storageDir(), 0o700); err != nil {
		return nil, fmt.Errorf("cluster: storage directory: %w", err)
	}
	if n.incarnation, err = loadIncarnation(cfg.DataDir); err != nil {
		return nil, err
	}
	hasState, err := n.startRaft(marker)
	if err != nil {
		return nil, err
	}
	n.refreshPeers() // the Raft configuration and state just loaded
	if err := n.startGossip(hasState); err != nil {
		return nil, err
	}
	if err := n.startAPI(); err != nil {
		return nil, err
	}
	n.metrics = newMetrics(n, cfg.Registry)
	n.goLoop(n.peersLoop)
	n.goLoop(n.joinLoop)
	if !hasState && cfg.BootstrapExpect > 0 {
		n.goLoop(n.bootstrapLoop)
	}
	n.goLoop(n.leaderLoop)
	n.goLoop(n.reconcileLoop)
	n.goLoop(n.leaseLoop)
	n.goLoop(n.reconnectLoop)
	n.goLoop(n.readyLoop)
	n.goLoop(n.dataDirLoop)
	n.goLoop(n.serveAPI)
	ok = true
	n.log.Info("cluster node started", "raft", cfg.RaftAddr, "gossip", cfg.GossipAddr, "api", cfg.APIAddr,
		"iscsi", cfg.ISCSIAddr, "existing_state", hasState, "bootstrap_expect", cfg.BootstrapExpect)
	return n, nil
}

func (c *Config) fill() error {
	if c.Name == "" || c.DataDir == "" {
		return errors.New("cluster: a node needs a name and a data directory")
	}
	for _, a := range []*string{&c.ISCSIAddr, &c.APIAddr, &c.RaftAddr, &c.GossipAddr} {
		host, _, err := net.SplitHostPort(*a)
		if err != nil {
			return fmt.Errorf("cluster: address %q: %w", *a, err)
		}
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
			return fmt.Errorf("cluster: address %q: nodes need a concrete IP address other nodes can reach (not a wildcard or a name)", *a)
		}
	}
	if c.Protocol == 0 {
		c.Protocol = fsm.Protocol
	}
	if c.Network == nil {
		c.Network = NewNetwork()
	}
	if c.StorageDir == "" {
		c.StorageDir = filepath.Join(c.DataDir, "luns")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	if c.RaftTimeout == 0 {
		c.RaftTimeout = time.Second
	}
	return nil
}

func (n *Node) goLoop(fn func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		fn()
	}()
}

// startRaft opens the log store and snapshots in DataDir/raft, in the
// layout marker records, and starts Raft; it reports whether the node
// already belonged to a cluster.
func (n *Node) startRaft(marker dataDirMarker) (bool, error) {
	storePath, err := n.openRaftDir(marker)
	if err != nil {
		return false, err
	}
	dir := filepath.Dir(storePath)
	store, err := raftboltdb.New(raftboltdb.Options{Path: storePath})
	if err != nil {
		return false, fmt.Errorf("cluster: opening the Raft store: %w", err)
	}
	n.store = store
	hlog := newHCLogger(n.log, "raft")
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 3, hlog)
	if err != nil {
		return false, fmt.Errorf("cluster: opening snapshots: %w", err)
	}
	ln, err := n.network.Listen(PortRaft, n.cfg.RaftAddr)
	if err != nil {
		return false, fmt.Errorf("cluster: raft listener: %w", err)
	}
	advertise, _ := net.ResolveTCPAddr("tcp", n.cfg.RaftAddr)
	n.trans = raft.NewNetworkTransportWithLogger(&raftStream{Listener: ln, network: n.network, advertise: advertise}, 3, 10*time.Second, hlog)
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.Name)
	rc.Logger = hlog
	// A leader steps down after a full RaftTimeout without a quorum, not
	// half of it: on a loaded two-core machine heartbeats can be late by
	// hundreds of milliseconds without any node being gone.
	rc.HeartbeatTimeout = n.cfg.RaftTimeout
	rc.ElectionTimeout = n.cfg.RaftTimeout * 3 / 2
	rc.LeaderLeaseTimeout = n.cfg.RaftTimeout
	rc.SnapshotThreshold = 1024
	hasState, err := raft.HasExistingState(store, store, snaps)
	if err != nil {
		return false, fmt.Errorf("cluster: reading Raft state: %w", err)
	}
	n.raft, err = raft.NewRaft(rc, n.fsm, store, store, snaps, n.trans)
	if err != nil {
		return false, fmt.Errorf("cluster: starting Raft: %w", err)
	}
	return hasState, nil
}

// newHCLogger routes hashicorp libraries' logs into slog at warning level
// and above: their info output is per-heartbeat noise.
func newHCLogger(log *slog.Logger, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:   name,
		Level:  hclog.Warn,
		Output: slogWriter{log: log.With("component", name)},
	})
}

// slogWriter turns hclog's and memberlist's formatted lines into slog
// records, keeping their level.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	line := string(p)
	level := slog.LevelInfo
	switch {
	case containsAny(line, "[ERROR]", "[ERR]"):
		level = slog.LevelError
	case containsAny(line, "[WARN]"):
		level = slog.LevelWarn
	case containsAny(line, "[DEBUG]", "[TRACE]"):
		level = slog.LevelDebug
	}
	w.log.Log(context.Background(), level, trimLogLine(line))
	return len(p), nil
}

func (n *Node) startGossip(hasState bool) error {
	host, portStr, _ := net.SplitHostPort(n.cfg.GossipAddr)
	port, _ := strconv.Atoi(portStr)
	n.meta = &metaDelegate{node: n, meta: Meta{
		Version: n.cfg.Version, Protocol: n.cfg.Protocol,
		ISCSI: n.cfg.ISCSIAddr, API: n.cfg.APIAddr, Raft: n.cfg.RaftAddr, Fwd: n.cfg.ForwardAddr, Repl: n.cfg.ReplicationAddr,
		BootstrapExpect: n.cfg.BootstrapExpect, Bootstrapped: hasState, Inc: n.incarnation,
	}}
	n.meta.meta.setProtocols(n.protocols())
	mc := memberlist.DefaultLANConfig()
	mc.Name = n.cfg.Name
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = host, port
	// Faster failure detection than the LAN defaults (1 s probes, 4
	// intervals of suspicion): an owner's death must be seen about when
	// its lease runs out, two seconds after its last grant, for I/O to
	// resume within 5 s. A node declared dead by mistake costs nothing by
	// itself: its LUNs move only once the leader has also stopped
	// granting it a lease (lease.go).
	mc.ProbeInterval = 500 * time.Millisecond
	mc.ProbeTimeout = 400 * time.Millisecond
	mc.SuspicionMult = 2
	// Joins and push/pull exchanges with a hung node (SIGSTOP) must not
	// hold the reconnect loop for the LAN default of 10 s.
	mc.TCPTimeout = 2 * time.Second
	mc.Delegate = n.meta
	kr, err := n.openKeyring()
	if err != nil {
		return err
	}
	n.keyring, mc.Keyring = kr, kr
	n.gossip = &memberEvents{node: n}
	mc.Events = n.gossip
	mc.Logger = nil
	mc.LogOutput = levelFilter{w: slogWriter{log: n.log.With("component", "memberlist")}}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return fmt.Errorf("cluster: starting gossip on %s: %w", n.cfg.GossipAddr, err)
	}
	n.ml = ml
	return nil
}

// joinLoop joins the gossip pool until some node answers. It tries the
// --join addresses and the gossip addresses of every node the replicated
// state knows, so a restarted node finds its cluster without --join. Nodes
// start in any order, so early failures are expected.
func (n *Node) joinLoop() {
	for delay := 200 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		if addrs := n.joinAddrs(); len(addrs) > 0 {
			joined, err := n.ml.Join(addrs)
			if joined > 0 {
				n.log.Info("joined the gossip pool", "through", addrs, "contacted", joined)
				return
			}
			n.log.Debug("joining the gossip pool", "through", addrs, "err", err)
		}
		select {
		case <-n.stop:
			return
		case <-time.After(delay):
		}
	}
}

func (n *Node) joinAddrs() []string {
	addrs := append([]string{}, n.cfg.Join...)
	for _, rec := range n.fsm.State().Nodes {
		if rec.Name != n.cfg.Name && rec.GossipAddr != "" && !slices.Contains(addrs, rec.GossipAddr) {
			addrs = append(addrs, rec.GossipAddr)
		}
	}
	return addrs
}

// bootstrapLoop forms a new cluster once BootstrapExpect fresh nodes with
// the same expectation see each other (Consul's bootstrap_expect). Every
// one of them bootstraps with the same server list, which Raft allows. It
// gives up as soon as some node already holds Raft state: that cluster
// adds this node instead.
func (n *Node) bootstrapLoop() {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	warned := false
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		if n.inRaftConfiguration() {
			return
		}
		servers, existing, err := n.bootstrapCandidates()
		switch {
		case existing != "":
			n.log.Info("a cluster already exists; waiting to be added by its leader", "seen", existing)
			return
		case err != nil:
			if !warned {
				n.log.Warn("not bootstrapping", "err", err)
				warned = true
			}
			continue
		case servers == nil:
			continue
		}
		f := n.raft.BootstrapCluster(raft.Configuration{Servers: servers})
		if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			n.log.Error("bootstrapping the cluster", "err", err)
			continue
		}
		n.log.Info("bootstrapped the cluster", "voters", len(servers))
		n.fresh.Store(true)
		n.meta.setBootstrapped()
		return
	}
}

// bootstrapCandidates returns the Raft servers to bootstrap with once
// exactly BootstrapExpect fresh nodes are alive, or the name of a node
// that already holds Raft state.
func (n *Node) bootstrapCandidates() ([]raft.Server, string, error) {
	var servers []raft.Server
	for _, m := range n.gossip.list() {
		if m.State != memberlist.StateAlive {
			continue
		}
		meta, err := decodeMeta(m.Meta)
		if err != nil {
			continue
		}
		if meta.Bootstrapped {
			return nil, m.Name, nil
		}
		if meta.BootstrapExpect != n.cfg.BootstrapExpect {
			return nil, "", fmt.Errorf("node %s expects %d nodes, this node %d: every bootstrapping node must agree", m.Name, meta.BootstrapExpect, n.cfg.BootstrapExpect)
		}
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.Name), Address: raft.ServerAddress(meta.Raft)})
	}
	if len(servers) < n.cfg.BootstrapExpect {
		return nil, "", nil
	}
	if len(servers) > n.cfg.BootstrapExpect {
		return nil, "", fmt.Errorf("%d fresh nodes are alive but --bootstrap-expect is %d; stop the extra ones or join them later", len(servers), n.cfg.BootstrapExpect)
	}
	sort.Slice(servers, func(i, j int) bool { return servers[i].ID < servers[j].ID })
	return servers, "", nil
}

// voterNames lists the Raft voters.
func (n *Node) voterNames() []string {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	var out []string
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter {
			out = append(out, string(s.ID))
		}
	}
	return out
}

func (n *Node) inRaftConfiguration() bool {
	f := n.raft.GetConfiguration()
	return f.Error() == nil && len(f.Configuration().Servers) > 0
}

// Shutdown leaves the cluster gracefully: leadership is handed over first,
// so the survivors need no election timeout, then gossip announces the
// departure and Raft stops.
func (n *Node) Shutdown(ctx context.Context) error {
	var err error
	n.shutdownOnce.Do(func() {
		if n.raft.State() == raft.Leader && len(n.voterNames()) > 1 {
			if e := n.raft.LeadershipTransfer().Error(); e != nil {
				n.log.Warn("leadership transfer on shutdown", "err", e)
			} else {
				n.log.Info("handed over Raft leadership")
			}
		}
		close(n.stop)
		if n.api != nil {
			_ = n.api.Shutdown(ctx)
		}
		if e := n.ml.Leave(2 * time.Second); e != nil {
			n.log.Warn("leaving the gossip pool", "err", e)
		}
		n.wg.Wait()
		err = n.closeAll()
	})
	return err
}

// closeAll releases what Start opened, in reverse order.
func (n *Node) closeAll() error {
	var errs []error
	if n.apiLn != nil {
		_ = n.apiLn.Close()
	}
	if n.ml != nil {
		errs = append(errs, n.ml.Shutdown())
	}
	if n.raft != nil {
		errs = append(errs, n.raft.Shutdown().Error())
		// Raft applies nothing more: the layout must match what it
		// applied, dataDirLoop may not have had its turn, and a node
		// stopped right after finalize must not be left to the previous
		// release.
		if _, err := n.migrateDataDir(n.fsm.State().ActiveVersion()); err != nil {
			errs = append(errs, fmt.Errorf("cluster: migrating the data directory: %w", err))
		}
	}
	if n.trans != nil {
		errs = append(errs, n.trans.Close())
	}
	if n.store != nil {
		errs = append(errs, n.store.Close())
	}
	return errors.Join(errs...)
}

// State returns the configuration this node has applied.
func (n *Node) State() *fsm.State { return n.fsm.State() }

// Name is the node's name.
func (n *Node) Name() string { return n.cfg.Name }
