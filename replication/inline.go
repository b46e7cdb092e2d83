package replication

import (
	"sync/atomic"
	"time"
)

// inlineGauge tells whether a device's writes are quick enough to run
// where they hold up other work, such as a connection's reader: whether
// most of the writes it was shown lately took under inlineLatency. A
// median rather than a mean, so that the writes a busy machine preempts
// do not make a fast device look slow, while a device that is slow for
// most writes is. While the device is deemed slow one write in
// probeEvery is let through anyway, so that it is measured again.
type inlineGauge struct {
	// slow is a moving average of whether writes were slow, in units of
	// 1/gaugeOne.
	slow  atomic.Int64
	probe atomic.Uint32
}

const gaugeOne = 1 << 16

// observe adds the duration of a write. Concurrent updates may lose one
// another's samples, which an average can afford.
func (g *inlineGauge) observe(d time.Duration) {
	var sample int64
	if d > inlineLatency {
		sample = gaugeOne
	}
	old := g.slow.Load()
	g.slow.Store(old + (sample-old)/8)
}

// quick reports whether the next write may run inline.
func (g *inlineGauge) quick() bool {
	return g.slow.Load() < gaugeOne/2 || g.probe.Add(1)%probeEvery == 0
}
