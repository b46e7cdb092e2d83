package cluster

import (
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"github.com/hatarget/hatarget/fsm"
)

// backgroundTimeout bounds the leader loop's Raft calls: they are retried
// every second anyway, and must not hold up a shutdown.
const backgroundTimeout = 2 * time.Second

// leaderLoop runs the leader's duties: adding new nodes to Raft, keeping
// every node's record in the configuration up to date, giving LUNs owners
// and finalizing upgrades: with Config.AutoFinalize, and once in a new
// cluster this node bootstrapped (autoFinalizer.check).
func (n *Node) leaderLoop() {
	// The tick bounds how late a failover starts once a dead owner's lease
	// has run out.
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	leading := false
	var finalizer autoFinalizer
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		case <-n.memberEvents:
			finalizer.soon()
		case <-n.raft.LeaderCh():
		}
		if n.raft.State() != raft.Leader {
			leading = false
			if _, id := n.raft.LeaderWithID(); id != "" {
				n.fresh.Store(false)
			}
			continue
		}
		if !leading {
			// Noticed after the election, never before: grants made by
			// earlier leaders are counted until now.
			leading = true
			n.leases.becameLeader(time.Now())
			finalizer.soon()
		}
		if !n.settleWithin(backgroundTimeout) {
			continue
		}
		n.reconcileMembers()
		n.assignOwners()
		if n.cfg.AutoFinalize || n.fresh.Load() {
			finalizer.check(n, time.Now())
		}
	}
}

// assignOwners gives every LUN without an owner, or whose owner is gone,
// one: the alive, undrained node owning the fewest LUNs. A gone owner's
// LUNs move only once its lease has run out: by then it has stopped
// serving by itself, so nothing it still had in flight is executed after
// the new owner starts (failover).
func (n *Node) assignOwners() {
	n.ownerMu.Lock()
	defer n.ownerMu.Unlock()
	state := n.fsm.State()
	for _, name := range fsm.SortedKeys(state.Devices) {
		d := state.Devices[name]
		if d.Owner != "" && state.Nodes[d.Owner] != nil && !n.ownerGone(d.Owner) {
			continue
		}
		owner := state.LeastLoaded(n.ownerCandidatesFor(state, d))
		if owner == "" {
			if d.Replicated() {
				n.log.Warn("no live in-sync replica can take over the LUN: it serves no I/O", "lun", name, "in_sync", d.InSync)
			}
			continue
		}
		set := &fsm.SetOwner{Device: name, Owner: owner, Epoch: d.Epoch}
		if d.Replicated() && d.Owner != "" && d.IsInSync(d.Owner) {
			// The old owner may hold writes no other copy got (never
			// acknowledged): it must resync before it counts again.
			set.Drop = []string{d.Owner}
		}
		res, _, err := n.proposeWithin(set, backgroundTimeout)
		if err != nil {
			n.log.Debug("assigning an owner", "lun", name, "err", err)
			continue
		}
		if d.Owner != "" {
			n.metrics.failedOver(name)
			n.log.Warn("LUN failed over", "lun", name, "from", d.Owner, "to", owner, "epoch", res.(*fsm.Device).Epoch)
		} else {
			n.log.Info("LUN owner assigned", "lun", name, "owner", owner, "epoch", res.(*fsm.Device).Epoch)
		}
		state = n.fsm.State()
	}
}

// ownerGone reports whether an owner is gone: gossip says it is dead, and
// this leader has not granted it a lease for longer than a lease period
// plus the margin. Either alone is not enough: gossip can lose a node
// that still reaches the leader (and so keeps its lease), and a node
// without grants may just be slow to ask.
func (n *Node) ownerGone(name string) bool {
	return n.gossip.gone(name) && time.Now().After(n.failoverAt(name))
}

// placeOwners gives new devices owners, spreading them over the least
// loaded candidates, when every voter understands ownership (protocol 3);
// otherwise they stay unowned until the leader loop can assign them.
func (n *Node) placeOwners(devs ...*fsm.Device) {
	if fsm.CheckDecodable(fsm.TypeSetOwner, n.voterPeers()) != nil {
		return
	}
	state := n.fsm.State()
	candidates := n.ownerCandidates(state)
	planned := state
	for _, d := range devs {
		owner := planned.LeastLoaded(candidates)
		if owner == "" {
			return
		}
		d.Owner, d.Epoch = owner, 1
		// Count the placement for the next device without touching the
		// published state.
		planned = planned.WithDevice(d)
	}
}

// placeReplicas chooses the owner and the replicas of a new replicated
// device: the least loaded live nodes.
func (n *Node) placeReplicas(d *fsm.Device, count int) error {
	if err := fsm.CheckDecodable(fsm.TypeSetInSync, n.voterPeers()); err != nil {
		return fmt.Errorf("replicated LUNs need every node at protocol %d: %w", fsm.ProtocolReplication, err)
	}
	state := n.fsm.State()
	owner, replicas, err := state.PlaceReplicas(n.ownerCandidates(state), count)
	if err != nil {
		return err
	}
	d.Owner, d.Epoch, d.Replicas = owner, 1, replicas
	return nil
}

// ownerCandidatesFor lists the nodes that may own d in this node's view.
func (n *Node) ownerCandidatesFor(state *fsm.State, d *fsm.Device) []string {
	return ownerCandidatesIn(state, n.clusterView(), d)
}

// ownerCandidates lists the registered nodes gossip sees alive that are
// not drained.
func (n *Node) ownerCandidates(state *fsm.State) []string {
	return liveUndrained(state, n.clusterView())
}

// ownerCandidatesIn lists the nodes that may own d: the live, undrained
// nodes, and for a replicated device only those holding an in-sync copy
// (promoting any other would serve stale data).
func ownerCandidatesIn(state *fsm.State, view clusterView, d *fsm.Device) []string {
	all := liveUndrained(state, view)
	if !d.Replicated() {
		return all
	}
	return slices.DeleteFunc(all, func(c string) bool { return !d.IsInSync(c) })
}

// liveUndrained lists the nodes gossip sees alive that are not drained,
// nor back with a wiped data dir (incarnation.go).
func liveUndrained(state *fsm.State, view clusterView) []string {
	var out []string
	for name, rec := range state.Nodes {
		if view.alive[name] && !rec.Drained && !reincarnated(rec, view.inc[name]) {
			out = append(out, name)
		}
	}
	return out
}

// reconcileMembers adds alive gossip members that are not Raft voters,
// and registers (or updates) every voter's record in the state machine.
// Dead members are never removed automatically: `cluster remove` does it.
func (n *Node) reconcileMembers() {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	voters := map[string]raft.Server{}
	for _, s := range f.Configuration().Servers {
		voters[string(s.ID)] = s
	}
	state := n.fsm.State()
	for name, m := range n.members() {
		if m.State != memberlist.StateAlive || m.MetaErr != nil {
			continue
		}
		if v, ok := voters[name]; !ok || string(v.Address) != m.Meta.Raft {
			n.log.Info("adding node to Raft", "member", name, "raft", m.Meta.Raft)
			if err := n.raft.AddVoter(raft.ServerID(name), raft.ServerAddress(m.Meta.Raft), 0, backgroundTimeout).Error(); err != nil {
				n.log.Warn("adding node to Raft", "member", name, "err", err)
				continue
			}
		}
		rec := nodeRecord(m, state.ActiveVersion() >= fsm.ClusterVersionIncarnation)
		if reincarnated(state.Nodes[name], m.Meta.Inc) && !n.forgetIncarnation(state, name, voters) {
			continue
		}
		if !sameNode(state.Nodes[name], rec) {
			if state.Nodes[name] == nil && !n.forgetCopies(state, name) {
				continue
			}
			if _, _, err := n.proposeWithin(&fsm.RegisterNode{Node: rec}, backgroundTimeout); err != nil {
				n.log.Warn("registering node", "member", name, "err", err)
			}
		}
	}
}

// forgetCopies gives a new epoch, out of the in-sync set, to every copy
// of a replicated LUN node holds, when node's copies cannot be trusted:
// it was removed (`cluster remove`, which leaves it among the replicas,
// out of sync) and now joins again, or it came back with a new
// incarnation (its data dir wiped). The owner then replaces its
// replication volume by one that knows nothing of the node's copy, so the
// resync compares all of it. The old volume's dirty bitmap covers only
// what the node missed while it was a member, and copying that alone
// would leave a wiped copy holding zeros everywhere else: a copy that
// could later be promoted. A LUN node owns moves to an in-sync copy; one
// with none stays where it is, unavailable (its owner serves nothing
// until recognised: dataplaneConfig), for an operator's force-promote.
//
// It runs before the node is registered again, so that a leader that
// fails in between leaves the node unregistered and its successor does
// it again. It reports whether every such LUN has its new epoch.
func (n *Node) forgetCopies(state *fsm.State, node string) bool {
	if n.renewed == nil {
		n.renewed = map[string]uint64{}
	}
	ok := true
	for _, name := range fsm.SortedKeys(state.Devices) {
		d := state.Devices[name]
		if !d.Replicated() || !d.HasReplica(node) || d.Owner == "" {
			continue
		}
		if n.renewed[name] == d.Epoch {
			// Renewed already and not moved since: the registration
			// failed, and a new epoch for every retry would stall I/O.
			continue
		}
		owner := d.Owner
		if owner == node {
			others := slices.DeleteFunc(ownerCandidatesIn(state, n.clusterView(), d), func(c string) bool { return c == node })
			if owner = state.LeastLoaded(others); owner == "" {
				n.log.Error("a LUN's owner lost its copy and no other in-sync copy is left: the LUN stays unavailable (hatarget lun force-promote)",
					"lun", name, "owner", node)
				ok = false
				continue
			}
		}
		res, _, err := n.proposeWithin(&fsm.SetOwner{Device: name, Owner: owner, Epoch: d.Epoch, Drop: []string{node}}, backgroundTimeout)
		if err != nil {
			n.log.Warn("renewing the epoch of a LUN a removed replica rejoins", "lun", name, "replica", node, "err", err)
			ok = false
			continue
		}
		epoch := res.(*fsm.Device).Epoch
		n.renewed[name] = epoch
		n.log.Info("a replica whose copy cannot be trusted rejoins: new epoch for the LUN without it in sync, so that its owner compares the whole copy",
			"lun", name, "replica", node, "owner", owner, "epoch", epoch)
	}
	return ok
}

// nodeRecord is what member m says of itself, with its incarnation when
// the cluster version lets records carry one.
func nodeRecord(m member, withIncarnation bool) fsm.Node {
	rec := fsm.Node{Name: m.Name, ISCSIAddr: m.Meta.ISCSI, APIAddr: m.Meta.API, RaftAddr: m.Meta.Raft, GossipAddr: m.Addr,
		Version: m.Meta.Version, Protocol: m.Meta.Protocol}
	if withIncarnation {
		rec.Incarnation = m.Meta.Inc
	}
	return rec
}

// forgetIncarnation handles a node that came back with a new incarnation
// (its data dir wiped): its copies are forgotten (forgetCopies), and it
// leaves the Raft configuration, to be added again by the next
// reconcileMembers as the new voter it is. It reports whether both are
// done; the node's record keeps its old incarnation until then, so a
// leader that fails in between leaves the work to its successor.
func (n *Node) forgetIncarnation(state *fsm.State, node string, voters map[string]raft.Server) bool {
	n.log.Warn("a node came back with a new incarnation (its data directory was wiped): forgetting its copies and its Raft vote",
		"member", node, "was", state.Nodes[node].Incarnation)
	if !n.forgetCopies(state, node) {
		return false
	}
	if _, voter := voters[node]; voter && node != n.cfg.Name {
		if err := n.raft.RemoveServer(raft.ServerID(node), 0, backgroundTimeout).Error(); err != nil {
			n.log.Warn("removing a reincarnated node from Raft", "member", node, "err", err)
			return false
		}
	}
	return true
}

// sameNode compares a stored record with a fresh one, ignoring what the
// cluster decides about the node (port group, drained).
func sameNode(stored *fsm.Node, fresh fsm.Node) bool {
	if stored == nil {
		return false
	}
	s := *stored
	s.PortGroup, s.Drained = 0, false
	return s == fresh
}
