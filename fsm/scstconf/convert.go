package scstconf

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/hatarget/hatarget/fsm"
)

// Conversion between a File and the cluster's replicated state. The import
// gives a file the meaning the single-node server gives it
// (cmd/hatarget/scst.go), so that a file behaves the same whether one node
// serves it or a cluster imports it.

// fsmHandlers maps SCST's handler names to the cluster's.
var fsmHandlers = map[string]string{
	HandlerFileIO:  fsm.HandlerFileIO,
	HandlerBlockIO: fsm.HandlerBlockIO,
	HandlerNullIO:  fsm.HandlerNullIO,
}

// scstHandlers is fsmHandlers the other way round.
var scstHandlers = invert(fsmHandlers)

func invert(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[v] = k
	}
	return out
}

// ToImport converts f into one fsm.Import, so that the whole file applies
// as a single Raft entry or not at all.
//
// Devices keep the usn and naa_id the file gives them; the others have an
// empty Serial or NAA, which the cluster leader generates before proposing.
// Everything else the cluster would refuse is refused here already, as an
// *Error at the offending line, because once the command is applied no
// line numbers are left to point at.
//
// Devices and targets come sorted by name and LUNs by number, the order
// FromState writes, so that an exported state imports to an equal command.
// The warnings are f.Warnings followed by what the conversion drops.
func ToImport(f *File) (*fsm.Import, []Warning, error) {
	// Parse has validated already; a File built in code gets the same
	// positioned errors this way.
	if err := Validate(f); err != nil {
		return nil, nil, err
	}
	c := &converter{warnings: slices.Clone(f.Warnings)}
	imp, err := c.file(f)
	if err != nil {
		return nil, nil, err
	}
	return imp, c.warnings, nil
}

// converter collects the warnings of one ToImport.
type converter struct {
	warnings []Warning
}

func (c *converter) warn(p Pos, format string, args ...any) {
	c.warnings = append(c.warnings, Warning{Pos: p, Msg: fmt.Sprintf(format, args...)})
}

func (c *converter) file(f *File) (*fsm.Import, error) {
	imp := &fsm.Import{}
	for i := range f.Devices {
		d, err := importDevice(&f.Devices[i])
		if err != nil {
			return nil, err
		}
		imp.Devices = append(imp.Devices, d)
	}
	users, err := importUsers(f.ISCSIDriver.IncomingUsers)
	if err != nil {
		return nil, err
	}
	imp.DiscoveryUsers = users
	driverOn := c.driver(&f.ISCSIDriver, len(f.Targets))
	for i := range f.Targets {
		t, err := c.target(&f.Targets[i], driverOn)
		if err != nil {
			return nil, err
		}
		imp.Targets = append(imp.Targets, t)
	}
	for _, dg := range f.DeviceGroups {
		c.warn(dg.Pos, "ALUA DEVICE_GROUP %s: port groups are assigned per cluster node; ignored", dg.Name)
	}
	slices.SortFunc(imp.Devices, func(a, b fsm.Device) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(imp.Targets, func(a, b fsm.Target) int { return cmp.Compare(a.IQN, b.IQN) })
	return imp, nil
}

func importDevice(d *Device) (fsm.Device, error) {
	if err := checkClusterName("device", d.Name); err != nil {
		return fsm.Device{}, wrap(d.Pos, err)
	}
	handler := fsmHandlers[d.Handler]
	if handler == fsm.HandlerFileIO && d.ODirect {
		handler = fsm.HandlerBlockIO // fileio with o_direct bypasses the page cache like blockio
	}
	return fsm.Device{
		Name:          d.Name,
		Handler:       handler,
		Path:          d.Filename,
		Size:          d.Size,
		BlockSize:     d.BlockSize,
		ReadOnly:      d.ReadOnly,
		NVCache:       d.NVCache,
		WriteThrough:  d.WriteThrough,
		Thin:          d.ThinProvisioned,
		Removable:     d.Removable,
		Rotational:    d.Rotational,
		AllowSanitize: d.AllowSanitize,
		Serial:        d.USN,
		NAA:           d.NAAID,
		T10DeviceID:   d.T10DevID,
		VendorID:      d.T10VendID,
		ProductID:     d.ProdID,
	}, nil
}

// driver reports whether the iscsi driver serves its targets, and warns
// about what the cluster has no place for: it has no driver-wide switch
// and no mutual CHAP on discovery sessions.
func (c *converter) driver(d *ISCSIDriver, targets int) bool {
	if !d.Enabled && targets > 0 {
		c.warn(d.Pos, "TARGET_DRIVER iscsi is disabled (enabled 0): its targets are imported disabled")
	}
	for _, u := range d.OutgoingUsers {
		c.warn(u.Pos, "OutgoingUser %s of TARGET_DRIVER iscsi ignored: the cluster has no mutual CHAP for discovery sessions", u.User)
	}
	return d.Enabled
}

func (c *converter) target(t *Target, driverOn bool) (fsm.Target, error) {
	if err := fsm.CheckIQN(t.Name); err != nil {
		return fsm.Target{}, wrap(t.Pos, err)
	}
	if !t.Enabled {
		c.warn(t.Pos, "target %s is disabled (enabled 0): imported disabled", t.Name)
	}
	if t.RelTgtID != 0 {
		c.warn(t.Pos, "rel_tgt_id %d of target %s ignored: the cluster allocates relative port ids itself", t.RelTgtID, t.Name)
	}
	out := fsm.Target{IQN: t.Name, Enabled: t.Enabled && driverOn, LUNs: importLUNs(t.LUNs)}
	var err error
	if out.Groups, err = importGroups(t.Groups); err != nil {
		return fsm.Target{}, err
	}
	if out.IncomingUsers, err = importUsers(t.IncomingUsers); err != nil {
		return fsm.Target{}, err
	}
	// Validate allows at most one OutgoingUser: mutual CHAP has a single
	// target identity.
	outgoing, err := importUsers(t.OutgoingUsers)
	if err != nil {
		return fsm.Target{}, err
	}
	if len(outgoing) > 0 {
		out.OutgoingUser = &outgoing[0]
	}
	if out.AllowedInitiators, out.Params, err = importParams(t.Params); err != nil {
		return fsm.Target{}, err
	}
	return out, nil
}

func importLUNs(ls []LUN) []fsm.LUN {
	var out []fsm.LUN
	for _, l := range ls {
		out = append(out, fsm.LUN{Number: l.Number, Device: l.Device, ReadOnly: l.ReadOnly})
	}
	slices.SortFunc(out, func(a, b fsm.LUN) int { return cmp.Compare(a.Number, b.Number) })
	return out
}

// importGroups converts GROUPs. Initiators have no position of their own,
// so a bad one is reported at its GROUP.
func importGroups(gs []Group) ([]fsm.InitiatorGroup, error) {
	var out []fsm.InitiatorGroup
	for _, g := range gs {
		if err := checkClusterName("initiator group", g.Name); err != nil {
			return nil, wrap(g.Pos, err)
		}
		for _, ini := range g.Initiators {
			if err := checkPattern(ini); err != nil {
				return nil, wrap(g.Pos, err)
			}
		}
		out = append(out, fsm.InitiatorGroup{Name: g.Name, Initiators: slices.Clone(g.Initiators), LUNs: importLUNs(g.LUNs)})
	}
	return out, nil
}

func importUsers(us []CHAPUser) ([]fsm.CHAPUser, error) {
	var out []fsm.CHAPUser
	for _, u := range us {
		if err := checkNoNUL("CHAP user or secret", u.User+u.Secret); err != nil {
			return nil, wrap(u.Pos, err)
		}
		out = append(out, fsm.CHAPUser{User: u.User, Secret: u.Secret})
	}
	return out, nil
}

// importParams splits a target's parameters into the login ACL
// (allowed_initiator) and the other keys, which it passes on unfiltered:
// the cluster validates the keys it knows. They are sorted by key, as the
// cluster keeps them, and stably, so repeated keys keep their order.
func importParams(ps []Param) ([]string, []fsm.Param, error) {
	var allowed []string
	var params []fsm.Param
	for _, p := range ps {
		if p.Key == "allowed_initiator" {
			if err := checkPattern(p.Value); err != nil {
				return nil, nil, wrap(p.Pos, err)
			}
			allowed = append(allowed, p.Value)
			continue
		}
		if err := checkNoNUL(p.Key, p.Value); err != nil {
			return nil, nil, wrap(p.Pos, err)
		}
		params = append(params, fsm.Param{Key: p.Key, Value: p.Value})
	}
	slices.SortStableFunc(params, func(a, b fsm.Param) int { return cmp.Compare(a.Key, b.Key) })
	return allowed, params, nil
}

// The checks below repeat rules of package fsm that SCST does not have
// (fsm does not export them), so that the error can name the line.

// checkClusterName applies fsm's rule for device and group names, which
// become file names and metric labels in the cluster.
func checkClusterName(kind, name string) error {
	ok := name != "" && len(name) <= 64 && name[0] != '.'
	for _, r := range name {
		ok = ok && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}
	if !ok {
		return fmt.Errorf("%s name %q is not valid in the cluster: want at most 64 letters, digits, '-', '_' and '.', not starting with '.'", kind, name)
	}
	return nil
}

// checkPattern applies fsm's rule for initiator names and patterns.
func checkPattern(p string) error {
	if p == "" || len(p) > 223 || strings.ContainsAny(p, " \t\n\"'") {
		return fmt.Errorf("initiator name or pattern %q is not valid in the cluster: want at most 223 bytes without white space or quotes", p)
	}
	return nil
}

// checkNoNUL rejects NUL bytes, which SCST reads but iSCSI cannot carry:
// NUL separates the key=value pairs of iSCSI text.
func checkNoNUL(what, s string) error {
	if strings.Contains(s, "\x00") {
		return fmt.Errorf("%s contains a NUL byte", what)
	}
	return nil
}

// FromState returns s as a File ready for Format: devices grouped by
// handler and sorted by name, targets sorted by IQN, LUNs by number. Each
// device carries its serial and NAA as usn and naa_id, so that it keeps its
// identity when the file is imported again. The iscsi driver is enabled
// since the cluster always serves iSCSI. Target aliases have no scst.conf
// attribute and are left out.
//
// Without showSecrets the File holds no CHAP secret: the CHAP users are
// left out and named in File.Comment instead, since importing the file
// would create targets that do not ask for them.
func FromState(s *fsm.State, showSecrets bool) *File {
	f := &File{ISCSIDriver: ISCSIDriver{Enabled: true, IncomingUsers: exportUsers(s.DiscoveryUsers)}}
	for _, name := range fsm.SortedKeys(s.Devices) {
		f.Devices = append(f.Devices, exportDevice(s.Devices[name]))
	}
	// Format writes one HANDLER block per run of devices with one handler.
	slices.SortStableFunc(f.Devices, func(a, b Device) int { return cmp.Compare(a.Handler, b.Handler) })
	for _, iqn := range fsm.SortedKeys(s.Targets) {
		f.Targets = append(f.Targets, exportTarget(s.Targets[iqn]))
	}
	if !showSecrets {
		dropSecrets(f)
	}
	return f
}

func exportDevice(d *fsm.Device) Device {
	return Device{
		Name:            d.Name,
		Handler:         scstHandlers[d.Handler],
		Filename:        d.Path,
		NVCache:         d.NVCache,
		WriteThrough:    d.WriteThrough,
		ReadOnly:        d.ReadOnly,
		ThinProvisioned: d.Thin,
		Removable:       d.Removable,
		Rotational:      d.Rotational,
		AllowSanitize:   d.AllowSanitize,
		BlockSize:       d.BlockSize,
		Size:            d.Size,
		T10DevID:        d.T10DeviceID,
		T10VendID:       d.VendorID,
		ProdID:          d.ProductID,
		USN:             d.Serial,
		NAAID:           d.NAA,
	}
}

func exportTarget(t *fsm.Target) Target {
	out := Target{
		Name:          t.IQN,
		Enabled:       t.Enabled,
		IncomingUsers: exportUsers(t.IncomingUsers),
		LUNs:          exportLUNs(t.LUNs),
	}
	if t.OutgoingUser != nil {
		out.OutgoingUsers = exportUsers([]fsm.CHAPUser{*t.OutgoingUser})
	}
	for _, g := range t.Groups {
		out.Groups = append(out.Groups, Group{Name: g.Name, Initiators: slices.Clone(g.Initiators), LUNs: exportLUNs(g.LUNs)})
	}
	// The ACL comes first: it decides who may log in at all.
	for _, ini := range t.AllowedInitiators {
		out.Params = append(out.Params, Param{Key: "allowed_initiator", Value: ini})
	}
	for _, p := range t.Params {
		out.Params = append(out.Params, Param{Key: p.Key, Value: p.Value})
	}
	return out
}

func exportLUNs(ls []fsm.LUN) []LUN {
	var out []LUN
	for _, l := range ls {
		out = append(out, LUN{Number: l.Number, Device: l.Device, ReadOnly: l.ReadOnly})
	}
	slices.SortFunc(out, func(a, b LUN) int { return cmp.Compare(a.Number, b.Number) })
	return out
}

func exportUsers(us []fsm.CHAPUser) []CHAPUser {
	var out []CHAPUser
	for _, u := range us {
		out = append(out, CHAPUser{User: u.User, Secret: u.Secret})
	}
	return out
}

// dropSecrets removes every CHAP user from f and names them in f.Comment.
// Leaving them out silently would be dangerous: a reader importing the
// file would get targets that no longer ask initiators for CHAP.
func dropSecrets(f *File) {
	var lost []string
	drop := func(where string, in, out *[]CHAPUser) {
		var names []string
		for _, u := range *in {
			names = append(names, "IncomingUser "+u.User)
		}
		for _, u := range *out {
			names = append(names, "OutgoingUser "+u.User)
		}
		if len(names) > 0 {
			lost = append(lost, "  "+where+": "+strings.Join(names, ", "))
		}
		*in, *out = nil, nil
	}
	drop("TARGET_DRIVER iscsi", &f.ISCSIDriver.IncomingUsers, &f.ISCSIDriver.OutgoingUsers)
	for i := range f.Targets {
		t := &f.Targets[i]
		drop("TARGET "+t.Name, &t.IncomingUsers, &t.OutgoingUsers)
	}
	if len(lost) > 0 {
		f.Comment = "CHAP users are left out because secrets were not requested\n" +
			"(export with --show-secrets for a complete file); importing this\n" +
			"file would not ask initiators for them:\n" + strings.Join(lost, "\n")
	}
}
