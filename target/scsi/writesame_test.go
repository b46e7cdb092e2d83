package scsi

import (
	"bytes"
	"testing"

	"github.com/hatarget/hatarget/target/backend/backendtest"
)

func TestWriteSame(t *testing.T) {
	const bs = 512
	lbaOOB := wantSense(KeyIllegalRequest, ascLBAOutOfRange)
	pattern := func() []byte {
		b := make([]byte, bs)
		for i := range b {
			b[i] = byte(i)
		}
		return b
	}()
	for _, tc := range []struct {
		name  string
		cdb   []byte
		out   []byte
		want  want
		check func(t *testing.T, h *harness)
	}{
		{name: "ws10 pattern", cdb: cdbWS10(10, 200, 0), out: pattern, want: good, check: func(t *testing.T, h *harness) {
			for lba := 10; lba < 210; lba++ {
				if !bytes.Equal(h.dev.Bytes()[lba*bs:(lba+1)*bs], pattern) {
					t.Fatalf("LBA %d not written", lba)
				}
			}
			if h.dev.Bytes()[210*bs] != 0 || h.dev.Bytes()[10*bs-1] != 0 {
				t.Fatal("wrote outside the range")
			}
		}},
		{name: "ws16 pattern at end", cdb: cdbWS16(testBlocks-3, 3, 0), out: pattern, want: good, check: func(t *testing.T, h *harness) {
			if !bytes.Equal(h.dev.Bytes()[(testBlocks-1)*bs:], pattern) {
				t.Fatal("last LBA not written")
			}
		}},
		{name: "zero blocks means to the end", cdb: cdbWS10(testBlocks-5, 0, 0), out: pattern, want: good, check: func(t *testing.T, h *harness) {
			if !bytes.Equal(h.dev.Bytes()[(testBlocks-5)*bs:(testBlocks-4)*bs], pattern) || !bytes.Equal(h.dev.Bytes()[(testBlocks-1)*bs:], pattern) {
				t.Fatal("WRITE SAME of 0 blocks did not write to the last LBA")
			}
		}},
		{name: "zero blocks at end", cdb: cdbWS16(testBlocks, 0, 0), out: pattern, want: good},
		{name: "ndob writes zeros", cdb: cdbWS16(0, 4, wsNDOB), want: good, check: func(t *testing.T, h *harness) {
			if !bytes.Equal(h.dev.Bytes()[:4*bs], make([]byte, 4*bs)) {
				t.Fatal("NDOB did not zero")
			}
		}},
		{name: "past end", cdb: cdbWS10(testBlocks-1, 2, 0), out: pattern, want: lbaOOB},
		{name: "zero blocks past end", cdb: cdbWS10(testBlocks+1, 0, 0), out: pattern, want: lbaOOB},
		{name: "lba 2^31", cdb: cdbWS10(1<<31, 1, 0), out: pattern, want: lbaOOB},
		{name: "lba -1", cdb: cdbWS16(^uint64(0), 1, 0), out: pattern, want: lbaOOB},
		{name: "wrprotect", cdb: cdbWS10(0, 1, 0x20), out: pattern, want: wantCDB(1, 7)},
		{name: "anchor", cdb: cdbWS10(0, 1, wsAnchor), out: pattern, want: wantCDB(1, 4)},
		{name: "anchor unmap", cdb: cdbWS16(0, 1, wsAnchor|wsUnmap), out: pattern, want: wantCDB(1, 4)},
		{name: "unmap on a fully provisioned LU", cdb: cdbWS16(0, 1, wsUnmap), out: make([]byte, bs), want: wantCDB(1, 3)},
		{name: "half a block", cdb: cdbWS10(0, 1, 0), out: pattern[:bs/2], want: wantCDB(7, -1)},
		{name: "two blocks", cdb: cdbWS16(0, 1, 0), out: append(pattern, pattern...), want: wantCDB(10, -1)},
		{name: "obsolete lbdata", cdb: cdbWS10(0, 1, 0x02), out: pattern, want: wantCDB(1, 1)},
		{name: "ndob on ws10 is reserved", cdb: cdbWS10(0, 1, 0x01), out: pattern, want: wantCDB(1, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, nil)
			res, _ := h.run(tc.cdb, tc.out, len(tc.out))
			tc.want.check(t, res)
			if tc.check != nil {
				tc.check(t, h)
			}
		})
	}
	ro := newHarness(t, func(c *LUConfig) { c.ReadOnly = true })
	wantSense(KeyDataProtect, ascWriteProtected).check(t, first(ro.run(cdbWS10(0, 1, 0), pattern, bs)))

	// MAXIMUM WRITE SAME LENGTH bounds the range, zero-length included.
	big := newHarness(t, func(c *LUConfig) { c.Device = &sizedDevice{backendtest.NewMem(bs), (maxWriteSameBlocks + 8) * bs} })
	wantCDB(10, -1).check(t, first(big.run(cdbWS16(0, maxWriteSameBlocks+1, 0), pattern, bs)))
	wantCDB(10, -1).check(t, first(big.run(cdbWS16(0, 0, 0), pattern, bs)))
}

func TestWriteSameUnmap(t *testing.T) {
	const bs = 512
	h, dev := newThinHarness(t, nil)
	// Map 64 blocks (8 filesystem blocks) of 0xff.
	good.check(t, first(h.run(cdbRW10(opWrite10, 0, 64, 0), fill(64*bs, 0xff), 64*bs)))
	if !dev.mapped(0) {
		t.Fatal("written range not mapped")
	}
	// UNMAP with zero data deallocates; partial filesystem blocks at the
	// edges read back as zeros too.
	good.check(t, first(h.run(cdbWS10(4, 40, wsUnmap), make([]byte, bs), bs)))
	if !bytes.Equal(dev.Bytes()[4*bs:44*bs], make([]byte, 40*bs)) || dev.Bytes()[4*bs-1] != 0xff || dev.Bytes()[44*bs] != 0xff {
		t.Fatal("WRITE SAME UNMAP did not zero exactly its range")
	}
	if dev.mapped(8*bs) != false || dev.mapped(0) != true {
		t.Fatal("WRITE SAME UNMAP did not deallocate the whole filesystem blocks")
	}
	// NDOB with UNMAP deallocates too.
	good.check(t, first(h.run(cdbWS16(48, 16, wsUnmap|wsNDOB), nil, 0)))
	if dev.mapped(48 * bs) {
		t.Fatal("NDOB UNMAP did not deallocate")
	}
	// UNMAP deallocates whatever the block holds; the range reads as zeros.
	good.check(t, first(h.run(cdbRW10(opWrite10, 48, 16, 0), fill(16*bs, 0x22), 16*bs)))
	good.check(t, first(h.run(cdbWS16(48, 16, wsUnmap), fill(bs, 0x11), bs)))
	if dev.mapped(48*bs) || !bytes.Equal(dev.Bytes()[48*bs:64*bs], make([]byte, 16*bs)) {
		t.Fatal("WRITE SAME UNMAP with data did not deallocate")
	}
	unmaps := dev.Counts().Unmaps
	// Without the UNMAP bit zeros are written, not deallocated.
	good.check(t, first(h.run(cdbWS16(48, 16, 0), make([]byte, bs), bs)))
	if dev.Counts().Unmaps != unmaps || !dev.mapped(48*bs) {
		t.Fatal("WRITE SAME of zeros without UNMAP deallocated")
	}
	// ANCHOR with UNMAP: no ANC_SUP.
	wantCDB(1, 4).check(t, first(h.run(cdbWS10(0, 1, wsAnchor|wsUnmap), make([]byte, bs), bs)))
}
