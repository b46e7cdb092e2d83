// Package robust holds long-running robustness tests of the real hatarget
// binary: load with faults injected from the initiator side.
package robust

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/target/iscsi/pdu"
	"github.com/hatarget/hatarget/test/nodetest"
)

const soakTarget = "iqn.2025-01.io.hatarget:soak"

// Two LUNs: a 512-byte-block fileio disk with a non-volatile cache and a
// 4096-byte-block one without.
const soakConf = `HANDLER vdisk_fileio {
	DEVICE soak0 {
		filename {{DIR}}/soak0.img
		size_mb 256
		nv_cache 1
	}
	DEVICE soak1 {
		filename {{DIR}}/soak1.img
		size_mb 128
		blocksize 4096
	}
}

TARGET_DRIVER iscsi {
	enabled 1
	TARGET ` + soakTarget + ` {
		LUN 0 soak0
		LUN 1 soak1
		enabled 1
	}
}
`

const (
	soakSessions      = 64
	minWorkers        = 8  // concurrent commands per session, at least
	maxWorkers        = 32 // and at most
	minIOBytes        = 4 << 10
	maxIOBytes        = 64 << 10
	maxRegionBytes    = 1 << 20
	cmdTimeout        = 15 * time.Second       // a command without an answer for this long is aborted
	resetGrace        = 300 * time.Millisecond // after a LUN reset, how long an in-flight command may still answer
	tmfTimeout        = 20 * time.Second
	abortedEndTimeout = 10 * time.Second // a command must end this soon after its ABORT TASK answered
	minCompletedIOs   = 1000
	goroutineMargin   = 10
	fdMargin          = 5
	leakPoll          = 10 * time.Second
	maxRSSKiB         = 256 << 10
	maxReportedErrors = 40
)

func soakDuration(t *testing.T) time.Duration {
	if s := os.Getenv("SOAK_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("SOAK_DURATION=%q: %v", s, err)
		}
		return d
	}
	if testing.Short() {
		return 10 * time.Second
	}
	return 60 * time.Second
}

// TestSoak runs 64 sessions under mixed read/write load for SOAK_DURATION
// while connections are dropped, commands aborted and LUNs reset at random,
// and checks that the target neither crashes nor leaks, and that every
// block holds what the initiators' model allows.
func TestSoak(t *testing.T) {
	duration := soakDuration(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SOAK_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			t.Fatalf("SOAK_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("soak: %d sessions for %s, seed %d (SOAK_SEED to repeat the choices)", soakSessions, duration, seed)

	debugAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(nodetest.FreePort(t, []string{"127.0.0.1"})))
	node := nodetest.Start(t, soakConf, nodetest.Options{Args: []string{"--debug-addr", debugAddr}})
	probe := newProbe(node.PID(), debugAddr)
	waitHTTP(t, probe)

	s := &soak{t: t, node: node, seed: seed}
	s.isidPrefix = randomISIDPrefix()

	// Baseline: one session logs in, learns the LUNs and logs out.
	ctx := t.Context()
	first, err := initiator.Dial(ctx, s.config(0, s.newISID()))
	if err != nil {
		t.Fatalf("first login: %v", err)
	}
	for i := range 2 {
		if err := first.TestUnitReady(ctx, uint64(i)); err != nil {
			t.Fatalf("LUN %d: %v", i, err)
		}
		c, err := first.ReadCapacity(ctx, uint64(i))
		if err != nil {
			t.Fatalf("LUN %d: %v", i, err)
		}
		s.luns = append(s.luns, &lunInfo{num: uint64(i), blockSize: int(c.BlockSize), blocks: c.Blocks, reset: newSignal()})
	}
	if err := first.Logout(ctx); err != nil {
		t.Fatalf("first logout: %v", err)
	}
	baseG, baseF := probe.settle(t, 5*time.Second)
	t.Logf("baseline after one login/logout: %d goroutines, %d fds", baseG, baseF)

	// Peak RSS, sampled throughout.
	rssStop := make(chan struct{})
	rssDone := make(chan struct{})
	var peakRSS atomic.Int64
	go func() {
		defer close(rssDone)
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			if v, err := probe.rssKiB(); err == nil && int64(v) > peakRSS.Load() {
				peakRSS.Store(int64(v))
			}
			select {
			case <-rssStop:
				return
			case <-tk.C:
			}
		}
	}()
	defer func() {
		select {
		case <-rssStop:
		default:
			close(rssStop)
		}
		<-rssDone
	}()

	s.setup()
	t.Logf("soak: %d workers (%d on LUN 0 with %d-block regions, %d on LUN 1 with %d-block regions)",
		len(s.workers), s.luns[0].workers, s.luns[0].region, s.luns[1].workers, s.luns[1].region)

	// Log every session in before the clock starts.
	var wg sync.WaitGroup
	for _, sl := range s.slots {
		wg.Go(func() {
			if _, _, _, err := sl.get(ctx); err != nil {
				s.errorf("session %d: initial login: %v", sl.idx, err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	loadCtx, stopLoad := context.WithCancel(ctx)
	start := time.Now()
	var workersWG sync.WaitGroup
	for _, w := range s.workers {
		workersWG.Go(func() { w.run(loadCtx) })
	}
	chaosDone := make(chan struct{})
	go func() {
		defer close(chaosDone)
		s.chaos(loadCtx)
	}()
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		s.progress(loadCtx, start, probe)
	}()

	time.Sleep(duration)
	stopLoad()
	loadTime := time.Since(start)
	<-chaosDone
	<-progressDone
	if !waitTimeout(&workersWG, cmdTimeout+tmfTimeout+abortedEndTimeout+30*time.Second) {
		t.Errorf("workers did not stop within %s of the end of the load", cmdTimeout+tmfTimeout+abortedEndTimeout+30*time.Second)
		for _, w := range s.workers {
			if inf := w.inflight.Load(); inf != nil {
				t.Logf("worker %d (session %d) still waiting for ITT %#x on LUN %d since %s",
					w.id, w.slot.idx, inf.itt, inf.lun, time.Since(inf.since).Round(time.Millisecond))
			}
		}
		t.FailNow()
	}
	drainTime := time.Since(start) - loadTime
	if !alive(node) {
		t.Fatalf("hatarget died during the soak")
	}

	// Every session logs out.
	for _, sl := range s.slots {
		wg.Go(func() { sl.logout(s) })
	}
	wg.Wait()

	// Verify every block through a fresh session.
	verified, ackedFinal := s.verifyAll(ctx)

	// Leak checks: every session is gone, so the target must be back to
	// where it was after one login and logout.
	var endG, endF int
	deadline := time.Now().Add(leakPoll)
	for {
		var err error
		endG, endF, err = probe.sample()
		if err != nil {
			t.Fatalf("sampling the target after the soak: %v", err)
		}
		if (endG <= baseG+goroutineMargin && endF <= baseF+fdMargin) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	close(rssStop)
	<-rssDone
	if endG > baseG+goroutineMargin {
		t.Errorf("goroutine leak: %d goroutines after every session ended, %d at baseline (margin %d)\n%s",
			endG, baseG, goroutineMargin, probe.goroutineDump())
	}
	if endF > baseF+fdMargin {
		t.Errorf("fd leak: %d open fds after every session ended, %d at baseline (margin %d)\n%s", endF, baseF, fdMargin, probe.fdList())
	}
	peak := peakRSS.Load()
	if peak > maxRSSKiB {
		t.Errorf("peak RSS %d MiB exceeds %d MiB", peak>>10, maxRSSKiB>>10)
	}

	// The node must still be up and must not have panicked.
	if !alive(node) {
		t.Errorf("hatarget is no longer running")
	}
	logs := node.Logs()
	for _, bad := range []string{"panic", "fatal error", "DATA RACE"} {
		if strings.Contains(logs, bad) {
			t.Errorf("hatarget log contains %q", bad)
		}
	}

	st := &s.stats
	ios := st.reads.Load() + st.writes.Load()
	if ios < minCompletedIOs {
		t.Errorf("only %d I/Os completed; want at least %d", ios, minCompletedIOs)
	}
	if n := st.unexplainedTimeouts.Load(); n > 0 {
		t.Errorf("%d commands got no answer for %s without a LUN reset to explain it", n, cmdTimeout)
	}
	if n := st.targetDrops.Load(); n > 0 {
		t.Errorf("the target dropped %d sessions the test did not drop", n)
	}

	t.Logf(`soak summary:
  sessions            %d (%d workers, queue depth %d-%d per session)
  duration            %s of load, %s to drain in-flight commands, %s in all
  I/Os completed      %d (%d reads, %d writes; %.0f IOPS, %.1f MiB/s)
  verified            %d blocks read back during the load, %d blocks at the end (%d holding their last acknowledged write)
  connection drops    %d (%d reinstated with the same ISID, %d with a new ISID; %d redials)
  task aborts         %d by chaos (%d complete, %d no such task), %d after a LUN reset or timeout
  LUN resets          %d
  failed commands     %d unit attentions, %d other check conditions, %d aborted, %d lost with their session
  write candidates    %d unacknowledged writes modelled, %d of them unfenced (session replaced with a new ISID)
  peak RSS            %d MiB
  goroutines          %d before, %d after
  fds                 %d before, %d after`,
		soakSessions, len(s.workers), minWorkers, maxWorkers,
		loadTime.Round(time.Millisecond), drainTime.Round(time.Millisecond), time.Since(start).Round(time.Millisecond),
		ios, st.reads.Load(), st.writes.Load(), float64(ios)/loadTime.Seconds(), float64(st.bytes.Load())/loadTime.Seconds()/(1<<20),
		st.blocksVerified.Load(), verified, ackedFinal,
		st.drops.Load(), st.reinstatements.Load(), st.newISIDs.Load(), st.redials.Load(),
		st.chaosAborts.Load(), st.abortComplete.Load(), st.abortNoTask.Load(), st.selfAborts.Load(),
		st.lunResets.Load(),
		st.unitAttentions.Load(), st.otherCheckConditions.Load(), st.abortedCmds.Load(), st.lostCmds.Load(),
		st.candidates.Load(), st.unfencedWrites.Load(),
		peak>>10, baseG, endG, baseF, endF)
	if n := s.errCount.Load(); n > maxReportedErrors {
		t.Errorf("%d errors in all, %d reported above", n, maxReportedErrors)
	}
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

type soak struct {
	t          *testing.T
	node       *nodetest.Node
	seed       uint64
	isidPrefix [4]byte
	isidCount  atomic.Uint32
	luns       []*lunInfo
	slots      []*slot
	workers    []*worker
	nextID     atomic.Uint64 // write ids
	errCount   atomic.Int64
	stats      stats
}

type stats struct {
	reads, writes, bytes                     atomic.Int64
	blocksVerified                           atomic.Int64
	drops, reinstatements, newISIDs, redials atomic.Int64
	targetDrops                              atomic.Int64
	chaosAborts, abortComplete, abortNoTask  atomic.Int64
	selfAborts, unexplainedTimeouts          atomic.Int64
	lunResets                                atomic.Int64
	unitAttentions, otherCheckConditions     atomic.Int64
	abortedCmds, lostCmds                    atomic.Int64
	candidates, unfencedWrites               atomic.Int64
}

// errorf reports a failure from any goroutine, the first few in full.
func (s *soak) errorf(format string, args ...any) {
	if s.errCount.Add(1) <= maxReportedErrors {
		s.t.Errorf(format, args...)
	}
}

func randomISIDPrefix() [4]byte {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return b
}

// newISID returns a random-type ISID unique within the test.
func (s *soak) newISID() [6]byte {
	n := s.isidCount.Add(1)
	p := s.isidPrefix
	return [6]byte{0x80 | p[0]&0x3f, p[1], p[2], byte(n >> 16), byte(n >> 8), byte(n)}
}

// config gives sessions different negotiation profiles, so the load goes
// through immediate data, unsolicited Data-Out, R2Ts, several bursts,
// many Data-In PDUs and digests.
func (s *soak) config(idx int, isid [6]byte) initiator.Config {
	c := initiator.Config{Addr: s.node.Addr(), TargetName: soakTarget, ISID: isid, Timeout: 15 * time.Second}
	switch idx % 4 {
	case 1: // every byte solicited by R2T
		c.ImmediateData, c.InitialR2T = initiator.No, initiator.Yes
	case 2: // digests and small Data-In PDUs
		c.HeaderDigest, c.DataDigest = true, true
		c.MaxRecvDataSegmentLength = 8192
	case 3: // immediate data, then unsolicited Data-Out and R2T bursts
		c.FirstBurstLength, c.MaxBurstLength = 8192, 16384
	}
	return c
}

// setup creates the sessions' slots and their workers, each with its own
// region of one LUN.
func (s *soak) setup() {
	rng := mrand.New(mrand.NewPCG(s.seed, 0))
	for i := range soakSessions {
		sl := &slot{idx: i, isid: s.newISID(), soak: s}
		s.slots = append(s.slots, sl)
		n := minWorkers + rng.IntN(maxWorkers-minWorkers+1)
		for range n {
			lun := s.luns[0]
			if rng.IntN(10) < 3 {
				lun = s.luns[1]
			}
			w := &worker{soak: s, id: uint32(len(s.workers) + 1), slot: sl, lun: lun, index: lun.workers,
				rng: mrand.New(mrand.NewPCG(s.seed, uint64(len(s.workers)+1)))}
			lun.workers++
			s.workers = append(s.workers, w)
		}
	}
	for _, l := range s.luns {
		if l.workers == 0 {
			continue
		}
		l.region = min(l.blocks/uint64(l.workers), uint64(maxRegionBytes/l.blockSize))
		if l.region < uint64(maxIOBytes/l.blockSize) {
			s.t.Fatalf("LUN %d: %d workers leave %d blocks each, less than one I/O", l.num, l.workers, l.region)
		}
	}
	for _, w := range s.workers {
		w.base = uint64(w.index) * w.lun.region
		w.blocks = make([]blockState, w.lun.region)
		w.wbuf = make([]byte, maxIOBytes)
		w.rbuf = make([]byte, maxIOBytes)
		w.scratch = make([]byte, w.lun.blockSize)
	}
}

type lunInfo struct {
	num       uint64
	blockSize int
	blocks    uint64
	workers   int
	region    uint64 // blocks per worker
	reset     *signal
}

// signal is a broadcast that can fire many times: wait returns a channel
// closed at the next fire.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func newSignal() *signal { return &signal{ch: make(chan struct{})} }

func (g *signal) wait() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ch
}

func (g *signal) fire() {
	g.mu.Lock()
	close(g.ch)
	g.ch = make(chan struct{})
	g.mu.Unlock()
}

// slot is one of the 64 initiator ports: it holds the current session and
// replaces it when it goes down, with the same ISID (session reinstatement)
// unless the chaos asked for a new one.
type slot struct {
	soak *soak
	idx  int

	mu       sync.Mutex
	sess     *initiator.Session
	isid     [6]byte
	gen      uint64
	newISID  bool // the next login uses a fresh ISID
	seenDown bool // the current session's failure was reported
	stopped  bool
}

// get returns the current session, logging in again if it is down.
func (sl *slot) get(ctx context.Context) (*initiator.Session, uint64, [6]byte, error) {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.stopped {
		return nil, 0, [6]byte{}, errors.New("stopped")
	}
	if sl.sess != nil && sl.sess.Err() == nil {
		return sl.sess, sl.gen, sl.isid, nil
	}
	s := sl.soak
	isid, redial := sl.isid, false
	if old := sl.sess; old != nil {
		if err := old.Err(); !errors.Is(err, initiator.ErrClosed) && !sl.seenDown {
			sl.seenDown = true
			s.stats.targetDrops.Add(1)
			s.errorf("session %d (ISID %x) went down without the test dropping it: %v", sl.idx, sl.isid, err)
		}
		_ = old.Close()
		redial = true
		if sl.newISID {
			isid = s.newISID()
		}
	}
	backoff := 20 * time.Millisecond
	for {
		sess, err := initiator.Dial(ctx, s.config(sl.idx, isid))
		if err == nil {
			if redial {
				s.stats.redials.Add(1)
				if isid == sl.isid {
					s.stats.reinstatements.Add(1)
				} else {
					s.stats.newISIDs.Add(1)
				}
			}
			sl.sess, sl.isid, sl.newISID, sl.seenDown = sess, isid, false, false
			sl.gen++
			return sess, sl.gen, sl.isid, nil
		}
		if ctx.Err() != nil {
			return nil, 0, [6]byte{}, ctx.Err()
		}
		s.t.Logf("session %d: login failed, retrying: %v", sl.idx, err)
		select {
		case <-ctx.Done():
			return nil, 0, [6]byte{}, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// peek returns the current session if it is up, without waiting for a
// login in progress.
func (sl *slot) peek() *initiator.Session {
	if !sl.mu.TryLock() {
		return nil
	}
	defer sl.mu.Unlock()
	if sl.stopped || sl.sess == nil || sl.sess.Err() != nil {
		return nil
	}
	return sl.sess
}

// drop closes the session's connection abruptly, without logout.
func (sl *slot) drop(newISID bool) bool {
	if !sl.mu.TryLock() {
		return false
	}
	sess := sl.sess
	if sl.stopped || sess == nil || sess.Err() != nil {
		sl.mu.Unlock()
		return false
	}
	sl.newISID = newISID
	sl.mu.Unlock()
	_ = sess.Close()
	return true
}

func (sl *slot) logout(s *soak) {
	sl.mu.Lock()
	sl.stopped = true
	sess := sl.sess
	sl.mu.Unlock()
	if sess == nil || sess.Err() != nil {
		if sess != nil {
			_ = sess.Close()
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := sess.Logout(ctx); err != nil {
		s.errorf("session %d: logout: %v", sl.idx, err)
	}
}

// worker issues one command at a time to its own region of one LUN, so the
// model knows exactly what every block may hold.
type worker struct {
	soak  *soak
	id    uint32
	slot  *slot
	lun   *lunInfo
	index int // among the LUN's workers
	rng   *mrand.Rand

	base    uint64 // first LBA of the region
	blocks  []blockState
	wbuf    []byte
	rbuf    []byte
	scratch []byte

	gen      uint64
	unfenced []inDoubt // writes lost with the current session's predecessor
	inflight atomic.Pointer[inflight]
}

type inflight struct {
	sess  *initiator.Session
	lun   uint64
	itt   uint32
	since time.Time
}

// inDoubt is a write lost with its session: it may still land until the
// target has torn that session down.
type inDoubt struct {
	id       uint64
	first, n int // block range in the region
	isid     [6]byte
}

type outcome int

const (
	good    outcome = iota
	fenced          // ended without GOOD and known to be over on the target
	lost            // lost with its session: over once the target has torn that session down
	notSent         // never left the initiator
)

// down reports whether sess is down or going down. A failed write closes
// the connection at once, but the session reports itself down only once its
// reader has stopped, so an error seen on a session the chaos just dropped
// may come before Err says so.
func down(sess *initiator.Session) bool {
	select {
	case <-sess.Done():
		return true
	case <-time.After(10 * time.Second):
		return false
	}
}

type result struct {
	r   initiator.Response
	err error
}

func (w *worker) run(ctx context.Context) {
	for ctx.Err() == nil {
		sess, gen, isid, err := w.slot.get(ctx)
		if err != nil {
			return
		}
		if gen != w.gen {
			w.newSession(isid)
			w.gen = gen
		}
		bs := w.lun.blockSize
		n := (minIOBytes + w.rng.IntN(maxIOBytes-minIOBytes+1)) / bs
		n = max(n, 1)
		first := w.rng.IntN(len(w.blocks) - n + 1)
		if w.rng.IntN(2) == 0 {
			w.write(ctx, sess, isid, first, n)
		} else {
			w.read(ctx, sess, first, n)
		}
	}
}

// newSession decides what the writes lost with the previous session may
// still do. A login with the same ISID reinstates the session, which
// terminates the old session's tasks (RFC 7143 6.3.5): those writes stay
// candidates until the next acknowledged write. With a new ISID nothing
// fences them: they remain possible values for good.
func (w *worker) newSession(isid [6]byte) {
	for _, d := range w.unfenced {
		if d.isid == isid {
			continue
		}
		w.soak.stats.unfencedWrites.Add(1)
		for i := d.first; i < d.first+d.n; i++ {
			w.blocks[i].unfenced(d.id)
		}
	}
	w.unfenced = w.unfenced[:0]
}

func (w *worker) cdb(write bool, first, n int) []byte {
	lba := w.base + uint64(first)
	cdb := make([]byte, 10)
	cdb[0] = 0x28
	if write {
		cdb[0] = 0x2a
	}
	binary.BigEndian.PutUint32(cdb[2:], uint32(lba))
	binary.BigEndian.PutUint16(cdb[7:], uint16(n))
	return cdb
}

// retry says whether a command that completed without GOOD should be
// reissued, counting why it failed.
func (w *worker) retry(op string, first int, r initiator.Response, err error) bool {
	s := w.soak
	if err != nil {
		if errors.Is(err, initiator.ErrTaskAborted) {
			s.stats.abortedCmds.Add(1)
		}
		return false
	}
	switch r.Status {
	case initiator.StatusCheckCondition:
		se := &initiator.SCSIError{Status: r.Status, Sense: r.Sense}
		key, asc, ascq := se.SenseKey()
		switch key {
		case 0x06: // UNIT ATTENTION: the command did not run
			s.stats.unitAttentions.Add(1)
			return true
		case 0x0b: // ABORTED COMMAND
			s.stats.otherCheckConditions.Add(1)
			return true
		}
		s.stats.otherCheckConditions.Add(1)
		s.errorf("worker %d: %s LUN %d LBA %d: CHECK CONDITION sense key %#x ASC/ASCQ %#02x/%#02x",
			w.id, op, w.lun.num, w.base+uint64(first), key, asc, ascq)
		return false
	case initiator.StatusBusy, initiator.StatusTaskSetFull:
		time.Sleep(5 * time.Millisecond)
		return true
	}
	s.errorf("worker %d: %s LUN %d LBA %d: status %#02x", w.id, op, w.lun.num, w.base+uint64(first), r.Status)
	return false
}

func (w *worker) write(ctx context.Context, sess *initiator.Session, isid [6]byte, first, n int) {
	s := w.soak
	bs := w.lun.blockSize
	buf := w.wbuf[:n*bs]
	for attempt := 0; attempt < 8; attempt++ {
		id := s.nextID.Add(1)
		for i := range n {
			fillBlock(buf[i*bs:(i+1)*bs], uint8(w.lun.num), w.id, w.base+uint64(first+i), id)
		}
		r, oc, err := w.exec(ctx, sess, w.cdb(true, first, n), buf, nil)
		if oc == good {
			for i := first; i < first+n; i++ {
				w.blocks[i].ack(id)
			}
			s.stats.writes.Add(1)
			s.stats.bytes.Add(int64(len(buf)))
			return
		}
		// Not acknowledged: each block may or may not hold it now.
		s.stats.candidates.Add(1)
		for i := first; i < first+n; i++ {
			w.blocks[i].maybe(id)
		}
		switch oc {
		case lost:
			s.stats.lostCmds.Add(1)
			w.unfenced = append(w.unfenced, inDoubt{id: id, first: first, n: n, isid: isid})
			return
		case notSent:
			return
		}
		if !w.retry("WRITE", first, r, err) {
			return
		}
	}
}

func (w *worker) read(ctx context.Context, sess *initiator.Session, first, n int) {
	s := w.soak
	bs := w.lun.blockSize
	buf := w.rbuf[:n*bs]
	for attempt := 0; attempt < 8; attempt++ {
		// Poison, so that bytes the target failed to send show up.
		buf[0] = 0xee
		for k := 1; k < len(buf); k *= 2 {
			copy(buf[k:], buf[:k])
		}
		r, oc, err := w.exec(ctx, sess, w.cdb(false, first, n), nil, buf)
		switch oc {
		case good:
			w.check(buf, first, n, "read during the load")
			s.stats.reads.Add(1)
			s.stats.bytes.Add(int64(len(buf)))
			s.stats.blocksVerified.Add(int64(n))
			return
		case lost:
			s.stats.lostCmds.Add(1)
			return
		case notSent:
			return
		}
		if !w.retry("READ", first, r, err) {
			return
		}
	}
}

// check compares blocks read at first with the model and settles them.
func (w *worker) check(buf []byte, first, n int, when string) (ackedHeld int) {
	bs := w.lun.blockSize
	for i := range n {
		b := &w.blocks[first+i]
		lba := w.base + uint64(first+i)
		id, problem := decodeBlock(buf[i*bs:(i+1)*bs], w.scratch, uint8(w.lun.num), w.id, lba)
		if problem != "" {
			w.soak.errorf("%s: worker %d LUN %d LBA %d: garbage: %s; model: %v", when, w.id, w.lun.num, lba, problem, b)
			continue
		}
		if !b.allows(id) {
			what := "a write never issued to this block"
			switch {
			case id == 0:
				what = "zeros (initial content)"
			case id < b.acked:
				what = fmt.Sprintf("write %d, OLDER than the last acknowledged write", id)
			case id > b.acked:
				what = fmt.Sprintf("write %d, not a candidate", id)
			}
			w.soak.errorf("%s: worker %d LUN %d LBA %d holds %s; model: %v", when, w.id, w.lun.num, lba, what, b)
			continue
		}
		if id == b.acked && b.written() {
			ackedHeld++
		}
		b.settle(id)
	}
	return ackedHeld
}

// exec runs one command. It never abandons a command: when one takes too
// long (after a LUN reset from another session the target drops it without
// an answer, as SAM-5 allows with TAS=0) it sends ABORT TASK itself and
// waits for the command to end, so that its outcome is known to be final.
func (w *worker) exec(ctx context.Context, sess *initiator.Session, cdb, out, in []byte) (initiator.Response, outcome, error) {
	s := w.soak
	resetCh := w.lun.reset.wait()
	call, err := sess.Start(ctx, initiator.Command{LUN: w.lun.num, CDB: cdb, DataOut: out, DataIn: in})
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) { // never queued
			return initiator.Response{}, notSent, err
		}
		if down(sess) {
			return initiator.Response{}, lost, err
		}
		s.errorf("worker %d: starting %#02x on a live session: %v", w.id, cdb[0], err)
		_ = sess.Close()
		return initiator.Response{}, lost, err
	}
	itt := call.ITT()
	w.inflight.Store(&inflight{sess: sess, lun: w.lun.num, itt: itt, since: time.Now()})
	defer w.inflight.Store(nil)
	done := make(chan result, 1)
	go func() {
		r, err := call.Wait(context.Background())
		done <- result{r, err}
	}()
	timeout := time.NewTimer(cmdTimeout)
	defer timeout.Stop()
	var res result
	select {
	case res = <-done:
	case <-resetCh:
		grace := time.NewTimer(resetGrace)
		select {
		case res = <-done:
		case <-grace.C:
			res = w.abortAndWait(sess, itt, done, true)
		}
		grace.Stop()
	case <-timeout.C:
		res = w.abortAndWait(sess, itt, done, false)
	}
	return w.classify(sess, itt, res)
}

func (w *worker) abortAndWait(sess *initiator.Session, itt uint32, done chan result, afterReset bool) result {
	s := w.soak
	s.stats.selfAborts.Add(1)
	if !afterReset {
		s.stats.unexplainedTimeouts.Add(1)
		s.t.Logf("worker %d: ITT %#x on LUN %d unanswered for %s, no LUN reset since it started; aborting it", w.id, itt, w.lun.num, cmdTimeout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), tmfTimeout)
	code, err := sess.TaskMgmt(ctx, pdu.TMFAbortTask, w.lun.num, itt)
	cancel()
	if err == nil && code != pdu.TMFRespComplete && code != pdu.TMFRespNoTask {
		s.errorf("worker %d: ABORT TASK ITT %#x answered %d", w.id, itt, code)
	}
	if err != nil && !down(sess) {
		s.errorf("worker %d: ABORT TASK ITT %#x: %v", w.id, itt, err)
	}
	select {
	case r := <-done:
		return r
	case <-time.After(abortedEndTimeout):
	}
	if err == nil {
		s.errorf("worker %d: ITT %#x still not ended %s after its ABORT TASK answered %d; dropping the session",
			w.id, itt, abortedEndTimeout, code)
	}
	_ = sess.Close()
	return <-done
}

func (w *worker) classify(sess *initiator.Session, itt uint32, res result) (initiator.Response, outcome, error) {
	s := w.soak
	switch {
	case res.err == nil && res.r.Status == initiator.StatusGood:
		return res.r, good, nil
	case res.err == nil:
		return res.r, fenced, nil
	case errors.Is(res.err, initiator.ErrTaskAborted):
		// Ended by a TMF whose response we received: the target answers
		// only once no aborted command can still touch the medium.
		return res.r, fenced, res.err
	}
	if errors.Is(res.err, initiator.ErrProtocol) {
		s.errorf("worker %d: ITT %#x: target protocol violation: %v", w.id, itt, res.err)
	}
	if down(sess) {
		return res.r, lost, res.err
	}
	s.errorf("worker %d: ITT %#x failed on a live session: %v", w.id, itt, res.err)
	_ = sess.Close()
	return res.r, lost, res.err
}

// chaos drops connections, aborts commands and resets LUNs at random
// intervals until ctx ends.
func (s *soak) chaos(ctx context.Context) {
	rng := mrand.New(mrand.NewPCG(s.seed, 1<<32))
	for event := 0; ; event++ {
		select {
		case <-ctx.Done():
			return
		case <-time.After(500*time.Millisecond + time.Duration(rng.Int64N(int64(1500*time.Millisecond)))):
		}
		// The first three events are one of each kind, so that even a short
		// run sees them all; then they come at random.
		p := rng.IntN(100)
		if event < 3 {
			p = []int{0, 50, 90}[event]
		}
		switch {
		case p < 40:
			s.chaosDrop(rng)
		case p < 75:
			s.chaosAbort(ctx, rng)
		default:
			s.chaosReset(ctx, rng)
		}
	}
}

func (s *soak) chaosDrop(rng *mrand.Rand) {
	for range 10 {
		sl := s.slots[rng.IntN(len(s.slots))]
		if sl.drop(rng.IntN(3) == 0) {
			s.stats.drops.Add(1)
			return
		}
	}
}

// chaosAbort sends ABORT TASK for up to 4 commands in flight.
func (s *soak) chaosAbort(ctx context.Context, rng *mrand.Rand) {
	var victims []*inflight
	for range 200 {
		if len(victims) == 4 {
			break
		}
		if inf := s.workers[rng.IntN(len(s.workers))].inflight.Load(); inf != nil && !slices.Contains(victims, inf) {
			victims = append(victims, inf)
		}
	}
	var wg sync.WaitGroup
	for _, inf := range victims {
		wg.Go(func() {
			tctx, cancel := context.WithTimeout(ctx, tmfTimeout)
			code, err := inf.sess.TaskMgmt(tctx, pdu.TMFAbortTask, inf.lun, inf.itt)
			cancel()
			if err != nil {
				if ctx.Err() == nil && !down(inf.sess) {
					s.errorf("chaos: ABORT TASK ITT %#x: %v", inf.itt, err)
				}
				return
			}
			s.stats.chaosAborts.Add(1)
			switch code {
			case pdu.TMFRespComplete:
				s.stats.abortComplete.Add(1)
			case pdu.TMFRespNoTask:
				s.stats.abortNoTask.Add(1)
			default:
				s.errorf("chaos: ABORT TASK ITT %#x answered %d", inf.itt, code)
			}
		})
	}
	wg.Wait()
}

func (s *soak) chaosReset(ctx context.Context, rng *mrand.Rand) {
	for range 10 {
		sess := s.slots[rng.IntN(len(s.slots))].peek()
		if sess == nil {
			continue
		}
		lun := s.luns[rng.IntN(len(s.luns))]
		tctx, cancel := context.WithTimeout(ctx, tmfTimeout)
		code, err := sess.TaskMgmt(tctx, pdu.TMFLUNReset, lun.num, 0)
		cancel()
		// Whatever the answer, commands of other sessions may have been
		// dropped: let their workers know.
		lun.reset.fire()
		if err != nil {
			if ctx.Err() == nil && !down(sess) {
				s.errorf("chaos: LUN RESET LUN %d: %v", lun.num, err)
			}
			return
		}
		s.stats.lunResets.Add(1)
		if code != pdu.TMFRespComplete {
			s.errorf("chaos: LUN RESET LUN %d answered %d", lun.num, code)
		}
		return
	}
}

// progress logs the load every 10 seconds.
func (s *soak) progress(ctx context.Context, start time.Time, probe *procProbe) {
	tk := time.NewTicker(10 * time.Second)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		g, _ := probe.goroutines()
		f, _ := probe.fds()
		rss, _ := probe.rssKiB()
		st := &s.stats
		s.t.Logf("soak %s: %d reads, %d writes, %d drops, %d aborts, %d LUN resets; target: %d goroutines, %d fds, RSS %d MiB",
			time.Since(start).Round(time.Second), st.reads.Load(), st.writes.Load(), st.drops.Load(),
			st.chaosAborts.Load(), st.lunResets.Load(), g, f, rss>>10)
	}
}

// verifyAll reads every worker's region through a fresh session and checks
// each block against the model.
func (s *soak) verifyAll(ctx context.Context) (blocks, ackedHeld int) {
	t := s.t
	sess, err := initiator.Dial(ctx, s.config(0, s.newISID()))
	if err != nil {
		t.Errorf("verification login: %v", err)
		return
	}
	defer func() {
		if err := sess.Logout(ctx); err != nil {
			t.Errorf("verification logout: %v", err)
		}
	}()
	for _, l := range s.luns {
		if err := sess.TestUnitReady(ctx, l.num); err != nil {
			t.Errorf("verification: LUN %d: %v", l.num, err)
			return
		}
	}
	buf := make([]byte, maxRegionBytes)
	for _, w := range s.workers {
		bs := w.lun.blockSize
		for first := 0; first < len(w.blocks); {
			n := min(len(w.blocks)-first, 128<<10/bs)
			b := buf[:n*bs]
			if err := sess.Read(ctx, w.lun.num, w.base+uint64(first), uint32(n), bs, b); err != nil {
				t.Errorf("verification: worker %d: %v", w.id, err)
				return
			}
			for i := range n {
				if w.blocks[first+i].written() {
					blocks++
				}
			}
			ackedHeld += w.check(b, first, n, "final verification")
			first += n
		}
	}
	return blocks, ackedHeld
}
