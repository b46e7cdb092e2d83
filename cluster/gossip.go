package cluster

import (
	"io"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// metaDelegate serves this node's metadata to memberlist.
type metaDelegate struct {
	node *Node
	mu   sync.Mutex
	meta Meta
}

func (d *metaDelegate) NodeMeta(limit int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	b, err := d.meta.encode()
	if err != nil || len(b) > limit {
		d.node.log.Error("node metadata does not fit", "err", err, "limit", limit)
		return nil
	}
	return b
}

func (d *metaDelegate) setBootstrapped() {
	d.mu.Lock()
	d.meta.Bootstrapped = true
	d.mu.Unlock()
	if err := d.node.ml.UpdateNode(5 * time.Second); err != nil {
		d.node.log.Warn("announcing the bootstrap", "err", err)
	}
}

func (d *metaDelegate) NotifyMsg([]byte)                           {}
func (d *metaDelegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *metaDelegate) LocalState(join bool) []byte                { return nil }
func (d *metaDelegate) MergeRemoteState(buf []byte, join bool)     {}

// memberEvents wakes the leader loop when membership changes, and keeps
// a copy of every member memberlist lists (alive or suspect). The nodes
// Memberlist.Members returns are pointers into its table, which it
// rewrites in place (Meta, Addr, Port) on every alive message without any
// lock the reader could take (hashicorp/memberlist#306); the event
// callbacks run under its node lock, where a copy is safe to take.
type memberEvents struct {
	node *Node

	mu    sync.Mutex
	nodes map[string]memberlist.Node
}

func (e *memberEvents) NotifyJoin(m *memberlist.Node)   { e.set(m) }
func (e *memberEvents) NotifyUpdate(m *memberlist.Node) { e.set(m) }

// NotifyLeave keeps the node, marked dead: memberlist drops dead and left
// nodes from its list, but the status, `cluster remove` and the version
// gate must still see them.
func (e *memberEvents) NotifyLeave(m *memberlist.Node) {
	gone := *m
	gone.State = memberlist.StateDead
	e.mu.Lock()
	if e.nodes == nil {
		e.nodes = map[string]memberlist.Node{}
	}
	e.nodes[m.Name] = gone
	e.mu.Unlock()
	e.node.wakeLeader()
	e.node.wakeReconcile()
	e.node.wakePeers()
}

// gone reports whether gossip has seen a node die or leave.
func (e *memberEvents) gone(name string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	m, ok := e.nodes[name]
	return ok && m.State == memberlist.StateDead
}

func (e *memberEvents) set(m *memberlist.Node) {
	e.mu.Lock()
	if e.nodes == nil {
		e.nodes = map[string]memberlist.Node{}
	}
	// memberlist replaces Meta and Addr rather than writing into them, so
	// a shallow copy stays intact.
	e.nodes[m.Name] = *m
	e.mu.Unlock()
	e.node.wakeLeader()
	e.node.wakeReconcile()
	e.node.wakePeers()
}

// list returns copies of the members, including those gone (dead or
// left), which are marked StateDead.
func (e *memberEvents) list() []memberlist.Node {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]memberlist.Node, 0, len(e.nodes))
	for _, m := range e.nodes {
		out = append(out, m)
	}
	return out
}

// reconnectInterval is how often a node tries to reach the registered
// nodes gossip declared dead.
const reconnectInterval = time.Second

// reconnectLoop rejoins registered nodes gossip declared dead. Memberlist
// never probes a dead node again, so after a partition heals each side
// would hold the other dead until a restart (Serf reconnects failed
// members the same way); a joined node and its peers then see each other
// alive again within a second.
func (n *Node) reconnectLoop() {
	tick := time.NewTicker(reconnectInterval)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		registered := n.fsm.State().Nodes
		for _, m := range n.gossip.list() {
			if m.State != memberlist.StateDead || registered[m.Name] == nil || m.Name == n.cfg.Name {
				continue
			}
			if joined, err := n.ml.Join([]string{m.Address()}); joined > 0 {
				n.log.Info("reconnected to a node gossip had declared dead", "member", m.Name)
			} else {
				n.log.Debug("reconnecting", "member", m.Name, "err", err)
			}
		}
	}
}

func (n *Node) wakeReconcile() {
	select {
	case n.reconcileWake <- struct{}{}:
	default:
	}
}

func (n *Node) wakeLeader() {
	select {
	case n.memberEvents <- struct{}{}:
	default:
	}
}

// member is a gossip member with its decoded metadata.
type member struct {
	Name  string
	Addr  string
	State memberlist.NodeStateType
	Meta  Meta
	// MetaErr is set when the metadata could not be decoded.
	MetaErr error
}

func (n *Node) members() map[string]member {
	out := map[string]member{}
	for _, m := range n.gossip.list() {
		meta, err := decodeMeta(m.Meta)
		out[m.Name] = member{Name: m.Name, Addr: m.Address(), State: m.State, Meta: meta, MetaErr: err}
	}
	return out
}

func gossipState(s memberlist.NodeStateType) string {
	switch s {
	case memberlist.StateAlive:
		return "alive"
	case memberlist.StateSuspect:
		return "suspect"
	case memberlist.StateDead:
		return "dead"
	case memberlist.StateLeft:
		return "left"
	}
	return "unknown"
}

// levelFilter drops memberlist's debug lines before they are formatted
// into slog records: memberlist logs every probe at debug level.
type levelFilter struct{ w io.Writer }

func (f levelFilter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), "[DEBUG]") {
		return len(p), nil
	}
	return f.w.Write(p)
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// trimLogLine drops the timestamp and level prefix the libraries add:
// slog records its own.
func trimLogLine(line string) string {
	line = strings.TrimSpace(line)
	for _, tag := range []string{"[ERROR]", "[ERR]", "[WARN]", "[INFO]", "[DEBUG]", "[TRACE]"} {
		if i := strings.Index(line, tag); i >= 0 {
			return strings.TrimSpace(line[i+len(tag):])
		}
	}
	return line
}
