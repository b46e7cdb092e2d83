package cluster

import (
	"context"
	"time"

	"github.com/hashicorp/raft"
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
	if name == n.cfg.Name && n.settling() {
		return false
	}
	commit := n.raft.CommitIndex()
	if name != n.cfg.Name {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		ls, err := n.fetchLocal(ctx, addr)
		if err != nil || ls.Settling {
			return false
		}
		commit = ls.CommitIdx
	}
	return n.raft.AppliedIndex() >= commit && n.attempted.Load() == n.fsm.State().Index
}

// settleWithin is settle bounded by timeout, for the leader loop, which
// skips its duties until it holds.
func (n *Node) settleWithin(timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return n.settle(ctx) == nil
}

// settling reports whether this node leads without having committed an
// entry of its term yet. Its commit index then is not the cluster's:
// hashicorp/raft starts every node's at 0 after a restart, and a new
// leader learns the real one only by committing in its own term (Raft
// §5.4.2). A node that took it for the cluster's after a full restart
// would call itself caught up with nothing applied, and serve an empty
// configuration.
func (n *Node) settling() bool {
	return n.raft.State() == raft.Leader && n.settledTerm.Load() != n.raft.CurrentTerm()
}

// settle waits, as a new leader, until an entry of its term is committed
// and everything before it applied (a barrier), and records the term.
// Until then its state may lack entries committed before its term, and a
// command built on it (an owner chosen among nodes it still sees
// undrained, say) could undo them.
func (n *Node) settle(ctx context.Context) error {
	term := n.raft.CurrentTerm()
	if n.settledTerm.Load() == term {
		return nil
	}
	if err := n.barrier(ctx); err != nil {
		return err
	}
	if n.raft.CurrentTerm() == term {
		n.settledTerm.Store(term)
	}
	return nil
}
