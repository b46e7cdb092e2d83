package initiator

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// BenchConfig describes a load: Sessions sessions with QueueDepth
// commands in flight each, one goroutine per command slot.
type BenchConfig struct {
	Sessions   int // default 1
	QueueDepth int // per session; default 32
	// BlockSize is the I/O size in bytes (default 4096); it must be a
	// multiple of the LUN's logical block size.
	BlockSize int
	// Pattern is randread (default), randwrite, randrw, read, write or caw:
	// COMPARE AND WRITE of one logical block per worker, each expecting
	// what it last wrote, as VMware's ATS heartbeats do.
	Pattern string
	// ReadPercent is the share of reads in randrw; default 50.
	ReadPercent int
	Duration    time.Duration // default 10s
	LUN         uint64
	// Span is how many bytes of the LUN, from its start, the load uses;
	// 0 means the whole capacity from READ CAPACITY(16).
	Span int64
	// Verify writes a self-describing pattern (I/O unit number and write
	// count) and checks every read of a unit written in this run. Read
	// patterns first fill the span, untimed; at the end every written
	// unit is read back and checked, also untimed.
	Verify bool
}

// BenchResult is what a run measured. MBps counts 10^6 bytes per second.
type BenchResult struct {
	Ops, Reads, Writes int64
	Bytes              int64
	Errors             int
	FirstError         string
	Elapsed            time.Duration
	IOPS, MBps         float64

	P50, P90, P99, P999, Max, Mean time.Duration
	// Latency holds every sample, merged across workers.
	Latency *Histogram
}

func (r BenchResult) String() string {
	return fmt.Sprintf("%d ops in %v: %.0f IOPS, %.1f MB/s, latency mean %v p50 %v p90 %v p99 %v p99.9 %v max %v, %d errors",
		r.Ops, r.Elapsed.Round(time.Millisecond), r.IOPS, r.MBps, r.Mean, r.P50, r.P90, r.P99, r.P999, r.Max, r.Errors)
}

func (bc BenchConfig) withDefaults() (BenchConfig, error) {
	bc.Sessions = max(bc.Sessions, 1)
	if bc.QueueDepth <= 0 {
		bc.QueueDepth = 32
	}
	if bc.BlockSize <= 0 {
		bc.BlockSize = 4096
	}
	if bc.Pattern == "" {
		bc.Pattern = "randread"
	}
	switch bc.Pattern {
	case "randread", "randwrite", "randrw", "read", "write", "caw":
	default:
		return bc, fmt.Errorf("bench: unknown pattern %q (randread, randwrite, randrw, read, write, caw)", bc.Pattern)
	}
	if bc.ReadPercent <= 0 || bc.ReadPercent > 100 {
		bc.ReadPercent = 50
	}
	if bc.Duration <= 0 {
		bc.Duration = 10 * time.Second
	}
	return bc, nil
}

func (bc *BenchConfig) random() bool { return strings.HasPrefix(bc.Pattern, "rand") }

// readShare is the percentage of reads the pattern issues.
func (bc *BenchConfig) readShare() int {
	switch bc.Pattern {
	case "randread", "read":
		return 100
	case "randrw":
		return bc.ReadPercent
	}
	return 0
}

// Bench logs in bc.Sessions sessions with cfg, runs the load for
// bc.Duration and reports throughput and latency. progress, if not nil,
// gets a line per second. I/O errors are counted, not fatal; Bench fails
// only when it cannot start or every session is lost.
func Bench(ctx context.Context, cfg Config, bc BenchConfig, progress io.Writer) (BenchResult, error) {
	bc, err := bc.withDefaults()
	if err != nil {
		return BenchResult{}, err
	}
	sessions, err := dialAll(ctx, cfg, bc.Sessions)
	if err != nil {
		return BenchResult{}, err
	}
	defer logoutAll(sessions, cfg.Timeout)
	geo, err := benchGeometry(ctx, sessions, &bc)
	if err != nil {
		return BenchResult{}, err
	}
	workers := newWorkers(sessions, &bc, geo)
	if bc.Verify && bc.readShare() > 0 {
		if err := runPhase(ctx, workers, (*benchWorker).prefill); err != nil {
			return BenchResult{}, fmt.Errorf("bench: filling the span before verified reads: %w", err)
		}
	}
	res := measure(ctx, workers, &bc, progress)
	if bc.Verify {
		_ = runPhase(ctx, workers, (*benchWorker).verifyAll)
		collectErrors(&res, workers)
	}
	if allDown(sessions) {
		return res, fmt.Errorf("bench: every session was lost: %w", sessions[0].Err())
	}
	return res, nil
}

func dialAll(ctx context.Context, cfg Config, n int) ([]*Session, error) {
	sessions := make([]*Session, 0, n)
	for i := range n {
		c := cfg
		if c.ISID != ([6]byte{}) {
			c.ISID[5] += byte(i) // one ISID per session, or they would reinstate each other
		}
		s, err := Dial(ctx, c)
		if err != nil {
			for _, s := range sessions {
				_ = s.Close()
			}
			return nil, fmt.Errorf("bench: session %d: %w", i, err)
		}
		sessions = append(sessions, s)
	}
	return sessions, nil
}

func logoutAll(sessions []*Session, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), max(timeout, 5*time.Second))
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range sessions {
		wg.Go(func() { _ = s.Logout(ctx) })
	}
	wg.Wait()
}

func allDown(sessions []*Session) bool {
	for _, s := range sessions {
		if s.Err() == nil {
			return false
		}
	}
	return true
}

// benchGeometry maps the span onto I/O units of BlockSize bytes.
type benchGeo struct {
	units     int64 // I/O units in the span
	lbSize    int   // logical block size
	lbPerUnit uint32
}

func benchGeometry(ctx context.Context, sessions []*Session, bc *BenchConfig) (benchGeo, error) {
	for _, s := range sessions {
		// Each new nexus may hold unit attentions; clear them untimed.
		if err := s.TestUnitReady(ctx, bc.LUN); err != nil {
			return benchGeo{}, fmt.Errorf("bench: %w", err)
		}
	}
	capy, err := sessions[0].ReadCapacity(ctx, bc.LUN)
	if err != nil {
		return benchGeo{}, fmt.Errorf("bench: %w", err)
	}
	if capy.BlockSize == 0 || bc.BlockSize%int(capy.BlockSize) != 0 {
		return benchGeo{}, fmt.Errorf("bench: block size %d is not a multiple of the LUN's %d-byte blocks", bc.BlockSize, capy.BlockSize)
	}
	span := int64(capy.Bytes())
	if bc.Span > 0 {
		span = min(span, bc.Span)
	}
	g := benchGeo{units: span / int64(bc.BlockSize), lbSize: int(capy.BlockSize), lbPerUnit: uint32(bc.BlockSize / int(capy.BlockSize))}
	if workers := int64(bc.Sessions * bc.QueueDepth); g.units < workers {
		return g, fmt.Errorf("bench: span of %d bytes holds %d blocks of %d, fewer than the %d workers", span, g.units, bc.BlockSize, workers)
	}
	return g, nil
}

// benchWorker keeps one command in flight. Workers own disjoint sets of
// units (unit % workers == id), so no two commands ever touch the same
// blocks at once and verification needs no locking.
type benchWorker struct {
	s        *Session
	bc       *BenchConfig
	geo      benchGeo
	id, n    int64 // worker index and count
	owned    int64 // units this worker owns
	next     int64 // sequential cursor
	rng      *rand.Rand
	buf, exp []byte
	stamps   []uint32 // last write stamp per owned unit, 0 = unknown; nil without Verify
	stamp    uint32   // last stamp issued: unique per worker, so a stale block never matches
	caw      []byte   // compare half then write half of the next COMPARE AND WRITE; nil until first used
	hist     Histogram
	ops      atomic.Int64
	reads    int64
	writes   int64
	errs     int
	firstErr error
}

func newWorkers(sessions []*Session, bc *BenchConfig, geo benchGeo) []*benchWorker {
	n := int64(len(sessions) * bc.QueueDepth)
	ws := make([]*benchWorker, 0, n)
	for i := range n {
		w := &benchWorker{
			s: sessions[i/int64(bc.QueueDepth)], bc: bc, geo: geo, id: i, n: n,
			owned: (geo.units - i + n - 1) / n,
			rng:   rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano()))),
			buf:   make([]byte, bc.BlockSize),
		}
		if bc.Verify {
			w.exp = make([]byte, bc.BlockSize)
			w.stamps = make([]uint32, w.owned)
		}
		ws = append(ws, w)
	}
	return ws
}

// runPhase runs f on every worker concurrently.
func runPhase(ctx context.Context, ws []*benchWorker, f func(*benchWorker, context.Context) error) error {
	errs := make([]error, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Go(func() { errs[i] = f(w, ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// measure runs the timed load and summarizes it.
func measure(ctx context.Context, ws []*benchWorker, bc *BenchConfig, progress io.Writer) BenchResult {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stop atomic.Bool
	start := time.Now()
	timer := time.AfterFunc(bc.Duration, func() { stop.Store(true) })
	defer timer.Stop()
	stopProgress := reportProgress(ws, bc, progress, start)
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() { w.run(ctx, &stop) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	return summarize(ws, bc, elapsed)
}

func (w *benchWorker) run(ctx context.Context, stop *atomic.Bool) {
	read := w.bc.readShare()
	for !stop.Load() && ctx.Err() == nil {
		slot := w.pick()
		isRead := read == 100 || read > 0 && w.rng.IntN(100) < read
		t0 := time.Now()
		err := w.io(ctx, slot, isRead)
		w.hist.Record(time.Since(t0))
		w.ops.Add(1)
		if isRead {
			w.reads++
		} else {
			w.writes++
		}
		if err == nil && isRead {
			err = w.check(slot)
		}
		if err != nil {
			w.fault(err)
			if w.s.Err() != nil {
				return
			}
		}
	}
}

func (w *benchWorker) fault(err error) {
	w.errs++
	if w.firstErr == nil {
		w.firstErr = err
	}
}

// pick chooses the next owned unit, as an index into the worker's units.
func (w *benchWorker) pick() int64 {
	if w.bc.random() {
		return w.rng.Int64N(w.owned)
	}
	slot := w.next
	w.next = (w.next + 1) % w.owned
	return slot
}

// lba of the worker's slot-th unit.
func (w *benchWorker) lba(slot int64) uint64 {
	return uint64(w.id+slot*w.n) * uint64(w.geo.lbPerUnit)
}

func (w *benchWorker) io(ctx context.Context, slot int64, read bool) error {
	if w.bc.Pattern == "caw" {
		return w.compareAndWrite(ctx)
	}
	if read {
		return w.s.Read(ctx, w.bc.LUN, w.lba(slot), w.geo.lbPerUnit, w.geo.lbSize, w.buf)
	}
	if w.stamps == nil {
		return w.s.Write(ctx, w.bc.LUN, w.lba(slot), w.geo.lbPerUnit, w.geo.lbSize, w.buf)
	}
	w.stamp++
	fillUnit(w.buf, w.id+slot*w.n, w.stamp)
	err := w.s.Write(ctx, w.bc.LUN, w.lba(slot), w.geo.lbPerUnit, w.geo.lbSize, w.buf)
	w.stamps[slot] = w.stamp
	if err != nil {
		w.stamps[slot] = 0 // the block may hold the old or the new data
	}
	return err
}

// compareAndWrite swaps the first block of the worker's first unit from
// the value it last wrote to the next one. The first call learns the
// block's content with a read.
func (w *benchWorker) compareAndWrite(ctx context.Context) error {
	bs := w.geo.lbSize
	lba := w.lba(0)
	if w.caw == nil {
		w.caw = make([]byte, 2*bs)
		if err := w.s.Read(ctx, w.bc.LUN, lba, 1, bs, w.caw[:bs]); err != nil {
			w.caw = nil
			return err
		}
	}
	w.stamp++
	fillUnit(w.caw[bs:], w.id, w.stamp)
	if err := w.s.CompareAndWrite(ctx, w.bc.LUN, lba, 1, bs, w.caw); err != nil {
		w.caw = nil // relearn: the block may hold either value now
		return err
	}
	copy(w.caw[:bs], w.caw[bs:])
	return nil
}

// check verifies a read of a unit written in this run.
func (w *benchWorker) check(slot int64) error {
	if w.stamps == nil || w.stamps[slot] == 0 {
		return nil
	}
	unit := w.id + slot*w.n
	fillUnit(w.exp, unit, w.stamps[slot])
	if bytes.Equal(w.buf, w.exp) {
		return nil
	}
	gotUnit, gotStamp := binary.LittleEndian.Uint64(w.buf[8:]), binary.LittleEndian.Uint32(w.buf[16:])
	return fmt.Errorf("verify LBA %d: holds unit %d write %d, want unit %d write %d",
		w.lba(slot), gotUnit, gotStamp, unit, w.stamps[slot])
}

func (w *benchWorker) prefill(ctx context.Context) error {
	for slot := range w.owned {
		if err := w.io(ctx, slot, false); err != nil {
			return err
		}
	}
	return nil
}

func (w *benchWorker) verifyAll(ctx context.Context) error {
	for slot := range w.owned {
		if w.stamps[slot] == 0 {
			continue
		}
		err := w.io(ctx, slot, true)
		if err == nil {
			err = w.check(slot)
		}
		if err != nil {
			w.fault(err)
			if w.s.Err() != nil {
				return err
			}
		}
	}
	return nil
}

var benchMagic = [8]byte{'h', 'a', 't', 'b', 'e', 'n', 'c', 'h'}

// fillUnit writes the verification pattern: a header naming the unit and
// write count, then a stream derived from both, so a misplaced, stale or
// torn block is told from the right one.
func fillUnit(b []byte, unit int64, stamp uint32) {
	copy(b, benchMagic[:])
	binary.LittleEndian.PutUint64(b[8:], uint64(unit))
	binary.LittleEndian.PutUint32(b[16:], stamp)
	binary.LittleEndian.PutUint32(b[20:], 0)
	x := uint64(unit)*0x9e3779b97f4a7c15 ^ uint64(stamp)<<32 | 1
	for i := 24; i+8 <= len(b); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(b[i:], x)
	}
}

// reportProgress prints ops and throughput once a second until stopped.
func reportProgress(ws []*benchWorker, bc *BenchConfig, out io.Writer, start time.Time) func() {
	if out == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		var last int64
		for {
			select {
			case <-done:
				return
			case now := <-tick.C:
				var ops int64
				for _, w := range ws {
					ops += w.ops.Load()
				}
				d := ops - last
				last = ops
				fmt.Fprintf(out, "bench %s: %3.0fs %8d IOPS %8.1f MB/s\n", bc.Pattern, now.Sub(start).Seconds(),
					d, float64(d)*float64(bc.BlockSize)/1e6)
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func summarize(ws []*benchWorker, bc *BenchConfig, elapsed time.Duration) BenchResult {
	r := BenchResult{Elapsed: elapsed, Latency: &Histogram{}}
	for _, w := range ws {
		r.Latency.Merge(&w.hist)
		r.Reads += w.reads
		r.Writes += w.writes
	}
	collectErrors(&r, ws)
	r.Ops = r.Reads + r.Writes
	r.Bytes = r.Ops * int64(bc.BlockSize)
	secs := elapsed.Seconds()
	r.IOPS = float64(r.Ops) / secs
	r.MBps = float64(r.Bytes) / secs / 1e6
	h := r.Latency
	r.P50, r.P90, r.P99, r.P999 = h.Quantile(0.50), h.Quantile(0.90), h.Quantile(0.99), h.Quantile(0.999)
	r.Max, r.Mean = h.Max(), h.Mean()
	return r
}

func collectErrors(r *BenchResult, ws []*benchWorker) {
	r.Errors, r.FirstError = 0, ""
	for _, w := range ws {
		r.Errors += w.errs
		if r.FirstError == "" && w.firstErr != nil {
			r.FirstError = w.firstErr.Error()
		}
	}
}
