package scsi

import (
	"bytes"
	"testing"

	"github.com/hatarget/hatarget/target/backend/backendtest"
)

func TestNewLUValidates(t *testing.T) {
	dev := backendtest.NewMem(4096)
	for name, cfg := range map[string]LUConfig{
		"no device":  {},
		"block size": {Device: dev, BlockSize: 1024},
		"vendor":     {Device: dev, VendorID: "bad\x01"},
	} {
		if _, err := NewLU(cfg); err == nil {
			t.Errorf("%s: NewLU accepted %+v", name, cfg)
		}
	}
}

func TestReadWriteRoundTrip(t *testing.T) {
	h := newHarness(t, nil)
	for _, tc := range []struct {
		name  string
		write []byte
		read  []byte
	}{
		{"6", cdbRW6(opWrite6, 100, 3), cdbRW6(opRead6, 100, 3)},
		{"10", cdbRW10(opWrite10, 200, 3, 0), cdbRW10(opRead10, 200, 3, 0)},
		{"12", cdbRW12(opWrite12, 300, 3, 0), cdbRW12(opRead12, 300, 3, 0)},
		{"16", cdbRW16(opWrite16, testBlocks-3, 3, 0), cdbRW16(opRead16, testBlocks-3, 3, 0)},
		{"DPO FUA", cdbRW10(opWrite10, 10, 3, 0x18), cdbRW10(opRead10, 10, 3, 0x18)},
		{"FUA_NV", cdbRW16(opWrite16, 20, 3, 0x02), cdbRW16(opRead16, 20, 3, 0x02)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := make([]byte, 3*512)
			for i := range data {
				data[i] = byte(i*7) ^ tc.name[0]
			}
			res, _ := h.run(tc.write, data, len(data))
			good.check(t, res)
			if res.Transfer != len(data) {
				t.Fatalf("write Transfer %d", res.Transfer)
			}
			res, got := h.run(tc.read, nil, len(data))
			good.check(t, res)
			if !bytes.Equal(got, data) || res.Transfer != len(data) {
				t.Fatalf("read back %d bytes (transfer %d), differs", len(got), res.Transfer)
			}
		})
	}
}

func TestRead6ZeroMeans256(t *testing.T) {
	h := newHarness(t, nil)
	res, data := h.run(cdbRW6(opRead6, 0, 0), nil, 256*512)
	good.check(t, res)
	if len(data) != 256*512 || res.Transfer != 256*512 {
		t.Fatalf("READ(6) length 0 returned %d bytes, transfer %d", len(data), res.Transfer)
	}
}

func TestBlockCommandErrors(t *testing.T) {
	lbaOOB := wantSense(KeyIllegalRequest, ascLBAOutOfRange)
	for _, tc := range []struct {
		name string
		cdb  []byte
		out  []byte
		want want
	}{
		{"read10 zero blocks", cdbRW10(opRead10, 0, 0, 0), nil, good},
		{"read10 zero blocks at end", cdbRW10(opRead10, testBlocks, 0, 0), nil, good},
		{"read10 zero blocks past end", cdbRW10(opRead10, testBlocks+1, 0, 0), nil, lbaOOB},
		{"read10 past end", cdbRW10(opRead10, testBlocks-1, 2, 0), nil, lbaOOB},
		{"read10 lba -1", cdbRW10(opRead10, 0xffffffff, 1, 0), nil, lbaOOB},
		{"read16 lba -1", cdbRW16(opRead16, ^uint64(0), 1, 0), nil, lbaOOB},
		{"read16 wraps", cdbRW16(opRead16, ^uint64(0)-1, 4, 0), nil, lbaOOB},
		{"read6 past end", cdbRW6(opRead6, testBlocks-1, 2), nil, lbaOOB},
		{"write12 past end", cdbRW12(opWrite12, testBlocks, 1, 0), fill(512, 1), lbaOOB},
		{"read10 rdprotect", cdbRW10(opRead10, 0, 1, 0x20), nil, wantCDB(1, 7)},
		{"read12 rdprotect", cdbRW12(opRead12, 0, 1, 0xe0), nil, wantCDB(1, 7)},
		{"write16 wrprotect", cdbRW16(opWrite16, 0, 1, 0x40), fill(512, 1), wantCDB(1, 7)},
		{"read10 reserved bit", cdbRW10(opRead10, 0, 1, 0x01), nil, wantCDB(1, 0)},
		{"read10 rarc", cdbRW10(opRead10, 0, 1, 0x04), nil, wantCDB(1, 2)},
		{"read10 group 3", append(cdbRW10(opRead10, 0, 1, 0)[:6], 3, 0, 1, 0), nil, good},
		{"read10 NACA", append(cdbRW10(opRead10, 0, 1, 0)[:9], 0x04), nil, wantCDB(9, 2)},
		{"verify bytchk 10b", cdbRW10(opVerify10, 0, 1, 0x04), nil, wantCDB(1, 2)},
		{"verify vrprotect", cdbRW10(opVerify10, 0, 1, 0x22), fill(512, 0), wantCDB(1, 7)},
		{"verify past end", cdbRW16(opVerify16, testBlocks, 1, 0), nil, lbaOOB},
		{"writeverify FUA bit", cdbRW10(opWriteVerify10, 0, 1, 0x08), fill(512, 0), wantCDB(1, 3)},
		{"writeverify past end", cdbRW12(opWriteVerify12, testBlocks-1, 2, 0), fill(1024, 0), lbaOOB},
		{"sync cache", []byte{opSyncCache10, 0x02, 0, 0, 0, 0, 0, 0, 0, 0}, nil, good},
		{"sync cache past end", cdbRW16(opSyncCache16, testBlocks+1, 0, 0), nil, lbaOOB},
		{"prefetch", cdbRW10(opPrefetch10, testBlocks-256, 256, 0x02), nil, good},
		{"prefetch past end", cdbRW16(opPrefetch16, testBlocks-1, 2, 0), nil, lbaOOB},
		{"short cdb", []byte{opRead10, 0, 0}, nil, wantCDB(3, -1)},
		{"unknown opcode", []byte{0xc0, 0, 0, 0, 0, 0}, nil, wantSense(KeyIllegalRequest, ascInvalidOpcode)},
		{"xcopy empty parameter list", make16(0x83), nil, good},
		{"xcopy lid4", append([]byte{0x83, 0x01}, make([]byte, 14)...), nil, wantCDB(1, 4)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			res, _ := h.run(tc.cdb, tc.out, len(tc.out)+4096)
			tc.want.check(t, res)
		})
	}
}

func make16(op byte) []byte { c := make([]byte, 16); c[0] = op; return c }

func TestWriteDurability(t *testing.T) {
	h := newHarness(t, func(c *LUConfig) { c.WriteCache = true })
	write := func(flags byte) {
		t.Helper()
		res, _ := h.run(cdbRW10(opWrite10, 0, 1, flags), fill(512, 9), 512)
		good.check(t, res)
	}
	write(0)
	if d := h.dev.Counts().Durable; d != 0 {
		t.Fatalf("WCE=1 plain write was durable")
	}
	write(bitFUA)
	if d := h.dev.Counts().Durable; d != 1 {
		t.Fatalf("FUA write not durable")
	}

	// MODE SELECT clears WCE: now every write is durable.
	page := h.modePage(pcCurrent, 0x08)
	page[2] &^= 0x04
	res, _ := h.run(cdbModeSelect6(true, false, byte(4+len(page))), append(make([]byte, 4), page...), 0)
	good.check(t, res)
	if h.lu.wce.Load() {
		t.Fatal("WCE still set")
	}
	write(0)
	if d := h.dev.Counts().Durable; d != 2 {
		t.Fatalf("WCE=0 write not durable")
	}
	if got := h.modePage(pcCurrent, 0x08)[2] & 0x04; got != 0 {
		t.Fatal("MODE SENSE still shows WCE")
	}

	res, _ = h.run(cdbRW10(opSyncCache10, 0, 0, 0), nil, 0)
	good.check(t, res)
	if f := h.dev.Counts().Flushes; f != 1 {
		t.Fatalf("SYNCHRONIZE CACHE flushed %d times", f)
	}
}

func TestWriteProtection(t *testing.T) {
	wp := wantSense(KeyDataProtect, ascWriteProtected)
	t.Run("read-only config", func(t *testing.T) {
		h := newHarness(t, func(c *LUConfig) { c.ReadOnly = true })
		for _, cdb := range [][]byte{cdbRW6(opWrite6, 0, 1), cdbRW10(opWrite10, 0, 1, 0), cdbRW12(opWriteVerify12, 0, 1, 0)} {
			res, _ := h.run(cdb, fill(512, 1), 512)
			wp.check(t, res)
		}
		res, _ := h.run(cdbRW10(opRead10, 0, 1, 0), nil, 512)
		good.check(t, res)
		if h.modePage(pcCurrent, 0x0a) == nil {
			t.Fatal("no control page")
		}
		res, data := h.run(cdbModeSense6(true, pcCurrent, allPages, 0, 255), nil, 255)
		good.check(t, res)
		if data[2]&dspWP == 0 || data[2]&dspDPOFUA == 0 {
			t.Fatalf("device-specific parameter %#x", data[2])
		}
	})
	t.Run("SWP", func(t *testing.T) {
		h := newHarness(t, nil)
		page := h.modePage(pcCurrent, 0x0a)
		page[4] |= 0x08
		res, _ := h.run(cdbModeSelect6(true, false, byte(4+len(page))), append(make([]byte, 4), page...), 0)
		good.check(t, res)
		res, _ = h.run(cdbRW10(opWrite10, 0, 1, 0), fill(512, 1), 512)
		wantSense(KeyDataProtect, ascSoftwareWriteProtected).check(t, res)
		res, _ = h.run(cdbRW10(opRead10, 0, 1, 0), nil, 512)
		good.check(t, res)
		h.lu.ResetLU(nil)
		h.clearUA(h.n)
		res, _ = h.run(cdbRW10(opWrite10, 0, 1, 0), fill(512, 1), 512)
		good.check(t, res) // a LU reset restores the default SWP=0
	})
}

func TestResiduals(t *testing.T) {
	h := newHarness(t, nil)
	pattern := make([]byte, 2*512)
	for i := range pattern {
		pattern[i] = byte(i)
	}
	res, _ := h.run(cdbRW10(opWrite10, 0, 2, 0), pattern, len(pattern))
	good.check(t, res)

	for _, tc := range []struct {
		name      string
		blocks    uint16
		edtl      int
		wantBytes int
	}{
		{"edtl 0", 1, 0, 0},
		{"edtl larger", 1, 10000, 512},
		{"edtl partial block", 1, 200, 200},
		{"edtl one of two blocks", 2, 512, 512},
		{"edtl one and a half", 2, 768, 768},
	} {
		res, data := h.run(cdbRW10(opRead10, 0, tc.blocks, 0), nil, tc.edtl)
		good.check(t, res)
		if res.Transfer != int(tc.blocks)*512 || len(data) != tc.wantBytes || !bytes.Equal(data, pattern[:tc.wantBytes]) {
			t.Errorf("read %s: transfer %d, %d bytes", tc.name, res.Transfer, len(data))
		}
	}

	// WRITE: only whole blocks that were sent, never more than the CDB says.
	for _, tc := range []struct {
		name      string
		blocks    uint16
		sent      int
		wantBlock int // blocks overwritten with 'b'
	}{
		{"edtl 0", 1, 0, 0},
		{"edtl 200", 1, 200, 0},
		{"edtl larger than cdb", 1, 1024, 1},
		{"edtl smaller than cdb", 2, 512, 1},
		{"edtl one and a half", 2, 768, 1},
	} {
		res, _ := h.run(cdbRW10(opWrite10, 0, 2, 0), fill(1024, 'a'), 1024)
		good.check(t, res)
		res, _ = h.run(cdbRW10(opWrite10, 0, tc.blocks, 0), fill(tc.sent, 'b'), tc.sent)
		good.check(t, res)
		if res.Transfer != int(tc.blocks)*512 {
			t.Errorf("write %s: transfer %d", tc.name, res.Transfer)
		}
		_, data := h.run(cdbRW10(opRead10, 0, 2, 0), nil, 1024)
		want := append(fill(tc.wantBlock*512, 'b'), fill((2-tc.wantBlock)*512, 'a')...)
		if !bytes.Equal(data, want) {
			t.Errorf("write %s: media holds the wrong data", tc.name)
		}
	}
}

func TestVerify(t *testing.T) {
	h := newHarness(t, nil)
	data := make([]byte, 4*512)
	for i := range data {
		data[i] = byte(i * 13)
	}
	good.check(t, first(h.run(cdbRW10(opWrite10, 8, 4, 0), data, len(data))))

	good.check(t, first(h.run(cdbRW10(opVerify10, 8, 4, 0x02), data, len(data))))
	good.check(t, first(h.run(cdbRW10(opVerify10, 8, 4, 0x10), nil, 0))) // BYTCHK=0, DPO
	bad := bytes.Clone(data)
	bad[1000] ^= 0x55
	for _, cdb := range [][]byte{cdbRW10(opVerify10, 8, 4, 0x02), cdbRW12(opVerify12, 8, 4, 0x02), cdbRW16(opVerify16, 8, 4, 0x02)} {
		res, _ := h.run(cdb, bad, len(bad))
		p := mustSense(t, res)
		if p.Key != KeyMiscompare || p.code() != ascMiscompareDuringVerify || !p.HasInfo || p.Info != 1000 {
			t.Fatalf("miscompare sense %+v", p)
		}
	}
	// BYTCHK=0 ignores the data.
	good.check(t, first(h.run(cdbRW10(opVerify10, 8, 4, 0), bad, len(bad))))

	// BYTCHK=11b: one block against every block.
	blk := fill(512, 0x77)
	good.check(t, first(h.run(cdbRW10(opWrite10, 100, 3, 0), fill(3*512, 0x77), 3*512)))
	res, _ := h.run(cdbRW10(opVerify10, 100, 3, 0x06), blk, 512)
	good.check(t, res)
	if res.Transfer != 512 {
		t.Fatalf("BYTCHK=11b transfer %d", res.Transfer)
	}
	res, _ = h.run(cdbRW10(opVerify10, 99, 3, 0x06), blk, 512)
	if p := mustSense(t, res); p.Key != KeyMiscompare || p.Info != 0 {
		t.Fatalf("pattern miscompare %+v", p)
	}

	// WRITE AND VERIFY writes durably and compares.
	res, _ = h.run(cdbRW16(opWriteVerify16, 300, 4, 0x12), data, len(data))
	good.check(t, res)
	if d := h.dev.Counts().Durable; d == 0 {
		t.Fatal("WRITE AND VERIFY was not durable")
	}
	_, got := h.run(cdbRW10(opRead10, 300, 4, 0), nil, len(data))
	if !bytes.Equal(got, data) {
		t.Fatal("WRITE AND VERIFY data not written")
	}
}

func first(r *Result, _ []byte) *Result { return r }

func TestReadCapacity(t *testing.T) {
	h := newHarness(t, nil)
	res, data := h.run([]byte{opReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 8)
	good.check(t, res)
	if getU32(data) != testBlocks-1 || getU32(data[4:]) != 512 {
		t.Fatalf("READ CAPACITY(10) % x", data)
	}
	res, _ = h.run([]byte{opReadCapacity10, 0, 0, 0, 0, 1, 0, 0, 0, 0}, nil, 8)
	wantCDB(2, -1).check(t, res)

	rc16 := func(alloc uint32) []byte {
		c := make16(opServiceActionIn16)
		c[1] = saReadCapacity16
		putU32(c[10:], alloc)
		return c
	}
	for alloc := range uint32(40) {
		res, data = h.run(rc16(alloc), nil, 64)
		good.check(t, res)
		if res.Transfer != int(min(alloc, 32)) {
			t.Fatalf("alloc %d: transfer %d", alloc, res.Transfer)
		}
	}
	if getU64(data) != testBlocks-1 || getU32(data[8:]) != 512 || data[12] != 0 || data[13] != 0 || data[14] != 0 {
		t.Fatalf("READ CAPACITY(16) % x", data)
	}
}

func TestLargeCapacityReadCapacity10(t *testing.T) {
	big := &sizedDevice{Mem: backendtest.NewMem(512), size: 1 << 42}
	lu, err := NewLU(LUConfig{Device: big})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, lu: lu, n: testNexus("i", 1)}
	h.clearUA(h.n)
	res, data := h.run([]byte{opReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 8)
	if getU32(data) != 0xffffffff {
		t.Fatalf("READ CAPACITY(10) of a 4 TiB LU: % x", data)
	}
	good.check(t, res)
	res, _ = h.run(cdbRW16(opRead16, 0, MaxTransferBytes/512+1, 0), nil, 512)
	wantCDB(10, -1).check(t, res)
	res, _ = h.run(cdbRW12(opWrite12, 0, MaxTransferBytes/512+1, 0), nil, 512)
	wantCDB(6, -1).check(t, res)
	res, data = h.run(cdbModeSense6(false, pcCurrent, 0x08, 0, 255), nil, 255)
	good.check(t, res)
	if getU32(data[4:]) != 0xffffffff {
		t.Fatalf("block descriptor % x", data[4:12])
	}
}

type sizedDevice struct {
	*backendtest.Mem
	size int64
}

func (d *sizedDevice) Size() int64 { return d.size }
