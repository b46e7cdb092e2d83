package cluster

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/hatarget/hatarget/cluster/api"
)

// The owner lease (shared/design/guarantees.md, DESIGN.md "Leases"): a
// node serves the LUNs it owns only while the Raft leader has recently
// confirmed, by a round of heartbeats to a quorum, that it is still the
// leader. Every node asks for that confirmation (a grant) a few times per
// lease period; the leader remembers when it last granted each node, so
// it knows the latest moment each node's lease can end without trusting
// any other node's clock. A deposed leader can grant nothing once a new
// leader was elected (its heartbeats no longer reach a quorum), so the new
// leader only has to count from its own election.

// leaseTimeout is the lease period: one and a half Raft heartbeat
// timeouts. Grants are asked for six times a period, so a node keeps its
// lease through several late answers on a loaded machine, and a failover
// still starts about two seconds after the owner was last granted.
func (n *Node) leaseTimeout() time.Duration { return n.cfg.RaftTimeout * 3 / 2 }

// ioDeadline is the time an owner keeps in hand: a command starts only
// while its lease has at least this long left, so that what it hands to
// the storage lands before a new owner may start (shared storage has no
// epoch check of its own).
const ioDeadline = 500 * time.Millisecond

// failoverMargin is added to the lease before a failover: it covers the
// drift between the leader's and the owner's clocks over one lease period
// and scheduling delays on either side.
const failoverMargin = 500 * time.Millisecond

// leases is a node's lease bookkeeping: on every node the grant it last
// received, and on the leader the grants it gave.
type leases struct {
	mu sync.Mutex
	// offered is the last grant this node received: the lease runs from
	// when it asked (sent); it may be used once the dataplane serves the
	// state with the leader's applied index at the grant (index).
	sent  time.Time
	index uint64
	// until is the lease this node extended its dataplane to.
	until time.Time

	// Leader side: since when this node leads, and when it last confirmed
	// its leadership for each node's grant.
	leaderSince time.Time
	granted     map[string]time.Time
}

// offer records a grant received for a request sent at sent.
func (l *leases) offer(sent time.Time, index uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sent.After(l.sent) {
		l.sent, l.index = sent, index
	}
}

// take returns the lease the last grant gives, if the dataplane serves a
// state at least as new as the one the grant was made at: a lease must
// never let a node execute under an ownership it has not yet heard was
// given away.
func (l *leases) take(served uint64, period time.Duration) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sent.IsZero() || served < l.index {
		return time.Time{}, false
	}
	until := l.sent.Add(period - ioDeadline)
	if until.After(l.until) {
		l.until = until
	}
	return until, true
}

func (l *leases) held() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Now().Before(l.until)
}

// becameLeader starts a new leadership's record of grants.
func (l *leases) becameLeader(at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.leaderSince, l.granted = at, map[string]time.Time{}
}

func (l *leases) recordGrant(node string, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if at.After(l.granted[node]) {
		l.granted[node] = at
	}
}

// lastGranted is the latest moment from which node may hold a lease: the
// last grant this leader made it, or this leader's election, before which
// only earlier leaders could grant.
func (l *leases) lastGranted(node string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t := l.granted[node]; t.After(l.leaderSince) {
		return t
	}
	return l.leaderSince
}

// holdsLease reports whether this node may serve the LUNs it owns.
func (n *Node) holdsLease() bool { return n.leases.held() }

// applyGrant extends the dataplane's lease from the last grant, once the
// dataplane serves the state the grant was made at.
func (n *Node) applyGrant() {
	until, ok := n.leases.take(n.served.Load(), n.leaseTimeout())
	if ok && n.cfg.Lease != nil {
		n.cfg.Lease.Extend(until)
	}
}

// leaseLoop asks the leader for a grant six times a lease period: the
// leader grants itself, a follower asks over the API.
func (n *Node) leaseLoop() {
	tick := time.NewTicker(n.leaseTimeout() / 6)
	defer tick.Stop()
	held := false
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		sent := time.Now()
		index, err := n.requestGrant()
		if err == nil {
			n.leases.offer(sent, index)
			n.applyGrant()
		}
		// A lease gained or lost changes this node's ALUA states.
		if now := n.holdsLease(); now != held {
			held = now
			n.wakeReconcile()
		}
	}
}

// requestGrant asks the leader (this node or another) for a grant and
// returns the leader's applied index at the grant.
func (n *Node) requestGrant() (uint64, error) {
	if n.isLeader() {
		return n.grantLease(n.cfg.Name)
	}
	_, addr := n.leader()
	if addr == "" {
		return 0, errors.New("no Raft leader")
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.leaseTimeout()/3)
	defer cancel()
	client := &api.Client{Base: "http://" + addr, Token: n.cfg.Token, HTTP: n.forward}
	var ans leaseAnswer
	if err := client.Do(ctx, http.MethodPost, "/v1/internal/lease", leaseRequest{Node: n.cfg.Name}, &ans); err != nil {
		return 0, err
	}
	return ans.Index, nil
}

// grantLease confirms this node's leadership with a round of heartbeats
// and records the grant for node. It excludes failovers (ownerMu): a grant
// either comes first, and postpones the failover, or after it, and then
// carries an index that includes it.
func (n *Node) grantLease(node string) (uint64, error) {
	n.ownerMu.Lock()
	defer n.ownerMu.Unlock()
	start := time.Now()
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return 0, err
	}
	n.leases.recordGrant(node, start)
	return n.fsm.State().Index, nil
}

type leaseRequest struct {
	Node string `json:"node"`
}

type leaseAnswer struct {
	Index uint64 `json:"index"`
}

// handleLease serves a follower's grant request. It is never forwarded: a
// grant is only worth something from the leader itself.
func (n *Node) handleLease(w http.ResponseWriter, r *http.Request) {
	var req leaseRequest
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	if !n.isLeader() {
		writeError(w, http.StatusServiceUnavailable, api.CodeNoLeader, "not the Raft leader")
		return
	}
	index, err := n.grantLease(req.Node)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, api.CodeNoLeader, "leadership not confirmed: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, leaseAnswer{Index: index})
}

// failoverAt is the moment after which node can no longer hold a lease,
// as far as this leader knows, plus the margin.
func (n *Node) failoverAt(node string) time.Time {
	return n.leases.lastGranted(node).Add(n.leaseTimeout() + failoverMargin)
}
