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

// ioDeadline is the time an owner keeps in hand: a command starts only
// while its lease has at least this long left, so that what it hands to
// the storage lands before a new owner may start (shared storage has no
// epoch check of its own).
const ioDeadline = 500 * time.Millisecond

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

// leaseGrant is the lease extension one reconcile round may make, once it
// has handed the dataplane the state read after the evidence.
type leaseGrant struct {
	n     *Node
	until time.Time
	ok    bool
}

// leaseEvidence reads when this node last knew a quorum was there and
// waits until everything committed by then is applied: a lease must never
// let the node execute under an ownership it has not yet heard was given
// away.
func (n *Node) leaseEvidence() leaseGrant {
	if n.cfg.Lease == nil {
		return leaseGrant{}
	}
	contact, ok := n.quorumContact()
	commit := n.raft.CommitIndex()
	if !ok || n.raft.AppliedIndex() < commit {
		return leaseGrant{}
	}
	return leaseGrant{n: n, until: contact.Add(n.leaseTimeout() - ioDeadline), ok: true}
}

// grant extends the dataplane's lease, after the state read after the
// evidence has been handed to the dataplane.
func (g leaseGrant) grant() {
	if g.ok {
		g.n.cfg.Lease.Extend(g.until)
	}
}

// quorumContact is when this node last knew a quorum was there: for the
// leader, now, if a round of heartbeats confirms it; for a follower, its
// last contact with the leader.
func (n *Node) quorumContact() (time.Time, bool) {
	switch n.raft.State() {
	case raft.Leader:
		start := time.Now()
		return start, n.raft.VerifyLeader().Error() == nil
	case raft.Follower:
		last := n.raft.LastContact()
		return last, !last.IsZero()
	}
	return time.Time{}, false
}
