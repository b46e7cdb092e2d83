package scsi

import (
	"bytes"
	"testing"
)

func TestUnmap(t *testing.T) {
	const bs = 512
	lbaOOB := wantSense(KeyIllegalRequest, ascLBAOutOfRange)
	for _, tc := range []struct {
		name     string
		cdb      []byte
		out      []byte
		want     want
		unmapped [][2]int // LBA ranges expected zero afterwards
	}{
		{name: "one descriptor", cdb: cdbUnmap(false, 24), out: unmapParams([2]uint64{8, 16}), want: good, unmapped: [][2]int{{8, 24}}},
		{name: "many descriptors", cdb: cdbUnmap(false, 8+3*16),
			out:  unmapParams([2]uint64{0, 1}, [2]uint64{100, 50}, [2]uint64{testBlocks - 1, 1}),
			want: good, unmapped: [][2]int{{0, 1}, {100, 150}, {testBlocks - 1, testBlocks}}},
		{name: "zero blocks", cdb: cdbUnmap(false, 24), out: unmapParams([2]uint64{5, 0}), want: good},
		{name: "zero blocks at end", cdb: cdbUnmap(false, 24), out: unmapParams([2]uint64{testBlocks, 0}), want: good},
		{name: "no parameter list", cdb: cdbUnmap(false, 0), want: good},
		{name: "no descriptors", cdb: cdbUnmap(false, 8), out: unmapParams(), want: good},
		{name: "short header", cdb: cdbUnmap(false, 6), out: make([]byte, 6), want: wantSense(KeyIllegalRequest, ascParamListLengthError)},
		{name: "past end", cdb: cdbUnmap(false, 24), out: unmapParams([2]uint64{testBlocks - 1, 2}), want: lbaOOB},
		{name: "past end after a good one", cdb: cdbUnmap(false, 40),
			out: unmapParams([2]uint64{0, 8}, [2]uint64{1 << 40, 1}), want: lbaOOB},
		{name: "anchor", cdb: cdbUnmap(true, 24), out: unmapParams([2]uint64{0, 1}), want: wantCDB(1, 0)},
		{name: "too many descriptors", cdb: cdbUnmap(false, 8+16*(maxUnmapDescriptors+1)),
			out: unmapParams(make([][2]uint64, maxUnmapDescriptors+1)...), want: wantParam(2, -1)},
		{name: "descriptor length beyond the list", cdb: cdbUnmap(false, 24),
			out: func() []byte { b := unmapParams([2]uint64{16, 8}); putU16(b[2:], 64); return b }(), want: good, unmapped: [][2]int{{16, 24}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, dev := newThinHarness(t, nil)
			copy(dev.Bytes(), fill(len(dev.Bytes()), 0xee))
			res, _ := h.run(tc.cdb, tc.out, len(tc.out))
			tc.want.check(t, res)
			if res.Transfer != int(getU16(tc.cdb[7:])) {
				t.Fatalf("Transfer %d", res.Transfer)
			}
			zero := make([]bool, testBlocks)
			for _, r := range tc.unmapped {
				for l := r[0]; l < r[1]; l++ {
					zero[l] = true
				}
			}
			for l := range testBlocks {
				blk := dev.Bytes()[l*bs : (l+1)*bs]
				if zero[l] != bytes.Equal(blk, make([]byte, bs)) {
					t.Fatalf("LBA %d zero=%v, want %v", l, !zero[l], zero[l])
				}
			}
		})
	}
}

func TestUnmapNotThin(t *testing.T) {
	h := newHarness(t, func(c *LUConfig) { c.Thin = true }) // backendtest.Mem cannot unmap
	wantSense(KeyIllegalRequest, ascInvalidOpcode).check(t, first(h.run(cdbUnmap(false, 24), unmapParams([2]uint64{0, 1}), 24)))
	_, one := h.run(cdbMaintIn(saReportOpcodes, rsocOpcode, opUnmap, 0, 64), nil, 64)
	if !bytes.Equal(one, []byte{0, 1, 0, 0}) {
		t.Fatalf("UNMAP reported for a fully provisioned LU: % x", one)
	}
	ro, _ := newThinHarness(t, func(c *LUConfig) { c.ReadOnly = true })
	wantSense(KeyDataProtect, ascWriteProtected).check(t, first(ro.run(cdbUnmap(false, 24), unmapParams([2]uint64{0, 1}), 24)))
}

func TestThinAdvertising(t *testing.T) {
	for _, thin := range []bool{false, true} {
		var h *harness
		if thin {
			h, _ = newThinHarness(t, nil)
		} else {
			h = newHarness(t, nil)
		}
		res, rc := h.run(cdbReadCapacity16(32), nil, 32)
		good.check(t, res)
		if got, want := rc[14]&0xc0, map[bool]byte{false: 0, true: 0xc0}[thin]; got != want {
			t.Fatalf("thin %v: LBPME/LBPRZ %#x", thin, got)
		}
		_, pages := h.run(cdbInquiry(true, vpdSupportedPages, 255), nil, 255)
		if bytes.IndexByte(pages[4:], vpdProvisioning) >= 0 != thin {
			t.Fatalf("thin %v: supported pages % x", thin, pages)
		}
		res, b2 := h.run(cdbInquiry(true, vpdProvisioning, 64), nil, 64)
		_, bl := h.run(cdbInquiry(true, vpdBlockLimits, 64), nil, 64)
		if !thin {
			wantCDB(2, -1).check(t, res)
			if getU32(bl[20:]) != 0 || getU32(bl[24:]) != 0 {
				t.Fatal("UNMAP limits without thin provisioning")
			}
			continue
		}
		good.check(t, res)
		if len(b2) != 8 || b2[1] != vpdProvisioning || getU16(b2[2:]) != 4 {
			t.Fatalf("VPD B2h % x", b2)
		}
		// LBPU, LBPWS, LBPWS10, LBPRZ; no ANC_SUP; thin provisioning type.
		if b2[5] != 0xe4 || b2[6]&0x07 != 2 {
			t.Fatalf("VPD B2h flags % x", b2)
		}
		if getU32(bl[20:]) == 0 || getU32(bl[24:]) == 0 || getU32(bl[24:]) > 1<<20 || getU32(bl[28:]) != 8 || bl[32]&0x80 == 0 {
			t.Fatalf("thin block limits % x", bl[20:36])
		}
	}
}
