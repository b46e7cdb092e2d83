package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/initiator"
)

// TestPRAPTPLSurvivesRestart registers two initiators and reserves the LU,
// restarts the process on the same data directory and checks what came
// back: with APTPL set by the last REGISTER, the registrations and the
// reservation, enforced against the same I_T nexuses; without it, nothing.
func TestPRAPTPLSurvivesRestart(t *testing.T) {
	t.Parallel()
	const keyA, keyB = 0xA, 0xB
	for _, tc := range []struct {
		name string
		// APTPL bits of A's REGISTER and then B's: the last one decides
		// (SPC-4 5.13.5).
		aptplA, aptplB bool
		survives       bool
	}{
		{name: "APTPL", aptplA: true, aptplB: true, survives: true},
		{name: "without APTPL", aptplA: false, aptplB: false, survives: false},
		{name: "APTPL cleared by the last REGISTER", aptplA: true, aptplB: false, survives: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t, 90*time.Second)
			disks := makeDisks(t, "disk01", "disk02")
			dataDir := t.TempDir()
			stateFile := filepath.Join(dataDir, "state", "disk01.pr.json")

			n1 := prNode(t, disks, dataDir)
			a := prDial(t, ctx, n1, prA)
			b := prDial(t, ctx, n1, prB)
			mustPROut(t, ctx, a, "A: REGISTER 0xA", prOutRegister, 0, 0, keyA, tc.aptplA)
			mustPROut(t, ctx, a, "A: RESERVE Write Exclusive", prOutReserve, prTypeWE, keyA, 0, false)
			mustPROut(t, ctx, b, "B: REGISTER 0xB", prOutRegister, 0, 0, keyB, tc.aptplB)

			// Two REGISTERs; RESERVE does not count (SPC-4 6.16.2).
			expectKeys(t, ctx, b, "before the restart", 2, keyA, keyB)
			expectReservation(t, ctx, b, "before the restart", 2, keyA)
			expectWrite(t, ctx, b, "B's write while A holds Write Exclusive", 0, make([]byte, 4096), statusReservationConflict)
			expectWrite(t, ctx, a, "A's write as the holder", 0, bytes.Repeat([]byte{0xa1}, 4096), initiator.StatusGood)

			checkStateFile(t, stateFile, tc.aptplA || tc.aptplB)
			stopNode(t, n1)
			checkStateFile(t, stateFile, tc.aptplA || tc.aptplB)

			n2 := prNode(t, disks, dataDir)
			a = prDial(t, ctx, n2, prA)
			b = prDial(t, ctx, n2, prB)
			// A new process: the first command of each nexus reports the
			// power on.
			expectSense(t, ctx, a, 0, uaPowerOnReset)
			expectSense(t, ctx, b, 0, uaPowerOnReset)

			if !tc.survives {
				// PRgeneration restarts at zero on power on, APTPL or not.
				expectKeys(t, ctx, a, "after the restart", 0)
				expectReservation(t, ctx, a, "after the restart", 0, 0)
				expectWrite(t, ctx, b, "B's write after the restart", 0, make([]byte, 4096), initiator.StatusGood)
				expectWrite(t, ctx, a, "A's write after the restart", 0, make([]byte, 4096), initiator.StatusGood)
				return
			}

			expectKeys(t, ctx, a, "after the restart", 0, keyA, keyB)
			expectReservation(t, ctx, b, "after the restart", 0, keyA)
			expectWrite(t, ctx, b, "B's write after the restart (registered, not the holder)", 8, make([]byte, 4096), statusReservationConflict)
			if r, _, err := prRun(ctx, b, 0, read10CDB(0, 8), nil, make([]byte, 4096)); err != nil || r.Status != initiator.StatusGood {
				t.Errorf("B's read through Write Exclusive after the restart: %s, %v; want GOOD", describe(r), err)
			}
			data := randomBytes(t, 64<<10)
			expectWrite(t, ctx, a, "A's write after the restart (the holder)", 8, data, initiator.StatusGood)
			onDisk, err := readFileAt(disks["disk01"], 8*blockSize, len(data))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(onDisk, data) {
				t.Error("A's write after the restart is not in the backing file")
			}

			// The same initiator name with another ISID is another I_T
			// nexus, which is not registered.
			other := prA
			other.isid[5] = 0x02
			c := prDial(t, ctx, n2, other)
			expectWrite(t, ctx, c, "write from A's name with another ISID", 8, make([]byte, 4096), statusReservationConflict)

			// PRgeneration counts on from zero, and the new state is
			// saved again.
			mustPROut(t, ctx, b, "B: REGISTER 0xB -> 0xBB", prOutRegister, 0, keyB, 0xBB, true)
			expectKeys(t, ctx, a, "after B changed its key", 1, keyA, 0xBB)
			expectReservation(t, ctx, a, "after B changed its key", 1, keyA)
			checkStateFile(t, stateFile, true)
		})
	}
}

// checkStateFile checks the APTPL file of a device: it must exist once
// APTPL was set, and whenever it exists it is private (0600) and no
// temporary file of an interrupted save is left beside it.
func checkStateFile(t *testing.T, path string, mustExist bool) {
	t.Helper()
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if mustExist {
			t.Errorf("reservation state file %s does not exist after a REGISTER with APTPL", path)
		}
	case err != nil:
		t.Fatal(err)
	default:
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("reservation state file %s has mode %#o, want 0600", path, perm)
		}
		if fi.Size() == 0 {
			t.Errorf("reservation state file %s is empty", path)
		}
	}
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*.tmp-*"))
	if len(leftovers) > 0 {
		t.Errorf("temporary files left in the state directory: %v", leftovers)
	}
}

// TestPreemptAndAbort preempts an initiator's reservation and registration
// while it has a queue of writes in flight: once PREEMPT AND ABORT returns
// GOOD, none of those writes may reach the medium or be reported GOOD, and
// the preempted initiator learns of it through REGISTRATIONS PREEMPTED.
//
// What is in flight at the preempt, and in which state, is a matter of
// timing, so the test preempts several times, A and B taking turns, each
// time in its own region of the LU. Each region must end up holding only
// what the preemptor wrote after its preempt.
func TestPreemptAndAbort(t *testing.T) {
	t.Parallel()
	n, disks := startGuideNode(t)
	ctx := testCtx(t, 240*time.Second)
	sides := [2]preemptSide{
		{name: "A", key: 0xA, s: prDial(t, ctx, n, prA)},
		{name: "B", key: 0xB, s: prDial(t, ctx, n, prB)},
	}
	holder, preemptor := &sides[0], &sides[1]
	mustPROut(t, ctx, holder.s, "A: REGISTER 0xA", prOutRegister, 0, 0, holder.key, false)
	mustPROut(t, ctx, holder.s, "A: RESERVE Write Exclusive", prOutReserve, prTypeWE, holder.key, 0, false)
	var lastP2 time.Time
	for cycle := range preemptCycles {
		// The side preempted last time registers again.
		mustPROut(t, ctx, preemptor.s, preemptor.name+": REGISTER", prOutRegister, 0, 0, preemptor.key, false)
		name := fmt.Sprintf("cycle %d: %s preempts %s", cycle+1, preemptor.name, holder.name)
		region := uint32(cycle * preemptRegion / blockSize)
		if !t.Run(name, func(t *testing.T) {
			lastP2 = preemptUnderLoad(t, ctx, disks["disk01"], region, holder, preemptor)
		}) {
			break
		}
		holder, preemptor = preemptor, holder
	}
	if t.Failed() {
		return
	}

	// (d) Give aborted writes time to land if they were going to; then
	// every region must hold nothing but its preemptor's pattern.
	time.Sleep(time.Until(lastP2.Add(preemptSettle)))
	for cycle := range preemptCycles {
		lba := uint32(cycle * preemptRegion / blockSize)
		got := make([]byte, preemptRegion)
		if r, _, err := prRun(ctx, sides[0].s, 0, read10CDB(lba, preemptRegion/blockSize), nil, got); err != nil || r.Status != initiator.StatusGood {
			t.Fatalf("reading the region of cycle %d: %s, %v", cycle+1, describe(r), err)
		}
		checkRegion(t, fmt.Sprintf("cycle %d, %v after the last preempt, read through A", cycle+1, preemptSettle), got, lba, tagP2)
		onDisk, err := readFileAt(disks["disk01"], int64(lba)*blockSize, preemptRegion)
		if err != nil {
			t.Fatal(err)
		}
		checkRegion(t, fmt.Sprintf("cycle %d, %v after the last preempt, backing file", cycle+1, preemptSettle), onDisk, lba, tagP2)
	}
}

const (
	// preemptCycles × preemptRegion is the size of the test disks.
	preemptCycles = 8
	preemptRegion = 8 << 20
	// After the last preempt, how long aborted writes get to land before
	// the regions are checked.
	preemptSettle = 2 * time.Second
	// Patterns: the region before the flood, the holder's flood, the
	// preemptor's writes after its preempt.
	tagP0 = 'Z'
	tagP1 = 'F'
	tagP2 = 'P'
)

// preemptSide is one initiator of TestPreemptAndAbort with its key.
type preemptSide struct {
	name string
	key  uint64
	s    *initiator.Session
}

// preemptUnderLoad is one cycle of TestPreemptAndAbort: holder is
// registered and holds a Write Exclusive reservation, preemptor is
// registered. Holder floods the region at lba with writes and preemptor
// takes the reservation with PREEMPT AND ABORT in the middle of a wave of
// them, then overwrites the region. It returns when the preemptor's writes
// completed.
func preemptUnderLoad(t *testing.T, ctx context.Context, backing string, lba0 uint32, holder, preemptor *preemptSide) time.Time {
	const (
		writeSize = 1 << 20
		// Large writers keep writes gathering Data-Out in the target; small
		// ones keep its command path busy, queueing and executing. Together
		// they fill the target's default command window of 64.
		largeWriters = 16
		smallWriters = 48
		smallSize    = blockSize
		writers      = largeWriters + smallWriters
		// Waves of writes before the one the preempt meets.
		warmupWaves = 3
		// After the preempt, how long a write sent before may still see its
		// GOOD (it ran before the preempt; its status was on the wire: tens
		// of milliseconds at most in practice), and how long the writes left
		// without a response are watched for one.
		lateGood = 500 * time.Millisecond
		watch    = time.Second
	)
	h, p := holder.s, preemptor.s
	before := expectKeys(t, ctx, p, "before the preempt", -1, holder.key, preemptor.key)
	expectReservation(t, ctx, p, "before the preempt", int64(before.gen), holder.key)
	for off := 0; off < preemptRegion; off += writeSize {
		expectWrite(t, ctx, h, holder.name+": pattern P0", lba0+uint32(off/blockSize), stampBlocks(make([]byte, writeSize), tagP0, 0), initiator.StatusGood)
	}
	if uas := collectUAs(t, ctx, p); len(uas) > 0 {
		t.Logf("%s's pending unit attentions before the preempt: %v", preemptor.name, uas)
	}

	// The holder floods the region in waves: every writer sends one write
	// when the wave starts, each block stamped with the command's sequence
	// number. Writes overlap, so at any moment some are gathering data,
	// some queued and some executing in the target. After the last wave
	// the writers go on freely until a write is not GOOD.
	type outcome struct {
		seq              uint64
		sent             bool
		started, replied time.Time
		resp             initiator.Response
		err              error
	}
	var (
		floodCtx, stopFlood = context.WithCancel(ctx)
		seqs                atomic.Uint64
		lastWaveSent        atomic.Int64
		mu                  sync.Mutex
		outcomes            []outcome
		wg                  sync.WaitGroup
		gates               = make([]chan struct{}, warmupWaves+1) // wave i starts when gates[i] closes
		waveDone            = make(chan bool, writers)
	)
	for i := range gates {
		gates[i] = make(chan struct{})
	}
	defer func() { stopFlood(); wg.Wait() }()
	for w := range writers {
		size := writeSize
		if w >= largeWriters {
			size = smallSize
		}
		wg.Go(func() {
			buf := stampBlocks(make([]byte, size), tagP1, 0)
			for wave := 0; floodCtx.Err() == nil; wave++ {
				if wave < len(gates) {
					select {
					case <-gates[wave]:
					case <-floodCtx.Done():
						return
					}
				}
				o := outcome{seq: seqs.Add(1)}
				stampBlocks(buf, tagP1, o.seq)
				lba := lba0 + uint32(o.seq*uint64(size)%preemptRegion)/blockSize
				o.started = time.Now()
				call, err := h.Start(floodCtx, initiator.Command{CDB: write10CDB(lba, size/blockSize), DataOut: buf})
				if err == nil {
					o.sent = true
					if wave == warmupWaves {
						lastWaveSent.Add(1)
					}
					o.resp, err = call.Wait(floodCtx)
				}
				o.replied, o.err = time.Now(), err
				mu.Lock()
				outcomes = append(outcomes, o)
				mu.Unlock()
				ok := err == nil && o.resp.Status == initiator.StatusGood
				if wave < warmupWaves {
					waveDone <- ok
				}
				if !ok {
					return
				}
			}
		})
	}
	for wave := range warmupWaves {
		close(gates[wave])
		for range writers {
			if ok := <-waveDone; !ok {
				t.Fatalf("a write of warm-up wave %d failed before any preempt", wave+1)
			}
		}
	}
	// The last wave: preempt once a quarter of it is on the wire, so that
	// the target is busy starting the holder's commands when it lands.
	close(gates[warmupWaves])
	eventually(t, 30*time.Second, "the last wave on the wire", func() bool { return lastWaveSent.Load() >= writers/4 })

	// (a) PREEMPT AND ABORT of the holder's key.
	preemptSent := time.Now()
	r, err := prOut(ctx, p, prOutPreemptAndAbort, prTypeWE, preemptor.key, holder.key, false)
	preempted := time.Now()
	if err != nil {
		t.Fatalf("%s: PREEMPT AND ABORT: %v", preemptor.name, err)
	}
	if r.Status != initiator.StatusGood {
		t.Fatalf("%s: PREEMPT AND ABORT: %s, want GOOD", preemptor.name, describe(r))
	}
	// The preemptor holds the reservation now: it overwrites the region.
	for off := 0; off < preemptRegion; off += writeSize {
		expectWrite(t, ctx, p, preemptor.name+": pattern P2 after the preempt", lba0+uint32(off/blockSize), stampBlocks(make([]byte, writeSize), tagP2, 0), initiator.StatusGood)
	}
	p2Done := time.Now()

	// Writes still waiting after watch never hear back: give up on them.
	time.Sleep(time.Until(preempted.Add(watch)))
	stopFlood()
	wg.Wait()

	// (e) Classify the holder's writes.
	var (
		good, lateGoodN, rejected, noResponse, unsent int
		inFlight                                      int // sent before the preempt returned and not GOOD
		floodUAs                                      []senseCode
		latest                                        time.Duration
	)
	for _, o := range outcomes {
		switch {
		case !o.sent:
			unsent++
			if !errors.Is(o.err, context.Canceled) {
				t.Errorf("write %d could not be sent: %v", o.seq, o.err)
			}
			continue
		case o.err != nil:
			noResponse++
			if !errors.Is(o.err, context.Canceled) && !errors.Is(o.err, initiator.ErrTaskAborted) {
				t.Errorf("write %d: %v; want a status, or none at all", o.seq, o.err)
			}
		case o.resp.Status == initiator.StatusGood:
			good++
			if o.replied.After(preempted) {
				lateGoodN++
				latest = max(latest, o.replied.Sub(preempted))
			}
			if o.started.After(preempted) {
				t.Errorf("write %d, sent %v after PREEMPT AND ABORT returned, got GOOD", o.seq, o.started.Sub(preempted))
			} else if late := o.replied.Sub(preempted); late > lateGood {
				t.Errorf("write %d got GOOD %v after PREEMPT AND ABORT returned: too late to have run before the preempt", o.seq, late)
			}
		case o.resp.Status == statusReservationConflict:
			rejected++
		case o.resp.Status == initiator.StatusCheckCondition && senseOf(o.resp).key == keyUnitAttention:
			rejected++
			floodUAs = append(floodUAs, senseOf(o.resp))
		default:
			t.Errorf("write %d: %s; want GOOD, RESERVATION CONFLICT, a unit attention or no response", o.seq, describe(o.resp))
		}
		if o.started.Before(preempted) && (o.err != nil || o.resp.Status != initiator.StatusGood) {
			inFlight++
		}
	}
	t.Logf("PREEMPT AND ABORT took %v; %s's writes: %d GOOD (%d answered after the preempt returned, at most %v later), "+
		"%d rejected (RESERVATION CONFLICT or unit attention), %d left without a response, %d never sent; "+
		"%d were in flight when the preempt returned",
		preempted.Sub(preemptSent), holder.name, good, lateGoodN, latest, rejected, noResponse, unsent, inFlight)
	if inFlight == 0 {
		t.Error("no write was in flight at the preempt: the cycle did not exercise PREEMPT AND ABORT under load")
	}

	// (c) The preempted side learns of it, from the responses to its flood
	// or from its next commands.
	uas := append(floodUAs, collectUAs(t, ctx, h)...)
	if !slices.Contains(uas, uaRegistrationsPreempted) {
		t.Errorf("%s never saw %v (REGISTRATIONS PREEMPTED); unit attentions after the preempt: %v", holder.name, uaRegistrationsPreempted, uas)
	}

	// (b) Only the preemptor is registered and holds the reservation, and
	// PRgeneration counted the preempt.
	expectKeys(t, ctx, h, "after the preempt", int64(before.gen)+1, preemptor.key)
	expectReservation(t, ctx, h, "after the preempt", int64(before.gen)+1, preemptor.key)
	expectWrite(t, ctx, h, holder.name+"'s write after the preempt", lba0, make([]byte, 4096), statusReservationConflict)
	if r, err := prOut(ctx, h, prOutRegister, 0, holder.key, holder.key+1, false); err != nil || r.Status != statusReservationConflict {
		t.Errorf("%s: REGISTER with its old key: %s, %v; want RESERVATION CONFLICT (no longer registered)", holder.name, describe(r), err)
	}

	// (d), early: the region is the preemptor's so far (the test checks
	// every region again once aborted writes had more time to land).
	onDisk, err := readFileAt(backing, int64(lba0)*blockSize, preemptRegion)
	if err != nil {
		t.Fatal(err)
	}
	checkRegion(t, "backing file", onDisk, lba0, tagP2)
	return p2Done
}

// stampBlocks fills buf with tag and writes seq into each block, so a
// block read back tells which write put it there.
func stampBlocks(buf []byte, tag byte, seq uint64) []byte {
	if len(buf) > 0 && buf[len(buf)-1] != tag {
		for i := range buf {
			buf[i] = tag
		}
	}
	for off := 0; off+blockSize <= len(buf); off += blockSize {
		buf[off] = tag
		binary.BigEndian.PutUint64(buf[off+1:], seq)
	}
	return buf
}

// checkRegion reports blocks of data, read at lba0, not written by a
// write with tag.
func checkRegion(t *testing.T, what string, data []byte, lba0 uint32, tag byte) {
	t.Helper()
	bad := 0
	for off := 0; off+blockSize <= len(data); off += blockSize {
		blk := data[off : off+blockSize]
		if blk[0] == tag && bytes.Count(blk[9:], []byte{tag}) == blockSize-9 {
			continue
		}
		if bad++; bad <= 8 {
			t.Errorf("%s: LBA %d holds tag %q from write %d, want %q: a write landed after the preempt",
				what, int(lba0)+off/blockSize, blk[0], binary.BigEndian.Uint64(blk[1:]), tag)
		}
	}
	if bad > 8 {
		t.Errorf("%s: %d blocks in all are not %q", what, bad, tag)
	}
}

// TestReserve6AcrossSessions holds an SPC-2 reservation from one session
// and checks what another session may do, and each way the reservation
// ends: RELEASE(6), logout and connection loss (the loss of the holder's
// I_T nexus releases it).
func TestReserve6AcrossSessions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		release func(ctx context.Context, a *initiator.Session) error
		// nexusLoss: the session ended, so A's nexus sees I_T NEXUS LOSS
		// when it comes back.
		nexusLoss bool
	}{
		{name: "RELEASE(6)", release: func(ctx context.Context, a *initiator.Session) error {
			r, _, err := prRun(ctx, a, 0, []byte{opRelease6, 0, 0, 0, 0, 0}, nil, nil)
			if err == nil && r.Status != initiator.StatusGood {
				err = fmt.Errorf("RELEASE(6): %s", describe(r))
			}
			return err
		}},
		{name: "logout", nexusLoss: true, release: func(ctx context.Context, a *initiator.Session) error {
			return a.Logout(ctx)
		}},
		{name: "connection loss", nexusLoss: true, release: func(_ context.Context, a *initiator.Session) error {
			return a.Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n, _ := startGuideNode(t)
			ctx := testCtx(t, 60*time.Second)
			a := prDial(t, ctx, n, prA)
			b := prDial(t, ctx, n, prB)
			collectUAs(t, ctx, a)
			collectUAs(t, ctx, b)
			block := make([]byte, 4096)
			reserve6 := []byte{opReserve6, 0, 0, 0, 0, 0}
			release6 := []byte{opRelease6, 0, 0, 0, 0, 0}
			status := func(s *initiator.Session, lun uint64, cdb, out, in []byte) string {
				t.Helper()
				r, err := s.Do(ctx, lun, cdb, out, in)
				if err != nil {
					t.Fatalf("command %#02x: %v", cdb[0], err)
				}
				return describe(r)
			}
			expect := func(what, got, want string) {
				t.Helper()
				if got != want {
					t.Errorf("%s: %s, want %s", what, got, want)
				}
			}
			const good, conflict = "GOOD", "RESERVATION CONFLICT"

			expect("A: RESERVE(6)", status(a, 0, reserve6, nil, nil), good)
			expect("A: RESERVE(6) again as the holder", status(a, 0, reserve6, nil, nil), good)
			expect("B: WRITE(10)", status(b, 0, write10CDB(0, 8), block, nil), conflict)
			expect("B: READ(10)", status(b, 0, read10CDB(0, 8), nil, make([]byte, 4096)), conflict)
			expect("B: INQUIRY", status(b, 0, []byte{opInquiry, 0, 0, 0, 96, 0}, nil, make([]byte, 96)), good)
			expect("B: REQUEST SENSE", status(b, 0, []byte{opRequestSense, 0, 0, 0, 18, 0}, nil, make([]byte, 18)), good)
			if _, err := reportLUNs(ctx, b); err != nil {
				t.Errorf("B: REPORT LUNS while A holds a reservation: %v", err)
			}
			expect("B: RESERVE(6)", status(b, 0, reserve6, nil, nil), conflict)
			expect("B: RELEASE(6) of a reservation it does not hold", status(b, 0, release6, nil, nil), good)
			expect("B: WRITE(10) after its RELEASE(6)", status(b, 0, write10CDB(0, 8), block, nil), conflict)
			prCDB := []byte{opPRIn, prInReadKeys, 0, 0, 0, 0, 0, 0, 64, 0}
			expect("B: PERSISTENT RESERVE IN", status(b, 0, prCDB, nil, make([]byte, 64)), conflict)
			if r, _, err := prRun(ctx, b, 1, write10CDB(0, 8), block, nil); err != nil || r.Status != initiator.StatusGood {
				t.Errorf("B: WRITE(10) to LUN 1, which is not reserved: %s, %v; want GOOD", describe(r), err)
			}
			expect("A: WRITE(10) as the holder", status(a, 0, write10CDB(0, 8), block, nil), good)

			if err := tc.release(ctx, a); err != nil {
				t.Fatalf("ending A's reservation: %v", err)
			}
			if tc.nexusLoss {
				// The target notices the session's end on its own time.
				eventually(t, 10*time.Second, "B's write to succeed after A's session ended", func() bool {
					return status(b, 0, write10CDB(0, 8), block, nil) == good
				})
			} else {
				expect("B: WRITE(10) after A's RELEASE(6)", status(b, 0, write10CDB(0, 8), block, nil), good)
			}

			// B may reserve now, and A (back on the same nexus if it left)
			// is the one kept out.
			expect("B: RESERVE(6)", status(b, 0, reserve6, nil, nil), good)
			if tc.nexusLoss {
				a = prDial(t, ctx, n, prA)
				expectSense(t, ctx, a, 0, uaITNexusLoss)
			}
			expect("A: WRITE(10) while B holds the reservation", status(a, 0, write10CDB(0, 8), block, nil), conflict)
			expect("B: RELEASE(6)", status(b, 0, release6, nil, nil), good)
			expect("A: WRITE(10) after B's RELEASE(6)", status(a, 0, write10CDB(0, 8), block, nil), good)
		})
	}
}
