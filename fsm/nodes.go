package fsm

// Command types for membership.
const (
	TypeRegisterNode CommandType = "register_node"
	TypeRemoveNode   CommandType = "remove_node"
)

// RegisterNode adds a node or updates its addresses and versions. A new
// node gets the lowest free target port group id; a known one keeps its id.
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
		n.PortGroup = old.PortGroup
	} else {
		n.PortGroup = s.freePortGroup()
	}
	s.Nodes[n.Name] = &n
	return &n, nil
}

// freePortGroup returns the lowest port group id no node uses.
func (s *State) freePortGroup() uint16 {
	used := map[uint16]bool{}
	for _, n := range s.Nodes {
		used[n.PortGroup] = true
	}
	id := uint16(1)
	for used[id] {
		id++
	}
	return id
}

// RemoveNode forgets a node.
type RemoveNode struct {
	Name string `json:"name"`
}

func (*RemoveNode) Type() CommandType { return TypeRemoveNode }

func (c *RemoveNode) check() error { return checkName("node", c.Name) }

func (c *RemoveNode) apply(s *State, _ Env) (any, error) {
	if s.Nodes[c.Name] == nil {
		return nil, errorf(CodeNotFound, "no node %q", c.Name)
	}
	delete(s.Nodes, c.Name)
	return nil, nil
}
