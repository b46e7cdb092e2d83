package cluster

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm"
)

// Operator commands on the replicas of replicated LUNs: replacing a
// replica, and forcing an out-of-sync replica to own a LUN whose in-sync
// copies are all lost.

// buildReplaceReplica replaces a replica by a node holding no copy,
// conditional on the epoch the leader sees now. The new replica starts
// out of sync; the owner's dataplane resyncs it.
func (n *Node) buildReplaceReplica(r *http.Request) (fsm.Command, func(any, uint64) any, error) {
	var req api.ReplaceReplica
	if err := decodeBody(r, &req); err != nil {
		return nil, nil, err
	}
	if req.Old == "" || req.New == "" {
		return nil, nil, badRequest("give old, the replica to replace, and new, the node to take its place")
	}
	name := r.PathValue("name")
	s := n.fsm.State()
	d := s.Devices[name]
	switch {
	case d == nil:
		return nil, nil, &fsm.Error{Code: fsm.CodeNotFound, Msg: fmt.Sprintf("no LUN named %q", name)}
	case !d.Replicated():
		return nil, nil, &fsm.Error{Code: fsm.CodeInvalid, Msg: fmt.Sprintf("LUN %s is on shared storage, not a replicated LUN: it has no replicas to replace", name)}
	case !d.HasReplica(req.Old):
		return nil, nil, &fsm.Error{Code: fsm.CodeConflict, Msg: fmt.Sprintf("node %s holds no copy of LUN %s (replicas: %s)", req.Old, name, strings.Join(d.Replicas, ", "))}
	case req.Old == d.Owner:
		return nil, nil, errReplaceOwner(d)
	case s.Nodes[req.New] == nil:
		return nil, nil, &fsm.Error{Code: fsm.CodeNotFound, Msg: fmt.Sprintf("no node %q in the cluster (hatarget cluster members lists them)", req.New)}
	case d.HasReplica(req.New):
		return nil, nil, &fsm.Error{Code: fsm.CodeConflict, Msg: fmt.Sprintf("node %s is already a replica of LUN %s (replicas: %s)", req.New, name, strings.Join(d.Replicas, ", "))}
	case n.gossipGone(req.New):
		return nil, nil, &fsm.Error{Code: fsm.CodeConflict, Msg: fmt.Sprintf("node %s is not alive: it could not receive a copy of LUN %s", req.New, name)}
	}
	return &fsm.ReplaceReplica{Device: name, Epoch: d.Epoch, Old: req.Old, New: req.New}, n.renderLUN, nil
}

// errReplaceOwner refuses to replace the owner's copy, saying where the
// LUN can be moved first.
func errReplaceOwner(d *fsm.Device) error {
	others := slices.DeleteFunc(slices.Clone(d.InSync), func(r string) bool { return r == d.Owner })
	if len(others) == 0 {
		return &fsm.Error{Code: fsm.CodeConflict, Msg: fmt.Sprintf(
			"node %s owns LUN %s and holds its only in-sync copy: it cannot be replaced until another replica is in sync and the LUN is moved there", d.Owner, d.Name)}
	}
	return &fsm.Error{Code: fsm.CodeConflict, Msg: fmt.Sprintf(
		"node %s owns LUN %s: move the LUN first (hatarget lun move %s --to %s), then replace %s", d.Owner, d.Name, d.Name, others[0], d.Owner)}
}

// gossipGone reports whether gossip has seen node die or leave.
func (n *Node) gossipGone(node string) bool {
	m, ok := n.members()[node]
	return ok && (m.State == memberlist.StateDead || m.State == memberlist.StateLeft)
}

// handleForcePromote makes an out-of-sync replica the owner of a
// replicated LUN none of whose in-sync replicas is alive, or with dry_run
// says what that would override.
func (n *Node) handleForcePromote(w http.ResponseWriter, r *http.Request) {
	var req api.ForcePromote
	if err := decodeBody(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	if err := n.barrier(r.Context()); err != nil {
		writeErr(w, err)
		return
	}
	p, err := n.forcePromote(n.principalOf(r.Context()), r.PathValue("name"), req)
	if err != nil {
		writeErr(w, err)
		return
	}
	// Rendered once ownerMu is released: the view may wait for the owner's
	// answer about its resyncs.
	res := api.ForcePromoteResult{LUN: n.lunView(r.Context(), p.state, p.device), Overridden: p.overridden, DryRun: req.DryRun, Generation: p.gen}
	if !req.DryRun {
		w.Header().Set(api.HeaderGeneration, strconv.FormatUint(p.gen, 10))
	}
	writeJSON(w, http.StatusOK, res)
}

// promotion is a forced promotion done, or checked by a dry run: the LUN
// in the state that holds it, the in-sync copies it overrides and the
// generation that committed it (0 for a dry run).
type promotion struct {
	state      *fsm.State
	device     *fsm.Device
	overridden []string
	gen        uint64
}

// forcePromote checks and, unless req.DryRun, commits a forced promotion
// under ownerMu, like the leader's own failovers, so that no lease is
// granted to the old owner between the check and the commit.
func (n *Node) forcePromote(by principal, name string, req api.ForcePromote) (promotion, error) {
	n.ownerMu.Lock()
	defer n.ownerMu.Unlock()
	s := n.fsm.State()
	c, d, err := n.planForcePromote(s, name, req.To)
	if err != nil {
		return promotion{}, err
	}
	overridden := slices.Clone(d.InSync)
	if req.DryRun {
		if err := fsm.CheckCommand(c, n.voterPeers()); err != nil {
			return promotion{}, err
		}
		if err := n.precheck(c); err != nil {
			return promotion{}, err
		}
		return promotion{state: s, device: d, overridden: overridden}, nil
	}
	res, gen, err := n.proposeAs(by, c)
	if err != nil {
		return promotion{}, err
	}
	promoted, _ := res.(*fsm.Device)
	if promoted == nil {
		return promotion{}, fmt.Errorf("force_promote of LUN %s returned %T", name, res)
	}
	n.log.Warn("LUN force-promoted to an out-of-sync replica: writes only the overridden copies had are lost",
		"lun", promoted.Name, "owner", promoted.Owner, "epoch", promoted.Epoch, "overridden", overridden)
	return promotion{state: n.fsm.State(), device: promoted, overridden: overridden, gen: gen}, nil
}

// planForcePromote checks that to may be forced to own LUN name and
// returns the command, conditional on the current epoch, with the device
// as it is. It refuses while an in-sync replica is alive (or only
// suspected by gossip): a live in-sync copy loses nothing, and the cluster
// fails over to it by itself. The new owner must be alive and undrained,
// and the old owner's lease must have run out, so that it has stopped
// serving.
func (n *Node) planForcePromote(s *fsm.State, name, to string) (*fsm.ForcePromote, *fsm.Device, error) {
	d := s.Devices[name]
	switch {
	case to == "":
		return nil, nil, badRequest("give to, the out-of-sync replica to promote")
	case d == nil:
		return nil, nil, &fsm.Error{Code: fsm.CodeNotFound, Msg: fmt.Sprintf("no LUN named %q", name)}
	case !d.Replicated():
		return nil, nil, &fsm.Error{Code: fsm.CodeInvalid, Msg: fmt.Sprintf("LUN %s is on shared storage, not a replicated LUN: there is no replica to promote", name)}
	case s.Nodes[to] == nil:
		return nil, nil, &fsm.Error{Code: fsm.CodeNotFound, Msg: fmt.Sprintf("no node %q in the cluster (hatarget cluster members lists them)", to)}
	case !d.HasReplica(to):
		return nil, nil, &fsm.Error{Code: fsm.CodeConflict, Msg: fmt.Sprintf("node %s holds no copy of LUN %s (replicas: %s): it cannot own it", to, name, strings.Join(d.Replicas, ", "))}
	case to == d.Owner:
		return nil, nil, &fsm.Error{Code: fsm.CodeConflict, Msg: fmt.Sprintf("%s already owns LUN %s", to, name)}
	case d.IsInSync(to):
		return nil, nil, &fsm.Error{Code: fsm.CodeConflict, Msg: fmt.Sprintf(
			"node %s holds an in-sync copy of LUN %s: use hatarget lun move %s --to %s, which loses no write", to, name, name, to)}
	}
	members := n.members()
	for _, r := range d.InSync {
		m, ok := members[r]
		if !ok || (m.State != memberlist.StateAlive && m.State != memberlist.StateSuspect) {
			continue
		}
		state := gossipState(m.State)
		if r == d.Owner {
			return nil, nil, &fsm.Error{Code: fsm.CodeConflict, Msg: fmt.Sprintf(
				"node %s owns LUN %s, holds an in-sync copy and is %s: nothing needs forcing (once %s is in sync, hatarget lun move %s --to %s)",
				r, name, state, to, name, to)}
		}
		return nil, nil, &fsm.Error{Code: fsm.CodeConflict, Msg: fmt.Sprintf(
			"node %s holds an in-sync copy of LUN %s and is %s: use hatarget lun move %s --to %s (the cluster fails over to a live in-sync replica by itself)",
			r, name, state, name, r)}
	}
	if m, ok := members[to]; !ok || m.State != memberlist.StateAlive {
		return nil, nil, &fsm.Error{Code: fsm.CodeConflict, Msg: fmt.Sprintf("node %s is not alive: it cannot take over LUN %s", to, name)}
	}
	if s.Nodes[to].Drained {
		return nil, nil, &fsm.Error{Code: fsm.CodeConflict, Msg: fmt.Sprintf("node %s is drained; undrain it first (hatarget node undrain %s)", to, to)}
	}
	if d.Owner != "" {
		if wait := time.Until(n.failoverAt(d.Owner)); wait > 0 {
			return nil, nil, &fsm.Error{Code: fsm.CodeConflict, Msg: fmt.Sprintf(
				"the owner %s of LUN %s may still hold its lease for %s: retry then, once it has stopped serving", d.Owner, name, wait.Round(100*time.Millisecond))}
		}
	}
	return &fsm.ForcePromote{Device: name, Epoch: d.Epoch, Owner: to}, d, nil
}
