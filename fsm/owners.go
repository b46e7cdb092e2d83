package fsm

import (
	"slices"
	"sort"
)

// Command types for ownership.
const (
	TypeSetOwner CommandType = "set_owner"
	TypeSetDrain CommandType = "set_drain"
)

// SetOwner makes Owner the owner of a device and raises its epoch. It is
// conditional: Epoch must be the device's current epoch, so two leaders'
// (or a leader's and an operator's) decisions based on the same view
// cannot both apply.
//
// For a replicated device the new owner must be in the in-sync set after
// Drop is removed from it: a promotion is this one entry (owner := new,
// epoch := epoch+1, S := S minus Drop), so an out-of-date replica is never
// made owner. Drop may name the old owner; a node in Drop that is not in
// S is ignored, so a retry is harmless.
//
// Drop arrived with protocol 4 (ProtocolReplication). A node of an older
// protocol decodes set_owner strictly and refuses an entry carrying
// "drop", so the leader may send a non-empty Drop only when every voter
// speaks protocol 4: CheckCommand checks that, as does
// CheckDecodable(TypeSetInSync, voters).
type SetOwner struct {
	Device string `json:"device"`
	Owner  string `json:"owner"`
	Epoch  uint64 `json:"epoch"`
	// Drop is removed from the device's in-sync set in the same entry.
	Drop []string `json:"drop,omitempty"`
}

func (*SetOwner) Type() CommandType { return TypeSetOwner }

func (c *SetOwner) check() error {
	if err := checkName("device", c.Device); err != nil {
		return err
	}
	if err := checkName("node", c.Owner); err != nil {
		return err
	}
	for _, n := range c.Drop {
		if err := checkName("node", n); err != nil {
			return err
		}
		if n == c.Owner {
			return errorf(CodeInvalid, "LUN %s: cannot drop the new owner %s from the in-sync set", c.Device, n)
		}
	}
	return nil
}

func (c *SetOwner) fieldsSince() uint16 {
	if len(c.Drop) > 0 {
		return ProtocolReplication
	}
	return 0
}

func (c *SetOwner) apply(s *State, _ Env) (any, error) {
	old := s.Devices[c.Device]
	switch {
	case old == nil:
		return nil, errorf(CodeNotFound, "no LUN named %q", c.Device)
	case s.Nodes[c.Owner] == nil:
		return nil, errorf(CodeNotFound, "no node %q", c.Owner)
	case old.Epoch != c.Epoch:
		return nil, errEpoch(old, c.Epoch)
	case len(c.Drop) > 0 && !old.Replicated():
		return nil, errorf(CodeInvalid, "LUN %s is on shared storage: it has no in-sync set to drop %v from", c.Device, c.Drop)
	}
	d := old.clone()
	if old.Replicated() {
		inSync := slices.DeleteFunc(slices.Clone(old.InSync), func(n string) bool { return slices.Contains(c.Drop, n) })
		switch {
		case !old.HasReplica(c.Owner):
			return nil, errorf(CodeConflict, "node %s holds no copy of LUN %s (replicas %v): it cannot own it", c.Owner, c.Device, old.Replicas)
		case !slices.Contains(inSync, c.Owner):
			return nil, errorf(CodeConflict, "node %s is not in sync for LUN %s (in sync: %v): making it owner would lose acknowledged writes", c.Owner, c.Device, old.InSync)
		}
		d.InSync = inSync
	}
	d.Owner, d.Epoch = c.Owner, old.Epoch+1
	s.Devices[c.Device] = d
	return d, nil
}

// errEpoch is the conflict of a command conditional on an epoch the
// device has left.
func errEpoch(d *Device, epoch uint64) error {
	return errorf(CodeConflict, "LUN %s changed owner meanwhile (epoch %d, not %d); retry", d.Name, d.Epoch, epoch)
}

// checkNewDevice completes and checks a device a command creates (d is
// the copy the state will hold). A device created with an owner starts at
// epoch 1, as if SetOwner had run. A replicated device's replicas must be
// registered nodes; they are stored sorted, and all of them start in
// sync: fresh copies are identical.
func (s *State) checkNewDevice(d *Device) error {
	if d.Owner != "" {
		if s.Nodes[d.Owner] == nil {
			return errorf(CodeNotFound, "LUN %s: no node %q to own it", d.Name, d.Owner)
		}
		if d.Epoch == 0 {
			d.Epoch = 1
		}
	}
	if !d.Replicated() {
		return nil
	}
	for _, r := range d.Replicas {
		if s.Nodes[r] == nil {
			return errorf(CodeNotFound, "LUN %s: no node %q to hold a replica", d.Name, r)
		}
	}
	d.Replicas = slices.Sorted(slices.Values(d.Replicas))
	d.InSync = slices.Clone(d.Replicas)
	return nil
}

// SetDrain marks a node drained (it should own nothing) or not.
type SetDrain struct {
	Node    string `json:"node"`
	Drained bool   `json:"drained"`
}

func (*SetDrain) Type() CommandType { return TypeSetDrain }

func (c *SetDrain) check() error { return checkName("node", c.Node) }

func (c *SetDrain) apply(s *State, _ Env) (any, error) {
	old := s.Nodes[c.Node]
	if old == nil {
		return nil, errorf(CodeNotFound, "no node %q", c.Node)
	}
	n := *old
	n.Drained = c.Drained
	s.Nodes[c.Node] = &n
	return &n, nil
}

// WithDevice returns a copy of s with d added or replaced, for planning
// placements; the state machine itself never uses it.
func (s *State) WithDevice(d *Device) *State {
	n := s.next()
	n.Devices[d.Name] = d
	return n
}

// LeastLoaded returns, among candidates, the node owning the fewest
// devices (ties broken by name), or "" when there is none: where a new or
// orphaned LUN should go so that ownership stays spread evenly.
func (s *State) LeastLoaded(candidates []string) string {
	owned := map[string]int{}
	for _, d := range s.Devices {
		owned[d.Owner]++
	}
	sorted := append([]string{}, candidates...)
	sort.Strings(sorted)
	best := ""
	for _, c := range sorted {
		if best == "" || owned[c] < owned[best] {
			best = c
		}
	}
	return best
}
