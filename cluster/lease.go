package cluster

import (
	"time"

	"github.com/hashicorp/raft"
)

// The owner lease (shared/design/guarantees.md): a node serves the LUNs it
// owns only while it has been in contact with a Raft quorum within the
// lease period; the leader hands a dead owner's LUNs to another node only
// once that period has passed since the owner was last seen, plus a
// margin for clock drift and the owner's reaction time.

// leaseTimeout is the lease period: twice the Raft heartbeat timeout, so
// that a heartbeat late on a loaded machine does not cost the lease.
func (n *Node) leaseTimeout() time.Duration { return 2 * n.cfg.RaftTimeout }

// failoverMargin is added to the lease before a failover: the owner
// notices a lost lease within one reconcile tick, and clocks drift.
const failoverMargin = 500 * time.Millisecond

// holdsLease reports whether this node may serve the LUNs it owns. The
// leader holds it (hashicorp/raft steps a leader down once it has not
// reached a quorum for LeaderLeaseTimeout, shorter than the lease); a
// follower while it heard from the leader within the lease period.
func (n *Node) holdsLease() bool {
	switch n.raft.State() {
	case raft.Leader:
		return true
	case raft.Follower:
		last := n.raft.LastContact()
		return !last.IsZero() && time.Since(last) < n.leaseTimeout()
	}
	return false
}
