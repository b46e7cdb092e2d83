package cluster

import (
	"reflect"
	"testing"

	"github.com/hatarget/hatarget/fsm"
	"github.com/hatarget/hatarget/target"
)

// TestReplicationResync: the owner resyncs the replicas out of the
// in-sync set that gossip sees alive and whose replication address it
// knows; in-sync ones are where it writes, dead or unknown ones wait.
func TestReplicationResync(t *testing.T) {
	s := &fsm.State{Devices: map[string]*fsm.Device{
		"r0": {Name: "r0", Owner: "a", Epoch: 3, Replicas: []string{"a", "b", "c", "d", "e"}, InSync: []string{"a", "b"}},
		"sh": {Name: "sh", Owner: "a", Epoch: 1},
	}}
	view := clusterView{
		alive: map[string]bool{"a": true, "b": true, "c": true, "d": false, "e": true},
		repl:  map[string]string{"a": "A:1", "b": "B:1", "c": "C:1", "d": "D:1"},
	}
	got := replication(s, view)
	want := map[string]target.Replication{"r0": {
		Owner: "a", Epoch: 3,
		Peers:    []target.Replica{{Node: "b", Addr: "B:1"}},
		Resync:   []target.Replica{{Node: "c", Addr: "C:1"}},
		Replicas: []string{"a", "b", "c", "d", "e"},
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("replication:\n got %+v\nwant %+v", got, want)
	}
}
