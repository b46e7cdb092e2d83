package replication

import (
	"testing"
	"time"
)

func TestInlineGauge(t *testing.T) {
	tests := []struct {
		name    string
		samples []time.Duration
		quick   bool
	}{
		{"new device", nil, true},
		{"fast", []time.Duration{10 * time.Microsecond, 20 * time.Microsecond}, true},
		{"one stall among fast writes", []time.Duration{10 * time.Microsecond, time.Second, 10 * time.Microsecond}, true},
		{"a few preempted writes", []time.Duration{time.Millisecond, 10 * time.Microsecond, time.Millisecond, 10 * time.Microsecond, 2 * time.Millisecond, 10 * time.Microsecond}, true},
		{"slow", []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond, time.Millisecond, time.Millisecond, time.Millisecond, time.Millisecond}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var g inlineGauge
			for _, d := range tc.samples {
				g.observe(d)
			}
			if got := g.quick(); got != tc.quick {
				t.Fatalf("quick() = %v, want %v", got, tc.quick)
			}
		})
	}
}
