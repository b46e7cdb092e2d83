package fsm

import "slices"

// Command types for membership.
const (
	TypeRegisterNode CommandType = "register_node"
	TypeRemoveNode   CommandType = "remove_node"
)

// RegisterNode adds a node or updates its addresses and versions. A new
// node gets a target port group id never used before (initiators remember
// port groups, so an id must not come back naming another node); a known
// one keeps its id.
type RegisterNode struct {
	Node Node `json:"node"`
}

func (*RegisterNode) Type() CommandType { return TypeRegisterNode }

func (c *RegisterNode) check() error {
	if err := checkName("node", c.Node.Name); err != nil {
		return err
	}
	if c.Node.Protocol == 0 {
		return errorf(CodeInvalid, "node %s: protocol version missing", c.Node.Name)
	}
	return nil
}

func (c *RegisterNode) apply(s *State, _ Env) (any, error) {
	n := c.Node
	if old := s.Nodes[n.Name]; old != nil {
		// What the cluster decided about the node stays; only what the
		// node says of itself changes.
		n.PortGroup, n.Drained = old.PortGroup, old.Drained
	} else {
		n.PortGroup = s.newPortGroup()
	}
	s.Nodes[n.Name] = &n
	return &n, nil
}

// newPortGroup allocates the next port group id.
func (s *State) newPortGroup() uint16 {
	id := max(s.NextPortGroup, 1)
	for _, n := range s.Nodes {
		id = max(id, n.PortGroup+1)
	}
	s.NextPortGroup = id + 1
	return id
}

// RemoveNode forgets a node.
//
// Replicated devices: removal is refused while the node owns one (move or
// fail the LUN over first) or is the only in-sync replica of one (its copy
// is the only complete one). Otherwise the node leaves every in-sync set
// in the same entry, so that it can never be promoted, but stays in
// Replicas until ReplaceReplica names its successor: the replica count
// shows what is missing. Shared-storage devices are unchanged: an owner
// that is removed is replaced by the leader, as before.
type RemoveNode struct {
	Name string `json:"name"`
}

func (*RemoveNode) Type() CommandType { return TypeRemoveNode }

func (c *RemoveNode) check() error { return checkName("node", c.Name) }

func (c *RemoveNode) apply(s *State, _ Env) (any, error) {
	if s.Nodes[c.Name] == nil {
		return nil, errorf(CodeNotFound, "no node %q", c.Name)
	}
	// Sorted, so that every node refuses naming the same device.
	for _, name := range SortedKeys(s.Devices) {
		d := s.Devices[name]
		switch {
		case !d.Replicated():
			continue
		case d.Owner == c.Name:
			return nil, errorf(CodeConflict, "node %s owns the replicated LUN %s: move it to another in-sync replica first", c.Name, name)
		case !d.IsInSync(c.Name):
			continue
		case len(d.InSync) == 1:
			return nil, errorf(CodeConflict, "node %s holds the only in-sync copy of LUN %s: resync another replica first", c.Name, name)
		}
		n := d.clone()
		n.InSync = slices.DeleteFunc(n.InSync, func(r string) bool { return r == c.Name })
		s.Devices[name] = n
	}
	delete(s.Nodes, c.Name)
	return nil, nil
}
