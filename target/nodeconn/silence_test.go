package nodeconn

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestSilence: a peer that answers is never failed; one that falls silent
// is pinged on the ticks before the last and failed on the last; one
// owing nothing is not silent.
func TestSilence(t *testing.T) {
	var frames atomic.Uint64
	var pings []int
	failed := make(chan struct{})
	dead := make(chan struct{})
	expecting := atomic.Bool{}
	expecting.Store(true)
	done := make(chan struct{})
	go func() {
		Silence{
			Tick:      time.Millisecond,
			Frames:    &frames,
			Expecting: expecting.Load,
			Ping:      func(n int) { pings = append(pings, n) },
			Fail:      func() { close(failed) },
		}.Watch(dead)
		close(done)
	}()
	<-failed
	<-done
	if len(pings) != SilentTicks-1 || pings[0] != 1 || pings[len(pings)-1] != SilentTicks-1 {
		t.Fatalf("pinged on silent ticks %v", pings)
	}

	// Owing nothing: never silent, until dead ends the watch.
	expecting.Store(false)
	pings = nil
	done = make(chan struct{})
	go func() {
		Silence{
			Tick:      time.Millisecond,
			Frames:    &frames,
			Expecting: expecting.Load,
			Ping:      func(n int) { pings = append(pings, n) },
			Fail:      func() { t.Error("failed a peer that owed nothing") },
		}.Watch(dead)
		close(done)
	}()
	time.Sleep(20 * time.Millisecond)
	close(dead)
	<-done
	if len(pings) != 0 {
		t.Fatalf("pinged a peer that owed nothing: %v", pings)
	}
}
