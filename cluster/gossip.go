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

// memberEvents wakes the leader loop when membership changes.
type memberEvents struct{ node *Node }

func (e *memberEvents) NotifyJoin(*memberlist.Node)   { e.node.wakeLeader() }
func (e *memberEvents) NotifyLeave(*memberlist.Node)  { e.node.wakeLeader() }
func (e *memberEvents) NotifyUpdate(*memberlist.Node) { e.node.wakeLeader() }

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
	for _, m := range n.ml.Members() {
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
