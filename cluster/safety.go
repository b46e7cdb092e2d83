package cluster

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm"
)

// Whether a node may be stopped (a rolling upgrade's step, `node drain
// --wait`): the cluster keeps its Raft quorum without it, and no LUN
// loses its owner or its last live in-sync copy.

// stopView is what, beyond the replicated state, decides whether a node
// may stop.
type stopView struct {
	// voters are the Raft voters; leader the current leader.
	voters []string
	leader string
	// view says which nodes gossip sees alive.
	view clusterView
	// owners lists the nodes that may own a LUN (ownerCandidatesFor).
	owners func(d *fsm.Device) []string
	// resyncs is the owners' account of the resyncs of the LUNs whose
	// only live in-sync copy the node holds, by LUN.
	resyncs map[string]lunResyncs
}

// stopSafety says whether stopping node now is safe and whether it is
// idle (see api.StopSafety). Reasons that waiting cannot clear (no
// quorum without the node; a LUN whose only live in-sync copy it holds
// while no resync runs; a LUN only it can own) make it blocked.
func stopSafety(s *fsm.State, v stopView, node string) api.StopSafety {
	out := api.StopSafety{Node: node}
	if why := quorumWithout(v.voters, v.view, node); why != "" {
		out.Reasons, out.Blocked = append(out.Reasons, why), true
	}
	for _, name := range fsm.SortedKeys(s.Devices) {
		d := s.Devices[name]
		if soleCopy(d, v.view, node) {
			why, resyncing := soleCopyReason(d, v.resyncs[name], v.view, node)
			out.Reasons = append(out.Reasons, why)
			out.Blocked = out.Blocked || !resyncing
			continue
		}
		if d.Owner != node {
			continue
		}
		others := slices.DeleteFunc(slices.Sorted(slices.Values(v.owners(d))), func(c string) bool { return c == node })
		if len(others) == 0 {
			taker := "node"
			if d.Replicated() {
				taker = "node with an in-sync copy"
			}
			out.Reasons = append(out.Reasons, fmt.Sprintf("LUN %s: %s owns it and no other live, undrained %s can take it over", name, node, taker))
			out.Blocked = true
			continue
		}
		out.Pending = append(out.Pending, fmt.Sprintf("LUN %s: %s still owns it (%s can take it over)", name, node, strings.Join(others, ", ")))
	}
	if rec := s.Nodes[node]; rec != nil && !rec.Drained {
		out.Pending = append(out.Pending, node+" is not drained")
	}
	if v.leader == node {
		out.Pending = append(out.Pending, node+" leads Raft")
	}
	out.Safe, out.Idle = len(out.Reasons) == 0, len(out.Pending) == 0
	return out
}

// quorumWithout says why Raft would lose its quorum if node stopped, or
// "" when it would not. A node gossip does not see alive counts as down.
func quorumWithout(voters []string, view clusterView, node string) string {
	if !slices.Contains(voters, node) {
		return ""
	}
	var live []string
	for _, v := range voters {
		if v != node && view.alive[v] {
			live = append(live, v)
		}
	}
	need := len(voters)/2 + 1
	if len(live) >= need {
		return ""
	}
	slices.Sort(live)
	return fmt.Sprintf("Raft would lose its quorum: without %s, %d of %d voters are alive (%s) and %d are needed",
		node, len(live), len(voters), strings.Join(live, ", "), need)
}

// soleCopy reports whether node holds the only live in-sync copy of d.
func soleCopy(d *fsm.Device, view clusterView, node string) bool {
	return d.Replicated() && d.IsInSync(node) && !slices.ContainsFunc(d.InSync, func(r string) bool {
		return r != node && view.alive[r]
	})
}

// soleCopyReason says why node's copy of d is the last one, with what
// each other replica lacks, and whether a resync of one of them runs (or
// may: the owner did not say), which waiting can then clear.
func soleCopyReason(d *fsm.Device, rs lunResyncs, view clusterView, node string) (string, bool) {
	if len(d.Replicas) == 1 {
		return fmt.Sprintf("LUN %s: %s holds its only copy (the LUN has a single replica)", d.Name, node), false
	}
	resyncing := rs.unavailable != ""
	var others []string
	for _, r := range d.Replicas {
		p, ok := rs.progress[r]
		switch {
		case r == node:
		case !view.alive[r]:
			others = append(others, r+" is down")
		case ok:
			resyncing = true
			state := "resyncing"
			if p.Total > 0 {
				state = fmt.Sprintf("resyncing %d%%", p.Done*100/p.Total)
			}
			if p.Error != "" {
				state += ", last attempt failed: " + p.Error
			}
			others = append(others, r+" is out of sync, "+state)
		case rs.unavailable != "":
			others = append(others, r+" is out of sync")
		default:
			others = append(others, r+" is out of sync, no resync running")
		}
	}
	why := fmt.Sprintf("LUN %s: %s holds its only in-sync copy (%s)", d.Name, node, strings.Join(others, "; "))
	if rs.unavailable != "" {
		why += "; " + rs.unavailable
	}
	return why, resyncing
}

// stopSafety checks node against this node's state and view: the leader's
// for a linearizable read.
func (n *Node) stopSafety(ctx context.Context, s *fsm.State, node string) (api.StopSafety, error) {
	voters := n.voterNames()
	if s.Nodes[node] == nil && !slices.Contains(voters, node) {
		return api.StopSafety{}, &fsm.Error{Code: fsm.CodeNotFound, Msg: fmt.Sprintf("no node %q in the cluster", node)}
	}
	view := n.clusterView()
	var sole []*fsm.Device
	for _, name := range fsm.SortedKeys(s.Devices) {
		if d := s.Devices[name]; soleCopy(d, view, node) {
			sole = append(sole, d)
		}
	}
	leader, _ := n.leader()
	return stopSafety(s, stopView{
		voters: voters, leader: leader, view: view,
		owners:  func(d *fsm.Device) []string { return n.ownerCandidatesFor(s, d) },
		resyncs: n.gatherResyncs(ctx, s, view, sole),
	}, node), nil
}

func (n *Node) readStopSafety(r *http.Request, s *fsm.State) (any, error) {
	return n.stopSafety(r.Context(), s, r.PathValue("name"))
}
