package scsi

import (
	"bytes"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hatarget/hatarget/target/backend/backendtest"
)

func TestUnitAttentionLifecycle(t *testing.T) {
	h := newHarness(t, nil)
	a := h.n
	b := testNexus("iqn.1994-05.com.example:host2", 2)
	ua := func(code uint16) want { return wantSense(KeyUnitAttention, code) }
	tur := func(n *Nexus) *Result { return first(h.exec(n, cdbTUR(), nil, 0)) }

	// A new nexus sees POWER ON, RESET once; INQUIRY and REPORT LUNS neither
	// report nor clear it.
	res, _ := h.exec(b, cdbInquiry(false, 0, 96), nil, 96)
	good.check(t, res)
	ua(ascPowerOnReset).check(t, tur(b))
	good.check(t, tur(b))

	// REQUEST SENSE returns and clears the condition, in either format.
	h.lu.ResetLU(a)
	res, data := h.exec(b, []byte{opRequestSense, 1, 0, 0, 252, 0}, nil, 252)
	good.check(t, res)
	if p, err := parseSense(data); err != nil || !p.descriptor || p.Key != KeyUnitAttention || p.code() != ascBusDeviceReset {
		t.Fatalf("REQUEST SENSE data % x (%v)", data, err)
	}
	res, data = h.exec(b, []byte{opRequestSense, 0, 0, 0, 252, 0}, nil, 252)
	good.check(t, res)
	if p, _ := parseSense(data); p.descriptor || p.Key != KeyNoSense || p.code() != 0 {
		t.Fatalf("REQUEST SENSE without a condition: % x", data)
	}
	// The reset reached the requester as well.
	ua(ascBusDeviceReset).check(t, tur(a))
	good.check(t, tur(a))

	// Conditions queue in order and are reported one per command.
	h.lu.RaiseReportedLUNsChanged()
	if err := h.lu.Update(h.lu.state.Load().cfg); err != nil {
		t.Fatal(err)
	}
	cfg := h.lu.state.Load().cfg
	cfg.Device = backendtest.NewMem(4 * testBlocks * 512)
	if err := h.lu.Update(cfg); err != nil {
		t.Fatal(err)
	}
	ua(ascReportedLUNsChanged).check(t, tur(a))
	ua(ascCapacityDataChanged).check(t, tur(a))
	good.check(t, tur(a))

	// REPORT LUNS through a View clears REPORTED LUNS DATA HAS CHANGED.
	v := testView{0: h.lu}
	h.lu.RaiseReportedLUNsChanged()
	res = &Result{}
	Execute(v, &Command{Nexus: b, CDB: cdbReportLUNs(0, 64), DataIn: make([]byte, 64)}, res)
	good.check(t, res)
	ua(ascCapacityDataChanged).check(t, tur(b))
	good.check(t, tur(b))

	// I_T nexus loss: the lost nexus sees it on return, the other does not.
	h.lu.NexusLoss(b)
	ua(ascITNexusLoss).check(t, tur(b))
	good.check(t, tur(b))
	ua(ascReportedLUNsChanged).check(t, tur(a)) // a has not sent REPORT LUNS
	good.check(t, tur(a))

	// MODE SELECT tells the other nexuses only.
	page := h.modePage(pcCurrent, 0x0a)
	page[2] |= 0x04
	res, _ = h.exec(a, cdbModeSelect6(true, false, byte(4+len(page))), append(make([]byte, 4), page...), 0)
	good.check(t, res)
	good.check(t, tur(a))
	ua(ascModeParametersChanged).check(t, tur(b))
	// Selecting the same values again changes nothing and says nothing.
	res, _ = h.exec(a, cdbModeSelect6(true, false, byte(4+len(page))), append(make([]byte, 4), page...), 0)
	good.check(t, res)
	good.check(t, tur(b))

	// Unknown opcodes still report the pending condition first.
	h.lu.RaiseReportedLUNsChanged()
	ua(ascReportedLUNsChanged).check(t, first(h.exec(a, []byte{0xc1, 0, 0, 0, 0, 0}, nil, 0)))
}

func TestUnitAttentionOverflowAndLostNexuses(t *testing.T) {
	h := newHarness(t, nil)
	codes := []uint16{ascReportedLUNsChanged, ascCapacityDataChanged, ascModeParametersChanged, ascInquiryDataChanged}
	for i := 0; i < 3*maxPendingUA; i++ {
		h.lu.raiseAll(codes[i%len(codes)]+uint16(i<<8), nil)
	}
	n := 0
	for tur := first(h.run(cdbTUR(), nil, 0)); tur.Status != StatusGood; tur = first(h.run(cdbTUR(), nil, 0)) {
		n++
	}
	if n != maxPendingUA {
		t.Fatalf("%d conditions reported, want %d", n, maxPendingUA)
	}

	for i := range maxLostNexuses + 10 {
		n := testNexus("iqn.x:lost", byte(i))
		n.Key += string(rune(i))
		h.lu.NexusLoss(n)
	}
	h.lu.mu.RLock()
	size := len(h.lu.nexuses)
	h.lu.mu.RUnlock()
	if size > maxLostNexuses+2 {
		t.Fatalf("%d nexuses remembered", size)
	}
}

type testView map[uint64]*LU

func (v testView) LU(lun uint64) *LU { return v[lun] }
func (v testView) LUNs() []uint64 {
	var l []uint64
	for k := range v {
		l = append(l, k)
	}
	slices.Sort(l)
	return l
}

func cdbReportLUNs(sel byte, alloc uint32) []byte {
	c := make([]byte, 12)
	c[0], c[2] = opReportLUNs, sel
	putU32(c[6:], alloc)
	return c
}

func TestViewAndUnmappedLUNs(t *testing.T) {
	h := newHarness(t, nil)
	v := testView{0: h.lu, 300: h.lu}
	run := func(lun uint64, cdb []byte, edtl int) (*Result, []byte) {
		t.Helper()
		buf := make([]byte, edtl)
		cmd := &Command{Nexus: h.n, LUN: lun, CDB: cdb, DataIn: buf}
		res := &Result{}
		Execute(v, cmd, res)
		checkResult(t, cmd, res, buf, edtl)
		return res, buf[:res.DataInLen]
	}

	res, data := run(5, cdbReportLUNs(0, 64), 64)
	good.check(t, res)
	want := []byte{0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x41, 0x2c, 0, 0, 0, 0, 0, 0}
	if !bytes.Equal(data, want) {
		t.Fatalf("REPORT LUNS % x", data)
	}
	res, data = run(0, cdbReportLUNs(1, 64), 64)
	good.check(t, res)
	if !bytes.Equal(data, make([]byte, 8)) {
		t.Fatalf("well-known LUNs % x", data)
	}
	wantCDB(6, -1).check(t, first(run(0, cdbReportLUNs(0, 15), 15)))
	wantCDB(2, -1).check(t, first(run(0, cdbReportLUNs(3, 64), 64)))
	res, data = run(0, cdbReportLUNs(0, 16), 16)
	good.check(t, res)
	if res.Transfer != 16 || getU32(data) != 16 {
		t.Fatalf("truncated REPORT LUNS: transfer %d data % x", res.Transfer, data)
	}

	res, data = run(7, cdbInquiry(false, 0, 96), 96)
	good.check(t, res)
	if data[0] != 0x7f {
		t.Fatalf("unmapped INQUIRY byte 0 %#x", data[0])
	}
	res, data = run(7, []byte{opRequestSense, 0, 0, 0, 18, 0}, 18)
	good.check(t, res)
	if p, _ := parseSense(data); p.Key != KeyIllegalRequest || p.code() != ascLUNotSupported {
		t.Fatalf("unmapped REQUEST SENSE % x", data)
	}
	notSupp := wantSense(KeyIllegalRequest, ascLUNotSupported)
	notSupp.check(t, first(run(7, cdbTUR(), 0)))
	notSupp.check(t, first(run(7, cdbRW10(opRead10, 0, 1, 0), 512)))
	good.check(t, first(run(300, cdbRW10(opRead10, 0, 1, 0), 512)))
}

func TestInquiry(t *testing.T) {
	h := newHarness(t, func(c *LUConfig) {
		c.VendorID, c.ProductID, c.Revision, c.Serial, c.DeviceID = "ACME", "DISK", "12", "SN42", "dev42"
	})
	res, std := h.run(cdbInquiry(false, 0, 260), nil, 260)
	good.check(t, res)
	if len(std) != 96 || int(std[4]) != len(std)-5 || std[0] != 0 || std[2] != 6 || std[3] != 0x12 ||
		std[5]&0x30 != 0x10 || std[7]&0x02 == 0 || std[1] != 0 {
		t.Fatalf("standard INQUIRY % x", std[:8])
	}
	if string(std[8:16]) != "ACME    " || string(std[16:32]) != "DISK            " || string(std[32:36]) != "12  " {
		t.Fatalf("identification %q", std[8:36])
	}
	for i, v := range []uint16{0x00a0, 0x0960, 0x0460, 0x04c0} {
		if getU16(std[58+2*i:]) != v {
			t.Fatalf("version descriptor %d: %#x", i, getU16(std[58+2*i:]))
		}
	}
	for alloc := range 100 {
		res, d := h.run(cdbInquiry(false, 0, uint16(alloc)), nil, 255)
		good.check(t, res)
		if !bytes.Equal(d, std[:min(alloc, 96)]) || res.Transfer != min(alloc, 96) {
			t.Fatalf("alloc %d: %d bytes", alloc, len(d))
		}
	}

	wantCDB(2, -1).check(t, first(h.run(cdbInquiry(false, 1, 255), nil, 255)))
	wantCDB(2, -1).check(t, first(h.run(cdbInquiry(true, 0x42, 255), nil, 255)))
	wantCDB(1, 1).check(t, first(h.run([]byte{opInquiry, 2, 0, 0, 255, 0}, nil, 255)))

	_, pages := h.run(cdbInquiry(true, 0, 255), nil, 255)
	if !bytes.Equal(pages, []byte{0, 0, 0, 6, 0x00, 0x80, 0x83, 0x8f, 0xb0, 0xb1}) {
		t.Fatalf("supported pages % x", pages)
	}
	for _, p := range pages[4:] {
		res, d := h.run(cdbInquiry(true, p, 255), nil, 255)
		good.check(t, res)
		if d[1] != p || int(getU16(d[2:]))+4 != len(d) {
			t.Fatalf("page %#x header % x, %d bytes", p, d[:4], len(d))
		}
	}
	_, serial := h.run(cdbInquiry(true, 0x80, 255), nil, 255)
	if string(serial[4:]) != "SN42" {
		t.Fatalf("serial %q", serial[4:])
	}
	_, bl := h.run(cdbInquiry(true, 0xb0, 64), nil, 64)
	if len(bl) != 64 || bl[3] != 0x3c || getU32(bl[8:]) != MaxTransferBytes/512 || getU32(bl[20:]) != 0 || getU32(bl[24:]) != 0 {
		t.Fatalf("block limits % x", bl)
	}
	_, bc := h.run(cdbInquiry(true, 0xb1, 64), nil, 64)
	if getU16(bc[4:]) != 1 {
		t.Fatalf("rotation rate %d", getU16(bc[4:]))
	}

	_, id := h.run(cdbInquiry(true, 0x83, 512), nil, 512)
	desigs := parseDesignators(t, id)
	naa := h.lu.state.Load().naa
	if len(desigs) != 6 {
		t.Fatalf("%d designators", len(desigs))
	}
	check := func(i int, hdr0, hdr1 byte, body []byte) {
		t.Helper()
		d := desigs[i]
		if d[0] != hdr0 || d[1] != hdr1 || !bytes.Equal(d[4:], body) {
			t.Fatalf("designator %d: % x, want %02x %02x % x", i, d, hdr0, hdr1, body)
		}
	}
	check(0, 0x01, 0x03, naa[:])
	check(1, 0x02, 0x01, []byte("ACME    dev42"))
	check(2, 0x51, 0x94, []byte{0, 0, 0, 7})
	check(3, 0x51, 0x95, []byte{0, 0, 0, 3})
	check(4, 0x53, 0x98, scsiName("iqn.2024-01.org.hatarget:t1,t,0x0001"))
	check(5, 0x53, 0xa8, scsiName("iqn.2024-01.org.hatarget:t1"))
	if naa[0]>>4 != 6 {
		t.Fatalf("NAA % x", naa)
	}
	if len(desigs[4])%4 != 0 || !strings.HasSuffix(string(desigs[4]), "\x00") {
		t.Fatalf("SCSI name string not padded: %q", desigs[4])
	}
}

func parseDesignators(t *testing.T, page []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for b := page[4:]; len(b) > 0; {
		if len(b) < 4 || len(b) < 4+int(b[3]) {
			t.Fatalf("truncated designator % x", b)
		}
		out = append(out, b[:4+b[3]])
		b = b[4+b[3]:]
	}
	return out
}

func TestDeriveNAAIsStable(t *testing.T) {
	a, b, c := deriveNAA("x"), deriveNAA("x"), deriveNAA("y")
	if a != b || a == c || a[0]>>4 != 6 {
		t.Fatalf("derived NAAs % x % x % x", a, b, c)
	}
	// Without a serial the NAA is random: two LUs must not share one.
	if first, second := deriveNAA(""), deriveNAA(""); first == second {
		t.Fatal("LUs without a serial share an NAA")
	}
	h := newHarness(t, func(c *LUConfig) { c.Serial = "" })
	before := h.lu.state.Load().naa
	if err := h.lu.Update(h.lu.state.Load().cfg); err != nil || h.lu.state.Load().naa != before {
		t.Fatal("Update changed a random NAA")
	}
	good.check(t, first(h.run(cdbTUR(), nil, 0)))
	custom := [16]byte{0x60, 1, 2, 3}
	h = newHarness(t, func(c *LUConfig) { c.NAA = custom })
	if h.lu.state.Load().naa != custom {
		t.Fatal("configured NAA ignored")
	}
}

func TestModeSense(t *testing.T) {
	h := newHarness(t, nil)
	res, all := h.run(cdbModeSense6(false, pcCurrent, allPages, 0, 255), nil, 255)
	good.check(t, res)
	if int(all[0])+1 != len(all) || all[3] != 8 || getU32(all[4:]) != testBlocks || getU32(all[8:]) != 512 {
		t.Fatalf("mode sense header % x", all[:12])
	}
	var codes []byte
	for p := all[12:]; len(p) > 0; p = p[2+int(p[1]):] {
		codes = append(codes, p[0]&0x3f)
	}
	if !bytes.Equal(codes, []byte{0x01, 0x08, 0x0a, 0x1c}) {
		t.Fatalf("pages % x", codes)
	}
	ctl := h.modePage(pcCurrent, 0x0a)
	if len(ctl) != 12 || ctl[1] != 0x0a || ctl[2] != 0 || ctl[3] != 0x10 || getU16(ctl[8:]) != 0xffff {
		t.Fatalf("control page % x", ctl)
	}
	if chg := h.modePage(pcChangeable, 0x0a); chg[2] != 0x04 || chg[4] != 0x08 || chg[3] != 0 {
		t.Fatalf("changeable control % x", chg)
	}
	if chg := h.modePage(pcChangeable, 0x08); chg[2] != 0x04 {
		t.Fatalf("changeable caching % x", chg)
	}
	if def := h.modePage(pcDefault, 0x08); def[2]&0x04 == 0 {
		t.Fatalf("default caching % x", def)
	}
	wantSense(KeyIllegalRequest, ascSavingParamsNotSupp).check(t, first(h.run(cdbModeSense6(false, pcSaved, 0x08, 0, 255), nil, 255)))
	wantCDB(2, 5).check(t, first(h.run(cdbModeSense6(false, pcCurrent, 0x19, 0, 255), nil, 255)))
	wantCDB(3, -1).check(t, first(h.run(cdbModeSense6(false, pcCurrent, 0x0a, 1, 255), nil, 255)))
	good.check(t, first(h.run(cdbModeSense6(false, pcCurrent, allPages, 0xff, 255), nil, 255)))

	// Short allocation length: truncated, no overflow.
	res, d := h.run(cdbModeSense6(false, pcCurrent, allPages, 0, 4), nil, 4)
	good.check(t, res)
	if len(d) != 4 || res.Transfer != 4 {
		t.Fatalf("alloc 4: %d bytes, transfer %d", len(d), res.Transfer)
	}

	// MODE SENSE(10) with a long LBA descriptor.
	res, d = h.run(cdbModeSense10(0x10, pcCurrent, 0x08, 0, 512), nil, 512)
	good.check(t, res)
	if int(getU16(d))+2 != len(d) || d[4]&1 == 0 || getU16(d[6:]) != 16 || getU64(d[8:]) != testBlocks || getU32(d[20:]) != 512 {
		t.Fatalf("mode sense(10) % x", d[:24])
	}
}

func TestModeSelectValidation(t *testing.T) {
	h := newHarness(t, nil)
	ctl := h.modePage(pcCurrent, 0x0a)
	sel := func(cdb []byte, param []byte) *Result { return first(h.run(cdb, param, 0)) }
	hdr := make([]byte, 4)
	with := func(p []byte, i int, v byte) []byte { p = bytes.Clone(p); p[i] = v; return p }
	plist := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	ms6 := func(n int) []byte { return cdbModeSelect6(true, false, byte(n)) }

	for _, tc := range []struct {
		name  string
		cdb   []byte
		param []byte
		want  want
	}{
		{"unchanged", ms6(16), plist(hdr, ctl), good},
		{"PF clear", cdbModeSelect6(false, false, 16), plist(hdr, ctl), good},
		{"empty list", ms6(0), nil, good},
		{"SP", cdbModeSelect6(true, true, 16), plist(hdr, ctl), wantCDB(1, 0)},
		{"fixed field", ms6(16), plist(hdr, with(ctl, 3, 0x00)), wantParam(7, 4)},
		{"busy timeout", ms6(16), plist(hdr, with(ctl, 9, 0)), wantParam(13, 7)},
		{"page length", ms6(16), plist(hdr, with(ctl, 1, 0x0b)), wantParam(5, -1)},
		{"unknown page", ms6(16), plist(hdr, with(ctl, 0, 0x19)), wantParam(4, 5)},
		{"subpage format", ms6(16), plist(hdr, with(ctl, 0, 0x4a)), wantParam(4, 6)},
		{"medium type", ms6(16), plist(with(hdr, 1, 1), ctl), wantParam(1, -1)},
		{"short header", ms6(3), hdr[:3], wantSense(KeyIllegalRequest, ascParamListLengthError)},
		{"truncated page", ms6(10), plist(hdr, ctl[:6]), wantSense(KeyIllegalRequest, ascParamListLengthError)},
		{"block descriptor", ms6(24), plist(with(hdr, 3, 8), []byte{0, 0, 8, 0, 0, 0, 2, 0}, ctl), good},
		{"block size change", ms6(24), plist(with(hdr, 3, 8), []byte{0, 0, 0, 0, 0, 0, 16, 0}, ctl), wantParam(9, -1)},
		{"bad descriptor length", ms6(20), plist(with(hdr, 3, 4), ctl[:4], ctl), wantParam(3, -1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.want.check(t, sel(tc.cdb, tc.param))
		})
	}

	// MODE SELECT(10) header is 8 bytes.
	cdb := []byte{opModeSelect10, 0x10, 0, 0, 0, 0, 0, 0, 20, 0}
	good.check(t, sel(cdb, plist(make([]byte, 8), with(ctl, 2, 0x04))))
	if !h.lu.dsense.Load() {
		t.Fatal("D_SENSE not applied")
	}
}

func TestDSenseSelectsFormat(t *testing.T) {
	h := newHarness(t, nil)
	oob := cdbRW16(opRead16, ^uint64(0), 1, 0)
	res, _ := h.run(oob, nil, 512)
	if res.Sense[0] != 0x70 {
		t.Fatalf("sense format %#x with D_SENSE=0", res.Sense[0])
	}
	ctl := h.modePage(pcCurrent, 0x0a)
	ctl[2] |= 0x04
	good.check(t, first(h.run(cdbModeSelect6(true, false, 16), append(make([]byte, 4), ctl...), 0)))
	res, _ = h.run(oob, nil, 512)
	if res.Sense[0] != 0x72 {
		t.Fatalf("sense format %#x with D_SENSE=1", res.Sense[0])
	}
	wantSense(KeyIllegalRequest, ascLBAOutOfRange).check(t, res)
	res, _ = h.run(cdbRW10(opRead10, 0, 1, 0x20), nil, 512)
	wantCDB(1, 7).check(t, res)
}

func TestSenseEncoding(t *testing.T) {
	s := invalidCDB(7, 3)
	var b [SenseBufLen]byte
	n := s.encode(b[:], false)
	want := []byte{0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0xcb, 0, 7}
	if !bytes.Equal(b[:n], want) {
		t.Fatalf("fixed % x", b[:n])
	}
	n = s.encode(b[:], true)
	want = []byte{0x72, 5, 0x24, 0, 0, 0, 0, 8, 0x02, 0x06, 0, 0, 0xcb, 0, 7, 0}
	if !bytes.Equal(b[:n], want) {
		t.Fatalf("descriptor % x", b[:n])
	}
	m := miscompare(0x1234)
	n = m.encode(b[:], false)
	if b[0] != 0xf0 || getU32(b[3:]) != 0x1234 || b[2] != KeyMiscompare || n != 18 {
		t.Fatalf("fixed miscompare % x", b[:n])
	}
	n = m.encode(b[:], true)
	if n != 20 || b[8] != 0 || b[9] != 0x0a || b[10] != 0x80 || getU64(b[12:]) != 0x1234 {
		t.Fatalf("descriptor miscompare % x", b[:n])
	}
	p := invalidParam(300, -1)
	n = p.encode(b[:], false)
	if b[12] != 0x26 || b[15] != 0x80 || getU16(b[16:]) != 300 {
		t.Fatalf("parameter field pointer % x", b[:n])
	}
}

// TestReportSupportedOpcodes checks that the report is the dispatch table,
// and that the table's usage data is exactly what Execute enforces.
func TestReportSupportedOpcodes(t *testing.T) {
	h := newHarness(t, nil)
	res, all := h.run(cdbMaintIn(saReportOpcodes, 0, 0, 0, 65535), nil, 65535)
	good.check(t, res)
	if int(getU32(all))+4 != len(all) || (len(all)-4)%8 != 0 {
		t.Fatalf("RSOC length %d", len(all))
	}
	var listed []*command
	for d := all[4:]; len(d) > 0; d = d[8:] {
		c := dispatch.find(d[0], getU16(d[2:]), d[5]&0x01 != 0)
		if c == nil || d[5]&0x02 != 0 || int(getU16(d[6:])) != len(c.usage) {
			t.Fatalf("descriptor % x does not match the table", d[:8])
		}
		listed = append(listed, c)
	}
	offeredCount := 0
	for i := range dispatch.list {
		if offered(&dispatch.list[i], h.lu.state.Load()) != nil {
			offeredCount++
		}
	}
	if len(listed) != offeredCount {
		t.Fatalf("%d commands reported, table offers %d", len(listed), offeredCount)
	}

	_, rctd := h.run(cdbMaintIn(saReportOpcodes, 0x80, 0, 0, 65535), nil, 65535)
	if len(rctd)-4 != 20*len(listed) {
		t.Fatalf("RCTD report length %d", len(rctd))
	}
	for d := rctd[4:]; len(d) > 0; d = d[20:] {
		if d[5]&0x02 == 0 || getU16(d[8:]) != 0x0a {
			t.Fatalf("RCTD descriptor % x", d[:20])
		}
	}

	for _, c := range listed {
		opt, sa := byte(rsocOpcode), uint16(0)
		if c.hasSA {
			opt, sa = rsocOpcodeSA, uint16(c.sa)
		}
		res, one := h.run(cdbMaintIn(saReportOpcodes, opt, c.opcode, sa, 512), nil, 512)
		good.check(t, res)
		if one[1]&0x07 != 3 || int(getU16(one[2:])) != len(c.usage) || !bytes.Equal(one[4:], c.usage) {
			t.Fatalf("one command %#x/%#x: % x", c.opcode, c.sa, one)
		}
		// The wrong reporting option for the opcode is an error.
		wrong := byte(rsocOpcodeSA)
		if c.hasSA {
			wrong = rsocOpcode
		}
		wantCDB(2, 2).check(t, first(h.run(cdbMaintIn(saReportOpcodes, wrong, c.opcode, sa, 512), nil, 512)))
		checkUsageEnforced(t, c)
	}

	_, none := h.run(cdbMaintIn(saReportOpcodes, rsocOpcode, 0x3b, 0, 512), nil, 512) // WRITE BUFFER
	if !bytes.Equal(none, []byte{0, 1, 0, 0}) {
		t.Fatalf("unsupported opcode: % x", none)
	}
	_, none = h.run(cdbMaintIn(saReportOpcodes, rsocOpcodeSA, opServiceActionIn16, 0x1f, 512), nil, 512)
	if !bytes.Equal(none, []byte{0, 1, 0, 0}) {
		t.Fatalf("unsupported service action: % x", none)
	}
	wantCDB(2, 2).check(t, first(h.run(cdbMaintIn(saReportOpcodes, 3, 0, 0, 512), nil, 512)))
	// The READ(10) usage data advertises DPO and FUA, as MODE SENSE's DPOFUA does.
	if dispatch.find(opRead10, 0, false).usage[1]&0x18 != 0x18 {
		t.Fatal("READ(10) usage lacks DPO/FUA")
	}
}

// checkUsageEnforced sets, one at a time, every CDB bit the usage data calls
// reserved and expects INVALID FIELD IN CDB pointing at it.
func checkUsageEnforced(t *testing.T, c *command) {
	t.Helper()
	lu, err := NewLU(LUConfig{Device: backendtest.NewMem(1 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	lu.nexusFor(nil).pop()
	for i := 1; i < len(c.usage); i++ {
		for bit := range 8 {
			mask := byte(1) << bit
			if c.usage[i]&mask != 0 || (i == 1 && c.hasSA && mask&0x1f != 0) {
				continue
			}
			cdb := make([]byte, len(c.usage))
			cdb[0] = c.opcode
			if c.hasSA {
				cdb[1] = c.sa
			}
			cdb[i] |= mask
			res := &Result{}
			lu.Execute(&Command{CDB: cdb, DataIn: make([]byte, 64)}, res)
			p := mustSense(t, res)
			if p.code() != ascInvalidFieldInCDB || int(p.Field) != i || int(p.Bit) != bit {
				t.Fatalf("opcode %#x sa %#x byte %d bit %d: sense %x/%04x field %d bit %d",
					c.opcode, c.sa, i, bit, p.Key, p.code(), p.Field, p.Bit)
			}
		}
	}
}

func TestReportTMFAndTargetPortGroups(t *testing.T) {
	h := newHarness(t, nil)
	res, d := h.run(cdbMaintIn(saReportTMFunction, 0, 0, 0, 4), nil, 4)
	good.check(t, res)
	if !bytes.Equal(d, []byte{0xda, 0x01, 0, 0}) {
		t.Fatalf("RSTMF % x", d)
	}
	_, d = h.run(cdbMaintIn(saReportTMFunction, 0x80, 0, 0, 16), nil, 16)
	if len(d) != 16 || d[3] != 0x0c {
		t.Fatalf("RSTMF extended % x", d)
	}
	wantCDB(6, -1).check(t, first(h.run(cdbMaintIn(saReportTMFunction, 0, 0, 0, 3), nil, 3)))

	_, d = h.run(cdbMaintIn(saReportTPG, 0, 0, 0, 64), nil, 64)
	if len(d) != 16 || getU32(d) != 12 || d[4] != 0 || d[5] != 1 || getU16(d[6:]) != 3 || d[11] != 1 || getU16(d[14:]) != 7 {
		t.Fatalf("RTPG % x", d)
	}
	_, d = h.run(cdbMaintIn(saReportTPG|0x20, 0, 0, 0, 64), nil, 64)
	if len(d) != 20 || d[4] != 0x10 || getU32(d) != 16 {
		t.Fatalf("RTPG extended % x", d)
	}
}

func TestStartStopAndPrevent(t *testing.T) {
	ssu := func(immed, noFlush, loej, start bool, pc byte) []byte {
		c := []byte{opStartStopUnit, 0, 0, 0, pc << 4, 0}
		for i, b := range []bool{noFlush, loej, start} {
			if b {
				c[4] |= 0x04 >> i
			}
		}
		if immed {
			c[1] = 1
		}
		return c
	}
	prevent := func(p byte) []byte { return []byte{opPreventAllow, 0, 0, 0, p, 0} }
	read := cdbRW10(opRead10, 0, 1, 0)
	noMedium := wantSense(KeyNotReady, ascMediumNotPresent)

	t.Run("fixed", func(t *testing.T) {
		h := newHarness(t, nil)
		wantCDB(4, 1).check(t, first(h.run(ssu(true, false, true, false, 0), nil, 0)))
		good.check(t, first(h.run(prevent(1), nil, 0)))
		// Stopping flushes (unless NO_FLUSH) but leaves the LU serving.
		good.check(t, first(h.run(ssu(false, false, false, false, 0), nil, 0)))
		if f := h.dev.Counts().Flushes; f != 1 {
			t.Fatal("stopping did not flush")
		}
		good.check(t, first(h.run(ssu(true, true, false, false, 0), nil, 0)))
		if f := h.dev.Counts().Flushes; f != 1 {
			t.Fatal("NO_FLUSH stop flushed")
		}
		good.check(t, first(h.run(cdbTUR(), nil, 0)))
		good.check(t, first(h.run(read, nil, 512)))
		good.check(t, first(h.run(ssu(false, false, false, true, 0), nil, 0)))
		good.check(t, first(h.run(ssu(false, false, false, false, 3), nil, 0)))
		good.check(t, first(h.run(read, nil, 512)))
		wantCDB(4, 1).check(t, first(h.run(prevent(2), nil, 0)))
	})
	t.Run("removable", func(t *testing.T) {
		h := newHarness(t, func(c *LUConfig) { c.Removable = true })
		other := testNexus("iqn.x:other", 9)
		h.clearUA(other)
		_, std := h.run(cdbInquiry(false, 0, 36), nil, 36)
		if std[1] != 0x80 {
			t.Fatal("RMB not set")
		}
		good.check(t, first(h.run(prevent(1), nil, 0)))
		wantSense(KeyIllegalRequest, ascMediumRemovalPrevented).check(t, first(h.exec(other, ssu(false, false, true, false, 0), nil, 0)))
		good.check(t, first(h.run(cdbTUR(), nil, 0)))
		good.check(t, first(h.run(prevent(0), nil, 0)))
		good.check(t, first(h.run(ssu(true, false, true, false, 0), nil, 0)))
		noMedium.check(t, first(h.run(cdbTUR(), nil, 0)))
		noMedium.check(t, first(h.run(read, nil, 512)))
		noMedium.check(t, first(h.run([]byte{opReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 8)))
		noMedium.check(t, first(h.run(cdbRW10(opSyncCache10, 0, 0, 0), nil, 0)))
		_, d := h.run([]byte{opRequestSense, 0, 0, 0, 18, 0}, nil, 18)
		if p, _ := parseSense(d); p.Key != KeyNotReady || p.code() != ascMediumNotPresent {
			t.Fatalf("REQUEST SENSE without medium % x", d)
		}
		good.check(t, first(h.run(ssu(true, false, true, true, 0), nil, 0)))
		good.check(t, first(h.run(read, nil, 512)))

		// I_T nexus loss and LU reset release PREVENT.
		good.check(t, first(h.exec(other, prevent(1), nil, 0)))
		h.lu.NexusLoss(other)
		good.check(t, first(h.run(ssu(false, false, true, false, 0), nil, 0)))
		good.check(t, first(h.run(ssu(false, false, true, true, 0), nil, 0)))
		good.check(t, first(h.run(prevent(1), nil, 0)))
		h.lu.ResetLU(h.n)
		h.clearUA(h.n)
		good.check(t, first(h.run(ssu(false, false, true, false, 0), nil, 0)))
	})
}

func TestCloseAndUpdateErrors(t *testing.T) {
	h := newHarness(t, nil)
	if err := h.lu.Update(LUConfig{}); err == nil {
		t.Fatal("Update accepted a config without a device")
	}
	cfg := h.lu.state.Load().cfg
	cfg.ProductID = "OTHER"
	if err := h.lu.Update(cfg); err != nil {
		t.Fatal(err)
	}
	wantSense(KeyUnitAttention, ascInquiryDataChanged).check(t, first(h.run(cdbTUR(), nil, 0)))
	cfg.WriteCache = false
	if err := h.lu.Update(cfg); err != nil || h.lu.wce.Load() {
		t.Fatal("Update did not apply WriteCache")
	}
	wantSense(KeyUnitAttention, ascModeParametersChanged).check(t, first(h.run(cdbTUR(), nil, 0)))
	if err := h.lu.Close(); err != nil || h.dev.Closed() {
		t.Fatal("Close must retire the LU and leave the device to its owner")
	}
	wantSense(KeyNotReady, ascNotReadyCauseUnknown).check(t, first(h.run(cdbRW10(opRead10, 0, 1, 0), nil, 512)))
}

// TestConcurrentUse runs I/O from several nexuses while the LU is reset,
// reconfigured and mode-selected; run it with -race.
func TestConcurrentUse(t *testing.T) {
	h := newHarness(t, nil)
	cfg := h.lu.state.Load().cfg
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			n := testNexus("iqn.x:concurrent", byte(i))
			cdbs := [][]byte{
				cdbRW10(opWrite10, uint32(i*8), 8, 0), cdbRW10(opRead10, uint32(i*8), 8, 0),
				cdbInquiry(true, 0x83, 255), cdbModeSense6(false, pcCurrent, allPages, 0, 255),
				{opRequestSense, 0, 0, 0, 18, 0}, cdbRW10(opSyncCache10, 0, 0, 0),
			}
			for j := range 300 {
				cmd := &Command{Nexus: n, CDB: cdbs[j%len(cdbs)], DataOut: make([]byte, 4096), DataIn: make([]byte, 4096)}
				res := &Result{}
				h.lu.Execute(cmd, res)
				if res.Status == StatusCheckCondition {
					if p, err := parseSense(res.Sense); err != nil || p.Key != KeyUnitAttention {
						t.Errorf("cdb % x: unexpected failure %+v %v", cmd.CDB, p, err)
						return
					}
				}
			}
		})
	}
	ctl := h.modePage(pcCurrent, 0x0a)
	wg.Go(func() {
		for j := range 100 {
			switch j % 5 {
			case 0:
				h.lu.ResetLU(nil)
			case 1:
				h.lu.NexusLoss(testNexus("iqn.x:concurrent", byte(j%4)))
			case 2:
				h.lu.RaiseReportedLUNsChanged()
			case 3:
				cfg.WriteCache = !cfg.WriteCache
				if err := h.lu.Update(cfg); err != nil {
					t.Error(err)
				}
			case 4:
				ctl[2] ^= 0x04
				cmd := &Command{Nexus: h.n, CDB: cdbModeSelect6(true, false, 16), DataOut: append(make([]byte, 4), ctl...)}
				h.lu.Execute(cmd, &Result{})
			}
		}
	})
	wg.Wait()
}
