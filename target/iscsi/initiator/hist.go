package initiator

import (
	"math"
	"math/bits"
	"time"
)

// Histogram records latencies in log-linear buckets, as HdrHistogram
// does: each power of two is split into 2^histSubBits linear sub-buckets,
// so a reported value is within 1/64 (1.6%) of the true one, from
// nanoseconds to centuries, in a fixed 30 KB with no allocation per
// sample. It is not safe for concurrent use: keep one per goroutine and
// Merge them.
type Histogram struct {
	counts [histBuckets]uint64
	n      uint64
	sum    float64
	max    uint64
}

const (
	histSubBits = 6
	histSub     = 1 << histSubBits
	// int64 nanoseconds reach bit 62, which lands in sub-bucket group
	// 62-histSubBits+1 = 57; 58 groups of 64 cover them all.
	histBuckets = (64 - histSubBits) * histSub
)

func histBucket(v uint64) int {
	if v < histSub {
		return int(v)
	}
	e := bits.Len64(v) - histSubBits - 1 // v>>e is in [histSub, 2*histSub)
	return (e+1)*histSub + int(v>>e) - histSub
}

// histLow is the smallest value in bucket i.
func histLow(i int) uint64 {
	if i < histSub {
		return uint64(i)
	}
	e := i/histSub - 1
	return uint64(i%histSub+histSub) << e
}

// Record adds one sample; negative durations count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[histBucket(v)]++
	h.n++
	h.sum += float64(v)
	h.max = max(h.max, v)
}

// Merge adds o's samples to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// Count is the number of samples.
func (h *Histogram) Count() uint64 { return h.n }

// Max is the largest sample, exactly.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean is the average sample, exactly.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Quantile returns the value below which a fraction q of the samples fall
// (q=0.99 for p99): the middle of the bucket holding that rank, capped at
// the maximum.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(min(max(q, 0), 1) * float64(h.n)))
	rank = max(rank, 1)
	if rank >= h.n {
		return time.Duration(h.max) // the top sample is known exactly
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, hi := histLow(i), histLow(i+1)
			mid := lo + (hi-lo)/2
			return time.Duration(min(mid, h.max))
		}
	}
	return time.Duration(h.max)
}
