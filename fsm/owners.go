package fsm

import "sort"

// Command types for ownership.
const (
	TypeSetOwner CommandType = "set_owner"
	TypeSetDrain CommandType = "set_drain"
)

// SetOwner makes Owner the owner of a device and raises its epoch. It is
// conditional: Epoch must be the device's current epoch, so two leaders'
// (or a leader's and an operator's) decisions based on the same view
// cannot both apply.
type SetOwner struct {
	Device string `json:"device"`
	Owner  string `json:"owner"`
	Epoch  uint64 `json:"epoch"`
}

func (*SetOwner) Type() CommandType { return TypeSetOwner }

func (c *SetOwner) check() error {
	if err := checkName("device", c.Device); err != nil {
		return err
	}
	return checkName("node", c.Owner)
}

func (c *SetOwner) apply(s *State, _ Env) (any, error) {
	old := s.Devices[c.Device]
	switch {
	case old == nil:
		return nil, errorf(CodeNotFound, "no LUN named %q", c.Device)
	case s.Nodes[c.Owner] == nil:
		return nil, errorf(CodeNotFound, "no node %q", c.Owner)
	case old.Epoch != c.Epoch:
		return nil, errorf(CodeConflict, "LUN %s changed owner meanwhile (epoch %d, not %d); retry", c.Device, old.Epoch, c.Epoch)
	}
	d := *old
	d.Owner, d.Epoch = c.Owner, old.Epoch+1
	s.Devices[c.Device] = &d
	return &d, nil
}

// checkOwner refuses a new device whose owner is not a node. A device
// created with an owner starts at epoch 1, as if SetOwner had run.
func (s *State) checkOwner(d *Device) error {
	if d.Owner == "" {
		return nil
	}
	if s.Nodes[d.Owner] == nil {
		return errorf(CodeNotFound, "LUN %s: no node %q to own it", d.Name, d.Owner)
	}
	if d.Epoch == 0 {
		d.Epoch = 1
	}
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
