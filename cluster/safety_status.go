package cluster

import (
	"github.com/hashicorp/memberlist"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm"
)

// StopSafetyFromStatus is the stop-safety check of node (GET
// /v1/nodes/{name}/safety) run on what the management API of any release
// shows: its status and LUN list. A rolling upgrade's first steps need it,
// while the leader runs a release from before the safety route (v0.1.0
// answers it 404). Such releases do not show which nodes are drained;
// drained names those the caller knows are.
func StopSafetyFromStatus(st *api.ClusterStatus, luns []api.LUN, node string, drained ...string) api.StopSafety {
	s := &fsm.State{Nodes: map[string]*fsm.Node{}, Devices: map[string]*fsm.Device{}}
	view := clusterView{alive: map[string]bool{}}
	var voters []string
	for _, row := range st.Nodes {
		s.Nodes[row.Name] = &fsm.Node{Name: row.Name}
		view.alive[row.Name] = row.Gossip == gossipState(memberlist.StateAlive)
		if row.Voter {
			voters = append(voters, row.Name)
		}
	}
	for _, name := range drained {
		if rec := s.Nodes[name]; rec != nil {
			rec.Drained = true
		}
	}
	resyncs := map[string]lunResyncs{}
	for _, l := range luns {
		d, rs := deviceFromView(l)
		s.Devices[d.Name] = d
		resyncs[d.Name] = rs
	}
	return stopSafety(s, stopView{
		voters: voters, leader: st.Leader, view: view,
		owners:  func(d *fsm.Device) []string { return ownerCandidatesIn(s, view, d) },
		resyncs: resyncs,
	}, node)
}

// deviceFromView is what stop safety needs of a LUN as the API shows it:
// its owner, copies and in-sync set, and the resyncs its owner reported.
func deviceFromView(l api.LUN) (*fsm.Device, lunResyncs) {
	d := &fsm.Device{Name: l.Name, Owner: l.Owner}
	rs := lunResyncs{progress: map[string]api.ResyncProgress{}, unavailable: l.ResyncUnavailable}
	for _, r := range l.Replicas {
		d.Replicas = append(d.Replicas, r.Node)
		if r.State == api.ReplicaInSync {
			d.InSync = append(d.InSync, r.Node)
		}
		if r.ResyncPhase != "" {
			rs.progress[r.Node] = api.ResyncProgress{Done: r.ResyncDone, Total: r.ResyncTotal, Phase: r.ResyncPhase, Error: r.ResyncError}
		}
	}
	return d, rs
}
