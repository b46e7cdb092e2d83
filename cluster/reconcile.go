package cluster

import (
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/hatarget/hatarget/alua"

	"github.com/hatarget/hatarget/fsm"
	"github.com/hatarget/hatarget/target"
	"github.com/hatarget/hatarget/target/backend"
)

// reconcileLoop hands the dataplane every new configuration: on every
// applied change, membership change and lease change, and every tick (a
// lease runs out without any event). Changes that arrive while one is
// being applied coalesce into the next Apply.
func (n *Node) reconcileLoop() {
	var applied *target.Config
	tick := time.NewTicker(reconcileTick)
	defer tick.Stop()
	failed := false
	for {
		changed := n.fsm.Changed()
		s := n.fsm.State()
		cfg := dataplaneConfig(s, n.local(), n.clusterView())
		if applied == nil || failed || !reflect.DeepEqual(*applied, cfg) {
			err := n.reconcile(cfg)
			if failed = err != nil; failed {
				// Leave the old configuration serving; a later change or
				// tick may succeed (a file that appears, say).
				n.log.Error("applying the configuration", "generation", s.Index, "err", err)
				n.metrics.reconcileFailed()
			} else {
				applied = &cfg
			}
		}
		n.attempted.Store(s.Index)
		if !failed {
			n.served.Store(s.Index)
			// A grant made at this state or before may now be used.
			n.applyGrant()
		}
		select {
		case <-n.stop:
			return
		case <-changed:
		case <-n.reconcileWake:
		case <-tick.C:
		}
	}
}

// reconcileTick bounds how long a lease that ran out goes unnoticed by the
// dataplane; a failed Apply is retried at the same pace.
const reconcileTick = 200 * time.Millisecond

func (n *Node) reconcile(cfg target.Config) error {
	if n.cfg.Dataplane == nil {
		return nil
	}
	return n.cfg.Dataplane.Apply(cfg)
}

// clusterView is what, beyond the replicated state, decides ALUA states
// and forwarding: which nodes gossip sees alive, whether this node holds
// its lease, and where each node accepts forwarded commands.
type clusterView struct {
	alive map[string]bool
	fwd   map[string]string
	repl  map[string]string // replication addresses
	inc   map[string]string // incarnations
	lease bool
}

// gone reports whether gossip declared node dead (a node it never saw is
// not gone: it may be new).
func (v clusterView) gone(node string) bool {
	alive, known := v.alive[node]
	return known && !alive
}

func (n *Node) clusterView() clusterView {
	v := clusterView{alive: map[string]bool{}, fwd: map[string]string{}, repl: map[string]string{}, inc: map[string]string{}, lease: n.holdsLease()}
	for name, m := range n.members() {
		v.alive[name] = m.State == memberlist.StateAlive
		if m.MetaErr == nil {
			v.fwd[name] = m.Meta.Fwd
			v.repl[name] = m.Meta.Repl
			v.inc[name] = m.Meta.Inc
		}
	}
	return v
}

// localNode is what of this node's own configuration shapes its
// dataplane: its name, and where its copies of replicated LUNs live.
type localNode struct {
	name        string
	storageDir  string
	incarnation string
}

func (n *Node) local() localNode {
	return localNode{name: n.cfg.Name, storageDir: n.storageDir(), incarnation: n.incarnation}
}

// dataplaneConfig is what node self serves of state s: every enabled
// target on every node, advertising every node's portal.
func dataplaneConfig(s *fsm.State, me localNode, view clusterView) target.Config {
	self := me.name
	var cfg target.Config
	for _, name := range fsm.SortedKeys(s.Devices) {
		cfg.Devices = append(cfg.Devices, dataplaneDevice(s.Devices[name], me))
	}
	portals := clusterPortals(s)
	// Each node is its own port group with one port per target: its port
	// group id doubles as the relative port id and portal group tag, so
	// that every path an initiator sees has distinct identifiers.
	port := uint16(1)
	if me := s.Nodes[self]; me != nil {
		port = me.PortGroup
	}
	for _, iqn := range fsm.SortedKeys(s.Targets) {
		t := s.Targets[iqn]
		if !t.Enabled {
			continue
		}
		cfg.Targets = append(cfg.Targets, dataplaneTarget(t, portals, port))
	}
	for _, u := range s.DiscoveryUsers {
		cfg.DiscoveryUsers = append(cfg.DiscoveryUsers, target.CHAPUser{User: u.User, Secret: u.Secret})
	}
	cfg.PortGroups = portGroups(s, self, view)
	cfg.Owners = owners(s, self, view, reincarnated(s.Nodes[self], me.incarnation))
	cfg.Replication = replication(s, view)
	return cfg
}

// replication describes every owned replicated device: its owner and
// epoch (whose writes the copies take), where the other in-sync copies
// are (where the owner writes), and the copies out of the in-sync set
// that gossip sees alive (those the owner resyncs and readmits). An
// in-sync node gossip lost stays listed: the owner must fail to reach it
// and drop it from the in-sync set before acknowledging writes without
// it.
func replication(s *fsm.State, view clusterView) map[string]target.Replication {
	out := map[string]target.Replication{}
	for name, d := range s.Devices {
		if !d.Replicated() || d.Owner == "" {
			continue
		}
		r := target.Replication{Owner: d.Owner, Epoch: d.Epoch, Replicas: slices.Clone(d.Replicas),
			ResumeState: s.ActiveVersion() >= fsm.ClusterVersionReplicaState}
		for _, node := range d.InSync {
			if node != d.Owner {
				r.Peers = append(r.Peers, target.Replica{Node: node, Addr: view.repl[node]})
			}
		}
		for _, node := range d.Replicas {
			if node != d.Owner && !d.IsInSync(node) && view.alive[node] && view.repl[node] != "" {
				r.Resync = append(r.Resync, target.Replica{Node: node, Addr: view.repl[node]})
			}
		}
		out[name] = r
	}
	return out
}

// owners tells the dataplane, for every owned LUN, whether this node
// executes its commands or where to forward them. A LUN whose owner's
// forwarding address is unknown (an old node, or one never seen) gets no
// entry and executes here, as before forwarding existed.
//
// A node whose data dir was wiped (stranger: its record names another
// incarnation) executes nothing it owns: its copies are empty until the
// leader has moved its LUNs to in-sync copies (forgetCopies), and until
// then it refuses them as an owner that is gone.
func owners(s *fsm.State, self string, view clusterView, stranger bool) map[string]target.Owner {
	out := map[string]target.Owner{}
	for name, d := range s.Devices {
		switch {
		case d.Owner == "":
		case d.Owner == self:
			out[name] = target.Owner{Epoch: d.Epoch, Gone: stranger}
		case view.fwd[d.Owner] != "":
			out[name] = target.Owner{Addr: view.fwd[d.Owner], Epoch: d.Epoch, Gone: view.gone(d.Owner)}
		}
	}
	return out
}

// portGroups gives every owned device its ALUA groups, one per node: the
// owner's active/optimized while it holds its lease, the others
// active/non-optimized or standby as the device's policy says, and nodes
// gossip sees gone offline. The owner enforces the table for every command
// it executes, its own and those forwarded to it; a node that lost its
// lease reports every group transitioning, so it executes nothing until it
// has heard from a quorum again.
func portGroups(s *fsm.State, self string, view clusterView) map[string][]alua.Group {
	nodes := make([]alua.Node, 0, len(s.Nodes))
	for _, name := range fsm.SortedKeys(s.Nodes) {
		nd := s.Nodes[name]
		nodes = append(nodes, alua.Node{Name: name, Group: nd.PortGroup, Ports: []uint16{nd.PortGroup},
			Alive: !view.gone(name), Lease: name != self || view.lease})
	}
	out := map[string][]alua.Group{}
	for name, d := range s.Devices {
		if d.Owner == "" {
			continue
		}
		policy := alua.NonOwnerActive
		if d.Standby {
			policy = alua.NonOwnerStandby
		}
		groups := alua.Groups(alua.LUN{Owner: d.Owner, Policy: policy}, nodes)
		// Without a lease this node knows nothing for sure. (With the
		// owner gone, the other groups stay as they are: their commands
		// wait for the failover, scsi.LU.SetOwnerGone.)
		if !view.lease {
			for i := range groups {
				groups[i].State, groups[i].Preferred = alua.Transitioning, false
			}
		}
		out[name] = groups
	}
	return out
}

// backendHandlers maps the cluster's handler names to SCST's.
var backendHandlers = map[string]backend.Handler{
	fsm.HandlerFileIO:  backend.FileIO,
	fsm.HandlerBlockIO: backend.BlockIO,
	fsm.HandlerNullIO:  backend.NullIO,
}

func dataplaneDevice(d *fsm.Device, me localNode) target.Device {
	return target.Device{
		Name:          d.Name,
		Backend:       localStorage(d, me),
		Serial:        d.Serial,
		NAA:           d.NAA,
		T10DeviceID:   d.T10DeviceID,
		VendorID:      d.VendorID,
		ProductID:     d.ProductID,
		Rotational:    d.Rotational,
		Thin:          d.Thin,
		Removable:     d.Removable,
		AllowSanitize: d.AllowSanitize,
		OwnCopy:       ownCopy(d, me),
	}
}

// ownCopy reports whether this node's storage of d is a copy the cluster
// created under its --storage-dir, which it deletes with the LUN. A copy
// at an absolute --path may be the operator's file or device: it stays.
func ownCopy(d *fsm.Device, me localNode) bool {
	return d.Replicated() && d.Create && d.HasReplica(me.name) && d.Handler != fsm.HandlerNullIO && !filepath.IsAbs(d.Path)
}

// localStorage is where this node keeps a device's blocks: the shared
// path; for a replicated device, this node's own copy (a relative path
// is under its --storage-dir, and a missing file is created sparse), or,
// on a node that holds no copy, a stand-in with the device's geometry and
// no data. Such a node only forwards the device's commands to the owner,
// and can never become owner (owners come from the in-sync replicas).
func localStorage(d *fsm.Device, me localNode) backend.Options {
	o := backend.Options{
		Handler: backendHandlers[d.Handler], Path: d.Path, Size: d.Size, BlockSize: d.BlockSize,
		ReadOnly: d.ReadOnly, NVCache: d.NVCache, WriteThrough: d.WriteThrough,
	}
	switch {
	case !d.Replicated() || o.Handler == backend.NullIO:
	case !d.HasReplica(me.name):
		o.Handler, o.Path = backend.NullIO, ""
	case !filepath.IsAbs(o.Path):
		o.Path = filepath.Join(me.storageDir, o.Path)
	}
	return o
}

func dataplaneTarget(t *fsm.Target, portals []target.Portal, port uint16) target.Target {
	out := target.Target{
		Name:              t.IQN,
		Alias:             t.Alias,
		LUNs:              dataplaneLUNs(t.LUNs),
		AllowedInitiators: t.AllowedInitiators,
		RelativePort:      port,
		PortGroup:         port,
		PortalGroupTag:    port,
		Portals:           portals,
	}
	for _, g := range t.Groups {
		out.Groups = append(out.Groups, target.InitiatorGroup{Name: g.Name, Initiators: g.Initiators, LUNs: dataplaneLUNs(g.LUNs)})
	}
	for _, u := range t.IncomingUsers {
		out.IncomingUsers = append(out.IncomingUsers, target.CHAPUser{User: u.User, Secret: u.Secret})
	}
	if t.OutgoingUser != nil {
		out.OutgoingUser = &target.CHAPUser{User: t.OutgoingUser.User, Secret: t.OutgoingUser.Secret}
	}
	for _, p := range t.Params {
		out.Params = append(out.Params, target.Param{Key: p.Key, Value: p.Value})
	}
	return out
}

func dataplaneLUNs(luns []fsm.LUN) []target.LUN {
	out := make([]target.LUN, 0, len(luns))
	for _, l := range luns {
		out = append(out, target.LUN{Number: l.Number, Device: l.Device, ReadOnly: l.ReadOnly})
	}
	return out
}

// clusterPortals lists every node's iSCSI portal, tagged with its port
// group, in port group order.
func clusterPortals(s *fsm.State) []target.Portal {
	nodes := make([]*fsm.Node, 0, len(s.Nodes))
	for _, nd := range s.Nodes {
		if nd.ISCSIAddr != "" {
			nodes = append(nodes, nd)
		}
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].PortGroup < nodes[j].PortGroup })
	out := make([]target.Portal, 0, len(nodes))
	for _, nd := range nodes {
		out = append(out, target.Portal{Addr: nd.ISCSIAddr, Tag: nd.PortGroup})
	}
	return out
}
