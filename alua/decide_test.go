package alua

import (
	"slices"
	"testing"
)

// healthy is a live, unfenced, in-sync node holding a lease.
func healthy(name string) Node {
	return Node{Name: name, Alive: true, Lease: true}
}

func TestGroupState(t *testing.T) {
	owned := LUN{Owner: "a"}
	standbyPolicy := LUN{Owner: "a", Policy: NonOwnerStandby}
	moving := LUN{Owner: "a", Moving: true, MoveTo: "b"}
	failover := LUN{Owner: "a", Moving: true} // new owner not chosen yet

	with := func(n Node, f func(*Node)) Node { f(&n); return n }
	dead := func(n *Node) { n.Alive = false }
	fenced := func(n *Node) { n.Fenced = true }
	stale := func(n *Node) { n.OutOfSync = true }
	noLease := func(n *Node) { n.Lease = false }

	tests := []struct {
		name string
		lun  LUN
		node Node
		want State
	}{
		// no owner: every node, whatever its health
		{"no owner, healthy", LUN{}, healthy("a"), Unavailable},
		{"no owner, dead", LUN{}, with(healthy("a"), dead), Unavailable},
		{"no owner, standby policy", LUN{Policy: NonOwnerStandby}, healthy("b"), Unavailable},
		{"no owner, move target", LUN{Moving: true, MoveTo: "b"}, healthy("b"), Unavailable},

		// not alive: offline, reported by peers
		{"dead owner", owned, with(healthy("a"), dead), Offline},
		{"dead non-owner", owned, with(healthy("b"), dead), Offline},
		{"dead and fenced", owned, with(with(healthy("b"), dead), fenced), Offline},
		{"dead move target", moving, with(healthy("b"), dead), Offline},

		// fenced or out of sync: unavailable, whatever the role
		{"fenced owner with lease", owned, with(healthy("a"), fenced), Unavailable},
		{"fenced non-owner", owned, with(healthy("b"), fenced), Unavailable},
		{"fenced move target", moving, with(healthy("b"), fenced), Unavailable},
		{"out-of-sync non-owner", owned, with(healthy("b"), stale), Unavailable},
		{"out-of-sync owner", owned, with(healthy("a"), stale), Unavailable},
		{"out-of-sync under standby policy", standbyPolicy, with(healthy("b"), stale), Unavailable},

		// moves
		{"moving owner", moving, healthy("a"), Transitioning},
		{"move target", moving, healthy("b"), Transitioning},
		{"bystander during move", moving, healthy("c"), ActiveNonOptimized},
		{"bystander during move, standby policy", LUN{Owner: "a", Policy: NonOwnerStandby, Moving: true, MoveTo: "b"}, healthy("c"), Standby},
		{"failover, owner", failover, with(healthy("a"), noLease), Transitioning},
		{"failover, other node", failover, healthy("b"), ActiveNonOptimized},
		{"MoveTo ignored when not moving", LUN{Owner: "a", MoveTo: "b"}, healthy("b"), ActiveNonOptimized},

		// the owner and its lease
		{"owner with lease", owned, healthy("a"), ActiveOptimized},
		{"owner under standby policy", standbyPolicy, healthy("a"), ActiveOptimized},
		{"owner without lease", owned, with(healthy("a"), noLease), Transitioning},
		{"non-owner without lease", owned, with(healthy("b"), noLease), ActiveNonOptimized},

		// other healthy nodes per policy
		{"non-owner, active policy", owned, healthy("b"), ActiveNonOptimized},
		{"non-owner, standby policy", standbyPolicy, healthy("b"), Standby},
		{"non-owner, unknown policy", LUN{Owner: "a", Policy: Policy(7)}, healthy("b"), Standby},
	}
	for _, tt := range tests {
		if got := GroupState(tt.lun, tt.node); got != tt.want {
			t.Errorf("%s: GroupState(%+v, %+v) = %v, want %v", tt.name, tt.lun, tt.node, got, tt.want)
		}
	}
}

// TestGroupStateInvariants walks every combination of facts about a
// three-node cluster and checks the promises other packages rely on.
func TestGroupStateInvariants(t *testing.T) {
	names := []string{"a", "b", "c"}
	for _, lun := range allLUNs(names) {
		for _, nodes := range allClusters(names) {
			optimized := 0
			for _, n := range nodes {
				st := GroupState(lun, n)
				if !Implemented.Has(st) {
					t.Fatalf("GroupState(%+v, %+v) = %v, not in Implemented", lun, n, st)
				}
				allowed, _ := st.MediaAccess()
				healthy := n.Alive && !n.Fenced && !n.OutOfSync
				if allowed && (lun.Owner == "" || !healthy) {
					t.Fatalf("GroupState(%+v, %+v) = %v lets an unusable node serve", lun, n, st)
				}
				if st == ActiveOptimized {
					optimized++
					if n.Name != lun.Owner || !n.Lease || lun.Moving {
						t.Fatalf("GroupState(%+v, %+v) = active/optimized for a node that may not execute", lun, n)
					}
				}
			}
			if optimized > 1 {
				t.Fatalf("LUN %+v has %d active/optimized groups on %+v", lun, optimized, nodes)
			}
		}
	}
}

func allLUNs(names []string) []LUN {
	var luns []LUN
	for _, owner := range append([]string{""}, names...) {
		for _, policy := range []Policy{NonOwnerActive, NonOwnerStandby} {
			luns = append(luns, LUN{Owner: owner, Policy: policy})
			for _, to := range append([]string{""}, names...) {
				luns = append(luns, LUN{Owner: owner, Policy: policy, Moving: true, MoveTo: to})
			}
		}
	}
	return luns
}

// allClusters gives every combination of the four health facts per node.
func allClusters(names []string) [][]Node {
	clusters := [][]Node{nil}
	for i, name := range names {
		var next [][]Node
		for _, c := range clusters {
			for facts := range 16 {
				n := Node{Name: name, Group: uint16(i + 1), Alive: facts&1 != 0, Fenced: facts&2 != 0, OutOfSync: facts&4 != 0, Lease: facts&8 != 0}
				next = append(next, append(slices.Clone(c), n))
			}
		}
		clusters = next
	}
	return clusters
}

func TestGroups(t *testing.T) {
	nodes := []Node{
		{Name: "c", Group: 30, Ports: []uint16{5, 6}, Alive: true},
		{Name: "a", Group: 10, Ports: []uint16{1}, Alive: true, Lease: true},
		{Name: "b", Group: 20, Ports: []uint16{3}, Alive: false},
	}
	got := Groups(LUN{Owner: "a"}, nodes)
	want := []Group{
		{ID: 10, State: ActiveOptimized, Ports: []uint16{1}, Preferred: true},
		{ID: 20, State: Offline, Ports: []uint16{3}},
		{ID: 30, State: ActiveNonOptimized, Ports: []uint16{5, 6}},
	}
	if !equalGroups(got, want) {
		t.Fatalf("Groups = %+v\nwant %+v", got, want)
	}
	// The result must not alias the caller's slices.
	got[2].Ports[0] = 99
	if nodes[0].Ports[0] != 5 {
		t.Fatal("Groups shares Ports with its input")
	}
}

func TestGroupsNoPreferredWithoutServer(t *testing.T) {
	nodes := []Node{healthyIn("a", 1), healthyIn("b", 2)}
	for _, lun := range []LUN{{}, {Owner: "a", Moving: true, MoveTo: "b"}} {
		for _, g := range Groups(lun, nodes) {
			if g.Preferred {
				t.Errorf("LUN %+v: group %d preferred in state %v", lun, g.ID, g.State)
			}
		}
	}
	if got := Groups(LUN{Owner: "a"}, nil); len(got) != 0 {
		t.Errorf("Groups of no nodes = %+v", got)
	}
}

func healthyIn(name string, group uint16) Node {
	n := healthy(name)
	n.Group = group
	return n
}

func equalGroups(a, b []Group) bool {
	return slices.EqualFunc(a, b, func(x, y Group) bool {
		return x.ID == y.ID && x.State == y.State && x.Preferred == y.Preferred &&
			x.Status == y.Status && slices.Equal(x.Ports, y.Ports)
	})
}

func TestPolicyNames(t *testing.T) {
	for _, tt := range []struct {
		p    Policy
		text string
	}{{NonOwnerActive, "active"}, {NonOwnerStandby, "standby"}} {
		if got := tt.p.String(); got != tt.text {
			t.Errorf("String() = %q, want %q", got, tt.text)
		}
		if got, err := ParsePolicy(" " + tt.text); err != nil || got != tt.p {
			t.Errorf("ParsePolicy(%q) = %v, %v", tt.text, got, err)
		}
	}
	if got := Policy(9).String(); got != "policy(9)" {
		t.Errorf("String() of 9 = %q", got)
	}
	if p, err := ParsePolicy("nonoptimized"); err == nil {
		t.Errorf("ParsePolicy(nonoptimized) = %v, want an error", p)
	}
}
