//go:build !race

package replication

import (
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/backend"
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

// doneChan is a backend.WriteDone that allocates nothing per write.
type doneChan chan error

func (d doneChan) WriteDone(err error) { d <- err }

// TestStartWriteAllocations is TestWriteAllocations for the writes the
// iSCSI reader starts: the calls' completion, the op's timer and the plug
// are all recycled.
func TestStartWriteAllocations(t *testing.T) {
	c := newCluster(t, time.Second, "b", "c")
	quickLocal(c.vol)
	p := pattern(4096, 1)
	done := make(doneChan, 1)
	var plug backend.Plug
	write := func() {
		if !c.vol.StartWrite(p, 8192, false, done, &plug) {
			t.Fatal("StartWrite refused a plain write")
		}
		plug.Unplug()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	for range 100 {
		write()
	}
	if n := testing.AllocsPerRun(1000, write); n > 0.5 {
		t.Fatalf("%.1f allocations per started write", n)
	}
}
