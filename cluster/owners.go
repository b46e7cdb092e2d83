package cluster

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm"
)

// buildMove makes a node the owner of a LUN, conditional on the epoch the
// leader sees now.
func (n *Node) buildMove(r *http.Request) (fsm.Command, func(any, uint64) any, error) {
	var req api.Move
	if err := decodeBody(r, &req); err != nil {
		return nil, nil, err
	}
	c, err := n.moveCommand(n.fsm.State(), r.PathValue("name"), req.To)
	if err != nil {
		return nil, nil, err
	}
	return c, n.renderLUN, nil
}

// moveCommand checks that to may own LUN name and returns the move,
// conditional on the LUN's epoch in s.
func (n *Node) moveCommand(s *fsm.State, name, to string) (*fsm.SetOwner, error) {
	d := s.Devices[name]
	if d == nil {
		return nil, &fsm.Error{Code: fsm.CodeNotFound, Msg: fmt.Sprintf("no LUN named %q", name)}
	}
	if err := n.checkOwnerCandidate(s, d, to); err != nil {
		return nil, err
	}
	if d.Owner == to {
		return nil, &fsm.Error{Code: fsm.CodeConflict, Msg: fmt.Sprintf("%s already owns LUN %s", to, name)}
	}
	return &fsm.SetOwner{Device: name, Owner: to, Epoch: d.Epoch}, nil
}

// checkOwnerCandidate refuses to make a node owner that could not serve
// d: unknown, drained, not alive, or without an in-sync copy.
func (n *Node) checkOwnerCandidate(s *fsm.State, d *fsm.Device, name string) error {
	rec := s.Nodes[name]
	switch {
	case rec == nil:
		return &fsm.Error{Code: fsm.CodeNotFound, Msg: fmt.Sprintf("no node %q", name)}
	case rec.Drained:
		return &fsm.Error{Code: fsm.CodeConflict, Msg: fmt.Sprintf("node %s is drained; undrain it first (hatarget node undrain %s)", name, name)}
	}
	if d.Replicated() && !d.IsInSync(name) {
		return &fsm.Error{Code: fsm.CodeConflict, Msg: fmt.Sprintf("node %s holds no in-sync copy of %s (in sync: %v)", name, d.Name, d.InSync)}
	}
	for _, c := range n.ownerCandidates(s) {
		if c == name {
			return nil
		}
	}
	return &fsm.Error{Code: fsm.CodeConflict, Msg: fmt.Sprintf("node %s is not alive: it cannot take over a LUN", name)}
}

// handleDrain marks a node drained, moves every LUN it owns that another
// node can own to the least loaded one (moveAwayFrom), and hands Raft
// leadership over when the node leads: it runs on the leader, so that is
// when the node is this one. A node whose stop would make a LUN
// unavailable, or cost the quorum, is refused unless forced. It is
// idempotent, so that `node drain --wait` drains again when leadership
// comes back to the node.
func (n *Node) handleDrain(w http.ResponseWriter, r *http.Request) {
	var req api.Drain
	if r.ContentLength != 0 {
		if err := decodeBody(r, &req); err != nil {
			writeErr(w, err)
			return
		}
	}
	name := r.PathValue("name")
	if err := n.barrier(r.Context()); err != nil {
		writeErr(w, err)
		return
	}
	s := n.fsm.State()
	if !req.Force {
		safety, err := n.stopSafety(r.Context(), s, name)
		if err != nil {
			writeErr(w, err)
			return
		}
		if safety.Blocked {
			writeError(w, http.StatusConflict, api.CodeConflict, fmt.Sprintf(
				"not draining %s: stopping it would make a LUN unavailable or cost the quorum (force drains it anyway):\n  %s",
				name, strings.Join(safety.Reasons, "\n  ")))
			return
		}
	}
	if rec := s.Nodes[name]; rec == nil || !rec.Drained {
		if _, _, err := n.proposeAs(n.principalOf(r.Context()), &fsm.SetDrain{Node: name, Drained: true}); err != nil {
			writeErr(w, err)
			return
		}
	}
	moved, kept, err := n.moveAwayFrom(n.principalOf(r.Context()), name)
	if err != nil {
		writeErr(w, prefixed(err, "node %s is drained but still owns LUNs", name))
		return
	}
	res := api.DrainResult{Moved: moved, Kept: kept}
	if name == n.cfg.Name {
		if res.Leader, err = n.handOverLeadership(); err != nil {
			writeErr(w, prefixed(err, "node %s is drained but still leads Raft", name))
			return
		}
	}
	res.Generation = n.fsm.State().Index
	writeJSON(w, http.StatusOK, res)
}

// prefixed says what had been done before err, keeping err's code:
// writeErr answers an fsm.Error with its own message alone.
func prefixed(err error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	var fe *fsm.Error
	if errors.As(err, &fe) {
		return &fsm.Error{Code: fe.Code, Msg: msg + ": " + fe.Msg}
	}
	return fmt.Errorf("%s: %w", msg, err)
}

// handOverLeadership makes another voter the Raft leader, a live,
// undrained one when there is one (a drained leader would be asked to
// step down in turn), and returns the new leader once this node has heard
// from it.
func (n *Node) handOverLeadership() (string, error) {
	var f raft.Future
	for _, c := range slices.Sorted(slices.Values(n.ownerCandidates(n.fsm.State()))) {
		if addr := n.raftAddress(c); c != n.cfg.Name && addr != "" {
			f = n.raft.LeadershipTransferToServer(raft.ServerID(c), raft.ServerAddress(addr))
			break
		}
	}
	if f == nil {
		f = n.raft.LeadershipTransfer()
	}
	if err := f.Error(); err != nil {
		return "", fmt.Errorf("leadership transfer: %w", err)
	}
	deadline := time.Now().Add(leaderWait)
	for {
		leader, _ := n.leader()
		switch {
		case leader != "" && leader != n.cfg.Name:
			return leader, nil
		case time.Now().After(deadline):
			return "", fmt.Errorf("no new leader heard of within %s of the leadership transfer", leaderWait)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// leaderWait bounds how long a handover waits to hear from the new
// leader; an election takes a few heartbeats.
const leaderWait = 3 * time.Second

// moveAwayFrom moves every LUN node owns to the least loaded candidate,
// one committed move at a time. It keeps, and lists, those no other node
// can own yet (their other copies are out of sync): a drain moves them
// once a resync is done, when `node drain --wait` drains again. The moves
// are by, for the audit log.
func (n *Node) moveAwayFrom(by principal, node string) (moved map[string]string, kept []string, err error) {
	moved = map[string]string{}
	for _, name := range fsm.SortedKeys(n.fsm.State().Devices) {
		s := n.fsm.State()
		d := s.Devices[name]
		if d == nil || d.Owner != node {
			continue
		}
		to := s.LeastLoaded(n.ownerCandidatesFor(s, d))
		if to == "" {
			kept = append(kept, name)
			continue
		}
		if _, _, err := n.proposeAs(by, &fsm.SetOwner{Device: name, Owner: to, Epoch: d.Epoch}); err != nil {
			return moved, kept, prefixed(err, "moving LUN %s to %s", name, to)
		}
		moved[name] = to
	}
	return moved, kept, nil
}

func (n *Node) buildUndrain(r *http.Request) (fsm.Command, func(any, uint64) any, error) {
	return &fsm.SetDrain{Node: r.PathValue("name"), Drained: false}, resultOnly, nil
}
