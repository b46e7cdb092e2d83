package scsi

import (
	"bytes"
	"testing"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/backend/backendtest"
)

const testBlocks = 2048

// harness is one LU on a backendtest.Mem seen through one nexus.
type harness struct {
	t   *testing.T
	lu  *LU
	dev *backendtest.Mem
	n   *Nexus
}

func newHarness(t *testing.T, mod func(*LUConfig)) *harness {
	t.Helper()
	dev := backendtest.NewMem(testBlocks * 512)
	cfg := LUConfig{Device: dev, BlockSize: 512, Serial: "serial-1", WriteCache: true}
	if mod != nil {
		mod(&cfg)
	}
	if cfg.Device != backend.Device(dev) {
		switch d := cfg.Device.(type) {
		case *backendtest.Mem:
			dev = d
		case *sizedDevice:
			dev = d.Mem
		}
	}
	lu, err := NewLU(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, lu: lu, dev: dev, n: testNexus("iqn.1994-05.com.example:host1", 1)}
	h.clearUA(h.n)
	return h
}

func testNexus(initiator string, isid byte) *Nexus {
	return NewNexus(initiator, [6]byte{0x80, 0, 0, 0, 0, isid}, "iqn.2024-01.org.hatarget:t1", 1, 7, 3)
}

// exec runs cdb on nexus n with dataOut and a Data-In buffer of edtl bytes.
// The buffer has spare capacity filled with a canary so tests notice writes
// beyond its length.
func (h *harness) exec(n *Nexus, cdb []byte, dataOut []byte, edtl int) (*Result, []byte) {
	h.t.Helper()
	buf := make([]byte, edtl+64)
	for i := edtl; i < len(buf); i++ {
		buf[i] = 0xa5
	}
	cmd := &Command{Nexus: n, CDB: cdb, DataOut: dataOut, DataIn: buf[:edtl]}
	res := &Result{}
	h.lu.Execute(cmd, res)
	checkResult(h.t, cmd, res, buf, edtl)
	return res, buf[:res.DataInLen]
}

func (h *harness) run(cdb []byte, dataOut []byte, edtl int) (*Result, []byte) {
	h.t.Helper()
	return h.exec(h.n, cdb, dataOut, edtl)
}

// checkResult checks what every result must satisfy.
func checkResult(t testing.TB, cmd *Command, res *Result, buf []byte, edtl int) {
	t.Helper()
	for i := edtl; i < len(buf); i++ {
		if buf[i] != 0xa5 {
			t.Fatalf("cdb % x: wrote beyond DataIn at %d", cmd.CDB, i)
		}
	}
	if res.DataInLen < 0 || res.DataInLen > edtl {
		t.Fatalf("cdb % x: DataInLen %d with EDTL %d", cmd.CDB, res.DataInLen, edtl)
	}
	if res.Transfer < 0 || res.DataInLen > res.Transfer {
		t.Fatalf("cdb % x: Transfer %d with DataInLen %d", cmd.CDB, res.Transfer, res.DataInLen)
	}
	switch res.Status {
	case StatusGood:
		if res.Sense != nil {
			t.Fatalf("cdb % x: GOOD with sense", cmd.CDB)
		}
	case StatusCheckCondition:
		if len(res.Sense) < 8 {
			t.Fatalf("cdb % x: CHECK CONDITION with %d bytes of sense", cmd.CDB, len(res.Sense))
		}
		if _, err := parseSense(res.Sense); err != nil {
			t.Fatalf("cdb % x: %v", cmd.CDB, err)
		}
	case StatusReservationConflict:
		if res.Sense != nil || res.DataInLen != 0 {
			t.Fatalf("cdb % x: RESERVATION CONFLICT with sense or data", cmd.CDB)
		}
	default:
		t.Fatalf("cdb % x: status %#x", cmd.CDB, res.Status)
	}
}

func (h *harness) clearUA(n *Nexus) {
	h.t.Helper()
	for range maxPendingUA + 1 {
		res, _ := h.exec(n, cdbTUR(), nil, 0)
		if res.Status == StatusGood {
			return
		}
		if s := mustSense(h.t, res); s.Key != KeyUnitAttention {
			h.t.Fatalf("TEST UNIT READY: %v", s)
		}
	}
	h.t.Fatal("unit attentions do not clear")
}

// parsedSense is sense data decoded independently of the encoder.
type parsedSense struct {
	Sense
	descriptor bool
}

func parseSense(b []byte) (parsedSense, error) {
	var p parsedSense
	switch b[0] & 0x7f {
	case 0x70:
		if len(b) < 18 {
			return p, errShort
		}
		p.Key, p.ASC, p.ASCQ = b[2]&0x0f, b[12], b[13]
		if b[0]&0x80 != 0 {
			p.HasInfo, p.Info = true, uint64(getU32(b[3:]))
		}
		if int(b[7])+8 != len(b) {
			return p, errShort
		}
		parseSKS(&p.Sense, b[15:18])
	case 0x72:
		p.descriptor = true
		p.Key, p.ASC, p.ASCQ = b[1]&0x0f, b[2], b[3]
		if int(b[7])+8 != len(b) {
			return p, errShort
		}
		for d := b[8:]; len(d) > 0; {
			if len(d) < 2 || len(d) < int(d[1])+2 {
				return p, errShort
			}
			switch d[0] {
			case 0x00:
				p.HasInfo, p.Info = true, getU64(d[4:])
			case 0x02:
				parseSKS(&p.Sense, d[4:7])
			}
			d = d[int(d[1])+2:]
		}
	default:
		return p, errBadFormat
	}
	return p, nil
}

func parseSKS(s *Sense, b []byte) {
	if b[0]&0x80 == 0 {
		return
	}
	s.HasField, s.InCDB, s.Field = true, b[0]&0x40 != 0, getU16(b[1:])
	if b[0]&0x08 != 0 {
		s.HasBit, s.Bit = true, b[0]&0x07
	}
}

type testError string

func (e testError) Error() string { return string(e) }

const (
	errShort     = testError("sense data length mismatch")
	errBadFormat = testError("unknown sense format")
)

func mustSense(t testing.TB, res *Result) parsedSense {
	t.Helper()
	if res.Status != StatusCheckCondition {
		t.Fatalf("status %#x, want CHECK CONDITION", res.Status)
	}
	p, err := parseSense(res.Sense)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// want describes an expected outcome: GOOD when key is 0 and code 0.
type want struct {
	key   byte
	code  uint16 // ASC<<8 | ASCQ
	field int    // -1: no field pointer expected; otherwise the byte
	bit   int    // -1: no bit pointer
}

var good = want{field: -1, bit: -1}

func wantSense(key byte, code uint16) want { return want{key: key, code: code, field: -1, bit: -1} }
func wantCDB(field, bit int) want {
	return want{key: KeyIllegalRequest, code: ascInvalidFieldInCDB, field: field, bit: bit}
}
func wantParam(field, bit int) want {
	return want{key: KeyIllegalRequest, code: ascInvalidFieldInParam, field: field, bit: bit}
}

func (w want) check(t testing.TB, res *Result) {
	t.Helper()
	if w.key == 0 && w.code == 0 {
		if res.Status != StatusGood {
			p, _ := parseSense(res.Sense)
			t.Fatalf("status %#x sense %x/%04x, want GOOD", res.Status, p.Key, p.code())
		}
		return
	}
	p := mustSense(t, res)
	if p.Key != w.key || p.code() != w.code {
		t.Fatalf("sense %x/%04x, want %x/%04x", p.Key, p.code(), w.key, w.code)
	}
	if w.field >= 0 {
		if !p.HasField || int(p.Field) != w.field {
			t.Fatalf("field pointer %v %d, want %d", p.HasField, p.Field, w.field)
		}
		wantCD := w.code == ascInvalidFieldInCDB
		if p.InCDB != wantCD {
			t.Fatalf("C/D %v, want %v", p.InCDB, wantCD)
		}
	}
	if w.bit >= 0 && (!p.HasBit || int(p.Bit) != w.bit) {
		t.Fatalf("bit pointer %v %d, want %d", p.HasBit, p.Bit, w.bit)
	}
}

// CDB builders.

func cdbTUR() []byte { return []byte{opTestUnitReady, 0, 0, 0, 0, 0} }

func cdbRW10(op byte, lba uint32, n uint16, flags byte) []byte {
	c := make([]byte, 10)
	c[0], c[1] = op, flags
	putU32(c[2:], lba)
	putU16(c[7:], n)
	return c
}

func cdbRW12(op byte, lba uint32, n uint32, flags byte) []byte {
	c := make([]byte, 12)
	c[0], c[1] = op, flags
	putU32(c[2:], lba)
	putU32(c[6:], n)
	return c
}

func cdbRW16(op byte, lba uint64, n uint32, flags byte) []byte {
	c := make([]byte, 16)
	c[0], c[1] = op, flags
	putU64(c[2:], lba)
	putU32(c[10:], n)
	return c
}

func cdbRW6(op byte, lba uint32, n byte) []byte {
	return []byte{op, byte(lba>>16) & 0x1f, byte(lba >> 8), byte(lba), n, 0}
}

func cdbInquiry(evpd bool, page byte, alloc uint16) []byte {
	c := []byte{opInquiry, 0, page, 0, 0, 0}
	if evpd {
		c[1] = 1
	}
	putU16(c[3:], alloc)
	return c
}

func cdbModeSense6(dbd bool, pc, page, sub, alloc byte) []byte {
	c := []byte{opModeSense6, 0, pc<<6 | page, sub, alloc, 0}
	if dbd {
		c[1] = 0x08
	}
	return c
}

func cdbModeSense10(flags1, pc, page, sub byte, alloc uint16) []byte {
	c := []byte{opModeSense10, flags1, pc<<6 | page, sub, 0, 0, 0, 0, 0, 0}
	putU16(c[7:], alloc)
	return c
}

func cdbModeSelect6(pf, sp bool, n byte) []byte {
	c := []byte{opModeSelect6, 0, 0, 0, n, 0}
	if pf {
		c[1] |= 0x10
	}
	if sp {
		c[1] |= 0x01
	}
	return c
}

func cdbMaintIn(sa byte, b2 byte, op byte, reqSA uint16, alloc uint32) []byte {
	c := make([]byte, 12)
	c[0], c[1], c[2], c[3] = opMaintenanceIn, sa, b2, op
	putU16(c[4:], reqSA)
	putU32(c[6:], alloc)
	return c
}

func fill(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

// modeSenseCurrent returns the current value of a mode page (header and
// block descriptors stripped).
func (h *harness) modePage(pc, code byte) []byte {
	h.t.Helper()
	res, data := h.run(cdbModeSense6(true, pc, code, 0, 255), nil, 255)
	good.check(h.t, res)
	if len(data) < 4 || int(data[0])+1 != len(data) {
		h.t.Fatalf("mode sense data % x", data)
	}
	return data[4:]
}
