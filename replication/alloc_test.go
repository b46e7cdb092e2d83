//go:build !race

package replication

import (
	"testing"
	"time"
)

// TestWriteAllocations checks that a replicated write allocates nothing in
// steady state: on the owner (volume, peers, writers) and on the replicas
// (server tasks, buffers), which all run in this process.
func TestWriteAllocations(t *testing.T) {
	c := newCluster(t, time.Second, "b", "c")
	p := pattern(4096, 1)
	for range 100 {
		if err := c.vol.WriteAt(p, 0, false); err != nil {
			t.Fatal(err)
		}
	}
	n := testing.AllocsPerRun(1000, func() {
		if err := c.vol.WriteAt(p, 8192, false); err != nil {
			t.Fatal(err)
		}
	})
	if n > 0.5 {
		t.Fatalf("%.1f allocations per replicated write", n)
	}
}
