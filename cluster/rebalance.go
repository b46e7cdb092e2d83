package cluster

import (
	"net/http"
	"slices"
	"strconv"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm"
)

// planRebalance chooses the moves that spread LUN ownership evenly over
// the nodes that may own LUNs (owners lists them for a LUN: the live,
// undrained nodes, with an in-sync copy for a replicated LUN). Each step
// moves one LUN from the most loaded node it can leave to the least
// loaded node that may own it, as long as that narrows the gap (loads
// differ by two or more), so that no LUN moves without need; a LUN moved
// twice is one move, and one moved back none. LUNs whose owner may not
// own them (dead, drained) are left to failover and drain. The moves are
// sorted by LUN and carry the owner they leave.
func planRebalance(s *fsm.State, owners func(*fsm.Device) []string) []api.LUNMove {
	load := map[string]int{}
	eligible := map[string][]string{}
	owner := map[string]string{}
	for name, d := range s.Devices {
		if d.Owner != "" {
			load[d.Owner]++
		}
		el := slices.Sorted(slices.Values(owners(d)))
		if d.Owner != "" && slices.Contains(el, d.Owner) {
			eligible[name], owner[name] = el, d.Owner
		}
	}
	names := fsm.SortedKeys(eligible)
	for {
		best, bestTo, gap := "", "", 1
		for _, name := range names {
			from := owner[name]
			for _, to := range eligible[name] {
				if g := load[from] - load[to]; g > gap {
					best, bestTo, gap = name, to, g
				}
			}
		}
		if best == "" {
			break
		}
		load[owner[best]]--
		load[bestTo]++
		owner[best] = bestTo
	}
	var moves []api.LUNMove
	for _, name := range names {
		if from := s.Devices[name].Owner; owner[name] != from {
			moves = append(moves, api.LUNMove{LUN: name, From: from, To: owner[name]})
		}
	}
	return moves
}

// handleRebalance plans a rebalance on the leader's state and, unless it
// is a dry run, makes each move as `lun move` would, conditional on the
// epoch the plan saw: a LUN that changed owner meanwhile is not moved
// again on a stale plan.
func (n *Node) handleRebalance(w http.ResponseWriter, r *http.Request) {
	var req api.Rebalance
	if r.ContentLength != 0 {
		if err := decodeBody(r, &req); err != nil {
			writeErr(w, err)
			return
		}
	}
	if err := n.barrier(r.Context()); err != nil {
		writeErr(w, err)
		return
	}
	s := n.fsm.State()
	res := api.RebalanceResult{DryRun: req.DryRun, Moves: planRebalance(s, func(d *fsm.Device) []string { return n.ownerCandidatesFor(s, d) })}
	if res.Moves == nil {
		res.Moves = []api.LUNMove{}
	}
	if !req.DryRun {
		for i, m := range res.Moves {
			c, err := n.moveCommand(s, m.LUN, m.To)
			if err == nil {
				_, res.Generation, err = n.proposeAs(n.principalOf(r.Context()), c)
			}
			if err != nil {
				writeErr(w, prefixed(err, "rebalance: moved %d of %d LUNs, then moving LUN %s to %s failed", i, len(res.Moves), m.LUN, m.To))
				return
			}
			n.log.Info("LUN moved by a rebalance", "lun", m.LUN, "from", m.From, "to", m.To)
		}
		if res.Generation > 0 {
			w.Header().Set(api.HeaderGeneration, strconv.FormatUint(res.Generation, 10))
		}
	}
	writeJSON(w, http.StatusOK, res)
}
