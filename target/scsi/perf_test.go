package scsi

import (
	"sync/atomic"
	"testing"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/backend/backendtest"
)

func TestReadWriteDoNotAllocate(t *testing.T) {
	h := newHarness(t, func(c *LUConfig) { c.WriteCache = false })
	v := testView{0: h.lu}
	for _, tc := range []struct {
		name string
		cmd  *Command
	}{
		{"read10", &Command{Nexus: h.n, CDB: cdbRW10(opRead10, 8, 8, 0), DataIn: make([]byte, 4096)}},
		{"write10", &Command{Nexus: h.n, CDB: cdbRW10(opWrite10, 8, 8, 0), DataOut: make([]byte, 4096)}},
		{"read16 fua", &Command{Nexus: h.n, CDB: cdbRW16(opRead16, 8, 8, 0x08), DataIn: make([]byte, 4096)}},
		{"write16 fua", &Command{Nexus: h.n, CDB: cdbRW16(opWrite16, 8, 8, 0x08), DataOut: make([]byte, 4096)}},
	} {
		res := &Result{}
		allocs := testing.AllocsPerRun(200, func() {
			Execute(v, tc.cmd, res)
			if res.Status != StatusGood {
				t.Fatalf("%s: status %#x", tc.name, res.Status)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per command", tc.name, allocs)
		}
	}
}

// benchRW measures one 4 KiB command through the View, as the transport
// calls it, against an in-memory device, reporting to stats if not nil.
func benchRW(b *testing.B, op byte, stats Stats) {
	dev := backendtest.NewMem(64 << 20)
	lu, err := NewLU(LUConfig{Device: dev, WriteCache: true, Stats: stats})
	if err != nil {
		b.Fatal(err)
	}
	v := testView{0: lu}
	n := testNexus("iqn.bench", 1)
	cmd := &Command{Nexus: n, DataIn: make([]byte, 4096), DataOut: make([]byte, 4096)}
	res := &Result{}
	cmd.CDB = cdbTUR()
	Execute(v, cmd, res) // consume POWER ON, RESET
	b.ReportAllocs()
	b.SetBytes(4096)
	b.ResetTimer()
	cmd.CDB = cdbRW10(op, 0, 8, 0)
	for i := 0; b.Loop(); i++ {
		putU32(cmd.CDB[2:], uint32(i*8)%(64<<11))
		Execute(v, cmd, res)
		if res.Status != StatusGood {
			b.Fatalf("status %#x", res.Status)
		}
	}
}

func BenchmarkRead4K(b *testing.B)  { benchRW(b, opRead10, nil) }
func BenchmarkWrite4K(b *testing.B) { benchRW(b, opWrite10, nil) }

// BenchmarkRead4KParallel runs many sessions against one LU, which is what
// the nexus lookup and unit-attention fast path must scale to.
func BenchmarkRead4KParallel(b *testing.B) {
	dev := backendtest.NewMem(64 << 20)
	lu, err := NewLU(LUConfig{Device: dev})
	if err != nil {
		b.Fatal(err)
	}
	v := testView{0: lu}
	var id atomic.Int32
	b.ReportAllocs()
	b.SetBytes(4096)
	b.RunParallel(func(pb *testing.PB) {
		n := testNexus("iqn.bench", byte(id.Add(1)))
		cmd := &Command{Nexus: n, CDB: cdbTUR(), DataIn: make([]byte, 4096)}
		res := &Result{}
		Execute(v, cmd, res)
		cmd.CDB = cdbRW10(opRead10, 0, 8, 0)
		for pb.Next() {
			Execute(v, cmd, res)
		}
	})
}

// doneAtOnce is an AsyncWriter that completes each write before
// StartWrite returns.
type doneAtOnce struct{ *backendtest.Mem }

func (d doneAtOnce) StartWrite(p []byte, off int64, durable bool, done backend.WriteDone, _ *backend.Plug) bool {
	done.WriteDone(d.WriteAt(p, off, durable))
	return true
}

func (d doneAtOnce) NetworkedWrites() bool { return true }

func TestExecuteAsyncDoesNotAllocate(t *testing.T) {
	h := newHarness(t, func(c *LUConfig) {
		c.Device = doneAtOnce{backendtest.NewMem(testBlocks * 512)}
		c.WriteCache = true
	})
	v := testView{0: h.lu}
	Execute(v, &Command{Nexus: h.n, CDB: cdbTUR()}, &Result{}) // takes the new nexus's unit attention
	cmd := &Command{Nexus: h.n, CDB: cdbRW10(opWrite10, 8, 8, 0), DataOut: make([]byte, 4096)}
	res := &Result{}
	done := func() {}
	allocs := testing.AllocsPerRun(200, func() {
		if !ExecuteAsync(v, cmd, res, done, nil) || res.Status != StatusGood {
			t.Fatalf("write10 through ExecuteAsync: status %#x", res.Status)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per started write", allocs)
	}
}
