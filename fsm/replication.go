package fsm

import (
	"slices"
	"sort"
)

// Command types for synchronous replication (protocol 4).
const (
	TypeSetInSync      CommandType = "set_in_sync"
	TypeReplaceReplica CommandType = "replace_replica"
	TypeForcePromote   CommandType = "force_promote"
)

// SetInSync changes a replicated device's in-sync set: the owner proposes
// Remove for a replica that stopped answering (and acknowledges the
// writes it missed only once this entry commits), and Add for one it has
// resynchronised. It is conditional on the device's epoch, so an owner
// that has been replaced cannot change the set; a mismatch is the same
// conflict SetOwner returns.
//
// The owner cannot be removed, an added node must be a registered replica,
// and the set never becomes empty. Removing a node that is not in the set,
// or adding one that is, changes nothing and is not an error, so that a
// retried proposal is harmless. The result is the updated *Device.
type SetInSync struct {
	Device string   `json:"device"`
	Epoch  uint64   `json:"epoch"`
	Remove []string `json:"remove,omitempty"`
	Add    []string `json:"add,omitempty"`
}

func (*SetInSync) Type() CommandType { return TypeSetInSync }

func (c *SetInSync) check() error {
	if err := checkName("device", c.Device); err != nil {
		return err
	}
	if len(c.Remove) == 0 && len(c.Add) == 0 {
		return errorf(CodeInvalid, "LUN %s: set_in_sync names no node to add or remove", c.Device)
	}
	for _, n := range c.Remove {
		if err := checkName("node", n); err != nil {
			return err
		}
		if slices.Contains(c.Add, n) {
			return errorf(CodeInvalid, "LUN %s: node %s is both added to and removed from the in-sync set", c.Device, n)
		}
	}
	for _, n := range c.Add {
		if err := checkName("node", n); err != nil {
			return err
		}
	}
	return nil
}

func (c *SetInSync) apply(s *State, _ Env) (any, error) {
	old := s.Devices[c.Device]
	switch {
	case old == nil:
		return nil, errorf(CodeNotFound, "no LUN named %q", c.Device)
	case !old.Replicated():
		return nil, errorf(CodeInvalid, "LUN %s is on shared storage: it has no in-sync set", c.Device)
	case old.Epoch != c.Epoch:
		return nil, errEpoch(old, c.Epoch)
	}
	for _, n := range c.Remove {
		if n == old.Owner {
			return nil, errorf(CodeConflict, "node %s owns LUN %s: the owner cannot leave the in-sync set", n, c.Device)
		}
	}
	for _, n := range c.Add {
		switch {
		case !old.HasReplica(n):
			return nil, errorf(CodeConflict, "node %s is not a replica of LUN %s (replicas %v)", n, c.Device, old.Replicas)
		case s.Nodes[n] == nil:
			return nil, errorf(CodeNotFound, "no node %q", n)
		}
	}
	inSync := slices.DeleteFunc(slices.Clone(old.InSync), func(n string) bool { return slices.Contains(c.Remove, n) })
	for _, n := range c.Add {
		if !slices.Contains(inSync, n) {
			inSync = append(inSync, n)
		}
	}
	if len(inSync) == 0 {
		return nil, errorf(CodeConflict, "LUN %s: removing %v would leave no in-sync replica", c.Device, c.Remove)
	}
	slices.Sort(inSync)
	d := old.clone()
	d.InSync = inSync
	s.Devices[c.Device] = d
	return d, nil
}

// ReplaceReplica replaces a replica of a device by another node, which
// starts out of sync: it holds nothing yet and needs a full resync before
// the owner proposes adding it (SetInSync). Old must be a replica but not
// the owner (move the LUN first), and must not be the last in-sync one;
// New must be a registered node that is not a replica already. It is
// conditional on the device's epoch, like SetInSync; the epoch does not
// change. The result is the updated *Device.
type ReplaceReplica struct {
	Device string `json:"device"`
	Epoch  uint64 `json:"epoch"`
	Old    string `json:"old"`
	New    string `json:"new"`
}

func (*ReplaceReplica) Type() CommandType { return TypeReplaceReplica }

func (c *ReplaceReplica) check() error {
	if err := checkName("device", c.Device); err != nil {
		return err
	}
	if err := checkName("node", c.Old); err != nil {
		return err
	}
	if err := checkName("node", c.New); err != nil {
		return err
	}
	if c.Old == c.New {
		return errorf(CodeInvalid, "LUN %s: replacing replica %s by itself", c.Device, c.Old)
	}
	return nil
}

func (c *ReplaceReplica) apply(s *State, _ Env) (any, error) {
	old := s.Devices[c.Device]
	switch {
	case old == nil:
		return nil, errorf(CodeNotFound, "no LUN named %q", c.Device)
	case !old.Replicated():
		return nil, errorf(CodeInvalid, "LUN %s is on shared storage: it has no replicas to replace", c.Device)
	case old.Epoch != c.Epoch:
		return nil, errEpoch(old, c.Epoch)
	case !old.HasReplica(c.Old):
		return nil, errorf(CodeConflict, "node %s is not a replica of LUN %s (replicas %v)", c.Old, c.Device, old.Replicas)
	case c.Old == old.Owner:
		return nil, errorf(CodeConflict, "node %s owns LUN %s: move it to another in-sync replica before replacing this one", c.Old, c.Device)
	case s.Nodes[c.New] == nil:
		return nil, errorf(CodeNotFound, "no node %q", c.New)
	case old.HasReplica(c.New):
		return nil, errorf(CodeConflict, "node %s is already a replica of LUN %s", c.New, c.Device)
	case old.IsInSync(c.Old) && len(old.InSync) == 1:
		return nil, errorf(CodeConflict, "node %s holds the only in-sync copy of LUN %s: it cannot be replaced", c.Old, c.Device)
	}
	d := old.clone()
	d.Replicas = slices.DeleteFunc(d.Replicas, func(n string) bool { return n == c.Old })
	d.Replicas = append(d.Replicas, c.New)
	slices.Sort(d.Replicas)
	d.InSync = slices.DeleteFunc(d.InSync, func(n string) bool { return n == c.Old })
	s.Devices[c.Device] = d
	return d, nil
}

// ForcePromote makes Owner, a replica that is not in sync, the owner of a
// replicated device, with a new epoch and an in-sync set of Owner alone.
// It is the operator's last resort when no in-sync replica can serve (every
// in-sync copy is on dead nodes): writes acknowledged after Owner's copy
// fell out of sync are on the overridden copies only, and are lost to
// initiators. The overridden replicas stay replicas, out of sync: a
// returning one is resynchronised from the new owner like any other.
//
// The state machine cannot tell live nodes from dead ones: the proposer
// (the API) refuses while an in-sync replica is alive. Here Owner must be
// a registered replica outside the in-sync set (an in-sync one is made
// owner by SetOwner, which loses nothing), and the command is conditional
// on the device's epoch, like SetOwner. The result is the updated *Device.
type ForcePromote struct {
	Device string `json:"device"`
	Epoch  uint64 `json:"epoch"`
	Owner  string `json:"owner"`
}

func (*ForcePromote) Type() CommandType { return TypeForcePromote }

func (c *ForcePromote) check() error {
	if err := checkName("device", c.Device); err != nil {
		return err
	}
	return checkName("node", c.Owner)
}

func (c *ForcePromote) apply(s *State, _ Env) (any, error) {
	old := s.Devices[c.Device]
	switch {
	case old == nil:
		return nil, errorf(CodeNotFound, "no LUN named %q", c.Device)
	case !old.Replicated():
		return nil, errorf(CodeInvalid, "LUN %s is on shared storage: it has no replica to promote", c.Device)
	case old.Epoch != c.Epoch:
		return nil, errEpoch(old, c.Epoch)
	case s.Nodes[c.Owner] == nil:
		return nil, errorf(CodeNotFound, "no node %q", c.Owner)
	case !old.HasReplica(c.Owner):
		return nil, errorf(CodeConflict, "node %s holds no copy of LUN %s (replicas %v): it cannot own it", c.Owner, c.Device, old.Replicas)
	case old.IsInSync(c.Owner):
		return nil, errorf(CodeConflict, "node %s is in sync for LUN %s: make it owner with set_owner, which loses no write", c.Owner, c.Device)
	}
	d := old.clone()
	d.Owner, d.Epoch, d.InSync = c.Owner, old.Epoch+1, []string{c.Owner}
	s.Devices[c.Device] = d
	return d, nil
}

// PlaceReplicas chooses where a new replicated device with n copies goes:
// the owner is the candidate owning the fewest devices (LeastLoaded), the
// n-1 other replicas the candidates holding the fewest replicas, ties
// broken by name. replicas is sorted and includes owner, ready for
// Device.Replicas. Duplicate candidates count once. n below 1, or above
// the number of candidates, is an error. Like LeastLoaded it is pure, so
// the leader can plan several devices with WithDevice.
func (s *State) PlaceReplicas(candidates []string, n int) (owner string, replicas []string, err error) {
	sorted := slices.Compact(slices.Sorted(slices.Values(candidates)))
	switch {
	case n < 1:
		return "", nil, errorf(CodeInvalid, "a replicated LUN needs at least 1 replica, not %d", n)
	case n > len(sorted):
		return "", nil, errorf(CodeConflict, "%d replicas wanted, but only %d node(s) can hold one %v", n, len(sorted), sorted)
	}
	owner = s.LeastLoaded(sorted)
	held := map[string]int{}
	for _, d := range s.Devices {
		for _, r := range d.Replicas {
			held[r]++
		}
	}
	others := slices.DeleteFunc(sorted, func(c string) bool { return c == owner })
	// Stable on a sorted slice: equal counts stay in name order.
	sort.SliceStable(others, func(i, j int) bool { return held[others[i]] < held[others[j]] })
	replicas = append(others[:n-1:n-1], owner)
	slices.Sort(replicas)
	return owner, replicas, nil
}
