package scsi

import (
	"bytes"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/backend/backendtest"
)

// countingDevice is a backendtest.Mem that counts reads and writes, so a test can
// tell that a refused copy touched nothing.
type countingDevice struct {
	*backendtest.Mem
	reads, writes atomic.Int64
	afterWrite    func() // if set, called after each write
}

func (d *countingDevice) ReadAt(p []byte, off int64) error {
	d.reads.Add(1)
	return d.Mem.ReadAt(p, off)
}

func (d *countingDevice) WriteAt(p []byte, off int64, durable bool) error {
	d.writes.Add(1)
	err := d.Mem.WriteAt(p, off, durable)
	if d.afterWrite != nil {
		d.afterWrite()
	}
	return err
}

func (d *countingDevice) io() int64 { return d.reads.Load() + d.writes.Load() }

// xcEnv is a target with LUs A and B mapped as LUNs 0 and 1 for the
// initiator under test, and LU C mapped only for another initiator (a
// different LUN masking group).
type xcEnv struct {
	t          *testing.T
	a, b, c    *LU
	da, db, dc *countingDevice
	view       testView // what the initiator under test may access
	other      testView // the other initiator's group: C only
	n, m       *Nexus   // the initiator under test, the other one
}

const xcBlocks = 4096 // 2 MiB LUs of 512-byte blocks

func newXCLU(t testing.TB, serial string, blocks int, bs uint32, mod func(*LUConfig)) (*LU, *countingDevice) {
	t.Helper()
	dev := &countingDevice{Mem: backendtest.NewMem(blocks * int(bs))}
	cfg := LUConfig{Device: dev, BlockSize: bs, Serial: serial, WriteCache: true}
	if mod != nil {
		mod(&cfg)
	}
	lu, err := NewLU(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return lu, dev
}

func newXCEnv(t *testing.T) *xcEnv {
	e := &xcEnv{t: t}
	e.a, e.da = newXCLU(t, "xc-a", xcBlocks, 512, nil)
	e.b, e.db = newXCLU(t, "xc-b", xcBlocks, 512, nil)
	e.c, e.dc = newXCLU(t, "xc-c", xcBlocks, 512, nil)
	e.view = testView{0: e.a, 1: e.b}
	e.other = testView{0: e.c}
	e.n = testNexus("iqn.1994-05.com.example:copier", 1)
	e.m = testNexus("iqn.1994-05.com.example:other", 2)
	for _, lu := range []*LU{e.a, e.b, e.c} {
		lu.nexusFor(e.n).pop()
		lu.nexusFor(e.m).pop()
	}
	return e
}

// exec runs cdb through view as nexus n.
func (e *xcEnv) exec(v View, n *Nexus, lun uint64, cdb, out []byte, edtl int) (*Result, []byte) {
	e.t.Helper()
	buf := make([]byte, edtl+64)
	for i := edtl; i < len(buf); i++ {
		buf[i] = 0xa5
	}
	cmd := &Command{Nexus: n, LUN: lun, CDB: cdb, DataOut: out, DataIn: buf[:edtl]}
	res := &Result{}
	Execute(v, cmd, res)
	checkResult(e.t, cmd, res, buf, edtl)
	return res, buf[:res.DataInLen]
}

// xcopy sends EXTENDED COPY with parameter list p to LUN 0 of e.view.
func (e *xcEnv) xcopy(p []byte) *Result {
	e.t.Helper()
	res, _ := e.exec(e.view, e.n, 0, cdbXCopy(uint32(len(p))), p, 0)
	return res
}

func (e *xcEnv) io() int64 { return e.da.io() + e.db.io() + e.dc.io() }

func cdbXCopy(paramLen uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1] = opExtendedCopy, saExtendedCopyLID1
	putU32(c[10:], paramLen)
	return c
}

func cdbRCR(sa, listID byte, alloc uint32) []byte {
	c := make([]byte, 16)
	c[0], c[1], c[2] = opReceiveCopyResults, sa, listID
	putU32(c[10:], alloc)
	return c
}

// xcParams builds an EXTENDED COPY(LID1) parameter list.
type xcParams struct {
	id, usage byte
	cscds     [][]byte
	segs      [][]byte
	inline    []byte
}

func (p xcParams) bytes() []byte {
	var tl, sl int
	for _, c := range p.cscds {
		tl += len(c)
	}
	for _, s := range p.segs {
		sl += len(s)
	}
	b := make([]byte, 16)
	b[0], b[1] = p.id, p.usage<<3
	putU16(b[2:], uint16(tl))
	putU32(b[8:], uint32(sl))
	putU32(b[12:], uint32(len(p.inline)))
	for _, c := range p.cscds {
		b = append(b, c...)
	}
	for _, s := range p.segs {
		b = append(b, s...)
	}
	return append(b, p.inline...)
}

// cscdNAA is an identification descriptor naming lu by its NAA designator,
// as libiscsi's populate_tgt_desc builds it from VPD page 83h.
func cscdNAA(lu *LU) []byte {
	st := lu.state.Load()
	return cscdDesig(codeBinary, assocLU<<4|typeNAA, st.naa[:], st.blockSize)
}

func cscdDesig(codeSet, assocType byte, id []byte, blockLen uint32) []byte {
	d := make([]byte, 32)
	d[0] = cscdIdentification
	d[4], d[5], d[7] = codeSet, assocType, byte(len(id))
	copy(d[8:], id)
	d[29], d[30], d[31] = byte(blockLen>>16), byte(blockLen>>8), byte(blockLen)
	return d
}

func segB2B(src, dst uint16, blocks uint16, srcLBA, dstLBA uint64) []byte {
	s := make([]byte, 28)
	s[0] = segBlockToBlock
	putU16(s[2:], 0x18)
	putU16(s[4:], src)
	putU16(s[6:], dst)
	putU16(s[10:], blocks)
	putU64(s[12:], srcLBA)
	putU64(s[20:], dstLBA)
	return s
}

// pattern fills n bytes with a position-dependent pattern.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i/512) ^ byte(i) ^ seed
	}
	return b
}

func wantCopyAborted(code uint16) want { return wantSense(KeyCopyAborted, code) }

func TestXCopyBetweenLUs(t *testing.T) {
	e := newXCEnv(t)
	src := pattern(xcBlocks*512, 0x5a)
	copy(e.da.Bytes(), src)

	// One segment of 3000 blocks (more than one 1 MiB chunk) from A to B,
	// a second from A to A and a third from B to A, in order.
	p := xcParams{id: 1, cscds: [][]byte{cscdNAA(e.a), cscdNAA(e.b)}, segs: [][]byte{
		segB2B(0, 1, 3000, 10, 100),
		segB2B(0, 0, 16, 0, 4000),
		segB2B(1, 0, 8, 100, 4080), // what the first segment wrote
	}}.bytes()
	res := e.xcopy(p)
	good.check(t, res)
	if res.Transfer != len(p) {
		t.Fatalf("Transfer %d, want %d", res.Transfer, len(p))
	}
	if !bytes.Equal(e.db.Bytes()[100*512:3100*512], src[10*512:3010*512]) {
		t.Fatal("segment 0 not copied to B")
	}
	if !bytes.Equal(e.db.Bytes()[:100*512], make([]byte, 100*512)) || !bytes.Equal(e.db.Bytes()[3100*512:], make([]byte, (xcBlocks-3100)*512)) {
		t.Fatal("B written outside the segment")
	}
	if !bytes.Equal(e.da.Bytes()[4000*512:4016*512], src[:16*512]) {
		t.Fatal("segment 1 not copied within A")
	}
	if !bytes.Equal(e.da.Bytes()[4080*512:4088*512], src[10*512:18*512]) {
		t.Fatal("segment 2 did not see segment 0")
	}
	if e.dc.io() != 0 {
		t.Fatal("C touched")
	}
	// The write cache is enabled: nothing had to be durable.
	if durable := e.db.Counts().Durable; durable != 0 {
		t.Fatalf("%d durable writes with WCE set", durable)
	}
}

func TestXCopyOverlapAndBlockSizes(t *testing.T) {
	e := newXCEnv(t)
	src := pattern(xcBlocks*512, 0x11)
	copy(e.da.Bytes(), src)
	// Overlapping ranges of one LU, destination above the source: the
	// result must be the source as it was (memmove), across chunks.
	good.check(t, e.xcopy(xcParams{cscds: [][]byte{cscdNAA(e.a)}, segs: [][]byte{segB2B(0, 0, 3000, 0, 500)}}.bytes()))
	if !bytes.Equal(e.da.Bytes()[500*512:3500*512], src[:3000*512]) {
		t.Fatal("overlapping copy upwards corrupted")
	}
	copy(e.da.Bytes(), src)
	good.check(t, e.xcopy(xcParams{cscds: [][]byte{cscdNAA(e.a)}, segs: [][]byte{segB2B(0, 0, 3000, 500, 0)}}.bytes()))
	if !bytes.Equal(e.da.Bytes()[:3000*512], src[500*512:3500*512]) {
		t.Fatal("overlapping copy downwards corrupted")
	}

	// A 4096-byte block LU: NUMBER OF BLOCKS counts source blocks, or
	// destination blocks with DC set.
	big, dbig := newXCLU(t, "xc-4k", 512, 4096, nil)
	big.nexusFor(e.n).pop()
	e.view[2] = big
	copy(e.da.Bytes(), src)
	good.check(t, e.xcopy(xcParams{cscds: [][]byte{cscdNAA(e.a), cscdNAA(big)}, segs: [][]byte{segB2B(0, 1, 16, 8, 3)}}.bytes()))
	if !bytes.Equal(dbig.Bytes()[3*4096:5*4096], src[8*512:24*512]) {
		t.Fatal("512 to 4096 copy")
	}
	dc := segB2B(1, 0, 2, 3, 100)
	dc[1] = 0x02 // DC: two destination (512-byte) blocks would be an inexact quarter block
	inexact := want{key: KeyIllegalRequest, code: ascUnexpectedInexactSegment, field: 16 + 64 + 10, bit: -1}
	inexact.check(t, e.xcopy(xcParams{cscds: [][]byte{cscdNAA(e.a), cscdNAA(big)}, segs: [][]byte{dc}}.bytes()))
	dc[1], dc[11] = 0x02, 16 // 16 destination blocks are two source blocks
	good.check(t, e.xcopy(xcParams{cscds: [][]byte{cscdNAA(e.a), cscdNAA(big)}, segs: [][]byte{dc}}.bytes()))
	if !bytes.Equal(e.da.Bytes()[100*512:116*512], dbig.Bytes()[3*4096:5*4096]) {
		t.Fatal("4096 to 512 copy with DC")
	}
}

// TestXCopyRefusesLUNOutsideACL: XCOPY refuses a LUN outside the
// initiator's ACL. LU C exists on the target and another initiator may
// use it, but it is not in this nexus's View, so naming its NAA, as source
// or destination, is COPY TARGET DEVICE NOT REACHABLE and nothing at all
// is read or written. (CVE-2020-28374: LIO looked the designator up among
// every device of the target.)
func TestXCopyRefusesLUNOutsideACL(t *testing.T) {
	e := newXCEnv(t)
	secret := pattern(xcBlocks*512, 0xc3)
	copy(e.dc.Bytes(), secret)
	copy(e.da.Bytes(), pattern(xcBlocks*512, 0x01))
	for _, tc := range []struct {
		name  string
		cscds [][]byte
		seg   []byte
	}{
		{"read C into A", [][]byte{cscdNAA(e.c), cscdNAA(e.a)}, segB2B(0, 1, 64, 0, 0)},
		{"write A over C", [][]byte{cscdNAA(e.a), cscdNAA(e.c)}, segB2B(0, 1, 64, 0, 0)},
		{"C to C", [][]byte{cscdNAA(e.c)}, segB2B(0, 0, 64, 0, 100)},
		{"C named but unused", [][]byte{cscdNAA(e.a), cscdNAA(e.b), cscdNAA(e.c)}, segB2B(0, 1, 64, 0, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := xcParams{id: 9, cscds: tc.cscds, segs: [][]byte{tc.seg}}.bytes()
			before := e.io()
			// Sent to either LUN of the view, and with the LIST ID USAGE
			// that holds status.
			for lun := range uint64(2) {
				res, _ := e.exec(e.view, e.n, lun, cdbXCopy(uint32(len(p))), p, 0)
				wantCopyAborted(ascCopyTargetNotReachable).check(t, res)
			}
			if e.io() != before {
				t.Fatalf("refused copy did %d I/Os", e.io()-before)
			}
			if !bytes.Equal(e.dc.Bytes(), secret) {
				t.Fatal("C modified")
			}
		})
	}
	// The designator is right: the initiator whose group maps C can copy
	// within C, and reaches neither A nor B the same way.
	p := xcParams{cscds: [][]byte{cscdNAA(e.c)}, segs: [][]byte{segB2B(0, 0, 1, 0, 1)}}.bytes()
	good.check(t, first(e.exec(e.other, e.m, 0, cdbXCopy(uint32(len(p))), p, 0)))
	p = xcParams{cscds: [][]byte{cscdNAA(e.c), cscdNAA(e.a)}, segs: [][]byte{segB2B(1, 0, 1, 0, 0)}}.bytes()
	wantCopyAborted(ascCopyTargetNotReachable).check(t, first(e.exec(e.other, e.m, 0, cdbXCopy(uint32(len(p))), p, 0)))

	// Without a View (LU.Execute called directly) the LU reaches only
	// itself.
	before := e.io()
	p = xcParams{cscds: [][]byte{cscdNAA(e.a), cscdNAA(e.b)}, segs: [][]byte{segB2B(0, 1, 1, 0, 0)}}.bytes()
	res := &Result{}
	e.a.Execute(&Command{Nexus: e.n, CDB: cdbXCopy(uint32(len(p))), DataOut: p}, res)
	wantCopyAborted(ascCopyTargetNotReachable).check(t, res)
	if e.io() != before {
		t.Fatal("copy without a View did I/O")
	}
	p = xcParams{cscds: [][]byte{cscdNAA(e.a)}, segs: [][]byte{segB2B(0, 0, 1, 0, 1)}}.bytes()
	e.a.Execute(&Command{Nexus: e.n, CDB: cdbXCopy(uint32(len(p))), DataOut: p}, res)
	good.check(t, res)
}

// TestXCopyErrors checks every refusal, each before anything is read or
// written.
func TestXCopyErrors(t *testing.T) {
	e := newXCEnv(t)
	big, _ := newXCLU(t, "xc-4k", 512, 4096, nil)
	big.nexusFor(e.n).pop()
	ro, _ := newXCLU(t, "xc-ro", xcBlocks, 512, func(c *LUConfig) { c.ReadOnly = true })
	ro.nexusFor(e.n).pop()
	e.view[2], e.view[3] = big, ro

	a, b := cscdNAA(e.a), cscdNAA(e.b)
	seg := segB2B(0, 1, 8, 0, 0)
	basic := func() xcParams { return xcParams{id: 1, cscds: [][]byte{a, b}, segs: [][]byte{seg}} }
	with := func(f func(*xcParams)) []byte { p := basic(); f(&p); return p.bytes() }
	patch := func(off int, v byte) []byte { p := basic().bytes(); p[off] = v; return p }
	mod := func(d []byte, off int, v byte) []byte { d = bytes.Clone(d); d[off] = v; return d }
	n := func(k int, d []byte) [][]byte {
		l := make([][]byte, k)
		for i := range l {
			l[i] = d
		}
		return l
	}
	pll := wantSense(KeyIllegalRequest, ascParamListLengthError)
	ill := func(code uint16, field int) want {
		return want{key: KeyIllegalRequest, code: code, field: field, bit: -1}
	}
	const seg0 = 16 + 64 // offset of the first segment descriptor with two CSCDs

	for _, tc := range []struct {
		name string
		p    []byte
		plen int // the CDB's PARAMETER LIST LENGTH when not len(p)
		want want
	}{
		{"header cut short", basic().bytes()[:15], 0, pll},
		{"cscd cut short", basic().bytes()[:16+32+32-1], 0, pll},
		{"segment cut short", basic().bytes()[:seg0+27], 0, pll},
		{"data-out shorter than the cdb says", basic().bytes(), seg0 + 28 + 4, pll},
		{"lists longer than the maximum", with(func(p *xcParams) { p.cscds = n(16, a); p.segs = n(17, seg) }), 0, pll},
		{"header reserved bit", patch(1, 0x80), 0, wantParam(1, 7)},
		{"reserved list id usage", patch(1, 1<<3), 0, wantParam(1, 4)},
		{"inline data", with(func(p *xcParams) { p.inline = []byte{1, 2, 3, 4} }), 0, ill(ascInlineDataLengthExceeded, 12)},
		{"fc n_port_name cscd", with(func(p *xcParams) { p.cscds[0] = mod(a, 0, 0xe0) }), 0, ill(ascUnsupportedCSCDType, 16)},
		{"ipv6 cscd", with(func(p *xcParams) { p.cscds[1] = mod(b, 0, 0xea) }), 0, ill(ascUnsupportedCSCDType, 48)},
		{"too many cscds", with(func(p *xcParams) { p.cscds = n(17, a) }), 0, wantSense(KeyIllegalRequest, ascTooManyCSCDs)},
		{"designator too long", with(func(p *xcParams) { p.cscds[0] = mod(a, 7, 17) }), 0, wantParam(23, -1)},
		{"cscd list not whole descriptors", func() []byte {
			p := basic().bytes()
			putU16(p[2:], 36) // the second descriptor then has 4 bytes
			return p
		}(), 0, wantParam(2, -1)},
		{"stream to stream segment", with(func(p *xcParams) { p.segs[0] = mod(seg, 0, 0x03) }), 0, ill(ascUnsupportedSegmentType, seg0)},
		{"block to stream segment", with(func(p *xcParams) { p.segs[0] = mod(seg, 0, 0x00) }), 0, ill(ascUnsupportedSegmentType, seg0)},
		{"segment descriptor length", with(func(p *xcParams) { p.segs[0] = mod(seg, 3, 0x14) }), 0, wantParam(seg0+2, -1)},
		{"segment reserved bit", with(func(p *xcParams) { p.segs[0] = mod(seg, 1, 0x04) }), 0, wantParam(seg0+1, 2)},
		{"too many segments", with(func(p *xcParams) { p.cscds = n(1, a); p.segs = n(17, segB2B(0, 0, 1, 0, 1)) }), 0, wantSense(KeyIllegalRequest, ascTooManySegments)},
		{"null device", with(func(p *xcParams) { p.cscds[1] = mod(b, 1, 0x20) }), 0, wantCopyAborted(ascCopyTargetNotReachable)},
		{"unknown naa", with(func(p *xcParams) { p.cscds[1] = mod(b, 12, b[12]^0xff) }), 0, wantCopyAborted(ascCopyTargetNotReachable)},
		{"target port association", with(func(p *xcParams) { p.cscds[1] = mod(b, 5, assocPort<<4|typeNAA) }), 0, wantCopyAborted(ascCopyTargetNotReachable)},
		{"naa as ascii", with(func(p *xcParams) { p.cscds[1] = mod(b, 4, codeASCII) }), 0, wantCopyAborted(ascCopyTargetNotReachable)},
		{"disk block length", with(func(p *xcParams) { p.cscds[1] = mod(b, 30, 0x10) }), 0, wantParam(48+29, -1)},
		{"destination cscd not in the list", with(func(p *xcParams) { p.cscds = n(1, a) }), 0, wantCopyAborted(ascUnreachableCopyTarget)},
		{"source cscd id ffff", with(func(p *xcParams) { p.segs[0] = mod(mod(seg, 4, 0xff), 5, 0xff) }), 0, wantCopyAborted(ascUnreachableCopyTarget)},
		{"tape cscd", with(func(p *xcParams) { p.cscds[1] = mod(b, 1, 0x01) }), 0, wantCopyAborted(ascIncorrectCopyTargetType)},
		{"beyond the destination", with(func(p *xcParams) { p.segs[0] = segB2B(0, 1, 2048, 0, xcBlocks-1) }), 0, wantCopyAborted(ascNoAdditionalSense)},
		{"beyond the source", with(func(p *xcParams) { p.segs[0] = segB2B(0, 1, 2, xcBlocks-1, 0) }), 0, wantCopyAborted(ascNoAdditionalSense)},
		{"source lba past the end", with(func(p *xcParams) { p.segs[0] = segB2B(0, 1, 0, xcBlocks+1, 0) }), 0, wantCopyAborted(ascNoAdditionalSense)},
		{"second segment beyond the end", with(func(p *xcParams) { p.segs = [][]byte{seg, segB2B(1, 0, 1, 0, 1<<40)} }), 0, wantCopyAborted(ascNoAdditionalSense)},
		{"segment longer than the maximum", with(func(p *xcParams) { p.cscds[1] = cscdNAA(big); p.segs[0] = segB2B(1, 1, 8193, 0, 0) }), 0, wantParam(seg0+10, -1)},
		{"inexact segment", with(func(p *xcParams) { p.cscds[1] = cscdNAA(big); p.segs[0] = segB2B(0, 1, 1, 0, 0) }), 0, ill(ascUnexpectedInexactSegment, seg0+10)},
		{"read-only destination", with(func(p *xcParams) { p.cscds[1] = cscdNAA(ro) }), 0, wantSense(KeyDataProtect, ascWriteProtected)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plen := len(tc.p)
			if tc.plen != 0 {
				plen = tc.plen
			}
			before := e.io()
			res, _ := e.exec(e.view, e.n, 0, cdbXCopy(uint32(plen)), tc.p, 0)
			tc.want.check(t, res)
			if e.io() != before {
				t.Fatalf("refused copy did %d I/Os", e.io()-before)
			}
		})
	}

	// COPY ABORTED names the segment in COMMAND-SPECIFIC INFORMATION, in
	// fixed and descriptor format.
	p := with(func(p *xcParams) { p.segs = [][]byte{seg, seg, segB2B(0, 1, 1, 0, 1<<40)} })
	res := e.xcopy(p)
	if csi, ok := senseCSI(res.Sense); !ok || csi != 2 {
		t.Fatalf("fixed sense % x: CSI %d %v", res.Sense, csi, ok)
	}
	e.a.dsense.Store(true)
	res = e.xcopy(p)
	wantCopyAborted(ascNoAdditionalSense).check(t, res)
	if csi, ok := senseCSI(res.Sense); !ok || csi != 2 || res.Sense[0] != 0x72 {
		t.Fatalf("descriptor sense % x: CSI %d %v", res.Sense, csi, ok)
	}
	e.a.dsense.Store(false)

	// The LU ID TYPE of an identification descriptor is ignored, reserved
	// values included (SPC-4).
	good.check(t, e.xcopy(with(func(p *xcParams) { p.cscds[0], p.cscds[1] = mod(a, 1, 0xc0), mod(b, 1, 0x80) })))
	// A read-only source is fine.
	good.check(t, e.xcopy(with(func(p *xcParams) { p.cscds[0] = cscdNAA(ro) })))
	// A T10 vendor ID designator short enough for the descriptor works too.
	short, _ := newXCLU(t, "xc-short", 64, 512, func(c *LUConfig) { c.DeviceID = "dev1" })
	short.nexusFor(e.n).pop()
	e.view[4] = short
	t10 := append([]byte("HATARGET"), "dev1"...)
	good.check(t, e.xcopy(with(func(p *xcParams) { p.cscds[1] = cscdDesig(codeASCII, typeT10Vendor, t10, 512) })))
	// An empty parameter list, and an empty segment list, copy nothing.
	good.check(t, first(e.exec(e.view, e.n, 0, cdbXCopy(0), nil, 0)))
	good.check(t, e.xcopy(with(func(p *xcParams) { p.segs = nil })))
}

// senseCSI returns the COMMAND-SPECIFIC INFORMATION of sense data.
func senseCSI(b []byte) (uint64, bool) {
	switch b[0] & 0x7f {
	case 0x70:
		return uint64(getU32(b[8:])), true
	case 0x72:
		for d := b[8:]; len(d) >= 2 && len(d) >= int(d[1])+2; d = d[int(d[1])+2:] {
			if d[0] == 0x01 && d[1] == 0x0a {
				return getU64(d[4:]), true
			}
		}
	}
	return 0, false
}

func TestXCopyReservationsAndProtection(t *testing.T) {
	e := newXCEnv(t)
	hb := &harness{t: t, lu: e.b, dev: e.db.Mem, n: e.m}
	p := xcParams{cscds: [][]byte{cscdNAA(e.a), cscdNAA(e.b)}, segs: [][]byte{segB2B(0, 1, 8, 0, 0)}}.bytes()
	back := xcParams{cscds: [][]byte{cscdNAA(e.b), cscdNAA(e.a)}, segs: [][]byte{segB2B(0, 1, 8, 0, 0)}}.bytes()

	// Another initiator holds WRITE EXCLUSIVE on B: copying to B is what a
	// WRITE would be, a conflict; copying from B is a READ, allowed.
	hb.register(e.m, 0x77)
	hb.prOutOK(e.m, PRReserve, PRWriteExclusive, 0x77, 0, 0)
	before := e.io()
	res := e.xcopy(p)
	if res.Status != StatusReservationConflict || e.io() != before {
		t.Fatalf("copy to a reserved LU: status %#x, %d I/Os", res.Status, e.io()-before)
	}
	good.check(t, e.xcopy(back))
	// EXCLUSIVE ACCESS also refuses reading.
	hb.prOutOK(e.m, PRRelease, PRWriteExclusive, 0x77, 0, 0)
	hb.prOutOK(e.m, PRReserve, PRExclusiveAccess, 0x77, 0, 0)
	if res := e.xcopy(back); res.Status != StatusReservationConflict {
		t.Fatalf("copy from an EA-reserved LU: status %#x", res.Status)
	}
	// The holder itself may copy (through its own View).
	good.check(t, first(e.exec(testView{0: e.a, 1: e.b}, e.m, 1, cdbXCopy(uint32(len(p))), p, 0)))
	hb.prOutOK(e.m, PRRelease, PRExclusiveAccess, 0x77, 0, 0)
	good.check(t, e.xcopy(p))

	// Software write protection of the destination (control mode page
	// SWP) is DATA PROTECT too.
	e.b.swp.Store(true)
	wantSense(KeyDataProtect, ascSoftwareWriteProtected).check(t, e.xcopy(p))
	e.b.swp.Store(false)
	// A retired destination is not ready.
	e.b.Close()
	wantSense(KeyNotReady, ascNotReadyCauseUnknown).check(t, e.xcopy(p))
}

// TestXCopyReservedMidCopy: a reservation another nexus takes on the
// destination while a copy runs (through a different LU, so task
// management on the destination cannot abort it) stops the copy at the
// next chunk, with the residual of the segment reported.
func TestXCopyReservedMidCopy(t *testing.T) {
	e := newXCEnv(t)
	hb := &harness{t: t, lu: e.b, dev: e.db.Mem, n: e.m}
	copy(e.da.Bytes(), pattern(xcBlocks*512, 9))
	e.db.afterWrite = func() {
		e.db.afterWrite = nil
		hb.register(e.m, 0x99)
		hb.prOutOK(e.m, PRReserve, PRWriteExclusive, 0x99, 0, 0)
	}
	p := xcParams{id: 4, cscds: [][]byte{cscdNAA(e.a), cscdNAA(e.b)}, segs: [][]byte{segB2B(0, 1, 3000, 0, 0)}}.bytes()
	res := e.xcopy(p)
	wantCopyAborted(ascNoAdditionalSense).check(t, res)
	s, _ := parseSense(res.Sense)
	if !s.HasInfo || s.Info != 3000-xcChunkBytes/512 {
		t.Fatalf("residual %v %d", s.HasInfo, s.Info)
	}
	if w := e.db.writes.Load(); w != 1 {
		t.Fatalf("%d chunks written after the reservation", w-1)
	}
	_, st := e.exec(e.view, e.n, 0, cdbRCR(saCopyStatus, 4, 64), nil, 64)
	if st[4] != copyCompletedErr || getU16(st[5:]) != 0 || getU32(st[8:]) != xcChunkBytes {
		t.Fatalf("status % x", st)
	}
}

// TestXCopyHonoursRangeLock: the destination chunk is written under the
// range lock, so a COMPARE AND WRITE holding it is never interleaved.
func TestXCopyHonoursRangeLock(t *testing.T) {
	e := newXCEnv(t)
	copy(e.da.Bytes(), pattern(64*512, 0x42))
	p := xcParams{cscds: [][]byte{cscdNAA(e.a), cscdNAA(e.b)}, segs: [][]byte{segB2B(0, 1, 64, 0, 0)}}.bytes()
	h := e.b.rl.acquire(0, 512, true) // as COMPARE AND WRITE at LBA 0 does
	done := make(chan *Result)
	go func() {
		cmd := &Command{Nexus: e.n, CDB: cdbXCopy(uint32(len(p))), DataOut: p}
		res := &Result{}
		Execute(e.view, cmd, res)
		done <- res
	}()
	time.Sleep(50 * time.Millisecond)
	if w := e.db.writes.Load(); w != 0 {
		t.Fatalf("%d writes under a held range lock", w)
	}
	h.release()
	good.check(t, <-done)
	if !bytes.Equal(e.db.Bytes()[:64*512], e.da.Bytes()[:64*512]) {
		t.Fatal("not copied")
	}
}

func TestReceiveCopyResults(t *testing.T) {
	e := newXCEnv(t)
	rcr := func(n *Nexus, sa, id byte, alloc uint32) (*Result, []byte) {
		return e.exec(e.view, n, 0, cdbRCR(sa, id, alloc), nil, int(alloc))
	}

	// OPERATING PARAMETERS.
	res, op := rcr(e.n, saOperatingParams, 0, 1024)
	good.check(t, res)
	if len(op) != 46 || int(getU32(op))+4 != len(op) || op[4] != 0x01 ||
		getU16(op[8:]) != xcMaxCSCDs || getU16(op[10:]) != xcMaxSegments ||
		getU32(op[12:]) != xcMaxDescListLen || getU32(op[16:]) != xcMaxSegmentBytes ||
		getU32(op[20:]) != 0 || getU32(op[24:]) != 0 || getU16(op[34:]) != xcMaxConcurrent ||
		op[36] != xcMaxConcurrent || op[37] != 9 || op[43] != 2 || !bytes.Equal(op[44:], []byte{0x02, 0xe4}) {
		t.Fatalf("operating parameters % x", op)
	}
	// The maximum descriptor list length is a full list of both kinds, so
	// libiscsi's DescrLimits cases each hit the error they expect.
	if xcMaxDescListLen != xcMaxCSCDs*32+xcMaxSegments*28 {
		t.Fatal("descriptor list length limit")
	}
	res, short := rcr(e.n, saOperatingParams, 0, 10)
	good.check(t, res)
	if !bytes.Equal(short, op[:10]) {
		t.Fatalf("truncated % x", short)
	}
	wantCDB(1, 4).check(t, first(rcr(e.n, 0x04, 1, 1024))) // FAILED SEGMENT DETAILS

	// COPY STATUS: nothing yet.
	wantCDB(2, -1).check(t, first(rcr(e.n, saCopyStatus, 5, 1024)))

	copy(e.da.Bytes(), pattern(xcBlocks*512, 3))
	ok := xcParams{id: 5, cscds: [][]byte{cscdNAA(e.a), cscdNAA(e.b)}, segs: [][]byte{segB2B(0, 1, 2048, 0, 0), segB2B(0, 1, 8, 0, 2048)}}
	good.check(t, e.xcopy(ok.bytes()))
	// Another nexus does not see it.
	wantCDB(2, -1).check(t, first(rcr(e.m, saCopyStatus, 5, 1024)))
	// A short allocation length keeps it; a whole read returns and
	// discards it.
	res, st := rcr(e.n, saCopyStatus, 5, 4)
	if good.check(t, res); !bytes.Equal(st, []byte{0, 0, 0, 8}) {
		t.Fatalf("short status % x", st)
	}
	res, st = rcr(e.n, saCopyStatus, 5, 1024)
	good.check(t, res)
	if !bytes.Equal(st, []byte{0, 0, 0, 8, copyCompletedGood, 0, 2, 0, 0, 0x10, 0x10, 0x00}) {
		t.Fatalf("copy status % x", st)
	}
	wantCDB(2, -1).check(t, first(rcr(e.n, saCopyStatus, 5, 1024)))

	// A copy aborted in its second segment: completed with errors, one
	// segment processed.
	bad := ok
	bad.segs = [][]byte{segB2B(0, 1, 8, 0, 0), segB2B(0, 1, 8, 0, xcBlocks)}
	wantCopyAborted(ascNoAdditionalSense).check(t, e.xcopy(bad.bytes()))
	_, st = rcr(e.n, saCopyStatus, 5, 1024)
	if st[4] != copyCompletedErr || getU16(st[5:]) != 0 || getU32(st[8:]) != 0 {
		t.Fatalf("failed copy status % x", st)
	}
	// A parameter list refused as malformed leaves no status, nor does a
	// copy with LIST ID USAGE 10b or 11b.
	malformed := ok.bytes()
	malformed[16] = 0xe0
	wantSense(KeyIllegalRequest, ascUnsupportedCSCDType).check(t, e.xcopy(malformed))
	wantCDB(2, -1).check(t, first(rcr(e.n, saCopyStatus, 5, 1024)))
	for _, usage := range []byte{listIDNoHold, listIDNoCheck} {
		p := ok
		p.usage = usage
		good.check(t, e.xcopy(p.bytes()))
		wantCDB(2, -1).check(t, first(rcr(e.n, saCopyStatus, 5, 1024)))
	}

	// Status is bounded: the oldest completed ones are forgotten.
	small := xcParams{cscds: [][]byte{cscdNAA(e.a)}, segs: [][]byte{segB2B(0, 0, 1, 0, 1)}}
	for id := range xcHeldStatuses + 10 {
		small.id = byte(id)
		good.check(t, e.xcopy(small.bytes()))
	}
	if n := len(e.a.copies.list); n != xcHeldStatuses {
		t.Fatalf("%d statuses held", n)
	}
	wantCDB(2, -1).check(t, first(rcr(e.n, saCopyStatus, 0, 1024)))
	good.check(t, first(rcr(e.n, saCopyStatus, xcHeldStatuses+9, 1024)))
}

// TestCopyResultsInProgress: a list identifier in use by a running copy of
// the same nexus is refused, and its status reads "in progress".
func TestCopyResultsInProgress(t *testing.T) {
	var cr copyResults
	e1, err := cr.begin("n1", 7, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cr.begin("n1", 7, true); err != errOperationInProgress {
		t.Fatalf("duplicate list id: %v", err)
	}
	if _, err := cr.begin("n2", 7, true); err != nil {
		t.Fatalf("other nexus: %v", err)
	}
	cr.progress(e1, 3, 5<<30)
	st, ok := cr.status("n1", 7, true)
	if !ok {
		t.Fatal("no status")
	}
	d := copyStatusData(&st)
	if d[4] != copyInProgress || getU16(d[5:]) != 3 || d[7] != 1 || getU32(d[8:]) != 5<<20 {
		t.Fatalf("in progress % x", d)
	}
	if _, ok := cr.status("n1", 7, true); !ok {
		t.Fatal("reading a running copy's status discarded it")
	}
	cr.end(e1, false, true)
	if _, err := cr.begin("n1", 7, true); err != nil {
		t.Fatalf("list id reused after completion: %v", err)
	}
}

func TestThirdPartyCopyVPD(t *testing.T) {
	e := newXCEnv(t)
	res, std := e.exec(e.view, e.n, 0, cdbInquiry(false, 0, 96), nil, 96)
	good.check(t, res)
	if std[5]&0x08 == 0 {
		t.Fatalf("3PC clear: % x", std[:8])
	}
	_, pages := e.exec(e.view, e.n, 0, cdbInquiry(true, 0, 255), nil, 255)
	if !bytes.Contains(pages[4:], []byte{vpdThirdPartyCopy}) {
		t.Fatalf("8Fh not listed: % x", pages)
	}
	res, pg := e.exec(e.view, e.n, 0, cdbInquiry(true, vpdThirdPartyCopy, 1024), nil, 1024)
	good.check(t, res)
	if pg[1] != 0x8f || int(getU16(pg[2:]))+4 != len(pg) {
		t.Fatalf("header % x", pg[:4])
	}
	descs := map[uint16][]byte{}
	for d := pg[4:]; len(d) > 0; {
		if len(d) < 4 || int(getU16(d[2:]))%4 != 0 || len(d) < 4+int(getU16(d[2:])) {
			t.Fatalf("descriptor % x", d)
		}
		n := 4 + int(getU16(d[2:]))
		descs[getU16(d)] = d[:n]
		d = d[n:]
	}
	// The checks of libiscsi's Inquiry third-party copy test.
	sc := descs[tpcSupportedCommands]
	if sc == nil || !bytes.Equal(sc[4:12], []byte{7, 0x83, 1, 0x00, 0x84, 2, 0x00, 0x03}) || getU16(sc[2:]) != 8 {
		t.Fatalf("supported commands % x", sc)
	}
	pd := descs[tpcParameterData]
	if len(pd) != 32 || getU16(pd[8:]) != xcMaxCSCDs || getU16(pd[10:]) != xcMaxSegments ||
		getU32(pd[12:]) != xcMaxDescListLen || getU32(pd[16:]) != 0 || getU32(pd[4:]) != 0 {
		t.Fatalf("parameter data % x", pd)
	}
	sd := descs[tpcSupportedDescriptors]
	if !bytes.Equal(sd, []byte{0, 8, 0, 4, 2, 0x02, 0xe4, 0}) {
		t.Fatalf("supported descriptors % x", sd)
	}
	if ids := descs[tpcSupportedCSCDIDs]; !bytes.Equal(ids, []byte{0, 0x0c, 0, 4, 0, 0, 0, 0}) {
		t.Fatalf("supported CSCD IDs % x", ids)
	}
	g := descs[tpcGeneralCopyOps]
	if len(g) != 36 || getU32(g[4:]) != xcMaxConcurrent || getU32(g[8:]) != xcMaxConcurrent ||
		getU32(g[12:]) != xcMaxSegmentBytes || g[16] != 9 {
		t.Fatalf("general copy operations % x", g)
	}
	// Every service action the page lists is in the dispatch table, and
	// REPORT SUPPORTED OPERATION CODES reports them.
	for _, c := range [][2]byte{{0x83, 0x00}, {0x84, 0x00}, {0x84, 0x03}} {
		if dispatch.find(c[0], uint16(c[1]), true) == nil {
			t.Fatalf("%#x/%#x not in the dispatch table", c[0], c[1])
		}
		res, one := e.exec(e.view, e.n, 0, cdbMaintIn(saReportOpcodes, rsocOpcodeSA, c[0], uint16(c[1]), 64), nil, 64)
		good.check(t, res)
		if one[1]&0x07 != 3 {
			t.Fatalf("%#x/%#x reported % x", c[0], c[1], one)
		}
	}
}

// TestXCopyRefusesTargetOwnedElsewhere: an LU this node forwards (another
// node owns it) is never read or written by a copy running here, whether
// it is the source or the destination; one that moves away mid-copy
// stops the copy within a chunk, as a transition the initiator retries.
func TestXCopyRefusesTargetOwnedElsewhere(t *testing.T) {
	for _, dir := range []struct {
		name     string
		src, dst int
	}{{"to it", 0, 1}, {"from it", 1, 0}} {
		t.Run(dir.name, func(t *testing.T) {
			e := newXCEnv(t)
			f := &recordingForwarder{}
			e.b.SetForwarder(f)
			p := xcParams{id: 5, cscds: [][]byte{cscdNAA(e.a), cscdNAA(e.b)},
				segs: [][]byte{segB2B(uint16(dir.src), uint16(dir.dst), 8, 0, 0)}}.bytes()
			wantCopyAborted(ascCopyTargetNotReachable).check(t, e.xcopy(p))
			if e.io() != 0 || len(f.cdbs) != 0 {
				t.Fatalf("%d local I/Os, %d forwarded commands for a refused copy", e.io(), len(f.cdbs))
			}
		})
	}
	t.Run("moved mid-copy", func(t *testing.T) {
		e := newXCEnv(t)
		copy(e.da.Bytes(), pattern(xcBlocks*512, 3))
		e.db.afterWrite = func() {
			e.db.afterWrite = nil
			e.b.SetForwarder(&recordingForwarder{})
		}
		p := xcParams{id: 6, cscds: [][]byte{cscdNAA(e.a), cscdNAA(e.b)}, segs: [][]byte{segB2B(0, 1, 3000, 0, 0)}}.bytes()
		wantSense(KeyNotReady, ascALUATransition).check(t, e.xcopy(p))
		if w := e.db.writes.Load(); w != 1 {
			t.Fatalf("%d chunks written after the move", w-1)
		}
	})
}
