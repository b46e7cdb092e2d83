package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A flood of refusals is logged one by one up to the burst, then summed
// up once at the end of the window; the counter sees every one, and the
// next window logs one by one again.
func TestRefusalLogRateLimited(t *testing.T) {
	var out lockedBuffer
	var total atomic.Uint64
	r := newRefusalLog(slog.New(slog.NewTextHandler(&out, nil)), &total)
	r.window = 300 * time.Millisecond
	const flood = refusalBurst + 15
	for i := range flood {
		r.refused(fmt.Sprintf("10.0.0.66:%d", 40000+i), errors.New("not a member"))
	}
	if n := strings.Count(out.String(), `msg="refused a connection"`); n != refusalBurst {
		t.Fatalf("%d refusals logged one by one, want %d:\n%s", n, refusalBurst, out.String())
	}
	if total.Load() != flood {
		t.Fatalf("counted %d refusals, want %d", total.Load(), flood)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "refused more connections") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	summary := fmt.Sprintf("count=%d window=300ms last_remote=10.0.0.66:%d", flood-refusalBurst, 40000+flood-1)
	if !strings.Contains(out.String(), summary) {
		t.Fatalf("no summary with %q:\n%s", summary, out.String())
	}
	r.refused("10.0.0.67:1", errors.New("unknown authority"))
	if n := strings.Count(out.String(), `msg="refused a connection"`); n != refusalBurst+1 {
		t.Fatalf("the next window logged %d refusals one by one in all, want %d", n, refusalBurst+1)
	}
}
