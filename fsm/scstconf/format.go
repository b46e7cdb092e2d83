package scstconf

import (
	"bytes"
	"io"
	"strconv"
	"strings"
)

// HiddenSecret replaces CHAP secrets when FormatOptions.HideSecrets is set.
const HiddenSecret = "<hidden>"

// FormatOptions adjusts Write's output.
type FormatOptions struct {
	// HideSecrets writes HiddenSecret instead of each CHAP secret, for
	// output meant for people (logs, support bundles) rather than for SCST.
	HideSecrets bool
}

// Format returns f as canonical scst.conf text, secrets included. For a
// valid f (see Validate), Parse reads the text back into a File equal to f.
func Format(f *File) []byte {
	var b bytes.Buffer
	_ = Write(&b, f, FormatOptions{}) // a bytes.Buffer does not fail
	return b.Bytes()
}

// Write writes f to w as canonical scst.conf text: tab indentation,
// scstadmin's ordering, and attributes left out where they equal SCST's
// default. f.Comment opens the text; warnings are not written.
func Write(w io.Writer, f *File, opts FormatOptions) error {
	p := &printer{opts: opts}
	p.file(f)
	_, err := w.Write(p.buf.Bytes())
	return err
}

type printer struct {
	buf   bytes.Buffer
	opts  FormatOptions
	marks []blockMark
}

// blockMark remembers where an open block starts so that close can turn an
// empty block back into a plain statement, as scstadmin writes
// "DEVICE nodev" rather than "DEVICE nodev {}".
type blockMark struct {
	header int // offset of " {\n"
	body   int // offset just after it
}

func (p *printer) indent() {
	for range p.marks {
		p.buf.WriteByte('\t')
	}
}

func (p *printer) words(ws []string) {
	p.indent()
	for i, w := range ws {
		if i > 0 {
			p.buf.WriteByte(' ')
		}
		p.buf.WriteString(quote(w))
	}
}

func (p *printer) line(ws ...string) {
	p.words(ws)
	p.buf.WriteByte('\n')
}

func (p *printer) open(ws ...string) {
	p.words(ws)
	m := blockMark{header: p.buf.Len()}
	p.buf.WriteString(" {\n")
	m.body = p.buf.Len()
	p.marks = append(p.marks, m)
}

func (p *printer) close() {
	m := p.marks[len(p.marks)-1]
	p.marks = p.marks[:len(p.marks)-1]
	if p.buf.Len() == m.body {
		p.buf.Truncate(m.header)
		p.buf.WriteByte('\n')
		return
	}
	p.indent()
	p.buf.WriteString("}\n")
}

// gap separates top-level sections with a blank line.
func (p *printer) gap() {
	if p.buf.Len() > 0 {
		p.buf.WriteByte('\n')
	}
}

func (p *printer) file(f *File) {
	p.comment(f.Comment)
	if f.SetupID != "" {
		p.line("setup_id", f.SetupID)
	}
	p.devices(f.Devices)
	p.driver(f)
	for i := range f.DeviceGroups {
		p.gap()
		p.deviceGroup(&f.DeviceGroups[i])
	}
}

// comment writes each line of text as a "#" line. Splitting at every
// newline is what keeps the text a comment: a newline inside one "#" line
// would let the rest be read as configuration.
func (p *printer) comment(text string) {
	if text == "" {
		return
	}
	for line := range strings.SplitSeq(text, "\n") {
		p.buf.WriteByte('#')
		if line != "" {
			p.buf.WriteString(" " + line)
		}
		p.buf.WriteByte('\n')
	}
}

// devices writes one HANDLER block per run of devices with the same
// handler, which keeps the device order, and so Equal, intact.
func (p *printer) devices(ds []Device) {
	for i := 0; i < len(ds); {
		j := i
		for j < len(ds) && ds[j].Handler == ds[i].Handler {
			j++
		}
		p.gap()
		p.open("HANDLER", ds[i].Handler)
		for k := i; k < j; k++ {
			if k > i {
				p.buf.WriteByte('\n')
			}
			p.device(&ds[k])
		}
		p.close()
		i = j
	}
}

func (p *printer) device(d *Device) {
	p.open("DEVICE", d.Name)
	if d.Filename != "" {
		p.line("filename", d.Filename)
	}
	for _, b := range deviceBools {
		if v := *b.field(d); v != b.def {
			p.line(b.name, boolText(v))
		}
	}
	if d.BlockSize != DefaultBlockSize {
		p.line("blocksize", strconv.FormatUint(uint64(d.BlockSize), 10))
	}
	if d.Size != defaultSize(d.Handler) {
		p.line("size", strconv.FormatInt(d.Size, 10))
	}
	for _, s := range deviceStrings[1:] { // filename is written above
		if v := *s.field(d); v != "" {
			p.line(s.name, v)
		}
	}
	p.extra(d.Extra)
	p.close()
}

// driver writes TARGET_DRIVER iscsi unless it would say nothing.
func (p *printer) driver(f *File) {
	d := &f.ISCSIDriver
	if !d.Enabled && len(d.IncomingUsers)+len(d.OutgoingUsers)+len(d.Extra)+len(f.Targets) == 0 {
		return
	}
	p.gap()
	p.open("TARGET_DRIVER", "iscsi")
	p.line("enabled", boolText(d.Enabled))
	p.users("IncomingUser", d.IncomingUsers)
	p.users("OutgoingUser", d.OutgoingUsers)
	p.extra(d.Extra)
	for i := range f.Targets {
		p.buf.WriteByte('\n')
		p.target(&f.Targets[i])
	}
	p.close()
}

func (p *printer) target(t *Target) {
	p.open("TARGET", t.Name)
	p.line("enabled", boolText(t.Enabled))
	if t.RelTgtID != 0 {
		p.line("rel_tgt_id", strconv.FormatUint(uint64(t.RelTgtID), 10))
	}
	p.users("IncomingUser", t.IncomingUsers)
	p.users("OutgoingUser", t.OutgoingUsers)
	for _, prm := range t.Params {
		p.line(prm.Key, prm.Value)
	}
	p.extra(t.Extra)
	if len(t.LUNs) > 0 {
		p.buf.WriteByte('\n')
	}
	for i := range t.LUNs {
		p.lun(&t.LUNs[i])
	}
	for i := range t.Groups {
		p.buf.WriteByte('\n')
		p.group(&t.Groups[i])
	}
	p.close()
}

func (p *printer) users(key string, us []CHAPUser) {
	for _, u := range us {
		secret := u.Secret
		if p.opts.HideSecrets {
			secret = HiddenSecret
		}
		p.line(key, u.User+" "+secret)
	}
}

func (p *printer) lun(l *LUN) {
	p.open("LUN", strconv.FormatUint(l.Number, 10), l.Device)
	if l.ReadOnly {
		p.line("read_only", "1")
	}
	p.extra(l.Extra)
	p.close()
}

func (p *printer) group(g *Group) {
	p.open("GROUP", g.Name)
	for i := range g.LUNs {
		p.lun(&g.LUNs[i])
	}
	for _, ini := range g.Initiators {
		p.line("INITIATOR", ini)
	}
	p.extra(g.Extra)
	p.close()
}

func (p *printer) deviceGroup(dg *DeviceGroup) {
	p.open("DEVICE_GROUP", dg.Name)
	for _, d := range dg.Devices {
		p.line("DEVICE", d)
	}
	p.extra(dg.Extra)
	for i := range dg.TargetGroups {
		p.buf.WriteByte('\n')
		p.targetGroup(&dg.TargetGroups[i])
	}
	p.close()
}

func (p *printer) targetGroup(tg *TargetGroup) {
	p.open("TARGET_GROUP", tg.Name)
	if tg.GroupID != 0 {
		p.line("group_id", strconv.FormatUint(uint64(tg.GroupID), 10))
	}
	p.line("state", tg.State)
	if tg.Preferred {
		p.line("preferred", "1")
	}
	p.extra(tg.Extra)
	for _, ref := range tg.Targets {
		p.open("TARGET", ref.Name)
		if ref.RelTgtID != 0 {
			p.line("rel_tgt_id", strconv.FormatUint(uint64(ref.RelTgtID), 10))
		}
		p.extra(ref.Extra)
		p.close()
	}
	p.close()
}

func (p *printer) extra(attrs []Attr) {
	for _, a := range attrs {
		p.line(a.Name, a.Value)
	}
}

func boolText(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// quote returns s as one word the lexer reads back as s. Words that need
// it are double-quoted; inside quotes, '"' and '#' are always escaped (the
// latter because scstadmin strips comments before it looks at quotes), and
// a backslash is doubled only where the lexer would otherwise take it as
// an escape.
func quote(s string) string {
	if s != "" && !needsQuote(s) {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '#':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\\' && (i+1 == len(s) || isEscapable(s[i+1])):
			b.WriteString(`\\`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// needsQuote reports whether s cannot be written bare. A backslash is
// harmless unless the lexer would read it as an escape, which keeps Windows
// paths and the like readable.
func needsQuote(s string) bool {
	if strings.HasPrefix(s, string(utf8BOM)) {
		return true // the lexer drops a BOM at the start of a file
	}
	for i := 0; i < len(s); i++ {
		if endsWord(s[i]) || s[i] == '\\' && (i+1 == len(s) || isEscapable(s[i+1])) {
			return true
		}
	}
	return false
}
