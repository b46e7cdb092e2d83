package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"github.com/hatarget/hatarget/fsm"
)

// applyTimeout bounds how long a proposal may wait to commit.
const applyTimeout = 10 * time.Second

// errNotLeader: the proposal must go to the leader; nothing was proposed,
// so the client may retry.
var errNotLeader = errors.New("this node is not the Raft leader")

// errOutcomeUnknown: leadership was lost after the command was proposed;
// it may still commit under the next leader, so it must not be retried
// blindly.
var errOutcomeUnknown = errors.New("raft leadership was lost while the change was committing: it may or may not have been applied; check the current configuration before retrying")

// propose validates a command against the current state and the
// dataplane's rules, checks every voter can decode it, and commits it. It
// returns the command's result and the index (generation) that holds it.
// The audit log records it as this node's own change.
func (n *Node) propose(c fsm.Command) (any, uint64, error) {
	return n.proposeBy(n.self(), c, applyTimeout)
}

// proposeAs is propose on behalf of p, the caller of an API request, whom
// the audit log records as its author.
func (n *Node) proposeAs(p principal, c fsm.Command) (any, uint64, error) {
	return n.proposeBy(p, c, applyTimeout)
}

// proposeWithin is propose with a bound on the wait for a commit; the
// leader's background work uses a short one so that shutdown is never
// held up by a proposal that cannot commit.
func (n *Node) proposeWithin(c fsm.Command, timeout time.Duration) (any, uint64, error) {
	return n.proposeBy(n.self(), c, timeout)
}

// proposeBy proposes c with p as its author in the entry's audit data
// (audit.go) and the leader's clock as its time: the state machine never
// reads either.
func (n *Node) proposeBy(p principal, c fsm.Command, timeout time.Duration) (any, uint64, error) {
	if n.raft.State() != raft.Leader {
		return nil, 0, errNotLeader
	}
	if err := fsm.CheckCommand(c, n.voterPeers()); err != nil {
		return nil, 0, err
	}
	if err := n.precheck(c); err != nil {
		return nil, 0, err
	}
	b, err := fsm.Encode(c)
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	f := n.raft.ApplyLog(raft.Log{Data: b, Extensions: encodeAuditMeta(p, start)}, timeout)
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader):
			return nil, 0, fmt.Errorf("%w: %v", errNotLeader, err)
		case errors.Is(err, raft.ErrLeadershipLost):
			return nil, 0, errOutcomeUnknown
		}
		return nil, 0, fmt.Errorf("committing %s: %w", c.Type(), err)
	}
	n.metrics.observeApply(time.Since(start))
	r, _ := f.Response().(applyResult)
	return r.value, f.Index(), r.err
}

// precheck refuses, before anything is proposed, a command the state
// machine would refuse or that yields a configuration the dataplane
// cannot serve (an unknown negotiation key, say).
func (n *Node) precheck(c fsm.Command) error {
	if err := fsm.CheckPolicy(c); err != nil {
		return err
	}
	cur := n.fsm.State()
	next, _, err := cur.ApplyCommand(cur.Index+1, c, n.fsm.env)
	if err != nil || c.Type() == fsm.TypeReservation {
		return err
	}
	cfg := dataplaneConfig(next, n.local(), clusterView{lease: true})
	if err := cfg.Validate(); err != nil {
		return &fsm.Error{Code: fsm.CodeInvalid, Msg: err.Error()}
	}
	return nil
}

// voterPeers lists the Raft voters with the protocol each advertises: from
// gossip when the node is alive, else from its record in the state. A
// voter known nowhere counts as protocol 1, which every release decodes.
func (n *Node) voterPeers() []fsm.Peer {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return nil
	}
	members := n.members()
	state := n.fsm.State()
	var peers []fsm.Peer
	for _, s := range f.Configuration().Servers {
		name := string(s.ID)
		p := fsm.Peer{Name: name, Protocol: 1}
		if m, ok := members[name]; ok && m.MetaErr == nil && m.State != memberlist.StateLeft {
			p.Protocol = m.Meta.Protocol
		} else if rec := state.Nodes[name]; rec != nil {
			p.Protocol = rec.Protocol
		}
		peers = append(peers, p)
	}
	return peers
}

// barrier makes a linearizable read possible: once it returns, this
// node is (or was, an instant ago) the leader and has applied every entry
// committed before the read began.
func (n *Node) barrier(ctx context.Context) error {
	if n.raft.State() != raft.Leader {
		return errNotLeader
	}
	timeout := applyTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	if err := n.raft.Barrier(timeout).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return errNotLeader
		}
		return err
	}
	return nil
}

// leader returns the current leader's name and API address, if known.
func (n *Node) leader() (name, apiAddr string) {
	_, id := n.raft.LeaderWithID()
	name = string(id)
	if name == "" {
		return "", ""
	}
	if m, ok := n.members()[name]; ok && m.MetaErr == nil {
		return name, m.Meta.API
	}
	if rec := n.fsm.State().Nodes[name]; rec != nil {
		return name, rec.APIAddr
	}
	return name, ""
}
