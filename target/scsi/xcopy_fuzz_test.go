package scsi

import "testing"

// FuzzXCopy sends arbitrary EXTENDED COPY parameter lists through a View
// mapping LUs A and B, while LU C, which another initiator may use, stays
// outside it. Whatever arrives: no panic, valid sense data, C is never read
// or written, and a refused copy does no I/O at all (every check comes
// before the first byte moves).
func FuzzXCopy(f *testing.F) {
	const blocks = 64
	mk := func(t testing.TB, serial string, bs uint32, mode byte) (*LU, *countingDevice) {
		return newXCLU(t, serial, blocks*512/int(bs), bs, func(c *LUConfig) {
			c.ReadOnly = serial == "fz-b" && mode&0x10 != 0
			c.WriteCache = mode&0x20 != 0
		})
	}
	a, _ := mk(f, "fz-a", 512, 0)
	b, _ := mk(f, "fz-b", 4096, 0)
	c, _ := mk(f, "fz-c", 512, 0)
	na, nb, nc := cscdNAA(a), cscdNAA(b), cscdNAA(c)
	seeds := []xcParams{
		{id: 1, cscds: [][]byte{na, nb}, segs: [][]byte{segB2B(0, 1, 16, 0, 2), segB2B(1, 0, 2, 0, 40)}},
		{id: 2, usage: listIDNoHold, cscds: [][]byte{na}, segs: [][]byte{segB2B(0, 0, 32, 0, 16)}},
		{id: 3, usage: listIDNoCheck, cscds: [][]byte{nb, na}, segs: [][]byte{segB2B(0, 1, 1, 7, 56)}},
		{cscds: [][]byte{na, nc}, segs: [][]byte{segB2B(0, 1, 8, 0, 0)}},
		{cscds: [][]byte{nc, na}, segs: [][]byte{segB2B(0, 1, 8, 0, 0)}},
		{cscds: [][]byte{nc}, segs: [][]byte{segB2B(0, 0, 8, 0, 8)}},
		{cscds: [][]byte{na, nb, nc}, segs: [][]byte{segB2B(0, 2, 8, 0, 0), segB2B(2, 1, 8, 0, 0)}},
		{cscds: [][]byte{na}, segs: [][]byte{segB2B(0, 1, 8, 0, 0)}},
		{cscds: [][]byte{na, nb}, segs: [][]byte{segB2B(0, 1, 2048, 0, blocks-1)}},
		{cscds: [][]byte{na}},
		{},
	}
	for i, s := range seeds {
		p := s.bytes()
		f.Add(p, byte(i))
		f.Add(p[:len(p)/2], byte(i)|0x40)
		q := append([]byte(nil), p...)
		if len(q) > 17 {
			q[17] |= 0x20 // NUL
		}
		f.Add(q, byte(i)|0x80)
	}
	f.Fuzz(func(t *testing.T, params []byte, mode byte) {
		a, da := mk(t, "fz-a", 512, mode)
		b, db := mk(t, "fz-b", 4096, mode)
		c, dc := mk(t, "fz-c", 512, mode)
		v := testView{0: a, 1: b} // C is mapped for other initiators only
		n := testNexus("iqn.fuzz", 1)
		a.dsense.Store(mode&0x08 != 0)
		for _, lu := range []*LU{a, b, c} {
			lu.nexusFor(n).pop()
		}
		plen := len(params)
		if mode&0x40 != 0 {
			plen += int(mode&0x07) - 3 // the CDB disagrees with the data sent
		}
		if plen < 0 {
			plen = 0
		}
		lun := uint64(mode>>7) & 1
		cmd := &Command{Nexus: n, LUN: lun, CDB: cdbXCopy(uint32(plen)), DataOut: params}
		res := &Result{}
		Execute(v, cmd, res)
		checkResult(t, cmd, res, nil, 0)
		if dc.io() != 0 {
			t.Fatalf("LU outside the View touched: %d reads, %d writes", dc.reads.Load(), dc.writes.Load())
		}
		if res.Status != StatusGood && da.io()+db.io() != 0 {
			s, _ := parseSense(res.Sense)
			t.Fatalf("refused copy (status %#x, %x/%04x) did I/O", res.Status, s.Key, s.code())
		}
		if len(params) > 0 {
			buf := make([]byte, 64)
			cmd = &Command{Nexus: n, LUN: lun, CDB: cdbRCR(saCopyStatus, params[0], 64), DataIn: buf}
			Execute(v, cmd, res)
			checkResult(t, cmd, res, buf, 64)
		}
	})
}
