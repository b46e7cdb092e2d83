package cluster

import (
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hatarget/hatarget/cluster/api"
)

// metrics are the control plane's Prometheus metrics. Gauges are read at
// scrape time from Raft and memberlist, so nothing is updated per event.
type metrics struct {
	applyLatency    prometheus.Histogram
	reconcileErrors prometheus.Counter
	failovers       *failoverCollector
}

func newMetrics(n *Node, reg prometheus.Registerer) *metrics {
	m := &metrics{
		applyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "hatarget_raft_apply_seconds",
			Help:    "Time from proposing a command on the leader until it is committed and applied.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		reconcileErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hatarget_reconcile_errors_total",
			Help: "Configurations the dataplane refused to apply.",
		}),
		failovers: newFailoverCollector(n),
	}
	raftStat := func(key string) func() float64 {
		return func() float64 {
			v, _ := strconv.ParseFloat(n.raft.Stats()[key], 64)
			return v
		}
	}
	gauge := func(name, help string, fn func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, fn)
	}
	reg.MustRegister(
		m.applyLatency, m.reconcileErrors, m.failovers,
		gauge("hatarget_lease_held", "1 while this node holds its owner lease (in contact with a Raft quorum).", func() float64 {
			if n.holdsLease() {
				return 1
			}
			return 0
		}),
		gauge("hatarget_raft_term", "Current Raft term.", raftStat("term")),
		gauge("hatarget_raft_commit_index", "Raft commit index.", func() float64 { return float64(n.raft.CommitIndex()) }),
		gauge("hatarget_raft_applied_index", "Raft applied index.", func() float64 { return float64(n.raft.AppliedIndex()) }),
		gauge("hatarget_raft_last_contact_seconds", "Time since this follower last heard from the leader (0 on the leader).", func() float64 {
			if n.raft.State() == raft.Leader {
				return 0
			}
			return time.Since(n.raft.LastContact()).Seconds()
		}),
		gauge("hatarget_config_generation", "Configuration generation (Raft index of the last applied command) this node serves.",
			func() float64 { return float64(n.fsm.State().Index) }),
		newStateCollector(n),
		newOwnershipCollector(n),
		newReplicationCollector(n),
	)
	return m
}

func (m *metrics) observeApply(d time.Duration) {
	if m != nil {
		m.applyLatency.Observe(d.Seconds())
	}
}

func (m *metrics) failedOver(lun string) {
	if m != nil {
		m.failovers.inc(lun)
	}
}

func (m *metrics) reconcileFailed() {
	if m != nil {
		m.reconcileErrors.Inc()
	}
}

// failoverCollector counts, per LUN, the failovers this node made as
// Raft leader. Every LUN of the state has its series on every node from
// the start, at 0: the first failover after an election is the usual one,
// and a series that appeared at 1 on the new leader would be invisible to
// increase().
type failoverCollector struct {
	n     *Node
	desc  *prometheus.Desc
	mu    sync.Mutex
	count map[string]float64
}

func newFailoverCollector(n *Node) *failoverCollector {
	return &failoverCollector{
		n: n,
		desc: prometheus.NewDesc("hatarget_failovers_total",
			"Failovers of the LUN this node made as Raft leader: moves away from an owner that was gone, not those an operator asked for.",
			[]string{"lun"}, nil),
		count: map[string]float64{},
	}
}

func (c *failoverCollector) inc(lun string) {
	c.mu.Lock()
	c.count[lun]++
	c.mu.Unlock()
}

func (c *failoverCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *failoverCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.n.fsm.State()
	c.mu.Lock()
	defer c.mu.Unlock()
	for name := range s.Devices {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, c.count[name], name)
	}
}

// stateCollector reports the Raft role and gossip membership, one series
// per state, at scrape time, and for every node registered in Raft
// whether gossip sees it alive and the release its record names. Every
// node reports every registered node, so that a node that is down, or not
// scraped, still shows; and only registered ones, since gossip keeps the
// nodes removed from the cluster, dead, for as long as it runs.
type stateCollector struct {
	n       *Node
	role    *prometheus.Desc
	members *prometheus.Desc
	alive   *prometheus.Desc
	release *prometheus.Desc
}

func newStateCollector(n *Node) *stateCollector {
	return &stateCollector{
		n:       n,
		role:    prometheus.NewDesc("hatarget_raft_state", "1 for this node's current Raft role.", []string{"state"}, nil),
		members: prometheus.NewDesc("hatarget_members", "Gossip members by state.", []string{"state"}, nil),
		alive: prometheus.NewDesc("hatarget_cluster_node_alive",
			"1 while gossip sees the registered node alive, 0 while it is suspect, dead or gone.", []string{"node"}, nil),
		release: prometheus.NewDesc("hatarget_cluster_node_release",
			"1 for the release each node of the cluster last advertised, from its Raft record.", []string{"node", "release"}, nil),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.role
	ch <- c.members
	ch <- c.alive
	ch <- c.release
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	cur := c.n.raft.State()
	for _, s := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
		v := 0.0
		if s == cur {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.role, prometheus.GaugeValue, v, raftRole(s))
	}
	members := c.n.members()
	counts := map[string]float64{"alive": 0, "suspect": 0, "dead": 0, "left": 0}
	for _, m := range members {
		counts[gossipState(m.State)]++
	}
	for state, v := range counts {
		ch <- prometheus.MustNewConstMetric(c.members, prometheus.GaugeValue, v, state)
	}
	for name, rec := range c.n.fsm.State().Nodes {
		alive := 0.0
		if m, ok := members[name]; ok && m.State == memberlist.StateAlive {
			alive = 1
		}
		ch <- prometheus.MustNewConstMetric(c.alive, prometheus.GaugeValue, alive, name)
		ch <- prometheus.MustNewConstMetric(c.release, prometheus.GaugeValue, 1, name, rec.Version)
	}
}

// ownershipCollector reports, per LUN, its owner, epoch and the ALUA state
// of this node's port group, from the applied state at scrape time. A LUN
// without an owner has owner "" and no ALUA state: it is listed all the
// same, so that an alert can find the LUNs no node serves.
type ownershipCollector struct {
	n     *Node
	owner *prometheus.Desc
	epoch *prometheus.Desc
	state *prometheus.Desc
}

func newOwnershipCollector(n *Node) *ownershipCollector {
	return &ownershipCollector{
		n:     n,
		owner: prometheus.NewDesc("hatarget_lun_owner", "1 for the node that owns the LUN (active/optimized); owner is empty while it has none.", []string{"lun", "owner"}, nil),
		epoch: prometheus.NewDesc("hatarget_lun_epoch", "Ownership epoch of the LUN: it grows with every move or failover.", []string{"lun"}, nil),
		state: prometheus.NewDesc("hatarget_lun_alua_state", "1 for the ALUA state this node's port group is in for the LUN.", []string{"lun", "state"}, nil),
	}
}

func (c *ownershipCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.owner
	ch <- c.epoch
	ch <- c.state
}

func (c *ownershipCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.n.fsm.State()
	me := s.Nodes[c.n.cfg.Name]
	groups := portGroups(s, c.n.cfg.Name, c.n.clusterView())
	for name, d := range s.Devices {
		ch <- prometheus.MustNewConstMetric(c.owner, prometheus.GaugeValue, 1, name, d.Owner)
		ch <- prometheus.MustNewConstMetric(c.epoch, prometheus.GaugeValue, float64(d.Epoch), name)
		for _, g := range groups[name] {
			if me != nil && g.ID == me.PortGroup {
				ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, 1, name, g.State.String())
			}
		}
	}
}

// replicaStates are the states hatarget_lun_replica_state reports, each
// replica having a series for every one so that a change is a value
// change, not a series appearing.
var replicaStates = []string{api.ReplicaInSync, api.ReplicaOutOfSync, api.ReplicaResyncing, api.ReplicaDown}

// replicationCollector reports the replicated LUNs at scrape time. Every
// node reports each LUN's copies and in-sync copies from the applied
// state, so that an alert on a degraded LUN works whichever node is
// scraped; the owner alone reports each replica's state and the progress
// of its resyncs, which only its dataplane knows.
type replicationCollector struct {
	n        *Node
	replicas *prometheus.Desc
	inSync   *prometheus.Desc
	state    *prometheus.Desc
	done     *prometheus.Desc
	total    *prometheus.Desc
	copied   *prometheus.Desc
	phase    *prometheus.Desc
}

func newReplicationCollector(n *Node) *replicationCollector {
	replica := []string{"lun", "node"}
	return &replicationCollector{
		n: n,
		replicas: prometheus.NewDesc("hatarget_lun_replicas",
			"Nodes holding a copy of the replicated LUN.", []string{"lun"}, nil),
		inSync: prometheus.NewDesc("hatarget_lun_replicas_in_sync",
			"Copies of the replicated LUN in its in-sync set; fewer than hatarget_lun_replicas means degraded.", []string{"lun"}, nil),
		state: prometheus.NewDesc("hatarget_lun_replica_state",
			"1 for the state of each replica of a LUN this node owns (in-sync, out-of-sync, resyncing, down), 0 for the others.",
			[]string{"lun", "node", "state"}, nil),
		done: prometheus.NewDesc("hatarget_lun_resync_done_bytes",
			"Bytes the current attempt of a replica's resync has copied or compared (on the owner, while it runs).", replica, nil),
		total: prometheus.NewDesc("hatarget_lun_resync_total_bytes",
			"Bytes done plus still dirty in the current attempt of a replica's resync (on the owner, while it runs).", replica, nil),
		copied: prometheus.NewDesc("hatarget_lun_resync_copied_bytes_total",
			"Bytes the current attempt of a replica's resync wrote to it (on the owner); it restarts from 0 with each attempt, which rate() takes as a counter reset.",
			replica, nil),
		phase: prometheus.NewDesc("hatarget_lun_resync_phase",
			"1 for the phase of a replica's running resync (sealing, copying, comparing, readmitting, retrying), on the owner.",
			[]string{"lun", "node", "phase"}, nil),
	}
}

func (c *replicationCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.replicas, c.inSync, c.state, c.done, c.total, c.copied, c.phase} {
		ch <- d
	}
}

func (c *replicationCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.n.fsm.State()
	view := c.n.clusterView()
	for name, d := range s.Devices {
		if !d.Replicated() {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.replicas, prometheus.GaugeValue, float64(len(d.Replicas)), name)
		ch <- prometheus.MustNewConstMetric(c.inSync, prometheus.GaugeValue, float64(len(d.InSync)), name)
		if d.Owner != c.n.cfg.Name {
			continue
		}
		local := c.n.resyncProgress(d)
		for _, r := range replicaViews(d, view, apiResyncs(local)) {
			for _, state := range replicaStates {
				v := 0.0
				if state == r.State {
					v = 1
				}
				ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, v, name, r.Node, state)
			}
		}
		for node, p := range local {
			ch <- prometheus.MustNewConstMetric(c.done, prometheus.GaugeValue, float64(p.Done), name, node)
			ch <- prometheus.MustNewConstMetric(c.total, prometheus.GaugeValue, float64(p.Total), name, node)
			ch <- prometheus.MustNewConstMetric(c.copied, prometheus.CounterValue, float64(p.Copied), name, node)
			ch <- prometheus.MustNewConstMetric(c.phase, prometheus.GaugeValue, 1, name, node, p.State)
		}
	}
}
