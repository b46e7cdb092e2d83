package integration

import (
	"context"
	"crypto/rand"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/initiator"
)

// TestGracefulShutdown sends SIGTERM while a queue of writes is in flight:
// every write the target acknowledged must be in the backing file once the
// process is gone, and the process must exit with status 0.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("graceful shutdown under load skipped in -short mode")
	}
	n, disks := startGuideNode(t)
	ctx := testCtx(t, 60*time.Second)
	s := dial(t, ctx, initiator.Config{Addr: n.Addr(), TargetName: guideIQN})
	if err := s.TestUnitReady(ctx, 0); err != nil {
		t.Fatal(err)
	}

	// Every write goes to its own extent, so an acknowledged write can only
	// be overwritten by itself.
	const (
		size    = 16 << 10
		slots   = diskSize / size
		writers = 16
	)
	type ack struct {
		lba  uint64
		data []byte
	}
	var (
		next   atomic.Int64
		mu     sync.Mutex
		acked  []ack
		failed atomic.Int64
		wg     sync.WaitGroup
	)
	for range writers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= slots {
					return
				}
				data := make([]byte, size)
				_, _ = rand.Read(data)
				lba := uint64(i) * size / blockSize
				if err := s.Write(ctx, 0, lba, size/blockSize, blockSize, data); err != nil {
					failed.Add(1)
					return // the session is gone: shutdown closed it
				}
				mu.Lock()
				acked = append(acked, ack{lba, data})
				mu.Unlock()
			}
		})
	}
	eventually(t, 20*time.Second, "200 acknowledged writes", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 200
	})
	if err := n.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if next.Load() >= slots {
		t.Fatal("all writes finished before SIGTERM; the test did not shut down under load")
	}
	wg.Wait()

	wctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	exitErr := n.Wait(wctx)
	if wctx.Err() != nil {
		t.Fatal("hatarget still running 30s after SIGTERM")
	}
	t.Logf("%d writes acknowledged, %d failed when the session ended", len(acked), failed.Load())
	for _, a := range acked {
		onDisk, err := readFileAt(disks["disk01"], int64(a.lba)*blockSize, len(a.data))
		if err != nil {
			t.Fatal(err)
		}
		if i := firstDiff(onDisk, a.data); i >= 0 {
			t.Errorf("acknowledged write at LBA %d is not in the backing file (differs at byte %d)", a.lba, i)
		}
	}
	if exitErr != nil {
		t.Errorf("hatarget exited with %v after SIGTERM; want status 0", exitErr)
	}
}
