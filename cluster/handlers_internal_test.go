package cluster

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm"
)

// TestReplicaCount: a new LUN is replicated on three nodes (every node of
// a smaller cluster) unless it asks for a count, shared storage or nullio.
func TestReplicaCount(t *testing.T) {
	for _, tc := range []struct {
		name  string
		req   api.CreateLUN
		nodes int
		want  int
		err   string
	}{
		{name: "default", req: api.CreateLUN{Size: 1}, nodes: 5, want: 3},
		{name: "default in a cluster of two", req: api.CreateLUN{Size: 1}, nodes: 2, want: 2},
		{name: "default on one node", req: api.CreateLUN{Size: 1}, nodes: 1, want: 1},
		{name: "asked", req: api.CreateLUN{Replicas: 5}, nodes: 5, want: 5},
		{name: "one copy", req: api.CreateLUN{Replicas: 1}, nodes: 3, want: 1},
		{name: "more than the nodes", req: api.CreateLUN{Replicas: 4}, nodes: 3, err: "--replicas 4: want 1 to 3, the number of nodes"},
		{name: "negative", req: api.CreateLUN{Replicas: -2}, nodes: 3, err: "--replicas -2: want 1 to 3"},
		{name: "no node registered yet", req: api.CreateLUN{Size: 1}, nodes: 0, err: "no node has registered"},
		{name: "shared", req: api.CreateLUN{Shared: true, Path: "/srv/a.img"}, nodes: 3, want: 0},
		{name: "shared without a path", req: api.CreateLUN{Shared: true, Size: 1}, nodes: 3, err: "--shared needs --path"},
		{name: "shared and replicas", req: api.CreateLUN{Shared: true, Path: "/srv/a.img", Replicas: 2}, nodes: 3, err: "not both"},
		{name: "nullio", req: api.CreateLUN{Handler: fsm.HandlerNullIO, Size: 1}, nodes: 3, want: 0},
		{name: "nullio replicated", req: api.CreateLUN{Handler: fsm.HandlerNullIO, Replicas: 2}, nodes: 3, err: "nullio handler stores nothing"},
		{name: "nullio shared", req: api.CreateLUN{Handler: fsm.HandlerNullIO, Shared: true}, nodes: 3, err: "nullio handler stores nothing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := replicaCount(tc.req, tc.nodes)
			switch {
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("replicaCount = %d, %v; want an error saying %q", got, err, tc.err)
			case tc.err == "" && (err != nil || got != tc.want):
				t.Fatalf("replicaCount = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

// TestExplainDefaultReplicas: a refusal of the default replication keeps
// its code and message and says how to ask for less.
func TestExplainDefaultReplicas(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		code fsm.Code
		msg  string
	}{
		{"too few nodes", &fsm.Error{Code: fsm.CodeConflict, Msg: "3 replicas wanted, but only 2 node(s) can hold one [a b]"}, fsm.CodeConflict,
			"3 replicas wanted, but only 2 node(s) can hold one [a b] (by default this LUN gets 3 replicas: give --replicas with fewer, or --shared"},
		{"old protocol", fmt.Errorf("replicated LUNs need every node at protocol 3: %w", &fsm.Error{Code: fsm.CodeUnsupported, Msg: "upgrade c"}), fsm.CodeUnsupported,
			"replicated LUNs need every node at protocol 3: upgrade c (by default"},
		{"no code", errors.New("no quorum"), fsm.CodeConflict, "no quorum (by default"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := explainDefaultReplicas(tc.err, 3)
			if fsm.CodeOf(err) != tc.code || !strings.HasPrefix(err.Error(), tc.msg) {
				t.Fatalf("explainDefaultReplicas = %s %q; want %s %q...", fsm.CodeOf(err), err, tc.code, tc.msg)
			}
		})
	}
}

// TestReplicaViews: a replica's state comes from gossip (down) and the
// in-sync set; an out-of-sync one the owner reports progress for is
// resyncing, with that progress.
func TestReplicaViews(t *testing.T) {
	d := &fsm.Device{Name: "r0", Owner: "a", Epoch: 2, Replicas: []string{"a", "b", "c", "d"}, InSync: []string{"a", "b"}}
	view := clusterView{alive: map[string]bool{"a": true, "b": true, "c": true, "d": false}}
	copying := api.ResyncProgress{Done: 10, Total: 40, Phase: "copying"}
	for _, tc := range []struct {
		name     string
		progress map[string]api.ResyncProgress
		want     []api.Replica
	}{
		{"no progress", nil, []api.Replica{
			{Node: "a", State: api.ReplicaInSync, Owner: true},
			{Node: "b", State: api.ReplicaInSync},
			{Node: "c", State: api.ReplicaOutOfSync},
			{Node: "d", State: api.ReplicaDown},
		}},
		{"resyncing", map[string]api.ResyncProgress{"c": copying}, []api.Replica{
			{Node: "a", State: api.ReplicaInSync, Owner: true},
			{Node: "b", State: api.ReplicaInSync},
			{Node: "c", State: api.ReplicaResyncing, ResyncDone: 10, ResyncTotal: 40, ResyncPhase: "copying"},
			{Node: "d", State: api.ReplicaDown},
		}},
		{"progress of replicas in sync or down is stale", map[string]api.ResyncProgress{"b": copying, "d": copying}, []api.Replica{
			{Node: "a", State: api.ReplicaInSync, Owner: true},
			{Node: "b", State: api.ReplicaInSync},
			{Node: "c", State: api.ReplicaOutOfSync},
			{Node: "d", State: api.ReplicaDown},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := replicaViews(d, view, tc.progress); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("replicaViews:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
	if got := replicaViews(&fsm.Device{Name: "sh"}, view, nil); got != nil {
		t.Errorf("a LUN on shared storage has replicas %+v", got)
	}
}

// TestMayResync: the owner is asked for progress only when a replica is
// out of sync and not down.
func TestMayResync(t *testing.T) {
	view := clusterView{alive: map[string]bool{"a": true, "b": true, "c": false}}
	for _, tc := range []struct {
		name string
		d    fsm.Device
		want bool
	}{
		{"all in sync", fsm.Device{Owner: "a", Replicas: []string{"a", "b"}, InSync: []string{"a", "b"}}, false},
		{"out of sync, alive", fsm.Device{Owner: "a", Replicas: []string{"a", "b"}, InSync: []string{"a"}}, true},
		{"out of sync, unknown to gossip", fsm.Device{Owner: "a", Replicas: []string{"a", "e"}, InSync: []string{"a"}}, true},
		{"out of sync, down", fsm.Device{Owner: "a", Replicas: []string{"a", "c"}, InSync: []string{"a"}}, false},
		{"no owner", fsm.Device{Replicas: []string{"a", "b"}, InSync: []string{"a"}}, false},
		{"shared storage", fsm.Device{Owner: "a"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := mayResync(&tc.d, view); got != tc.want {
				t.Fatalf("mayResync = %v, want %v", got, tc.want)
			}
		})
	}
}
