package cluster

import (
	"time"

	"github.com/hatarget/hatarget/fsm"
)

// autoFinalizeInterval paces Config.AutoFinalize's check in the leader
// loop: the versions it waits for change only when nodes restart, which
// membership events announce, so the tick is a backstop.
const autoFinalizeInterval = 10 * time.Second

// autoFinalizer is the leader loop's bookkeeping for Config.AutoFinalize.
type autoFinalizer struct {
	next time.Time
	// waiting is why the last check did not finalize, logged when it
	// changes rather than at every check.
	waiting string
}

// soon makes the next check run at the leader loop's next turn: on a
// membership change (a node restarted, maybe with a new release) and on
// becoming the leader.
func (a *autoFinalizer) soon() { a.next = time.Time{} }

// check finalizes the upgrade when it is due, the cluster runs below this
// binary's cluster version and every node that takes part supports it:
// what `hatarget cluster upgrade finalize` does, without the operator.
//
// A new cluster gets one check from its first leader, with or without
// Config.AutoFinalize: bootstrapped by binaries that all support this
// version, it has no older release to go back to and starts at it, as a
// new CockroachDB cluster does; one bootstrapped with an older node stays
// at the version that node supports until an operator finalizes.
func (a *autoFinalizer) check(n *Node, now time.Time) {
	if now.Before(a.next) {
		return
	}
	defer n.fresh.Store(false)
	a.next = now.Add(autoFinalizeInterval)
	s := n.fsm.State()
	if s.ActiveVersion() >= fsm.ClusterVersion {
		return
	}
	c, err := n.finalizeCommand(s)
	if err != nil {
		if msg := err.Error(); msg != a.waiting {
			a.waiting = msg
			n.log.Info("auto-finalize is waiting", "cluster_version", s.ActiveVersion(), "reason", msg)
		}
		return
	}
	a.waiting = ""
	if _, _, err := n.proposeWithin(c, backgroundTimeout); err != nil {
		n.log.Warn("auto-finalize: proposing the cluster version", "cluster_version", c.Version, "err", err)
		return
	}
	n.log.Info("finalized the upgrade (auto-finalize)", "cluster_version", c.Version, "previous", s.ActiveVersion())
}
