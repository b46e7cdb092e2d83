package alua

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Policy says what nodes other than a LUN's owner report for it.
type Policy uint8

const (
	// NonOwnerActive: other healthy nodes are active/non-optimized and
	// forward media commands to the owner, like the partner controller of a
	// dual-controller array, so initiators that use every path still work.
	NonOwnerActive Policy = iota
	// NonOwnerStandby: other healthy nodes are standby and refuse media
	// commands, for initiators or operators that want one path only.
	NonOwnerStandby
)

var policyNames = map[Policy]string{NonOwnerActive: "active", NonOwnerStandby: "standby"}

func (p Policy) String() string {
	if n, ok := policyNames[p]; ok {
		return n
	}
	return fmt.Sprintf("policy(%d)", uint8(p))
}

// ParsePolicy reads the CLI spelling of a policy (--non-owner active|standby).
func ParsePolicy(text string) (Policy, error) {
	t := strings.ToLower(strings.TrimSpace(text))
	for p, n := range policyNames {
		if t == n {
			return p, nil
		}
	}
	return 0, fmt.Errorf("alua: unknown non-owner policy %q", text)
}

// LUN is what the cluster's FSM says about one logical unit.
type LUN struct {
	// Owner names the node that executes the LUN's commands; empty while
	// the LUN has none.
	Owner  string
	Policy Policy
	// Moving is set while a planned move or a failover is in progress: the
	// owner drains and MoveTo (when known) prepares, both transitioning.
	Moving bool
	MoveTo string
}

// Node is what the caller knows about one node at the moment it answers.
type Node struct {
	Name string
	// Group is the node's target port group id, allocated in Raft.
	Group uint16
	// Ports are the node's relative target port ids for this LUN's target.
	Ports []uint16
	// Alive: gossip and the Raft leader both see the node.
	Alive bool
	// Fenced: the cluster has cut the node off from storage.
	Fenced bool
	// OutOfSync: the node holds no in-sync copy of the LUN (a replica not in
	// the in-sync set). Always false on shared storage.
	OutOfSync bool
	// Lease: the node holds a valid owner lease (it reached a Raft quorum
	// within the lease period). Only the owner's lease matters.
	Lease bool
}

// rule maps the facts about a LUN and a node to a state when it matches.
type rule struct {
	match func(l LUN, n Node) bool
	state State
}

// rules is the decision, first match wins; doc.go shows it as a table. The
// order matters: facts that make a node unusable whatever its role come
// before the role, so a fenced owner is unavailable, never active.
var rules = []rule{
	// Nobody may serve a LUN without an owner; saying so on every path keeps
	// initiators waiting for a path instead of declaring the disk gone.
	{func(l LUN, n Node) bool { return l.Owner == "" }, Unavailable},
	// A node that is not alive cannot answer; only its peers report it.
	{func(l LUN, n Node) bool { return !n.Alive }, Offline},
	{func(l LUN, n Node) bool { return n.Fenced }, Unavailable},
	{func(l LUN, n Node) bool { return n.OutOfSync }, Unavailable},
	// During a move the old owner drains and the new one prepares; both say
	// transitioning so initiators retry instead of failing the I/O.
	{func(l LUN, n Node) bool { return l.Moving && (isOwner(l, n) || n.Name == l.MoveTo) }, Transitioning},
	// An owner that lost its lease has stopped serving by itself, before
	// the leader may promote another node.
	{func(l LUN, n Node) bool { return isOwner(l, n) && !n.Lease }, Transitioning},
	{func(l LUN, n Node) bool { return isOwner(l, n) }, ActiveOptimized},
	// Any policy but NonOwnerActive means standby: an unknown policy must
	// not let a node accept media commands.
	{func(l LUN, n Node) bool { return l.Policy != NonOwnerActive }, Standby},
}

func isOwner(l LUN, n Node) bool { return n.Name == l.Owner }

// GroupState is the asymmetric access state of node n's target port group
// for LUN l.
func GroupState(l LUN, n Node) State {
	for _, r := range rules {
		if r.match(l, n) {
			return r.state
		}
	}
	// A healthy node other than the owner forwards media commands to it.
	return ActiveNonOptimized
}

// Status is the STATUS CODE of a target port group descriptor: why the
// group's state last changed (SPC-4 6.37).
type Status uint8

const (
	StatusNone     Status = 0x0 // no status available
	StatusExplicit Status = 0x1 // altered by SET TARGET PORT GROUPS
	StatusImplicit Status = 0x2 // altered by implicit asymmetric access behaviour
)

// Group is one target port group as REPORT TARGET PORT GROUPS describes it.
type Group struct {
	ID    uint16
	State State
	// Ports are the relative target port ids in the group.
	Ports []uint16
	// Preferred sets the PREF bit: the group is the preferred way to the LU.
	Preferred bool
	Status    Status
}

// Equal reports whether two groups describe the same thing.
func (g Group) Equal(o Group) bool {
	return g.ID == o.ID && g.State == o.State && g.Preferred == o.Preferred && g.Status == o.Status && slices.Equal(g.Ports, o.Ports)
}

// Groups describes every node's group for LUN l, sorted by group id so every
// node reports the same bytes. Only an active/optimized group is preferred:
// the PREF bit then always names the path to use, and no path while none
// can serve. Status is left as StatusNone; the caller knows the history.
func Groups(l LUN, nodes []Node) []Group {
	groups := make([]Group, 0, len(nodes))
	for _, n := range nodes {
		st := GroupState(l, n)
		groups = append(groups, Group{
			ID:        n.Group,
			State:     st,
			Ports:     slices.Clone(n.Ports),
			Preferred: st == ActiveOptimized,
		})
	}
	slices.SortStableFunc(groups, func(a, b Group) int { return cmp.Compare(a.ID, b.ID) })
	return groups
}
