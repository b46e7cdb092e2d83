package cluster

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Refused connections are logged one by one up to refusalBurst per
// refusalWindow and listener; beyond that they are counted and summed up
// in one line at the end of the window, so that a flood of rogue
// connections cannot fill the disk with logs or drown the rest.
const (
	refusalBurst  = 10
	refusalWindow = 10 * time.Second
)

// refusalLog logs a listener's refused connections, rate-limited.
type refusalLog struct {
	log    *slog.Logger
	total  *atomic.Uint64 // every refusal of the network, logged or not
	window time.Duration

	mu         sync.Mutex
	start      time.Time // of the current window
	logged     int       // refusals logged one by one in the window
	suppressed int       // refusals not logged since the last summary
	lastRemote string    // the last one not logged
	lastReason string
}

func newRefusalLog(log *slog.Logger, total *atomic.Uint64) *refusalLog {
	return &refusalLog{log: log, total: total, window: refusalWindow}
}

// refused records one refused connection from remote.
func (r *refusalLog) refused(remote string, reason error) {
	r.total.Add(1)
	r.mu.Lock()
	now := time.Now()
	if now.Sub(r.start) >= r.window {
		r.start, r.logged = now, 0
	}
	if r.logged < refusalBurst {
		r.logged++
		r.mu.Unlock()
		r.log.Warn("refused a connection", "remote", remote, "reason", reason.Error())
		return
	}
	if r.suppressed == 0 {
		time.AfterFunc(r.start.Add(r.window).Sub(now), r.summarize)
	}
	r.suppressed++
	r.lastRemote, r.lastReason = remote, reason.Error()
	r.mu.Unlock()
}

// summarize logs how many refusals went unlogged since the last summary.
func (r *refusalLog) summarize() {
	r.mu.Lock()
	n, remote, reason := r.suppressed, r.lastRemote, r.lastReason
	r.suppressed = 0
	r.mu.Unlock()
	if n > 0 {
		r.log.Warn("refused more connections than are logged one by one", "count", n,
			"window", r.window.String(), "last_remote", remote, "last_reason", reason)
	}
}
