// Package target is the dataplane facade: it serves a plain Config value
// over iSCSI and applies a new Config live (targets and LUNs added, changed
// and removed while sessions run). It knows nothing of where the
// configuration comes from: a scst.conf file for one node, the Raft state
// machine in a cluster.
package target

import (
	"fmt"
	"github.com/hatarget/hatarget/alua"
	"net"
	"sort"
	"strconv"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/iscsi"
)

// CHAPUser is one CHAP credential.
type CHAPUser = iscsi.CHAPUser

// Portal is a network portal (host:port, IPv6 hosts in brackets) with its
// target portal group tag.
type Portal = iscsi.Portal

// Config is everything the dataplane serves.
type Config struct {
	Devices []Device
	Targets []Target
	// DiscoveryUsers require CHAP on discovery sessions when non-empty.
	DiscoveryUsers []CHAPUser
	// PortGroups are, by device name, the ALUA target port groups of the
	// device's LU with their states (a cluster: one group per node). A
	// device without an entry has one active/optimized group.
	PortGroups map[string][]alua.Group
	// Owners are, by device name, the nodes that own the devices' LUs. This
	// node forwards the commands of a device owned elsewhere to its owner
	// and executes the others. A device without an entry executes here (a
	// single node); entries of devices not in Devices are ignored.
	Owners map[string]Owner
	// Replication lists, by device name, the replicated devices: this
	// node's copy is written by their owner (through this node's
	// replication server), or, on the owner, through every in-sync copy.
	Replication map[string]Replication
}

// Owner is where a device's commands execute.
type Owner struct {
	// Addr is the owner's forwarding address (host:port); empty when this
	// node owns the LU.
	Addr string
	// Epoch is the LU's ownership epoch: the owner refuses forwarded
	// commands of another epoch, so that no command executes on a node
	// that lost the LU to a move or failover it has not applied yet.
	Epoch uint64
	// Gone: the owner at Addr is unreachable (gossip declared it dead)
	// and no new owner is known yet. Media commands are refused with the
	// transitioning sense instead of forwarded into a void, and commands
	// still on their way to it are failed at once (scsi.LU.SetOwnerGone).
	Gone bool
}

// Device is one logical unit's storage and identity.
type Device struct {
	Name    string
	Backend backend.Options
	// Serial is the unit serial number (VPD 0x80); NAA the 16-byte NAA
	// designator in hex (VPD 0x83). Empty values are derived from Name.
	Serial string
	NAA    string
	// T10DeviceID, VendorID and ProductID override the INQUIRY identity.
	T10DeviceID string
	VendorID    string
	ProductID   string
	Rotational  bool
	Thin        bool
	Removable   bool
	// AllowSanitize lets initiators erase the whole device with SANITIZE.
	AllowSanitize bool
	// OwnCopy says Backend.Path is a file the cluster created for this
	// node's copy of a replicated device: Apply deletes it when the device
	// leaves the configuration (the LUN was deleted). Never set for a
	// path an operator gave.
	OwnCopy bool
}

// Target is one iSCSI target.
type Target struct {
	Name  string
	Alias string
	// LUNs are what initiators outside every group see.
	LUNs   []LUN
	Groups []InitiatorGroup
	// AllowedInitiators restricts logins (name patterns); empty allows all.
	AllowedInitiators []string
	IncomingUsers     []CHAPUser
	OutgoingUser      *CHAPUser
	// Params are negotiation keys (scst.conf names), applied in order.
	Params []Param
	// RelativePort is the relative target port id (defaults to 1).
	RelativePort uint16
	// PortGroup is this node's target port group id (defaults to 1) and
	// PortalGroupTag the tag its logins answer with (defaults to the
	// server's). In a cluster both identify the node.
	PortGroup      uint16
	PortalGroupTag uint16
	// Portals are what SendTargets discovery lists for the target. In a
	// cluster every node serves every target, so this is every node's
	// portal, each with that node's portal group tag. Empty: the portals
	// this node listens on, with its own tag (Options.ISCSI.PortalGroupTag).
	Portals []Portal
}

// Param is one negotiation key.
type Param struct{ Key, Value string }

// LUN maps a device to a logical unit number.
type LUN struct {
	Number   uint64
	Device   string
	ReadOnly bool
}

// InitiatorGroup gives the initiators matching its patterns their own LUN
// map (SCST's GROUP, i.e. LUN masking).
type InitiatorGroup struct {
	Name       string
	Initiators []string
	LUNs       []LUN
}

// maxLUN is the largest LUN flat space addressing can express.
const maxLUN = 16383

// Validate checks internal consistency: unique names, LUNs that name
// existing devices, LUN numbers in range and unique per map.
func (c *Config) Validate() error {
	devices := map[string]bool{}
	for _, d := range c.Devices {
		if d.Name == "" {
			return fmt.Errorf("device with empty name")
		}
		if devices[d.Name] {
			return fmt.Errorf("device %q defined twice", d.Name)
		}
		devices[d.Name] = true
	}
	targets := map[string]bool{}
	for _, t := range c.Targets {
		if t.Name == "" {
			return fmt.Errorf("target with empty name")
		}
		if targets[t.Name] {
			return fmt.Errorf("target %q defined twice", t.Name)
		}
		targets[t.Name] = true
		if err := validateLUNs(t.LUNs, devices); err != nil {
			return fmt.Errorf("target %s: %w", t.Name, err)
		}
		for _, g := range t.Groups {
			if err := validateLUNs(g.LUNs, devices); err != nil {
				return fmt.Errorf("target %s group %s: %w", t.Name, g.Name, err)
			}
		}
		limits := iscsi.DefaultLimits()
		for _, p := range t.Params {
			if err := limits.SetParam(p.Key, p.Value); err != nil {
				return fmt.Errorf("target %s: %w", t.Name, err)
			}
		}
		for _, p := range t.Portals {
			if err := validateHostPort(p.Addr); err != nil {
				return fmt.Errorf("target %s: portal %w", t.Name, err)
			}
		}
	}
	for name, o := range c.Owners {
		if o.Addr == "" {
			continue
		}
		if err := validateHostPort(o.Addr); err != nil {
			return fmt.Errorf("device %s: owner %w", name, err)
		}
	}
	return nil
}

// validateHostPort checks that addr can be dialled as given: SendTargets
// hands portals over verbatim, and owner addresses go to the node dialer.
func validateHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: %w", addr, err)
	}
	if host == "" {
		return fmt.Errorf("%q: no host", addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%q: bad port %q", addr, port)
	}
	return nil
}

func validateLUNs(luns []LUN, devices map[string]bool) error {
	seen := map[uint64]bool{}
	for _, l := range luns {
		if l.Number > maxLUN {
			return fmt.Errorf("LUN %d: above the maximum %d", l.Number, maxLUN)
		}
		if seen[l.Number] {
			return fmt.Errorf("LUN %d mapped twice", l.Number)
		}
		seen[l.Number] = true
		if !devices[l.Device] {
			return fmt.Errorf("LUN %d: unknown device %q", l.Number, l.Device)
		}
	}
	return nil
}

// sortedLUNs returns the numbers of a LUN map in ascending order.
func sortedLUNs(m map[uint64]lunEntry) []uint64 {
	out := make([]uint64, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
