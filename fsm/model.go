package fsm

import (
	"maps"
	"slices"
	"sort"
)

// State is the whole replicated configuration. A State is never modified
// once published: Apply returns a new one sharing what did not change, so
// readers need no lock.
type State struct {
	// Index is the Raft index of the last applied entry: the configuration
	// generation a node serves.
	Index   uint64             `json:"index"`
	Nodes   map[string]*Node   `json:"nodes"`
	Devices map[string]*Device `json:"devices"`
	Targets map[string]*Target `json:"targets"`
	// Reservations is the serialised reservation state of each device, as
	// the ReservationMachine keeps it; absent means no reservation state.
	Reservations map[string][]byte `json:"reservations,omitempty"`
	// DiscoveryUsers require CHAP on discovery sessions when non-empty.
	DiscoveryUsers []CHAPUser `json:"discovery_users,omitempty"`
	// NextPortGroup is the next target port group id to allocate.
	NextPortGroup uint16 `json:"next_port_group,omitempty"`
	// ClusterVersion is the active cluster version (version.go); zero, as
	// in every state older releases wrote, reads as ClusterVersionBase. It
	// is left out of the encoding until an upgrade is finalized, so that
	// the snapshots of a cluster in the middle of an upgrade still load in
	// the previous release, whose decoding is strict.
	ClusterVersion uint16 `json:"cluster_version,omitempty"`
	// Tokens are the API tokens by name (tokens.go); TokensSince is the
	// index of the entry that bootstrapped them, zero while the API is
	// open. Both are left out of the encoding until then, so that states
	// without tokens encode as older releases wrote them.
	Tokens      map[string]*Token `json:"tokens,omitempty"`
	TokensSince uint64            `json:"tokens_since,omitempty"`
}

// Empty returns the state of a new cluster.
func Empty() *State {
	return &State{Nodes: map[string]*Node{}, Devices: map[string]*Device{}, Targets: map[string]*Target{}}
}

// Node is one member of the cluster as Raft knows it.
type Node struct {
	Name string `json:"name"`
	// Addresses are host:port strings of the node's services.
	ISCSIAddr  string `json:"iscsi_addr"`
	APIAddr    string `json:"api_addr"`
	RaftAddr   string `json:"raft_addr"`
	GossipAddr string `json:"gossip_addr"`
	// PortGroup is the node's target port group id, allocated once.
	PortGroup uint16 `json:"port_group"`
	// Version is the node's release; Protocol the highest command protocol
	// it decodes.
	Version  string `json:"version"`
	Protocol uint16 `json:"protocol"`
	// Drained nodes own no LUN: new owners are chosen elsewhere.
	Drained bool `json:"drained,omitempty"`
	// Incarnation names the node's data directory (cluster/incarnation.go):
	// a new one means the node lost its data. Recorded from cluster
	// version 2 (ClusterVersionIncarnation); empty before.
	Incarnation string `json:"incarnation,omitempty"`
}

// Handlers a device can use.
const (
	HandlerFileIO  = "fileio"
	HandlerBlockIO = "blockio"
	HandlerNullIO  = "nullio"
)

// Device is the storage and identity of one logical unit.
type Device struct {
	Name    string `json:"name"`
	Handler string `json:"handler"`
	// Path is the backing file or block device (shared storage: the same
	// path on every node); empty for nullio.
	Path string `json:"path,omitempty"`
	// Size in bytes; zero means the size of the file or device.
	Size      int64  `json:"size,omitempty"`
	BlockSize uint32 `json:"block_size"`
	// Create: the file is created (sparse, Size bytes) where it is missing,
	// and grown on resize. False for existing files and devices.
	Create       bool `json:"create,omitempty"`
	ReadOnly     bool `json:"read_only,omitempty"`
	NVCache      bool `json:"nv_cache,omitempty"`
	WriteThrough bool `json:"write_through,omitempty"`
	Thin         bool `json:"thin,omitempty"`
	Removable    bool `json:"removable,omitempty"`
	Rotational   bool `json:"rotational,omitempty"`
	// AllowSanitize lets initiators erase the device with SANITIZE.
	AllowSanitize bool `json:"allow_sanitize,omitempty"`
	// Serial (VPD 0x80) and NAA (VPD 0x83, hex) are generated once by the
	// leader and never change.
	Serial string `json:"serial"`
	NAA    string `json:"naa"`
	// T10DeviceID, VendorID and ProductID override the INQUIRY identity.
	T10DeviceID string `json:"t10_device_id,omitempty"`
	VendorID    string `json:"vendor_id,omitempty"`
	ProductID   string `json:"product_id,omitempty"`
	// Owner is the node whose port group is active/optimized for the LUN;
	// Epoch counts ownership changes (every SetOwner raises it), so that
	// a node acting on an older ownership can be told apart.
	Owner string `json:"owner,omitempty"`
	Epoch uint64 `json:"epoch,omitempty"`
	// Standby: nodes other than the owner report standby rather than
	// active/non-optimized.
	Standby bool `json:"standby,omitempty"`
	// Replicas are the nodes holding a copy of the device's blocks, the
	// owner included, sorted by name; the owner's writes are replicated
	// synchronously to the in-sync ones. Empty means shared storage:
	// every node reaches the same backing store and nothing is
	// replicated. Replicas never change except by ReplaceReplica.
	Replicas []string `json:"replicas,omitempty"`
	// InSync is the in-sync set S ⊆ Replicas, sorted by name: the
	// replicas known to hold every acknowledged write. While the device
	// has an owner, the owner is in it; it is never empty for a
	// replicated device, and always empty for shared storage. Only a
	// member of InSync can become owner (SetOwner), except by the
	// operator's ForcePromote, which makes the new owner the only member.
	// A new device starts with InSync = Replicas (fresh copies are
	// identical).
	InSync []string `json:"in_sync,omitempty"`
}

// Replicated reports whether the device's blocks are replicated between
// nodes' own disks, rather than on shared storage.
func (d *Device) Replicated() bool { return len(d.Replicas) > 0 }

// HasReplica reports whether node holds a copy of the device.
func (d *Device) HasReplica(node string) bool { return slices.Contains(d.Replicas, node) }

// IsInSync reports whether node is in the device's in-sync set.
func (d *Device) IsInSync(node string) bool { return slices.Contains(d.InSync, node) }

// clone returns a copy of d that shares no slice with it.
func (d *Device) clone() *Device {
	c := *d
	c.Replicas = slices.Clone(d.Replicas)
	c.InSync = slices.Clone(d.InSync)
	return &c
}

// CHAPUser is one CHAP credential.
type CHAPUser struct {
	User   string `json:"user"`
	Secret string `json:"secret"`
}

// Param is one iSCSI negotiation key with its scst.conf name.
type Param struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// LUN maps a device to a logical unit number.
type LUN struct {
	Number   uint64 `json:"lun"`
	Device   string `json:"device"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// InitiatorGroup gives the initiators matching its patterns their own LUN
// map (LUN masking).
type InitiatorGroup struct {
	Name       string   `json:"name"`
	Initiators []string `json:"initiators"`
	LUNs       []LUN    `json:"luns,omitempty"`
}

// Target is one iSCSI target, served on every node.
type Target struct {
	IQN     string `json:"iqn"`
	Alias   string `json:"alias,omitempty"`
	Enabled bool   `json:"enabled"`
	// LUNs are what initiators outside every group see, by number.
	LUNs   []LUN            `json:"luns,omitempty"`
	Groups []InitiatorGroup `json:"groups,omitempty"`
	// AllowedInitiators restricts logins (name patterns); empty allows all.
	AllowedInitiators []string   `json:"allowed_initiators,omitempty"`
	IncomingUsers     []CHAPUser `json:"incoming_users,omitempty"`
	OutgoingUser      *CHAPUser  `json:"outgoing_user,omitempty"`
	// Params are negotiation keys, sorted by key.
	Params []Param `json:"params,omitempty"`
}

// clone returns a deep copy of t, so that Apply can change it.
func (t *Target) clone() *Target {
	c := *t
	c.LUNs = slices.Clone(t.LUNs)
	c.Groups = make([]InitiatorGroup, len(t.Groups))
	for i, g := range t.Groups {
		g.Initiators = slices.Clone(g.Initiators)
		g.LUNs = slices.Clone(g.LUNs)
		c.Groups[i] = g
	}
	c.AllowedInitiators = slices.Clone(t.AllowedInitiators)
	c.IncomingUsers = slices.Clone(t.IncomingUsers)
	if t.OutgoingUser != nil {
		u := *t.OutgoingUser
		c.OutgoingUser = &u
	}
	c.Params = slices.Clone(t.Params)
	return &c
}

// lun returns the mapping of number n in the default map, or nil.
func (t *Target) lun(n uint64) *LUN {
	for i := range t.LUNs {
		if t.LUNs[i].Number == n {
			return &t.LUNs[i]
		}
	}
	return nil
}

// Mappings lists where a device is mapped: "IQN LUN n" or
// "IQN group G LUN n".
func (s *State) Mappings(device string) []Mapping {
	var out []Mapping
	for _, iqn := range SortedKeys(s.Targets) {
		t := s.Targets[iqn]
		for _, l := range t.LUNs {
			if l.Device == device {
				out = append(out, Mapping{Target: iqn, LUN: l.Number, ReadOnly: l.ReadOnly})
			}
		}
		for _, g := range t.Groups {
			for _, l := range g.LUNs {
				if l.Device == device {
					out = append(out, Mapping{Target: iqn, Group: g.Name, LUN: l.Number, ReadOnly: l.ReadOnly})
				}
			}
		}
	}
	return out
}

// Mapping is one place a device is mapped.
type Mapping struct {
	Target   string `json:"target"`
	Group    string `json:"group,omitempty"`
	LUN      uint64 `json:"lun"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// SortedKeys returns the keys of m in ascending order.
func SortedKeys[V any](m map[string]V) []string {
	keys := slices.Collect(maps.Keys(m))
	sort.Strings(keys)
	return keys
}

// next returns a copy of s to be changed by one command: the maps are
// copied, their values shared until a command replaces them.
func (s *State) next() *State {
	n := *s
	n.Nodes = maps.Clone(s.Nodes)
	n.Devices = maps.Clone(s.Devices)
	n.Targets = maps.Clone(s.Targets)
	n.Reservations = maps.Clone(s.Reservations)
	if n.Nodes == nil {
		n.Nodes = map[string]*Node{}
	}
	if n.Devices == nil {
		n.Devices = map[string]*Device{}
	}
	if n.Targets == nil {
		n.Targets = map[string]*Target{}
	}
	return &n
}
