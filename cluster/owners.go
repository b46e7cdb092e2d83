package cluster

import (
	"fmt"
	"net/http"

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
	name := r.PathValue("name")
	s := n.fsm.State()
	d := s.Devices[name]
	if d == nil {
		return nil, nil, &fsm.Error{Code: fsm.CodeNotFound, Msg: fmt.Sprintf("no LUN named %q", name)}
	}
	if err := n.checkOwnerCandidate(s, d, req.To); err != nil {
		return nil, nil, err
	}
	if d.Owner == req.To {
		return nil, nil, &fsm.Error{Code: fsm.CodeConflict, Msg: fmt.Sprintf("%s already owns LUN %s", req.To, name)}
	}
	return &fsm.SetOwner{Device: name, Owner: req.To, Epoch: d.Epoch}, n.renderLUN, nil
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

// handleDrain marks a node drained, then moves every LUN it owns to the
// least loaded other node, one committed move at a time.
func (n *Node) handleDrain(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, _, err := n.propose(&fsm.SetDrain{Node: name, Drained: true}); err != nil {
		writeErr(w, err)
		return
	}
	moved, err := n.moveAwayFrom(name)
	if err != nil {
		writeErr(w, fmt.Errorf("node %s is drained but still owns LUNs: %w", name, err))
		return
	}
	writeJSON(w, http.StatusOK, api.DrainResult{Moved: moved, Generation: n.fsm.State().Index})
}

// moveAwayFrom moves every LUN node owns to the least loaded candidate.
func (n *Node) moveAwayFrom(node string) (map[string]string, error) {
	moved := map[string]string{}
	for {
		s := n.fsm.State()
		lun := ownedBy(s, node)
		if lun == nil {
			return moved, nil
		}
		to := s.LeastLoaded(n.ownerCandidatesFor(s, lun))
		if to == "" {
			return moved, fmt.Errorf("no other live, undrained node with an in-sync copy can own %s", lun.Name)
		}
		if _, _, err := n.propose(&fsm.SetOwner{Device: lun.Name, Owner: to, Epoch: lun.Epoch}); err != nil {
			return moved, err
		}
		moved[lun.Name] = to
	}
}

// ownedBy returns one LUN node owns, the first by name, or nil.
func ownedBy(s *fsm.State, node string) *fsm.Device {
	for _, name := range fsm.SortedKeys(s.Devices) {
		if d := s.Devices[name]; d.Owner == node {
			return d
		}
	}
	return nil
}

func (n *Node) buildUndrain(r *http.Request) (fsm.Command, func(any, uint64) any, error) {
	return &fsm.SetDrain{Node: r.PathValue("name"), Drained: false}, resultOnly, nil
}
