package scstconf

import (
	"fmt"
	"math"
	"os"
)

// Parse reads an scst.conf. name is used in positions only. The result is
// valid (see Validate); on any error Parse returns a nil *File and an *Error.
func Parse(name string, data []byte) (*File, error) {
	toks, err := lex(name, data)
	if err != nil {
		return nil, err
	}
	tree, err := buildTree(toks)
	if err != nil {
		return nil, err
	}
	in := &interp{f: &File{}}
	if err := in.top(tree); err != nil {
		return nil, err
	}
	if err := Validate(in.f); err != nil {
		return nil, err
	}
	return in.f, nil
}

// ParseFile reads and parses the file at path.
func ParseFile(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// interp gives meaning to the syntax tree.
type interp struct {
	f          *File
	setupIDPos Pos
}

func errAt(p Pos, format string, args ...any) error {
	return &Error{Pos: p, Msg: fmt.Sprintf(format, args...)}
}

// wrap places a position-less message from a check function.
func wrap(p Pos, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Pos: p, Msg: err.Error()}
}

// earlier names a previous occurrence for "duplicate" messages.
func earlier(p Pos) string {
	if !p.IsValid() {
		return "earlier"
	}
	return fmt.Sprintf("first at line %d", p.Line)
}

func (in *interp) warn(p Pos, format string, args ...any) {
	in.f.Warnings = append(in.f.Warnings, Warning{Pos: p, Msg: fmt.Sprintf(format, args...)})
}

// structural keywords shape the file. Met in the wrong block they are
// errors, not unknown attributes: an INITIATOR outside a GROUP would
// otherwise be dropped and the LUNs it should hide would be visible.
var structural = map[string]bool{
	"setup_id": true, "HANDLER": true, "DEVICE": true, "TARGET_DRIVER": true,
	"TARGET": true, "LUN": true, "GROUP": true, "INITIATOR": true,
	"DEVICE_GROUP": true, "TARGET_GROUP": true,
}

// coreAttrs are SCST core settings scstadmin writes at the top level. They
// tune SCST's kernel threads and mean nothing to hatarget.
var coreAttrs = map[string]bool{
	"threads": true, "max_tasklet_cmd": true, "poll_us": true, "suspend": true,
	"force_global_sgv_pool": true, "trace_level": true, "measure_latency": true,
}

func (in *interp) top(tree []*stmt) error {
	for _, s := range tree {
		if err := in.topStmt(s); err != nil {
			return err
		}
	}
	return nil
}

func (in *interp) topStmt(s *stmt) error {
	switch kw := s.keyword(); {
	case kw == "setup_id":
		return in.setupID(s)
	case kw == "HANDLER":
		return in.handler(s)
	case kw == "TARGET_DRIVER":
		return in.targetDriver(s)
	case kw == "DEVICE_GROUP":
		return in.deviceGroup(s)
	case coreAttrs[kw] && !s.hasBlock:
		in.warn(s.pos(), "SCST core attribute %s ignored", kw)
		return nil
	default:
		return errAt(s.pos(), "unknown top-level keyword %q", kw)
	}
}

// value returns an attribute's value and where it starts.
func value(s *stmt) (string, Pos, error) {
	if s.hasBlock {
		return "", Pos{}, errAt(s.open, "%s does not take a block", s.keyword())
	}
	if len(s.args()) == 0 {
		return "", Pos{}, errAt(s.pos(), "%s needs a value", s.keyword())
	}
	return s.joined(), s.args()[0].pos, nil
}

// name returns the one name after a keyword such as DEVICE.
func name(s *stmt) (token, error) {
	if len(s.args()) != 1 {
		return token{}, errAt(s.pos(), "%s takes exactly one name, got %d words", s.keyword(), len(s.args()))
	}
	return s.args()[0], nil
}

func noBlock(s *stmt) error {
	if s.hasBlock {
		return errAt(s.open, "%s does not take a block", s.keyword())
	}
	return nil
}

// seen tracks attributes that may appear once per block, because a second
// value would silently override the first.
type seen map[string]Pos

func (m seen) once(s *stmt) error {
	if first, ok := m[s.keyword()]; ok {
		return errAt(s.pos(), "duplicate %s (%s)", s.keyword(), earlier(first))
	}
	m[s.keyword()] = s.pos()
	return nil
}

func setBool(dst *bool, s *stmt, set seen) error {
	if err := set.once(s); err != nil {
		return err
	}
	v, at, err := value(s)
	if err != nil {
		return err
	}
	b, err := parseBool(s.keyword(), v)
	*dst = b
	return wrap(at, err)
}

func setUint16(dst *uint16, s *stmt, set seen) error {
	if err := set.once(s); err != nil {
		return err
	}
	v, at, err := value(s)
	if err != nil {
		return err
	}
	n, err := parseUint(s.keyword(), v, 0, math.MaxUint16)
	*dst = uint16(n)
	return wrap(at, err)
}

func appendCHAP(dst *[]CHAPUser, s *stmt) error {
	v, at, err := value(s)
	if err != nil {
		return err
	}
	u, err := parseCHAP(s.keyword(), v)
	if err != nil {
		return wrap(at, err)
	}
	u.Pos = s.pos()
	*dst = append(*dst, u)
	return nil
}

// extra keeps an attribute the model has no field for, so an export can
// write it back, and tells the caller it has no effect.
func (in *interp) extra(dst *[]Attr, s *stmt, where string) error {
	kw := s.keyword()
	if structural[kw] {
		return errAt(s.pos(), "%s is not allowed in %s", kw, where)
	}
	if s.hasBlock {
		return errAt(s.open, "unexpected block after %s in %s", kw, where)
	}
	*dst = append(*dst, Attr{Name: kw, Value: s.joined(), Pos: s.pos()})
	in.warn(s.pos(), "unsupported attribute %s in %s ignored", kw, where)
	return nil
}

func (in *interp) setupID(s *stmt) error {
	if in.setupIDPos.IsValid() {
		return errAt(s.pos(), "duplicate setup_id (%s)", earlier(in.setupIDPos))
	}
	in.setupIDPos = s.pos()
	v, at, err := value(s)
	if err != nil {
		return err
	}
	in.f.SetupID = v
	return wrap(at, parseSetupID(v))
}

func (in *interp) handler(s *stmt) error {
	h, err := name(s)
	if err != nil {
		return err
	}
	if err := checkHandler(h.text); err != nil {
		return wrap(h.pos, err)
	}
	for _, c := range s.block {
		if c.keyword() != "DEVICE" {
			if err := in.handlerAttr(c, h.text); err != nil {
				return err
			}
			continue
		}
		d, err := in.device(c, h.text)
		if err != nil {
			return err
		}
		in.f.Devices = append(in.f.Devices, d)
	}
	return nil
}

// handlerAttr drops handler-wide settings (trace_level, ...): they tune the
// SCST kernel module, and the model has no handler element to keep them in.
func (in *interp) handlerAttr(s *stmt, handler string) error {
	where := "HANDLER " + handler
	if structural[s.keyword()] {
		return errAt(s.pos(), "%s is not allowed in %s", s.keyword(), where)
	}
	if err := noBlock(s); err != nil {
		return err
	}
	in.warn(s.pos(), "attribute %s of %s ignored", s.keyword(), where)
	return nil
}

// sizeAttr remembers a size or size_mb line until the whole device block has
// been read, since the two may both appear and must then agree.
type sizeAttr struct {
	name  string
	text  string
	bytes int64
	pos   Pos
}

func (in *interp) device(s *stmt, handler string) (Device, error) {
	n, err := name(s)
	if err != nil {
		return Device{}, err
	}
	d := Device{Name: n.text, Handler: handler, Pos: s.pos()}
	set := seen{}
	var sizes []sizeAttr
	for _, c := range s.block {
		if !isDeviceKey(c.keyword()) {
			if err := in.extra(&d.Extra, c, "DEVICE "+d.Name); err != nil {
				return Device{}, err
			}
			continue
		}
		sz, err := deviceAttr(&d, c, set)
		if err != nil {
			return Device{}, err
		}
		if sz != nil {
			sizes = append(sizes, *sz)
		}
	}
	if err := applySizes(&d, sizes); err != nil {
		return Device{}, err
	}
	in.deviceDefaults(&d, set)
	return d, nil
}

// deviceAttr sets one known device attribute; a size is returned instead of
// set so that size and size_mb can be compared afterwards.
func deviceAttr(d *Device, s *stmt, set seen) (*sizeAttr, error) {
	kw := s.keyword()
	if err := set.once(s); err != nil {
		return nil, err
	}
	v, at, err := value(s)
	if err != nil {
		return nil, err
	}
	if f := deviceBool(kw); f != nil {
		b, err := parseBool(kw, v)
		*f.field(d) = b
		return nil, wrap(at, err)
	}
	if f := deviceString(kw); f != nil {
		*f.field(d) = v
		return nil, wrap(at, f.check(kw, v))
	}
	switch kw {
	case "blocksize":
		n, err := parseUint(kw, v, 0, math.MaxUint32)
		if err == nil {
			err = checkBlockSize(n)
		}
		d.BlockSize = uint32(n)
		return nil, wrap(at, err)
	case "size", "size_mb":
		n, err := parseSize(kw, v)
		return &sizeAttr{name: kw, text: v, bytes: n, pos: at}, wrap(at, err)
	}
	return nil, errAt(s.pos(), "internal error: device attribute %s has no setter", kw)
}

func applySizes(d *Device, sizes []sizeAttr) error {
	if len(sizes) == 2 && sizes[0].bytes != sizes[1].bytes {
		a, b := sizes[0], sizes[1]
		return errAt(b.pos, "%s %s (%d bytes) disagrees with %s %s (%d bytes) at line %d",
			b.name, b.text, b.bytes, a.name, a.text, a.bytes, a.pos.Line)
	}
	if len(sizes) > 0 {
		d.Size = sizes[0].bytes
	}
	return nil
}

// deviceDefaults fills in what SCST assumes when the file is silent, so that
// consumers of the model never need to know SCST's defaults.
func (in *interp) deviceDefaults(d *Device, set seen) {
	for _, b := range deviceBools {
		if _, ok := set[b.name]; !ok {
			*b.field(d) = b.def
		}
	}
	if _, ok := set["blocksize"]; !ok {
		d.BlockSize = DefaultBlockSize
	}
	if d.Handler != HandlerNullIO {
		return
	}
	if p, ok := set["filename"]; ok {
		in.warn(p, "vdisk_nullio device %s has no backing file; filename ignored", d.Name)
		d.Filename = ""
	}
	if d.Size == 0 {
		d.Size = DefaultNullIOSize
	}
}

func (in *interp) targetDriver(s *stmt) error {
	n, err := name(s)
	if err != nil {
		return err
	}
	if n.text != "iscsi" {
		in.warn(n.pos, "target driver %s skipped: hatarget serves iSCSI only", n.text)
		return nil
	}
	d := &in.f.ISCSIDriver
	if d.Pos.IsValid() {
		return errAt(s.pos(), "duplicate TARGET_DRIVER iscsi (%s)", earlier(d.Pos))
	}
	d.Pos = s.pos()
	set := seen{}
	for _, c := range s.block {
		if err := in.driverStmt(d, c, set); err != nil {
			return err
		}
	}
	return nil
}

func (in *interp) driverStmt(d *ISCSIDriver, s *stmt, set seen) error {
	switch kw := s.keyword(); {
	case kw == "TARGET":
		t, err := in.target(s)
		if err != nil {
			return err
		}
		in.f.Targets = append(in.f.Targets, t)
		return nil
	case kw == "enabled":
		return setBool(&d.Enabled, s, set)
	case isCHAPKey(kw, "IncomingUser"):
		return appendCHAP(&d.IncomingUsers, s)
	case isCHAPKey(kw, "OutgoingUser"):
		return appendCHAP(&d.OutgoingUsers, s)
	default:
		return in.extra(&d.Extra, s, "TARGET_DRIVER iscsi")
	}
}

func (in *interp) target(s *stmt) (Target, error) {
	n, err := name(s)
	if err != nil {
		return Target{}, err
	}
	t := Target{Name: n.text, Pos: s.pos()}
	set := seen{}
	for _, c := range s.block {
		if err := in.targetStmt(&t, c, set); err != nil {
			return Target{}, err
		}
	}
	return t, nil
}

func (in *interp) targetStmt(t *Target, s *stmt, set seen) error {
	switch kw := s.keyword(); {
	case kw == "LUN":
		l, err := in.lun(s)
		if err != nil {
			return err
		}
		t.LUNs = append(t.LUNs, l)
	case kw == "GROUP":
		g, err := in.group(s)
		if err != nil {
			return err
		}
		t.Groups = append(t.Groups, g)
	case kw == "enabled":
		return setBool(&t.Enabled, s, set)
	case kw == "rel_tgt_id":
		return setUint16(&t.RelTgtID, s, set)
	case isCHAPKey(kw, "IncomingUser"):
		return appendCHAP(&t.IncomingUsers, s)
	case isCHAPKey(kw, "OutgoingUser"):
		return appendCHAP(&t.OutgoingUsers, s)
	case paramChecks[kw] != nil:
		return param(t, s, set)
	default:
		return in.extra(&t.Extra, s, "TARGET "+t.Name)
	}
	return nil
}

func param(t *Target, s *stmt, set seen) error {
	kw := s.keyword()
	if !repeatableParams[kw] {
		if err := set.once(s); err != nil {
			return err
		}
	}
	v, at, err := value(s)
	if err != nil {
		return err
	}
	if err := checkParam(kw, v); err != nil {
		return wrap(at, err)
	}
	t.Params = append(t.Params, Param{Key: kw, Value: v, Pos: s.pos()})
	return nil
}

func (in *interp) lun(s *stmt) (LUN, error) {
	if len(s.args()) != 2 {
		return LUN{}, errAt(s.pos(), "LUN wants a number and a device name, as in \"LUN 0 disk01\"")
	}
	num, dev := s.args()[0], s.args()[1]
	n, err := parseUint("LUN", num.text, 0, MaxLUN)
	if err != nil {
		return LUN{}, wrap(num.pos, err)
	}
	l := LUN{Number: n, Device: dev.text, Pos: s.pos()}
	set := seen{}
	for _, c := range s.block {
		if c.keyword() == "read_only" {
			err = setBool(&l.ReadOnly, c, set)
		} else {
			err = in.extra(&l.Extra, c, "LUN "+num.text)
		}
		if err != nil {
			return LUN{}, err
		}
	}
	return l, nil
}

func (in *interp) group(s *stmt) (Group, error) {
	n, err := name(s)
	if err != nil {
		return Group{}, err
	}
	g := Group{Name: n.text, Pos: s.pos()}
	for _, c := range s.block {
		if err := in.groupStmt(&g, c); err != nil {
			return Group{}, err
		}
	}
	return g, nil
}

func (in *interp) groupStmt(g *Group, s *stmt) error {
	switch s.keyword() {
	case "LUN":
		l, err := in.lun(s)
		if err != nil {
			return err
		}
		g.LUNs = append(g.LUNs, l)
	case "INITIATOR":
		ini, err := name(s)
		if err != nil {
			return err
		}
		if err := noBlock(s); err != nil {
			return err
		}
		g.Initiators = append(g.Initiators, ini.text)
	default:
		return in.extra(&g.Extra, s, "GROUP "+g.Name)
	}
	return nil
}

func (in *interp) deviceGroup(s *stmt) error {
	n, err := name(s)
	if err != nil {
		return err
	}
	dg := DeviceGroup{Name: n.text, Pos: s.pos()}
	for _, c := range s.block {
		if err := in.deviceGroupStmt(&dg, c); err != nil {
			return err
		}
	}
	in.f.DeviceGroups = append(in.f.DeviceGroups, dg)
	return nil
}

func (in *interp) deviceGroupStmt(dg *DeviceGroup, s *stmt) error {
	switch s.keyword() {
	case "DEVICE":
		dev, err := name(s)
		if err != nil {
			return err
		}
		if err := noBlock(s); err != nil {
			return err
		}
		dg.Devices = append(dg.Devices, dev.text)
	case "TARGET_GROUP":
		tg, err := in.targetGroup(s)
		if err != nil {
			return err
		}
		dg.TargetGroups = append(dg.TargetGroups, tg)
	default:
		return in.extra(&dg.Extra, s, "DEVICE_GROUP "+dg.Name)
	}
	return nil
}

func (in *interp) targetGroup(s *stmt) (TargetGroup, error) {
	n, err := name(s)
	if err != nil {
		return TargetGroup{}, err
	}
	tg := TargetGroup{Name: n.text, State: StateActive, Pos: s.pos()}
	set := seen{}
	for _, c := range s.block {
		if err := in.targetGroupStmt(&tg, c, set); err != nil {
			return TargetGroup{}, err
		}
	}
	return tg, nil
}

func (in *interp) targetGroupStmt(tg *TargetGroup, s *stmt, set seen) error {
	switch s.keyword() {
	case "group_id":
		return setUint16(&tg.GroupID, s, set)
	case "preferred":
		return setBool(&tg.Preferred, s, set)
	case "state":
		if err := set.once(s); err != nil {
			return err
		}
		v, at, err := value(s)
		if err != nil {
			return err
		}
		tg.State = v
		return wrap(at, checkState(v))
	case "TARGET":
		ref, err := in.targetRef(s)
		if err != nil {
			return err
		}
		tg.Targets = append(tg.Targets, ref)
	default:
		return in.extra(&tg.Extra, s, "TARGET_GROUP "+tg.Name)
	}
	return nil
}

func (in *interp) targetRef(s *stmt) (TargetRef, error) {
	n, err := name(s)
	if err != nil {
		return TargetRef{}, err
	}
	ref := TargetRef{Name: n.text, Pos: s.pos()}
	set := seen{}
	for _, c := range s.block {
		if c.keyword() == "rel_tgt_id" {
			err = setUint16(&ref.RelTgtID, c, set)
		} else {
			err = in.extra(&ref.Extra, c, "TARGET "+ref.Name)
		}
		if err != nil {
			return TargetRef{}, err
		}
	}
	return ref, nil
}
