package cluster

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm"
)

// testState is a state with nodes n1..n3 (drained as given) and devs.
func testState(drained []string, devs ...*fsm.Device) *fsm.State {
	s := fsm.Empty()
	for _, name := range []string{"n1", "n2", "n3"} {
		s.Nodes[name] = &fsm.Node{Name: name, Drained: slices.Contains(drained, name)}
	}
	for _, d := range devs {
		s.Devices[d.Name] = d
	}
	return s
}

// testOwners is ownerCandidatesIn over a view.
func testOwners(s *fsm.State, view clusterView) func(*fsm.Device) []string {
	return func(d *fsm.Device) []string { return ownerCandidatesIn(s, view, d) }
}

func replicated(name, owner string, replicas, inSync []string) *fsm.Device {
	return &fsm.Device{Name: name, Owner: owner, Epoch: 1, Replicas: replicas, InSync: inSync}
}

func shared(name, owner string) *fsm.Device { return &fsm.Device{Name: name, Owner: owner, Epoch: 1} }

func TestStopSafety(t *testing.T) {
	all := []string{"n1", "n2", "n3"}
	aliveAll := map[string]bool{"n1": true, "n2": true, "n3": true}
	n1Down := map[string]bool{"n1": false, "n2": true, "n3": true}
	tests := []struct {
		name    string
		node    string
		drained []string
		alive   map[string]bool
		leader  string
		resyncs map[string]lunResyncs
		devs    []*fsm.Device
		// want: safe, blocked, idle, and what the reasons and pending
		// say, in order.
		safe, blocked, idle bool
		reasons, pending    []string
	}{
		{name: "drained node owning nothing", node: "n2", drained: []string{"n2"}, alive: aliveAll, leader: "n1",
			devs: []*fsm.Device{replicated("r0", "n1", all, all), shared("s0", "n3")},
			safe: true, idle: true},
		{name: "undrained leader owning LUNs others can take", node: "n1", alive: aliveAll, leader: "n1",
			devs: []*fsm.Device{replicated("r0", "n1", all, all), shared("s0", "n1")},
			safe: true, pending: []string{"LUN r0: n1 still owns it (n2, n3 can take it over)", "LUN s0: n1 still owns it (n2, n3 can take it over)",
				"n1 is not drained", "n1 leads Raft"}},
		{name: "quorum lost without the node", node: "n2", drained: []string{"n2"}, alive: n1Down, leader: "n3",
			blocked: true, idle: true, reasons: []string{"Raft would lose its quorum: without n2, 1 of 3 voters are alive (n3) and 2 are needed"}},
		{name: "only in-sync copy, resync running", node: "n2", drained: []string{"n2"}, alive: aliveAll, leader: "n1",
			devs:    []*fsm.Device{replicated("db3", "n2", []string{"n1", "n2"}, []string{"n2"})},
			resyncs: map[string]lunResyncs{"db3": {progress: map[string]api.ResyncProgress{"n1": {Done: 45, Total: 100, Phase: "copying"}}}},
			idle:    true, reasons: []string{"LUN db3: n2 holds its only in-sync copy (n1 is out of sync, resyncing 45%)"}},
		{name: "only in-sync copy, no resync", node: "n2", drained: []string{"n2"}, alive: map[string]bool{"n1": true, "n2": true, "n3": false}, leader: "n1",
			devs:    []*fsm.Device{replicated("db3", "n2", all, []string{"n2", "n3"})},
			resyncs: map[string]lunResyncs{"db3": {progress: map[string]api.ResyncProgress{}}},
			blocked: true, idle: true, reasons: []string{"Raft would lose its quorum: without n2, 1 of 3 voters are alive (n1) and 2 are needed",
				"LUN db3: n2 holds its only in-sync copy (n1 is out of sync, no resync running; n3 is down)"}},
		{name: "only in-sync copy, owner's account unavailable", node: "n2", drained: []string{"n2"}, alive: aliveAll, leader: "n1",
			devs:    []*fsm.Device{replicated("db3", "n1", []string{"n1", "n2"}, []string{"n1", "n2"})},
			resyncs: map[string]lunResyncs{},
			safe:    true, idle: true},
		{name: "only copy of a single-replica LUN", node: "n3", drained: []string{"n3"}, alive: aliveAll, leader: "n1",
			devs: []*fsm.Device{replicated("one", "n3", []string{"n3"}, []string{"n3"})}, blocked: true, idle: true,
			reasons: []string{"LUN one: n3 holds its only copy (the LUN has a single replica)"}},
		{name: "progress unavailable: may resync, not blocked", node: "n2", drained: []string{"n2"}, alive: aliveAll, leader: "n1",
			devs:    []*fsm.Device{replicated("db3", "n2", []string{"n1", "n2"}, []string{"n2"})},
			resyncs: map[string]lunResyncs{"db3": {unavailable: "progress unavailable: the owner n2 did not answer within 1s"}},
			idle:    true, reasons: []string{"LUN db3: n2 holds its only in-sync copy (n1 is out of sync); progress unavailable: the owner n2 did not answer within 1s"}},
		{name: "owned LUN only the node can own", node: "n1", alive: aliveAll, drained: []string{"n2", "n3"}, leader: "n3",
			devs: []*fsm.Device{replicated("r0", "n1", all, all), shared("s0", "n1")}, blocked: true,
			reasons: []string{"LUN r0: n1 owns it and no other live, undrained node with an in-sync copy can take it over",
				"LUN s0: n1 owns it and no other live, undrained node can take it over"},
			pending: []string{"n1 is not drained"}},
		{name: "other in-sync copy on a drained node keeps the data", node: "n1", drained: []string{"n1", "n2"}, alive: aliveAll, leader: "n3",
			devs: []*fsm.Device{replicated("r0", "n3", []string{"n1", "n2"}, []string{"n1", "n2"})}, safe: true, idle: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := testState(tt.drained, tt.devs...)
			view := clusterView{alive: tt.alive}
			got := stopSafety(s, stopView{voters: all, leader: tt.leader, view: view, owners: testOwners(s, view), resyncs: tt.resyncs}, tt.node)
			if got.Node != tt.node || got.Safe != tt.safe || got.Blocked != tt.blocked || got.Idle != tt.idle ||
				!slices.Equal(got.Reasons, tt.reasons) || !slices.Equal(got.Pending, tt.pending) {
				t.Errorf("stopSafety(%s):\n got safe %v blocked %v idle %v\n  reasons %q\n  pending %q\nwant safe %v blocked %v idle %v\n  reasons %q\n  pending %q",
					tt.node, got.Safe, got.Blocked, got.Idle, got.Reasons, got.Pending, tt.safe, tt.blocked, tt.idle, tt.reasons, tt.pending)
			}
		})
	}
}

func TestQuorumWithout(t *testing.T) {
	tests := []struct {
		voters []string
		alive  map[string]bool
		node   string
		want   string // a part of the reason; "" when the quorum holds
	}{
		{[]string{"a", "b", "c"}, map[string]bool{"a": true, "b": true, "c": true}, "a", ""},
		{[]string{"a", "b", "c"}, map[string]bool{"a": true, "b": true}, "a", "1 of 3 voters are alive (b) and 2 are needed"},
		{[]string{"a", "b"}, map[string]bool{"a": true, "b": true}, "a", "1 of 2 voters are alive (b) and 2 are needed"},
		{[]string{"a"}, map[string]bool{"a": true}, "a", "0 of 1 voters are alive () and 1 are needed"},
		{[]string{"a", "b", "c", "d", "e"}, map[string]bool{"a": true, "b": true, "c": true, "d": true}, "a", ""},
		{[]string{"a", "b", "c"}, map[string]bool{"a": true}, "x", ""}, // not a voter
	}
	for _, tt := range tests {
		got := quorumWithout(tt.voters, clusterView{alive: tt.alive}, tt.node)
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("quorumWithout(%v, alive %v, %s) = %q; want %q", tt.voters, tt.alive, tt.node, got, tt.want)
		}
	}
}

func TestPlanRebalance(t *testing.T) {
	all := []string{"n1", "n2", "n3"}
	view := clusterView{alive: map[string]bool{"n1": true, "n2": true, "n3": true}}
	tests := []struct {
		name    string
		drained []string
		alive   map[string]bool
		devs    []*fsm.Device
		want    []api.LUNMove
	}{
		{name: "balanced", devs: []*fsm.Device{shared("a", "n1"), shared("b", "n2"), shared("c", "n3"), shared("d", "n1")}},
		{name: "all on one node", devs: []*fsm.Device{shared("a", "n1"), shared("b", "n1"), shared("c", "n1"), shared("d", "n1"), shared("e", "n1"), shared("f", "n1")},
			want: []api.LUNMove{{LUN: "a", From: "n1", To: "n2"}, {LUN: "b", From: "n1", To: "n3"}, {LUN: "c", From: "n1", To: "n2"}, {LUN: "d", From: "n1", To: "n3"}}},
		{name: "undrained node after an upgrade", devs: []*fsm.Device{shared("a", "n1"), shared("b", "n1"), shared("c", "n2"), shared("d", "n2"), shared("e", "n1"), shared("f", "n2")},
			want: []api.LUNMove{{LUN: "a", From: "n1", To: "n3"}, {LUN: "c", From: "n2", To: "n3"}}},
		{name: "replicated LUNs move only to in-sync copies", devs: []*fsm.Device{
			replicated("a", "n1", all, []string{"n1"}), replicated("b", "n1", all, []string{"n1"}),
			replicated("c", "n1", all, []string{"n1", "n2"}), replicated("d", "n1", all, all)},
			want: []api.LUNMove{{LUN: "c", From: "n1", To: "n2"}, {LUN: "d", From: "n1", To: "n3"}}},
		{name: "drained and dead nodes take nothing and keep theirs", drained: []string{"n3"}, alive: map[string]bool{"n1": true, "n2": false, "n3": true},
			devs: []*fsm.Device{shared("a", "n1"), shared("b", "n1"), shared("c", "n2"), shared("d", "n2"), shared("e", "n3"), shared("f", "n3")}},
		{name: "unowned LUNs are left to the leader", devs: []*fsm.Device{shared("a", ""), shared("b", ""), shared("c", "n1")}},
		{name: "an idle node takes one", devs: []*fsm.Device{shared("a", "n1"), shared("b", "n1"), shared("c", "n2")},
			want: []api.LUNMove{{LUN: "a", From: "n1", To: "n3"}}},
		{name: "a difference of one is balanced", devs: []*fsm.Device{shared("a", "n1"), shared("b", "n1"), shared("c", "n2"), shared("d", "n3")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := testState(tt.drained, tt.devs...)
			v := view
			if tt.alive != nil {
				v = clusterView{alive: tt.alive}
			}
			got := planRebalance(s, testOwners(s, v))
			if !slices.Equal(got, tt.want) {
				t.Errorf("planRebalance = %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestStopSafetyFromStatus: the check run on what a v0.1.0 leader's API
// shows gives the answer the safety route gives on the same cluster.
func TestStopSafetyFromStatus(t *testing.T) {
	st := &api.ClusterStatus{Leader: "n1", Nodes: []api.NodeStatus{
		{Name: "n1", Voter: true, Gossip: "alive"}, {Name: "n2", Voter: true, Gossip: "alive"}, {Name: "n3", Voter: true, Gossip: "dead"}}}
	luns := []api.LUN{
		{Name: "r0", Owner: "n1", Replicas: []api.Replica{{Node: "n1", State: api.ReplicaInSync}, {Node: "n2", State: api.ReplicaInSync}, {Node: "n3", State: api.ReplicaDown}}},
		{Name: "r1", Owner: "n2", Replicas: []api.Replica{{Node: "n1", State: api.ReplicaResyncing, ResyncDone: 1, ResyncTotal: 4, ResyncPhase: "copying"}, {Node: "n2", State: api.ReplicaInSync}}},
		{Name: "s0", Owner: "n2"},
	}
	tests := []struct {
		node    string
		drained []string
		want    api.StopSafety
	}{
		{node: "n2", drained: []string{"n2"}, want: api.StopSafety{Node: "n2", Blocked: true, Reasons: []string{
			"Raft would lose its quorum: without n2, 1 of 3 voters are alive (n1) and 2 are needed",
			"LUN r1: n2 holds its only in-sync copy (n1 is out of sync, resyncing 25%)"},
			Pending: []string{"LUN s0: n2 still owns it (n1 can take it over)"}}},
		{node: "n1", want: api.StopSafety{Node: "n1", Blocked: true, Reasons: []string{
			"Raft would lose its quorum: without n1, 1 of 3 voters are alive (n2) and 2 are needed"},
			Pending: []string{"LUN r0: n1 still owns it (n2 can take it over)", "n1 is not drained", "n1 leads Raft"}}},
	}
	for _, tt := range tests {
		got := StopSafetyFromStatus(st, luns, tt.node, tt.drained...)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: got %+v\nwant %+v", tt.node, got, tt.want)
		}
	}
}
