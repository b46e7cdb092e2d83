package scsi

import (
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hatarget/hatarget/target/backend"
)

type lbaDesc struct {
	lba    uint64
	n      uint32
	status byte
}

func parseLBAStatus(t *testing.T, data []byte) []lbaDesc {
	t.Helper()
	if len(data) < 8 || int(getU32(data))+4 != len(data) || (len(data)-8)%16 != 0 {
		t.Fatalf("GET LBA STATUS data % x", data)
	}
	var ds []lbaDesc
	for d := data[8:]; len(d) > 0; d = d[16:] {
		ds = append(ds, lbaDesc{getU64(d), getU32(d[8:]), d[12] & 0x0f})
	}
	return ds
}

func TestGetLBAStatus(t *testing.T) {
	const bs = 512
	h, dev := newThinHarness(t, nil)
	// Blocks 0-15 mapped, 16-31 a hole, 32-39 mapped, the rest a hole.
	good.check(t, first(h.run(cdbRW10(opWrite10, 0, 40, 0), fill(40*bs, 1), 40*bs)))
	good.check(t, first(h.run(cdbUnmap(false, 24), unmapParams([2]uint64{16, 16}), 24)))
	_ = dev

	res, data := h.run(cdbGetLBAStatus(0, 1024), nil, 1024)
	good.check(t, res)
	got := parseLBAStatus(t, data)
	want := []lbaDesc{{0, 16, lbaMapped}, {16, 16, lbaDeallocated}, {32, 8, lbaMapped}, {40, testBlocks - 40, lbaDeallocated}}
	if len(got) != len(want) {
		t.Fatalf("descriptors %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("descriptors %v, want %v", got, want)
		}
	}
	// The first descriptor starts at the requested LBA.
	_, data = h.run(cdbGetLBAStatus(20, 24), nil, 24)
	if got := parseLBAStatus(t, data); len(got) != 1 || got[0] != (lbaDesc{20, 12, lbaDeallocated}) {
		t.Fatalf("from LBA 20: %v", got)
	}
	_, data = h.run(cdbGetLBAStatus(3, 24), nil, 24)
	if got := parseLBAStatus(t, data); len(got) != 1 || got[0] != (lbaDesc{3, 13, lbaMapped}) {
		t.Fatalf("from LBA 3: %v", got)
	}
	// A hole smaller than a filesystem block leaves the block mapped.
	good.check(t, first(h.run(cdbUnmap(false, 24), unmapParams([2]uint64{1, 2}), 24)))
	_, data = h.run(cdbGetLBAStatus(1, 24), nil, 24)
	if got := parseLBAStatus(t, data); got[0].status != lbaMapped {
		t.Fatalf("partly unmapped block: %v", got)
	}
	// A short allocation length truncates, Transfer says so.
	res, data = h.run(cdbGetLBAStatus(0, 16), nil, 16)
	good.check(t, res)
	if len(data) != 16 || res.Transfer != 16 || getU32(data) != 4+16 {
		t.Fatalf("truncated: %d bytes, transfer %d, % x", len(data), res.Transfer, data)
	}

	lbaOOB := wantSense(KeyIllegalRequest, ascLBAOutOfRange)
	lbaOOB.check(t, first(h.run(cdbGetLBAStatus(testBlocks, 24), nil, 24)))
	lbaOOB.check(t, first(h.run(cdbGetLBAStatus(1<<63, 24), nil, 24)))
	lbaOOB.check(t, first(h.run(cdbGetLBAStatus(^uint64(0), 24), nil, 24)))
	res, data = h.run(cdbGetLBAStatus(testBlocks-1, 24), nil, 24)
	good.check(t, res)
	if got := parseLBAStatus(t, data); got[0].lba != testBlocks-1 || got[0].n != 1 {
		t.Fatalf("last LBA: %v", got)
	}
	wantCDB(14, 0).check(t, first(h.run(func() []byte { c := cdbGetLBAStatus(0, 24); c[14] = 1; return c }(), nil, 24)))
}

func TestGetLBAStatusFullyProvisioned(t *testing.T) {
	h := newHarness(t, nil)
	res, data := h.run(cdbGetLBAStatus(5, 64), nil, 64)
	good.check(t, res)
	if got := parseLBAStatus(t, data); len(got) != 1 || got[0] != (lbaDesc{5, testBlocks - 5, lbaMapped}) {
		t.Fatalf("fully provisioned: %v", got)
	}
}

// TestGetLBAStatusFileIO runs UNMAP and GET LBA STATUS against a real
// sparse file: SEEK_DATA/SEEK_HOLE through backend.Mapper.
func TestGetLBAStatusFileIO(t *testing.T) {
	const bs = 512
	dev, err := backend.Open(backend.Options{Handler: backend.FileIO, Path: filepath.Join(t.TempDir(), "lun"), Size: 4 << 20, BlockSize: bs})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	lu, err := NewLU(LUConfig{Device: dev, BlockSize: bs, Thin: true, WriteCache: true})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, lu: lu, n: testNexus("iqn.fileio", 1)}
	h.clearUA(h.n)
	good.check(t, first(h.run(cdbRW10(opWrite10, 0, 256, 0), fill(256*bs, 7), 256*bs)))
	res, _ := h.run(cdbUnmap(false, 24), unmapParams([2]uint64{64, 64}), 24)
	if res.Status != StatusGood {
		if p, err := parseSense(res.Sense); err == nil && p.Key == KeyMediumError {
			t.Skip("filesystem cannot punch holes")
		}
	}
	good.check(t, res)
	_, data := h.run(cdbGetLBAStatus(0, 1024), nil, 1024)
	got := parseLBAStatus(t, data)
	if len(got) < 3 || got[0] != (lbaDesc{0, 64, lbaMapped}) || got[1] != (lbaDesc{64, 64, lbaDeallocated}) || got[2].lba != 128 || got[2].status != lbaMapped {
		var st syscall.Statfs_t
		_ = syscall.Statfs(t.TempDir(), &st)
		if st.Bsize > 32<<10 {
			t.Skipf("filesystem block %d too large for this layout", st.Bsize)
		}
		t.Fatalf("descriptors %v", got)
	}
	// The unmapped range reads as zeros.
	_, rd := h.run(cdbRW10(opRead10, 64, 64, 0), nil, 64*bs)
	if !bytesAllZero(rd) {
		t.Fatal("unmapped blocks do not read as zeros")
	}
}

func bytesAllZero(b []byte) bool { return allZero(b) }
