package fsm

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"sort"
)

// Command types for devices and LUNs.
const (
	TypeCreateLUN    CommandType = "create_lun"
	TypeDeleteLUN    CommandType = "delete_lun"
	TypeResizeDevice CommandType = "resize_device"
	TypeReservation  CommandType = "reservation"
	TypeImport       CommandType = "import"
)

// CreateLUN defines a new device and maps it at LUN of a target.
//
// Device.Replicas, filled by the leader (State.PlaceReplicas), makes the
// device replicated: the replicas must be distinct registered nodes, the
// owner (if set) among them; Device.InSync must be left empty, as the
// state machine starts it equal to Replicas. A create carrying replicas
// needs protocol 4 on every voter (CheckCommand).
type CreateLUN struct {
	Target string `json:"target"`
	LUN    uint64 `json:"lun"`
	Device Device `json:"device"`
}

func (*CreateLUN) Type() CommandType { return TypeCreateLUN }

func (c *CreateLUN) check() error {
	if err := CheckIQN(c.Target); err != nil {
		return err
	}
	if err := checkLUNNumber(c.LUN); err != nil {
		return err
	}
	return checkCreated(&c.Device)
}

// checkCreated validates a device a command creates: InSync is the state
// machine's to fill.
func checkCreated(d *Device) error {
	if err := d.Check(); err != nil {
		return err
	}
	if len(d.InSync) > 0 {
		return errorf(CodeInvalid, "device %s: the in-sync set is not set by the proposer (a new device's replicas all start in sync)", d.Name)
	}
	return nil
}

func (c *CreateLUN) fieldsSince() uint16 { return replicationSince(&c.Device) }

// replicationSince is the protocol a device's fields need to be decoded.
func replicationSince(devs ...*Device) uint16 {
	for _, d := range devs {
		if d != nil && (len(d.Replicas) > 0 || len(d.InSync) > 0) {
			return ProtocolReplication
		}
	}
	return 0
}

func (c *CreateLUN) apply(s *State, _ Env) (any, error) {
	if s.Devices[c.Device.Name] != nil {
		return nil, errorf(CodeConflict, "a LUN named %q already exists", c.Device.Name)
	}
	if s.Targets[c.Target] == nil {
		return nil, errorf(CodeNotFound, "no target %s", c.Target)
	}
	if l := s.Targets[c.Target].lun(c.LUN); l != nil {
		return nil, errorf(CodeConflict, "target %s already has LUN %d (%s)", c.Target, c.LUN, l.Device)
	}
	d := c.Device.clone()
	if err := s.checkNewDevice(d); err != nil {
		return nil, err
	}
	t, _ := s.editTarget(c.Target)
	s.Devices[d.Name] = d
	t.LUNs = append(t.LUNs, LUN{Number: c.LUN, Device: d.Name, ReadOnly: d.ReadOnly})
	sort.Slice(t.LUNs, func(i, j int) bool { return t.LUNs[i].Number < t.LUNs[j].Number })
	return d, nil
}

// DeleteLUN unmaps a LUN; its device is deleted with it once no map names
// it any more.
type DeleteLUN struct {
	Target string `json:"target"`
	LUN    uint64 `json:"lun"`
}

func (*DeleteLUN) Type() CommandType { return TypeDeleteLUN }

func (c *DeleteLUN) check() error {
	if err := CheckIQN(c.Target); err != nil {
		return err
	}
	return checkLUNNumber(c.LUN)
}

func (c *DeleteLUN) apply(s *State, _ Env) (any, error) {
	t, err := s.editTarget(c.Target)
	if err != nil {
		return nil, err
	}
	l := t.lun(c.LUN)
	if l == nil {
		return nil, errorf(CodeNotFound, "target %s has no LUN %d", c.Target, c.LUN)
	}
	device := l.Device
	t.LUNs = slices.DeleteFunc(t.LUNs, func(m LUN) bool { return m.Number == c.LUN })
	s.dropIfUnmapped(device)
	return nil, nil
}

// dropIfUnmapped deletes a device, and its reservation state, once no LUN
// map names it.
func (s *State) dropIfUnmapped(device string) {
	if len(s.Mappings(device)) > 0 {
		return
	}
	delete(s.Devices, device)
	delete(s.Reservations, device)
}

// ResizeDevice changes a device's capacity. Shrinking is refused: it would
// cut off data initiators wrote.
type ResizeDevice struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

func (*ResizeDevice) Type() CommandType { return TypeResizeDevice }

func (c *ResizeDevice) check() error {
	if err := checkName("device", c.Name); err != nil {
		return err
	}
	if c.Size <= 0 {
		return errorf(CodeInvalid, "size must be positive")
	}
	return nil
}

func (c *ResizeDevice) apply(s *State, _ Env) (any, error) {
	old := s.Devices[c.Name]
	switch {
	case old == nil:
		return nil, errorf(CodeNotFound, "no LUN named %q", c.Name)
	case c.Size%int64(old.BlockSize) != 0:
		return nil, errorf(CodeInvalid, "LUN %s: size %d is not a multiple of the block size %d", c.Name, c.Size, old.BlockSize)
	case c.Size < old.Size:
		return nil, errorf(CodeInvalid, "LUN %s: shrinking from %d to %d bytes would discard data; only growing is supported", c.Name, old.Size, c.Size)
	case c.Size == old.Size:
		return nil, errorf(CodeConflict, "LUN %s already has %d bytes", c.Name, c.Size)
	}
	d := *old
	d.Size = c.Size
	s.Devices[c.Name] = &d
	return &d, nil
}

// Reservation runs one persistent reservation operation (a serialised
// operation of the SCSI reservation state machine) against a device.
// Origin identifies the proposer, which applies the effects itself.
type Reservation struct {
	Device string          `json:"device"`
	Origin string          `json:"origin"`
	Op     json.RawMessage `json:"op"`
}

func (*Reservation) Type() CommandType { return TypeReservation }

func (c *Reservation) check() error {
	if err := checkName("device", c.Device); err != nil {
		return err
	}
	if op := bytes.TrimSpace(c.Op); len(op) == 0 || string(op) == "null" {
		return errorf(CodeInvalid, "reservation operation is empty")
	}
	return nil
}

// ReservationResult is what a Reservation command returns.
type ReservationResult struct {
	Outcome []byte
}

func (c *Reservation) apply(s *State, env Env) (any, error) {
	if s.Devices[c.Device] == nil {
		return nil, errorf(CodeNotFound, "no LUN named %q", c.Device)
	}
	if env.Reservations == nil {
		return nil, errorf(CodeUnsupported, "no reservation machine on this node")
	}
	next, outcome, err := env.Reservations.Apply(s.Reservations[c.Device], c.Op)
	if err != nil {
		return nil, errorf(CodeInvalid, "reservation on %s: %v", c.Device, err)
	}
	if s.Reservations == nil {
		s.Reservations = map[string][]byte{}
	}
	s.Reservations[c.Device] = next
	return &ReservationResult{Outcome: outcome}, nil
}

// Import adds a whole configuration (an scst.conf) at once: every device
// and target is new, or nothing is applied.
type Import struct {
	Devices []Device `json:"devices,omitempty"`
	Targets []Target `json:"targets,omitempty"`
	// DiscoveryUsers replace the discovery CHAP users when non-empty.
	DiscoveryUsers []CHAPUser `json:"discovery_users,omitempty"`
}

func (*Import) Type() CommandType { return TypeImport }

func (c *Import) check() error {
	for i := range c.Devices {
		if err := checkCreated(&c.Devices[i]); err != nil {
			return err
		}
	}
	for i := range c.Targets {
		if err := c.Targets[i].check(); err != nil {
			return err
		}
	}
	for _, u := range c.DiscoveryUsers {
		if err := checkCHAP(u, "discovery"); err != nil {
			return err
		}
	}
	return nil
}

func (c *Import) fieldsSince() uint16 {
	devs := make([]*Device, len(c.Devices))
	for i := range c.Devices {
		devs[i] = &c.Devices[i]
	}
	return replicationSince(devs...)
}

// ImportResult names what an Import created.
type ImportResult struct {
	Devices []string `json:"devices"`
	Targets []string `json:"targets"`
}

func (c *Import) apply(s *State, _ Env) (any, error) {
	res := &ImportResult{Devices: []string{}, Targets: []string{}}
	for i := range c.Devices {
		d := c.Devices[i].clone()
		if s.Devices[d.Name] != nil {
			return nil, errorf(CodeConflict, "a LUN named %q already exists", d.Name)
		}
		if err := s.checkNewDevice(d); err != nil {
			return nil, err
		}
		s.Devices[d.Name] = d
		res.Devices = append(res.Devices, d.Name)
	}
	for i := range c.Targets {
		t := c.Targets[i].clone()
		if s.Targets[t.IQN] != nil {
			return nil, errorf(CodeConflict, "target %s already exists", t.IQN)
		}
		if err := s.checkMapped(t); err != nil {
			return nil, err
		}
		s.Targets[t.IQN] = t
		res.Targets = append(res.Targets, t.IQN)
	}
	if len(c.DiscoveryUsers) > 0 {
		s.DiscoveryUsers = slices.Clone(c.DiscoveryUsers)
	}
	return res, nil
}

// TypeRestore replaces the configuration with a saved snapshot's.
const TypeRestore CommandType = "restore"

// Restore replaces devices, targets, reservations and discovery users with
// those of a snapshot. Nodes and the cluster version are kept: membership
// and the binaries the cluster runs are the cluster's own, not part of a
// configuration backup (and a cluster version never goes down).
//
// A replicated device keeps its replica and in-sync sets as saved (they
// must satisfy the invariant: S non-empty, ⊆ Replicas, holding the owner),
// stored sorted; they are not checked against the current nodes, as
// owners are not: the leader replaces what no longer exists.
type Restore struct {
	State *State `json:"state"`
}

func (*Restore) Type() CommandType { return TypeRestore }

func (c *Restore) check() error {
	if c.State == nil {
		return errorf(CodeInvalid, "restore without a state")
	}
	// Sorted, so that every node refuses with the same error; a device
	// or target must be filed under its own name.
	for _, name := range SortedKeys(c.State.Devices) {
		d := c.State.Devices[name]
		if d == nil || d.Name != name {
			return errorf(CodeInvalid, "restore: device entry %q does not hold device %q", name, name)
		}
		if err := d.Check(); err != nil {
			return err
		}
		if err := d.checkInSyncInvariant(); err != nil {
			return err
		}
	}
	for _, iqn := range SortedKeys(c.State.Targets) {
		t := c.State.Targets[iqn]
		if t == nil || t.IQN != iqn {
			return errorf(CodeInvalid, "restore: target entry %q does not hold target %s", iqn, iqn)
		}
		if err := t.check(); err != nil {
			return err
		}
	}
	for _, u := range c.State.DiscoveryUsers {
		if err := checkCHAP(u, "discovery"); err != nil {
			return err
		}
	}
	return nil
}

func (c *Restore) fieldsSince() uint16 {
	if c.State == nil {
		return 0
	}
	need := replicationSince(slices.Collect(maps.Values(c.State.Devices))...)
	// Restore leaves the cluster version as it is, but the field travels
	// in the entry, where an older node's strict decoding sees it.
	if c.State.ClusterVersion != 0 {
		need = max(need, ProtocolClusterVersion)
	}
	// Restore keeps the cluster's tokens (a backup must not reopen the
	// API or bring back revoked tokens), but ones in the entry are
	// decoded all the same.
	if len(c.State.Tokens) > 0 || c.State.TokensSince != 0 {
		need = max(need, ProtocolTokens)
	}
	return need
}

func (c *Restore) apply(s *State, _ Env) (any, error) {
	src := c.State.next()
	for _, iqn := range SortedKeys(src.Targets) {
		if err := src.checkMapped(src.Targets[iqn]); err != nil {
			return nil, err
		}
	}
	for name, d := range src.Devices {
		if d.Replicated() {
			d = d.clone()
			slices.Sort(d.Replicas)
			slices.Sort(d.InSync)
			src.Devices[name] = d
		}
	}
	s.Devices, s.Targets, s.Reservations = src.Devices, src.Targets, src.Reservations
	s.DiscoveryUsers = slices.Clone(src.DiscoveryUsers)
	return nil, nil
}
