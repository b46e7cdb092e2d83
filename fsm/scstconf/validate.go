package scstconf

import (
	"errors"
	"fmt"
)

// Validate checks the rules that span elements (unique names, LUNs naming
// existing devices, ...) and repeats the per-value rules Parse applies, so
// that a File built in code can be checked before Format writes it. Parse
// calls it, so a parsed File is always valid, and a valid File always
// formats to text that Parse accepts. It returns the first problem as an
// *Error at the offending element.
func Validate(f *File) error {
	v := &validator{
		devices:   map[string]*Device{},
		dgOfDev:   map[string]*DeviceGroup{},
		dgNames:   map[string]*DeviceGroup{},
		targets:   map[string]*Target{},
		relTgtIDs: map[uint16]*Target{},
	}
	if f.SetupID != "" {
		if err := parseSetupID(f.SetupID); err != nil {
			return wrap(Pos{}, err)
		}
	}
	for i := range f.Devices {
		if err := v.device(&f.Devices[i]); err != nil {
			return err
		}
	}
	if err := v.driver(&f.ISCSIDriver); err != nil {
		return err
	}
	for i := range f.Targets {
		if err := v.target(&f.Targets[i]); err != nil {
			return err
		}
	}
	for i := range f.DeviceGroups {
		if err := v.deviceGroup(&f.DeviceGroups[i]); err != nil {
			return err
		}
	}
	return nil
}

type validator struct {
	devices   map[string]*Device
	dgOfDev   map[string]*DeviceGroup
	dgNames   map[string]*DeviceGroup
	targets   map[string]*Target
	relTgtIDs map[uint16]*Target // of enabled targets
}

func (v *validator) device(d *Device) error {
	if err := checkName("device", d.Name); err != nil {
		return wrap(d.Pos, err)
	}
	if first, dup := v.devices[d.Name]; dup {
		return errAt(d.Pos, "duplicate device %q (%s)", d.Name, earlier(first.Pos))
	}
	v.devices[d.Name] = d
	if err := checkHandler(d.Handler); err != nil {
		return wrap(d.Pos, err)
	}
	if err := checkBacking(d); err != nil {
		return wrap(d.Pos, err)
	}
	for _, s := range deviceStrings {
		if err := s.check(s.name, *s.field(d)); err != nil {
			return wrap(d.Pos, err)
		}
	}
	return checkExtra(d.Extra, "DEVICE "+d.Name, isDeviceKey)
}

// checkBacking checks where a device's blocks come from and how many there
// are.
func checkBacking(d *Device) error {
	switch {
	case d.Handler == HandlerNullIO && d.Filename != "":
		return fmt.Errorf("vdisk_nullio device %s cannot have a filename", d.Name)
	case d.Handler == HandlerNullIO && d.Size == 0:
		return fmt.Errorf("vdisk_nullio device %s has no size", d.Name)
	case d.Handler != HandlerNullIO && d.Filename == "":
		return fmt.Errorf("device %s (%s) has no filename", d.Name, d.Handler)
	}
	if err := checkBlockSize(uint64(d.BlockSize)); err != nil {
		return err
	}
	if d.Size < 0 {
		return fmt.Errorf("size %d of device %s is negative", d.Size, d.Name)
	}
	if d.Size%int64(d.BlockSize) != 0 {
		return fmt.Errorf("size %d of device %s is not a multiple of its blocksize %d", d.Size, d.Name, d.BlockSize)
	}
	return nil
}

func (v *validator) driver(d *ISCSIDriver) error {
	if err := checkUsers(d.IncomingUsers, d.OutgoingUsers); err != nil {
		return err
	}
	return checkExtra(d.Extra, "TARGET_DRIVER iscsi", func(name string) bool {
		return name == "enabled" || isCHAPKey(name, "IncomingUser") || isCHAPKey(name, "OutgoingUser")
	})
}

func checkUsers(in, out []CHAPUser) error {
	names := map[string]Pos{}
	for _, u := range in {
		if err := checkCHAP("IncomingUser", u); err != nil {
			return wrap(u.Pos, err)
		}
		if first, dup := names[u.User]; dup {
			return errAt(u.Pos, "duplicate IncomingUser %q (%s)", u.User, earlier(first))
		}
		names[u.User] = u.Pos
	}
	if len(out) > 1 {
		return errAt(out[1].Pos, "more than one OutgoingUser: mutual CHAP has a single target identity")
	}
	for _, u := range out {
		if err := checkCHAP("OutgoingUser", u); err != nil {
			return wrap(u.Pos, err)
		}
	}
	return nil
}

func isTargetKey(name string) bool {
	return name == "enabled" || name == "rel_tgt_id" || paramChecks[name] != nil ||
		isCHAPKey(name, "IncomingUser") || isCHAPKey(name, "OutgoingUser")
}

func (v *validator) target(t *Target) error {
	if err := checkISCSIName(t.Name); err != nil {
		return wrap(t.Pos, err)
	}
	if first, dup := v.targets[t.Name]; dup {
		return errAt(t.Pos, "duplicate target %q (%s)", t.Name, earlier(first.Pos))
	}
	v.targets[t.Name] = t
	if err := v.relTgtID(t); err != nil {
		return err
	}
	if err := checkUsers(t.IncomingUsers, t.OutgoingUsers); err != nil {
		return err
	}
	if err := checkParams(t.Params); err != nil {
		return err
	}
	if err := v.luns(t.LUNs, "TARGET "+t.Name); err != nil {
		return err
	}
	if err := v.groups(t); err != nil {
		return err
	}
	return checkExtra(t.Extra, "TARGET "+t.Name, isTargetKey)
}

// relTgtID enforces SCST's rule: relative target port identifiers must be
// unique, but disabled targets may share one until they are enabled.
func (v *validator) relTgtID(t *Target) error {
	if t.RelTgtID == 0 || !t.Enabled {
		return nil
	}
	if other, dup := v.relTgtIDs[t.RelTgtID]; dup {
		return errAt(t.Pos, "rel_tgt_id %d of target %s is already used by enabled target %s (%s)",
			t.RelTgtID, t.Name, other.Name, earlier(other.Pos))
	}
	v.relTgtIDs[t.RelTgtID] = t
	return nil
}

func checkParams(ps []Param) error {
	first := map[string]Pos{}
	for _, p := range ps {
		if err := checkParam(p.Key, p.Value); err != nil {
			return wrap(p.Pos, err)
		}
		if at, dup := first[p.Key]; dup && !repeatableParams[p.Key] {
			return errAt(p.Pos, "duplicate %s (%s)", p.Key, earlier(at))
		}
		first[p.Key] = p.Pos
	}
	return nil
}

func (v *validator) luns(ls []LUN, where string) error {
	first := map[uint64]Pos{}
	for _, l := range ls {
		if l.Number > MaxLUN {
			return errAt(l.Pos, "LUN %d out of range [0, %d]", l.Number, MaxLUN)
		}
		if at, dup := first[l.Number]; dup {
			return errAt(l.Pos, "duplicate LUN %d in %s (%s)", l.Number, where, earlier(at))
		}
		first[l.Number] = l.Pos
		if _, ok := v.devices[l.Device]; !ok {
			return errAt(l.Pos, "LUN %d refers to unknown device %q", l.Number, l.Device)
		}
		if err := checkExtra(l.Extra, fmt.Sprintf("LUN %d", l.Number), isKey("read_only")); err != nil {
			return err
		}
	}
	return nil
}

// groups checks a target's initiator groups. An initiator name may sit in
// only one group of a target, as in SCST, since otherwise which LUNs it
// sees would depend on lookup order.
func (v *validator) groups(t *Target) error {
	names := map[string]*Group{}
	owner := map[string]*Group{}
	for i := range t.Groups {
		g := &t.Groups[i]
		if err := checkName("group", g.Name); err != nil {
			return wrap(g.Pos, err)
		}
		if first, dup := names[g.Name]; dup {
			return errAt(g.Pos, "duplicate GROUP %q in target %s (%s)", g.Name, t.Name, earlier(first.Pos))
		}
		names[g.Name] = g
		if err := v.luns(g.LUNs, "GROUP "+g.Name); err != nil {
			return err
		}
		for _, ini := range g.Initiators {
			if err := checkName("initiator", ini); err != nil {
				return wrap(g.Pos, err)
			}
			if other, dup := owner[ini]; dup {
				return errAt(g.Pos, "INITIATOR %s of GROUP %s is already in GROUP %s (%s)",
					ini, g.Name, other.Name, earlier(other.Pos))
			}
			owner[ini] = g
		}
		if err := checkExtra(g.Extra, "GROUP "+g.Name, isKey()); err != nil {
			return err
		}
	}
	return nil
}

func (v *validator) deviceGroup(dg *DeviceGroup) error {
	if err := checkName("device group", dg.Name); err != nil {
		return wrap(dg.Pos, err)
	}
	if first, dup := v.dgNames[dg.Name]; dup {
		return errAt(dg.Pos, "duplicate DEVICE_GROUP %q (%s)", dg.Name, earlier(first.Pos))
	}
	v.dgNames[dg.Name] = dg
	if err := v.dgDevices(dg); err != nil {
		return err
	}
	if err := checkTargetGroups(dg); err != nil {
		return err
	}
	return checkExtra(dg.Extra, "DEVICE_GROUP "+dg.Name, isKey())
}

// dgDevices checks a device group's members. A device is in at most one
// device group because its ALUA states come from that group.
func (v *validator) dgDevices(dg *DeviceGroup) error {
	for _, name := range dg.Devices {
		if _, ok := v.devices[name]; !ok {
			return errAt(dg.Pos, "DEVICE_GROUP %s refers to unknown device %q", dg.Name, name)
		}
		if other, dup := v.dgOfDev[name]; dup {
			return errAt(dg.Pos, "device %s is in DEVICE_GROUP %s and in DEVICE_GROUP %s (%s)",
				name, dg.Name, other.Name, earlier(other.Pos))
		}
		v.dgOfDev[name] = dg
	}
	return nil
}

// checkTargetGroups checks the target port groups of one device group. A
// target port belongs to one group and group ids identify groups, so both
// are unique within the device group; the same group may recur in other
// device groups.
func checkTargetGroups(dg *DeviceGroup) error {
	names := map[string]*TargetGroup{}
	ids := map[uint16]*TargetGroup{}
	tgOfTarget := map[string]*TargetGroup{}
	for i := range dg.TargetGroups {
		tg := &dg.TargetGroups[i]
		if err := checkTargetGroup(tg, names, ids); err != nil {
			return err
		}
		for _, ref := range tg.Targets {
			if err := checkName("target", ref.Name); err != nil {
				return wrap(ref.Pos, err)
			}
			if other, dup := tgOfTarget[ref.Name]; dup {
				return errAt(ref.Pos, "target %s is already in TARGET_GROUP %s of DEVICE_GROUP %s",
					ref.Name, other.Name, dg.Name)
			}
			tgOfTarget[ref.Name] = tg
			if err := checkExtra(ref.Extra, "TARGET "+ref.Name, isKey("rel_tgt_id")); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkTargetGroup(tg *TargetGroup, names map[string]*TargetGroup, ids map[uint16]*TargetGroup) error {
	if err := checkName("target group", tg.Name); err != nil {
		return wrap(tg.Pos, err)
	}
	if first, dup := names[tg.Name]; dup {
		return errAt(tg.Pos, "duplicate TARGET_GROUP %q (%s)", tg.Name, earlier(first.Pos))
	}
	names[tg.Name] = tg
	if first, dup := ids[tg.GroupID]; dup && tg.GroupID != 0 {
		return errAt(tg.Pos, "group_id %d of TARGET_GROUP %s is already used by TARGET_GROUP %s",
			tg.GroupID, tg.Name, first.Name)
	}
	ids[tg.GroupID] = tg
	if err := checkState(tg.State); err != nil {
		return wrap(tg.Pos, err)
	}
	return checkExtra(tg.Extra, "TARGET_GROUP "+tg.Name, isKey("group_id", "state", "preferred"))
}

func isKey(names ...string) func(string) bool {
	return func(name string) bool {
		for _, n := range names {
			if n == name {
				return true
			}
		}
		return false
	}
}

// checkExtra keeps hand-built Extra lists writable: an attribute named like
// a known one would be read back as that one, not as an extra.
func checkExtra(attrs []Attr, where string, known func(string) bool) error {
	for _, a := range attrs {
		if structural[a.Name] || known(a.Name) {
			return errAt(a.Pos, "extra attribute %s in %s has the name of a known keyword", a.Name, where)
		}
		if err := errors.Join(checkText("attribute name", a.Name), checkText(a.Name, a.Value)); err != nil {
			return wrap(a.Pos, err)
		}
	}
	return nil
}
