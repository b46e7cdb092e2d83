package forward

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/scsi"
)

// benchDepth is the queue depth of the product target: 4 KiB random reads
// at QD32 through a non-owner reach half the IOPS through the owner.
const benchDepth = 32

const benchSize = 1 << 30

func nullLU(b *testing.B) *scsi.LU {
	dev, err := backend.Open(backend.Options{Handler: backend.NullIO, Size: benchSize, BlockSize: 512})
	if err != nil {
		b.Fatal(err)
	}
	return newLU(b, dev)
}

// BenchmarkForwardRead4K reads 4 KiB at random LBAs of a nullio LU through
// the client, loopback TCP and the server, benchDepth commands in flight;
// client and server share the process, so allocs/op and cpu-µs/op cover
// both ends of the hop.
func BenchmarkForwardRead4K(b *testing.B) {
	r := newRig(b, func(r *rig, _ *ServerConfig, _ *ClientConfig) { r.lu = nullLU(b) })
	benchRead4K(b, benchDepth, forwardOnly(r.fwd))
}

// BenchmarkForwardRead4KQD1 is one command at a time: ns/op is the latency
// the hop adds.
func BenchmarkForwardRead4KQD1(b *testing.B) {
	r := newRig(b, func(r *rig, _ *ServerConfig, _ *ClientConfig) { r.lu = nullLU(b) })
	benchRead4K(b, 1, forwardOnly(r.fwd))
}

// BenchmarkLocalRead4K is the same load on ExecuteLocal: the owner's own
// cost, against which the forwarding hop is measured.
func BenchmarkLocalRead4K(b *testing.B) {
	lu := nullLU(b)
	benchRead4K(b, benchDepth, lu.ExecuteLocal)
}

func benchRead4K(b *testing.B, depth int, exec func(*scsi.Command, *scsi.Result)) {
	n := nexus(1)
	exec(&scsi.Command{Nexus: n, CDB: cdbTUR()}, &scsi.Result{}) // POWER ON, RESET
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.SetBytes(4096)
	cpu0 := cpuTime()
	b.ResetTimer()
	start := time.Now()
	for g := range depth {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := &scsi.Command{Nexus: n, CDB: cdbRW10(opRead10, 0, 8), DataIn: make([]byte, 4096)}
			res := &scsi.Result{}
			x := uint32(g)*2654435761 + 1
			for next.Add(1) <= int64(b.N) {
				x ^= x << 13
				x ^= x >> 17
				x ^= x << 5
				binary.BigEndian.PutUint32(cmd.CDB[2:], x%(benchSize/4096)*8)
				exec(cmd, res)
				if res.Status != scsi.StatusGood {
					b.Errorf("status %#x sense %x", res.Status, res.Sense)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "IOPS")
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// cpuTime is the process's user and system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// forwardOnly adapts a forwarder to the benchmark's executor.
func forwardOnly(f *LUForwarder) func(*scsi.Command, *scsi.Result) {
	return func(cmd *scsi.Command, res *scsi.Result) { f.Forward(cmd, res) }
}
