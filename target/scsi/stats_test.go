package scsi

import (
	"testing"
	"time"
)

// recordingStats keeps what Stats was last told.
type recordingStats struct {
	calls  int
	kind   CommandKind
	bytes  int
	status Status
	d      time.Duration
}

func (r *recordingStats) Completed(kind CommandKind, bytes int, status Status, d time.Duration) {
	r.calls++
	r.kind, r.bytes, r.status, r.d = kind, bytes, status, d
}

func TestStatsClassifyCommands(t *testing.T) {
	rec := &recordingStats{}
	h := newHarness(t, func(c *LUConfig) { c.Stats = rec })
	block := make([]byte, 512)
	for _, tc := range []struct {
		name   string
		cdb    []byte
		out    []byte
		edtl   int
		kind   CommandKind
		bytes  int
		status Status
	}{
		{"read10", cdbRW10(opRead10, 0, 8, 0), nil, 4096, KindRead, 4096, StatusGood},
		{"read16 shorter than the CDB", cdbRW16(opRead16, 0, 8, 0), nil, 1024, KindRead, 1024, StatusGood},
		{"read6", cdbRW6(opRead6, 0, 1), nil, 512, KindRead, 512, StatusGood},
		{"write10", cdbRW10(opWrite10, 0, 4, 0), make([]byte, 2048), 0, KindWrite, 2048, StatusGood},
		{"write12 with more data than the CDB", cdbRW12(opWrite12, 0, 1, 0), make([]byte, 1024), 0, KindWrite, 512, StatusGood},
		{"write and verify", cdbRW10(opWriteVerify10, 0, 1, 0), block, 0, KindWrite, 512, StatusGood},
		{"write atomic", cdbWriteAtomic(0, 1, 0), block, 0, KindWrite, 512, StatusGood},
		{"write past the end", cdbRW10(opWrite10, testBlocks, 1, 0), block, 0, KindWrite, 0, StatusCheckCondition},
		{"read past the end", cdbRW10(opRead10, testBlocks, 1, 0), nil, 512, KindRead, 0, StatusCheckCondition},
		{"test unit ready", cdbTUR(), nil, 0, KindOther, 0, StatusGood},
		{"inquiry returns data but is no read", cdbInquiry(false, 0, 96), nil, 96, KindOther, 0, StatusGood},
		{"write same is no write", cdbWS10(0, 4, 0), block, 0, KindOther, 0, StatusGood},
		{"unknown opcode", []byte{0xff, 0, 0, 0, 0, 0}, nil, 0, KindOther, 0, StatusCheckCondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec.calls = 0
			res, _ := h.run(tc.cdb, tc.out, tc.edtl)
			if res.Status != tc.status {
				t.Fatalf("status %#x, want %#x", res.Status, tc.status)
			}
			if rec.calls != 1 {
				t.Fatalf("Stats told %d times, want once", rec.calls)
			}
			if rec.kind != tc.kind || rec.bytes != tc.bytes || rec.status != tc.status {
				t.Errorf("Stats got %v %d bytes status %#x, want %v %d bytes status %#x",
					rec.kind, rec.bytes, rec.status, tc.kind, tc.bytes, tc.status)
			}
			if rec.d < 0 {
				t.Errorf("negative duration %v", rec.d)
			}
		})
	}
}

// TestStatsDoNotAllocate keeps READ and WRITE allocation free with Stats.
func TestStatsDoNotAllocate(t *testing.T) {
	rec := &recordingStats{}
	h := newHarness(t, func(c *LUConfig) { c.Stats = rec })
	v := testView{0: h.lu}
	for _, cmd := range []*Command{
		{Nexus: h.n, CDB: cdbRW10(opRead10, 8, 8, 0), DataIn: make([]byte, 4096)},
		{Nexus: h.n, CDB: cdbRW10(opWrite10, 8, 8, 0), DataOut: make([]byte, 4096)},
	} {
		res := &Result{}
		if allocs := testing.AllocsPerRun(200, func() { Execute(v, cmd, res) }); allocs != 0 {
			t.Errorf("cdb % x: %v allocations per command", cmd.CDB, allocs)
		}
	}
}

// BenchmarkRead4KStats is BenchmarkRead4K with an LU that reports to Stats:
// the difference is what timing and reporting each command costs.
func BenchmarkRead4KStats(b *testing.B) { benchRW(b, opRead10, &recordingStats{}) }
