package initiator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/pdu"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func dialFake(t *testing.T, f *fakeTarget, edit func(*Config)) *Session {
	t.Helper()
	cfg := f.config()
	if edit != nil {
		edit(&cfg)
	}
	s, err := Dial(testCtx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestLoginNoAuth(t *testing.T) {
	f := newFake(t, fakeOpts{})
	s := dialFake(t, f, nil)
	p := s.Negotiated()
	if p.TargetMaxRecvDataSegmentLength != 8192 || p.TargetAlias != "fake" || p.TargetPortalGroupTag != 1 ||
		p.TSIH != 0x77 || p.InitialR2T || !p.ImmediateData || p.FirstBurstLength != 65536 ||
		p.MaxBurstLength != 262144 || p.MaxRecvDataSegmentLength != defaultMRDSL || p.DefaultTime2Wait != 2 {
		t.Errorf("negotiated %+v", withoutKeys(p))
	}
	if v, _ := lookup(p.Sent, "AuthMethod"); v != "None" {
		t.Errorf("AuthMethod offered %q", v)
	}
	if v, _ := lookup(f.snapshot().loginKeys, "SessionType"); v != "Normal" {
		t.Errorf("SessionType %q", v)
	}
	if err := s.Logout(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(s.Err(), ErrClosed) {
		t.Errorf("after logout: %v", s.Err())
	}
	if _, err := s.Do(testCtx(t), 0, []byte{0}, nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("command after logout: %v", err)
	}
}

func TestLoginSkipSecurity(t *testing.T) {
	f := newFake(t, fakeOpts{})
	s := dialFake(t, f, func(c *Config) { c.SkipSecurity = true })
	if _, ok := lookup(s.Negotiated().Sent, "AuthMethod"); ok {
		t.Error("AuthMethod sent with SkipSecurity")
	}
	if err := s.TestUnitReady(testCtx(t), 0); err != nil {
		t.Fatal(err)
	}
}

func TestLoginCHAP(t *testing.T) {
	chap := fakeOpts{chapUser: "user", chapSecret: "secret-0123456", mutualUser: "tgt", mutualSecret: "tsecret-0123456"}
	withCHAP := func(c *Config) { c.CHAPUser, c.CHAPSecret = "user", "secret-0123456" }
	withMutual := func(c *Config) {
		withCHAP(c)
		c.MutualUser, c.MutualSecret = "tgt", "tsecret-0123456"
	}
	for _, tc := range []struct {
		name    string
		opts    fakeOpts
		edit    func(*Config)
		wantAlg int
		wantErr string
	}{
		{"md5", chap, withCHAP, CHAPMD5, ""},
		{"sha256", chap, func(c *Config) { withCHAP(c); c.CHAPAlgorithms = []int{CHAPSHA256, CHAPMD5} }, CHAPSHA256, ""},
		{"mutual", chap, withMutual, CHAPMD5, ""},
		{"mutual sha256", chap, func(c *Config) { withMutual(c); c.CHAPAlgorithms = []int{CHAPSHA256} }, CHAPSHA256, ""},
		{"wrong secret", chap, func(c *Config) { withCHAP(c); c.CHAPSecret = "nope" }, 0, "authentication failure"},
		{"no credentials", chap, nil, 0, "authentication failure"},
		{"skip security", chap, func(c *Config) { c.SkipSecurity = true }, 0, "authentication failure"},
		{"bad target response", fakeOpts{chapUser: "user", chapSecret: "secret-0123456", mutualUser: "tgt",
			mutualSecret: "tsecret-0123456", badMutual: true}, withMutual, 0, "mutual CHAP"},
		{"wrong target name", chap, func(c *Config) { withMutual(c); c.MutualUser = "other" }, 0, "CHAP_N"},
		{"target without auth", fakeOpts{}, withMutual, 0, "authentication failure"},
		{"chap optional", fakeOpts{}, withCHAP, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t, tc.opts)
			cfg := f.config()
			if tc.edit != nil {
				tc.edit(&cfg)
			}
			s, err := Dial(testCtx(t), cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if got := s.Negotiated().CHAPAlgorithm; got != tc.wantAlg {
				t.Errorf("CHAP_A %d, want %d", got, tc.wantAlg)
			}
			if err := s.NOP(testCtx(t)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestLoginErrorClasses(t *testing.T) {
	f := newFake(t, fakeOpts{})
	cfg := f.config()
	cfg.TargetName = "iqn.2024-01.io.hatarget.test:missing"
	_, err := Dial(testCtx(t), cfg)
	var le *LoginError
	if !errors.As(err, &le) || le.Class != pdu.LoginInitiatorErr || le.Detail != pdu.LoginDetailNotFound {
		t.Fatalf("unknown target: %v", err)
	}
}

func TestLoginRedirect(t *testing.T) {
	real := newFake(t, fakeOpts{})
	front := newFake(t, fakeOpts{redirect: real.addr})
	s := dialFake(t, front, nil)
	if err := s.TestUnitReady(testCtx(t), 0); err != nil {
		t.Fatal(err)
	}
	if got := real.snapshot().logins; got != 1 {
		t.Fatalf("%d logins at the redirect target", got)
	}
	// A redirect loop ends with the LoginError, not forever.
	loop := newFake(t, fakeOpts{redirectSelf: true})
	_, err := Dial(testCtx(t), loop.config())
	var le *LoginError
	if !errors.As(err, &le) || le.Class != pdu.LoginRedirect || le.TargetAddress != loop.addr {
		t.Fatalf("redirect loop: %v", err)
	}
}

func TestLoginContinuationAndTargetOffers(t *testing.T) {
	f := newFake(t, fakeOpts{splitText: 37, offerKeys: []pdu.KV{
		{Key: "OFMarker", Value: "Yes"}, {Key: "X-fake-offer", Value: "1"}, {Key: "IFMarker", Value: "No"},
	}})
	var extra []pdu.KV
	for i := range 3 {
		extra = append(extra, pdu.KV{Key: fmt.Sprintf("X-hatarget-pad%d", i), Value: strings.Repeat("p", 4000)})
	}
	s := dialFake(t, f, func(c *Config) { c.ExtraKeys = extra })
	st := f.snapshot()
	for i := range 3 {
		if v, _ := lookup(st.loginKeys, fmt.Sprintf("X-hatarget-pad%d", i)); len(v) != 4000 {
			t.Errorf("pad key %d arrived with %d bytes", i, len(v))
		}
	}
	if st.answers["OFMarker"] != "No" || st.answers["X-fake-offer"] != "NotUnderstood" || st.answers["IFMarker"] != "No" {
		t.Errorf("answers to target offers: %v", st.answers)
	}
	if v, _ := lookup(s.Negotiated().Received, "X-hatarget-pad0"); v != "NotUnderstood" {
		t.Errorf("target's answer to an extra key: %q", v)
	}
	if s.Negotiated().TargetAlias != "fake" {
		t.Errorf("alias lost across continued responses: %+v", withoutKeys(s.Negotiated()))
	}
}

// ioProfiles cover each way write data can travel and both Data-In forms.
var ioProfiles = []struct {
	name       string
	opts       fakeOpts
	edit       func(*Config)
	immediate  bool
	unsolicted bool
}{
	{"default", fakeOpts{}, nil, true, true},
	{"initialR2T", fakeOpts{initialR2T: true}, nil, true, false},
	{"noImmediate", fakeOpts{noImmediate: true}, nil, false, true},
	{"r2tOnly", fakeOpts{initialR2T: true, noImmediate: true}, nil, false, false},
	{"manyR2T", fakeOpts{maxR2T: 4, maxBurst: 16384, firstBurst: 4096}, func(c *Config) { c.MaxOutstandingR2T = 8 }, true, false},
	{"digests", fakeOpts{digests: true}, func(c *Config) { c.HeaderDigest, c.DataDigest = true, true }, true, true},
	// A large target MRDSL lets immediate data take the whole first burst.
	{"noCollapse", fakeOpts{noCollapse: true, mrdsl: 65536}, func(c *Config) { c.MaxRecvDataSegmentLength = 4096 }, true, false},
}

func TestReadWriteProfiles(t *testing.T) {
	for _, p := range ioProfiles {
		t.Run(p.name, func(t *testing.T) {
			f := newFake(t, p.opts)
			s := dialFake(t, f, p.edit)
			ctx := testCtx(t)
			if p.name == "digests" && (!s.Negotiated().HeaderDigest || !s.Negotiated().DataDigest) {
				t.Fatalf("digests not negotiated: %+v", withoutKeys(s.Negotiated()))
			}
			for i, blocks := range []uint32{1, 16, 100, 400} {
				lba := uint64(i) * 1024
				buf := pattern(int(blocks)*fakeBlock, byte(i+1))
				if err := s.Write(ctx, 0, lba, blocks, fakeBlock, buf); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(buf))
				r, err := s.Do(ctx, 0, readCDB(lba, blocks), nil, got)
				if err != nil || r.Status != StatusGood || r.DataInLen != len(buf) || r.Underflow {
					t.Fatalf("read %d blocks: %+v, %v", blocks, r, err)
				}
				if !bytes.Equal(got, buf) {
					t.Fatalf("read back %d blocks differs", blocks)
				}
			}
			st := f.snapshot()
			lim := s.Negotiated().TargetMaxRecvDataSegmentLength
			if st.maxDataOut > int(lim) {
				t.Errorf("Data-Out segment of %d bytes, target accepts %d", st.maxDataOut, lim)
			}
			if (st.immediate > 0) != p.immediate || (st.unsolicited > 0) != p.unsolicted || st.solicited == 0 || st.r2ts == 0 {
				t.Errorf("write paths: immediate %d unsolicited %d solicited %d in %d R2Ts", st.immediate, st.unsolicited, st.solicited, st.r2ts)
			}
			t.Logf("immediate %d unsolicited %d solicited %d, %d R2Ts", st.immediate, st.unsolicited, st.solicited, st.r2ts)
		})
	}
}

func readCDB(lba uint64, blocks uint32) []byte {
	var cdb [16]byte
	n := rwCDB(&cdb, false, lba, blocks)
	return cdb[:n]
}

func TestReadCapacityAndResiduals(t *testing.T) {
	f := newFake(t, fakeOpts{blocks: 4096})
	s := dialFake(t, f, nil)
	ctx := testCtx(t)
	c, err := s.ReadCapacity(ctx, 0)
	if err != nil || c.Blocks != 4096 || c.BlockSize != fakeBlock {
		t.Fatalf("capacity %+v, %v", c, err)
	}
	// An allocation length above what the command returns is an underflow.
	big := make([]byte, 64)
	r, err := s.Do(ctx, 0, []byte{opServiceAction16, saReadCapacity16, 13: 64}, nil, big)
	if err != nil || !r.Underflow || r.Residual != 32 || r.DataInLen != 32 {
		t.Fatalf("underflow: %+v, %v", r, err)
	}
	// And one below it an overflow.
	r, err = s.Do(ctx, 0, []byte{opServiceAction16, saReadCapacity16, 13: 8}, nil, make([]byte, 8))
	if err != nil || !r.Overflow || r.Residual != 24 || r.DataInLen != 8 {
		t.Fatalf("overflow: %+v, %v", r, err)
	}
}

func TestCheckConditionSense(t *testing.T) {
	f := newFake(t, fakeOpts{})
	s := dialFake(t, f, nil)
	r, err := s.Do(testCtx(t), 0, []byte{0xc5, 0, 0, 0, 0, 0}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	serr := &SCSIError{Status: r.Status, Sense: r.Sense}
	if k, asc, _ := serr.SenseKey(); r.Status != StatusCheckCondition || k != senseIllegalRequest || asc != 0x20 {
		t.Fatalf("response %+v", r)
	}
	err = s.Read(testCtx(t), 0, 1<<20, 1, fakeBlock, make([]byte, fakeBlock))
	if !errors.As(err, &serr) {
		t.Fatalf("read out of range: %v", err)
	}
}

func TestExtendedCDBOnTheWire(t *testing.T) {
	f := newFake(t, fakeOpts{})
	s := dialFake(t, f, nil)
	cdb := make([]byte, 40)
	cdb[0] = 0x7f
	out := make([]byte, 1)
	r, err := s.Do(testCtx(t), 0, cdb, nil, out)
	if err != nil || r.Status != StatusGood || out[0] != 40 {
		t.Fatalf("40-byte CDB: %+v %v, target saw %d bytes", r, err, out[0])
	}
	if _, err := s.Do(testCtx(t), 0, make([]byte, MaxCDBLen+1), nil, nil); err == nil {
		t.Fatal("oversized CDB accepted")
	}
	if _, err := s.Do(testCtx(t), 0, cdb[:10], []byte{1}, []byte{1}); err == nil {
		t.Fatal("bidirectional command accepted")
	}
}

const heldOp = 0x2f // VERIFY(10): the fake holds it forever

func TestAbortTask(t *testing.T) {
	f := newFake(t, fakeOpts{holdOp: heldOp})
	s := dialFake(t, f, nil)
	ctx := testCtx(t)
	held, err := s.Start(ctx, Command{LUN: 3, CDB: []byte{heldOp, 0, 0, 0, 0, 0, 0, 0, 0, 0}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.TaskMgmt(ctx, pdu.TMFAbortTask, 3, held.ITT())
	if err != nil || resp != pdu.TMFRespComplete {
		t.Fatalf("ABORT TASK: %d, %v", resp, err)
	}
	if _, err := held.Wait(ctx); !errors.Is(err, ErrTaskAborted) {
		t.Fatalf("aborted command: %v", err)
	}
	if st := f.snapshot(); len(st.aborted) != 1 || st.aborted[0] != held.ITT() {
		t.Fatalf("target aborted %x", st.aborted)
	}
	resp, err = s.TaskMgmt(ctx, pdu.TMFAbortTask, 3, 0xabcdef)
	if err != nil || resp != pdu.TMFRespNoTask {
		t.Fatalf("ABORT TASK of nothing: %d, %v", resp, err)
	}
}

func TestLUNResetEndsCommands(t *testing.T) {
	f := newFake(t, fakeOpts{holdOp: heldOp})
	s := dialFake(t, f, nil)
	ctx := testCtx(t)
	var calls []Call
	for range 3 {
		c, err := s.Start(ctx, Command{LUN: 1, CDB: []byte{heldOp, 0, 0, 0, 0, 0, 0, 0, 0, 0}})
		if err != nil {
			t.Fatal(err)
		}
		calls = append(calls, c)
	}
	if resp, err := s.TaskMgmt(ctx, pdu.TMFLUNReset, 1, 0); err != nil || resp != pdu.TMFRespComplete {
		t.Fatalf("LUN RESET: %d, %v", resp, err)
	}
	for _, c := range calls {
		if _, err := c.Wait(ctx); !errors.Is(err, ErrTaskAborted) {
			t.Fatalf("command after LUN RESET: %v", err)
		}
	}
	if err := s.TestUnitReady(ctx, 1); err != nil {
		t.Fatal(err)
	}
}

func TestCancelAbortsCommand(t *testing.T) {
	f := newFake(t, fakeOpts{holdOp: heldOp, window: 4})
	s := dialFake(t, f, nil)
	ctx, cancel := context.WithTimeout(testCtx(t), 50*time.Millisecond)
	defer cancel()
	buf := make([]byte, 512)
	_, err := s.Do(ctx, 0, []byte{heldOp, 0, 0, 0, 0, 0, 0, 0, 1, 0}, nil, buf)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled command: %v", err)
	}
	waitFor(t, func() bool { return len(f.snapshot().aborted) == 1 }, "ABORT TASK for the abandoned command")
	// The slot comes back and the window reopens: the session goes on.
	waitFor(t, func() bool { return len(s.slots.sem) == 0 }, "the abandoned slot to be freed")
	for range 8 {
		if err := s.TestUnitReady(testCtx(t), 0); err != nil {
			t.Fatal(err)
		}
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNOPAndTargetPing(t *testing.T) {
	f := newFake(t, fakeOpts{ping: true, digests: true})
	s := dialFake(t, f, func(c *Config) { c.DataDigest = true })
	if err := s.NOP(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return f.snapshot().pingsAnswered == 1 }, "the answer to the target's ping")
}

func TestCommandWindow(t *testing.T) {
	f := newFake(t, fakeOpts{window: 2, delay: 5 * time.Millisecond})
	s := dialFake(t, f, func(c *Config) { c.InitialCmdSN = 0xfffffff8 }) // and wrap CmdSN
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Go(func() {
			buf := make([]byte, fakeBlock)
			for range 3 {
				if err := s.Read(ctx, 0, uint64(g), 1, fakeBlock, buf); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if st := f.snapshot(); st.maxOutstanding > 2 || st.maxOutstanding == 0 {
		t.Fatalf("%d commands outstanding with a window of 2", st.maxOutstanding)
	}
}

func TestConcurrentIO(t *testing.T) {
	f := newFake(t, fakeOpts{window: 64, maxR2T: 2, maxBurst: 8192})
	s := dialFake(t, f, func(c *Config) { c.MaxOutstandingR2T = 2 })
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := range 32 {
		wg.Go(func() {
			lba := uint64(g) * 64
			for i := range 10 {
				blocks := uint32(1 + (g+i)%40)
				buf := pattern(int(blocks)*fakeBlock, byte(g*10+i))
				got := make([]byte, len(buf))
				if err := s.Write(ctx, 0, lba, blocks, fakeBlock, buf); err != nil {
					errs <- err
					return
				}
				if err := s.Read(ctx, 0, lba, blocks, fakeBlock, got); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, buf) {
					errs <- fmt.Errorf("goroutine %d op %d: data differs", g, i)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestSendTargets(t *testing.T) {
	f := newFake(t, fakeOpts{splitText: 40})
	ctx := testCtx(t)
	targets, err := Discover(ctx, f.addr, "", WithTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if len(targets) != 3 || targets[0].Name != fakeIQN || len(targets[2].Portals) != 2 ||
		targets[2].Portals[0] != (Portal{Addr: f.addr, Tag: 3}) || targets[2].Portals[1] != (Portal{Addr: "[::1]:3260", Tag: 3}) {
		t.Fatalf("targets %+v", targets)
	}
	if v, _ := lookup(f.snapshot().loginKeys, "SessionType"); v != "Discovery" {
		t.Errorf("SessionType %q", v)
	}
	one, err := DiscoverTarget(ctx, f.addr, "", fakeIQN+"-2")
	if err != nil || len(one) != 1 || one[0].Name != fakeIQN+"-2" {
		t.Fatalf("one target: %+v, %v", one, err)
	}
}

func TestRejectedCommand(t *testing.T) {
	f := newFake(t, fakeOpts{rejectOp: 0xfe})
	s := dialFake(t, f, nil)
	_, err := s.Do(testCtx(t), 0, []byte{0xfe, 0, 0, 0, 0, 0}, nil, nil)
	var rerr *RejectError
	if !errors.As(err, &rerr) || rerr.Reason != pdu.RejectProtocolError || rerr.Opcode != pdu.OpSCSICommand {
		t.Fatalf("rejected command: %v", err)
	}
	if err := s.TestUnitReady(testCtx(t), 0); err != nil {
		t.Fatal(err)
	}
}

func TestAsyncLogoutRequest(t *testing.T) {
	f := newFake(t, fakeOpts{asyncLogout: true})
	events := make(chan AsyncEvent, 1)
	s := dialFake(t, f, func(c *Config) { c.OnAsync = func(e AsyncEvent) { events <- e } })
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("no logout after the target asked for one")
	}
	if !errors.Is(s.Err(), ErrClosed) {
		t.Errorf("session ended with %v", s.Err())
	}
	if e := <-events; e.Event != pdu.AsyncLogoutRequest || e.Parameters[2] != 2 {
		t.Errorf("event %+v", e)
	}
}

func TestCloseFailsCommandsInFlight(t *testing.T) {
	f := newFake(t, fakeOpts{holdOp: heldOp})
	s := dialFake(t, f, nil)
	ctx := testCtx(t)
	c, err := s.Start(ctx, Command{CDB: []byte{heldOp, 0, 0, 0, 0, 0, 0, 0, 0, 0}})
	if err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(20 * time.Millisecond); _ = s.Close() }()
	if _, err := c.Wait(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("command in flight at Close: %v", err)
	}
}

func TestTargetDropFailsSession(t *testing.T) {
	f := newFake(t, fakeOpts{holdOp: heldOp})
	s := dialFake(t, f, nil)
	ctx := testCtx(t)
	c, err := s.Start(ctx, Command{CDB: []byte{heldOp, 0, 0, 0, 0, 0, 0, 0, 0, 0}})
	if err != nil {
		t.Fatal(err)
	}
	f.close()
	_, err = c.Wait(ctx)
	if err == nil || errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "is down") {
		t.Fatalf("command when the target drops: %v", err)
	}
	<-s.Done()
	if _, err := s.Do(ctx, 0, []byte{0, 0, 0, 0, 0, 0}, nil, nil); err == nil {
		t.Fatal("command on a dead session succeeded")
	}
}

func TestBenchAgainstFake(t *testing.T) {
	f := newFake(t, fakeOpts{window: 64, blocks: 16384})
	var progress bytes.Buffer
	for _, pat := range []string{"randrw", "write", "read"} {
		res, err := Bench(testCtx(t), f.config(), BenchConfig{Sessions: 2, QueueDepth: 4, BlockSize: 4096, Pattern: pat,
			Duration: 1200 * time.Millisecond, Span: 2 << 20, Verify: true}, &progress)
		if err != nil {
			t.Fatal(err)
		}
		if res.Errors != 0 || res.Ops == 0 || res.P50 == 0 || res.P999 < res.P50 || res.Max < res.P999 {
			t.Fatalf("%s: %+v", pat, res)
		}
		t.Logf("%s: %v", pat, res)
	}
	if !strings.Contains(progress.String(), "IOPS") {
		t.Errorf("no progress lines: %q", progress.String())
	}
	if _, err := Bench(testCtx(t), f.config(), BenchConfig{Pattern: "zigzag"}, nil); err == nil {
		t.Error("unknown pattern accepted")
	}
	if _, err := Bench(testCtx(t), f.config(), BenchConfig{BlockSize: 1000, Duration: time.Millisecond}, nil); err == nil {
		t.Error("block size not a multiple of the LUN's accepted")
	}
}

// TestVerifyCatchesCorruption makes sure Verify is not vacuous: a target
// that loses writes must produce errors.
func TestVerifyCatchesCorruption(t *testing.T) {
	f := newFake(t, fakeOpts{window: 64, blocks: 4096})
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
				f.mu.Lock()
				clear(f.disk[:len(f.disk)/2])
				f.mu.Unlock()
			}
		}
	}()
	res, err := Bench(testCtx(t), f.config(), BenchConfig{QueueDepth: 4, Pattern: "randrw", Duration: 300 * time.Millisecond, Verify: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors == 0 || !strings.Contains(res.FirstError, "verify") {
		t.Fatalf("corruption went unnoticed: %+v", res)
	}
}
