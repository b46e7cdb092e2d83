package cluster

import (
	"github.com/hatarget/hatarget/alua"
	"slices"
	"sort"
	"time"

	"github.com/hatarget/hatarget/fsm"
	"github.com/hatarget/hatarget/target"
	"github.com/hatarget/hatarget/target/backend"
)

// reconcileLoop hands the dataplane every new configuration. Changes that
// arrive while one is being applied coalesce into the next Apply.
func (n *Node) reconcileLoop() {
	var applied *fsm.State
	var retry <-chan time.Time
	for {
		changed := n.fsm.Changed()
		if s := n.fsm.State(); s != applied {
			err := n.reconcile(applied, s)
			n.attempted.Store(s.Index)
			if err != nil {
				// Leave the old configuration serving; a later change or
				// the retry may succeed (a file that appears, say).
				n.log.Error("applying the configuration", "generation", s.Index, "err", err)
				n.metrics.reconcileFailed()
				retry = time.After(5 * time.Second)
			} else {
				applied, retry = s, nil
				n.served.Store(s.Index)
			}
		}
		select {
		case <-n.stop:
			return
		case <-changed:
		case <-retry:
		}
	}
}

// reconcile hands the dataplane the configuration of s unless it serves
// the same one already.
func (n *Node) reconcile(applied, s *fsm.State) error {
	if n.cfg.Dataplane == nil || sameConfig(applied, s) {
		return nil
	}
	return n.cfg.Dataplane.Apply(dataplaneConfig(s, n.cfg.Name))
}

// sameConfig reports whether two states give the dataplane the same
// configuration: most entries (registrations, refused commands) change
// nothing it serves.
func sameConfig(a, b *fsm.State) bool {
	if a == nil || b == nil {
		return false
	}
	return sameMap(a.Devices, b.Devices) && sameMap(a.Targets, b.Targets) && sameMap(a.Nodes, b.Nodes) &&
		slices.Equal(a.DiscoveryUsers, b.DiscoveryUsers)
}

// sameMap compares by pointer: Apply replaces every value it changes.
func sameMap[V any](a, b map[string]*V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// dataplaneConfig is what node self serves of state s: every enabled
// target on every node, advertising every node's portal.
func dataplaneConfig(s *fsm.State, self string) target.Config {
	var cfg target.Config
	for _, name := range fsm.SortedKeys(s.Devices) {
		cfg.Devices = append(cfg.Devices, dataplaneDevice(s.Devices[name]))
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
	cfg.PortGroups = portGroups(s)
	return cfg
}

// portGroups gives every owned device its ALUA groups, one per node: the
// owner's active/optimized, the others active/non-optimized or standby as
// the device's policy says. Every node computes the same table from the
// same state, so every path reports the same groups.
//
// Until failover arrives every registered node counts as alive and the
// owner as holding its lease; a device without an owner yet keeps the
// single active/optimized group of each port rather than going
// unavailable everywhere.
func portGroups(s *fsm.State) map[string][]alua.Group {
	nodes := make([]alua.Node, 0, len(s.Nodes))
	for _, name := range fsm.SortedKeys(s.Nodes) {
		nd := s.Nodes[name]
		nodes = append(nodes, alua.Node{Name: name, Group: nd.PortGroup, Ports: []uint16{nd.PortGroup}, Alive: true, Lease: true})
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
		out[name] = alua.Groups(alua.LUN{Owner: d.Owner, Policy: policy}, nodes)
	}
	return out
}

// backendHandlers maps the cluster's handler names to SCST's.
var backendHandlers = map[string]backend.Handler{
	fsm.HandlerFileIO:  backend.FileIO,
	fsm.HandlerBlockIO: backend.BlockIO,
	fsm.HandlerNullIO:  backend.NullIO,
}

func dataplaneDevice(d *fsm.Device) target.Device {
	return target.Device{
		Name: d.Name,
		Backend: backend.Options{
			Handler:      backendHandlers[d.Handler],
			Path:         d.Path,
			Size:         d.Size,
			BlockSize:    d.BlockSize,
			ReadOnly:     d.ReadOnly,
			NVCache:      d.NVCache,
			WriteThrough: d.WriteThrough,
		},
		Serial:        d.Serial,
		NAA:           d.NAA,
		T10DeviceID:   d.T10DeviceID,
		VendorID:      d.VendorID,
		ProductID:     d.ProductID,
		Rotational:    d.Rotational,
		Thin:          d.Thin,
		Removable:     d.Removable,
		AllowSanitize: d.AllowSanitize,
	}
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
