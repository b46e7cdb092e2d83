package cluster

import (
	"context"
	"time"
)

// Ready is closed once the node has caught up with the cluster: it knows
// the leader, has applied everything the leader had committed when asked,
// and has handed that configuration to the dataplane. Until then a
// restarted node would serve an old or empty configuration, and answer
// logins with "target not found", which initiators do not retry; the
// agent opens its iSCSI portal only once Ready is closed, so initiators
// see a refused connection instead, which they do retry.
func (n *Node) Ready() <-chan struct{} { return n.ready }

// IsReady reports whether Ready is closed.
func (n *Node) IsReady() bool {
	select {
	case <-n.ready:
		return true
	default:
		return false
	}
}

func (n *Node) readyLoop() {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if n.caughtUp() {
			n.log.Info("caught up with the cluster", "generation", n.served.Load())
			close(n.ready)
			return
		}
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
	}
}

// caughtUp compares this node's applied index with the leader's commit
// index, asking the leader when it is another node.
func (n *Node) caughtUp() bool {
	name, addr := n.leader()
	if name == "" {
		return false
	}
	commit := n.raft.CommitIndex()
	if name != n.cfg.Name {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		ls, err := n.fetchLocal(ctx, addr)
		if err != nil {
			return false
		}
		commit = ls.CommitIdx
	}
	return n.raft.AppliedIndex() >= commit && n.attempted.Load() == n.fsm.State().Index
}
