package nodeconn

import (
	"sync/atomic"
	"time"
)

// SilentTicks is how many ticks in a row a peer may stay silent before
// Silence declares it dead.
const SilentTicks = 4

// Silence watches a connection for a peer that stopped answering: a
// stopped or cut-off node whose connection TCP would keep for minutes.
// Each Tick it looks whether a frame arrived since the previous one; a
// tick without is silent (only while the peer is expected to say
// something), the ticks before the last ping it, so that a peer merely
// slow to answer has a frame to send, and the SilentTicks-th fails the
// connection.
type Silence struct {
	Tick time.Duration
	// Frames counts the frames received on the connection.
	Frames *atomic.Uint64
	// Expecting reports whether the peer owes an answer; nil: always.
	Expecting func() bool
	// Ping runs on each silent tick before the last, with the silent
	// ticks so far: each protocol pings on those it chooses.
	Ping func(silent int)
	// Fail ends the connection.
	Fail func()
}

// Watch runs until dead is closed or it called Fail.
func (s Silence) Watch(dead <-chan struct{}) {
	tick := time.NewTicker(s.Tick)
	defer tick.Stop()
	seen := s.Frames.Load()
	silent := 0
	for {
		select {
		case <-dead:
			return
		case <-tick.C:
		}
		if n := s.Frames.Load(); n != seen || s.Expecting != nil && !s.Expecting() {
			seen, silent = n, 0
			continue
		}
		silent++
		if silent >= SilentTicks {
			s.Fail()
			return
		}
		s.Ping(silent)
	}
}
