package initiator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/pdu"
)

// The tgt tests validate the initiator against a real, independent target:
// a private tgtd on 127.0.0.1 with its own control port, so it cannot
// clash with another tgtd on the machine. Run with INITIATOR_TGT=1.

const (
	tgtPlain     = "iqn.2024-01.io.hatarget.test:plain"
	tgtCHAP      = "iqn.2024-01.io.hatarget.test:chap"
	tgtTuned     = "iqn.2024-01.io.hatarget.test:tuned"
	tgtUser      = "hatarget-in"
	tgtSecret    = "in-secret-0123456"
	tgtOutUser   = "hatarget-out"
	tgtOutSecret = "out-secret-0123456"
	tgtLUNSize   = 64 << 20
)

type tgtd struct {
	addr string
	ctrl string
	cmd  *exec.Cmd
}

func startTGT(t *testing.T) *tgtd {
	t.Helper()
	if os.Getenv("INITIATOR_TGT") != "1" {
		t.Skip("set INITIATOR_TGT=1 to run against a private tgtd")
	}
	bin, err := exec.LookPath("tgtd")
	if err != nil {
		t.Skipf("tgtd not installed: %v", err)
	}
	port, ctrl := freePort(t), freeControlPort(t)
	dir := t.TempDir()
	logf, err := os.Create(filepath.Join(dir, "tgtd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-f", "-C", strconv.Itoa(ctrl), "--iscsi", fmt.Sprintf("portal=127.0.0.1:%d", port))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting tgtd: %v", err)
	}
	d := &tgtd{addr: fmt.Sprintf("127.0.0.1:%d", port), ctrl: strconv.Itoa(ctrl), cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // SIGKILL: tgtd ignores SIGTERM while it has targets
		_ = cmd.Wait()
		_ = os.Remove(fmt.Sprintf("/var/run/tgtd/socket.%d", ctrl))
		_ = os.Remove(fmt.Sprintf("/var/run/tgtd/socket.%d.lock", ctrl))
		_ = logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logf.Name()); err == nil {
				t.Logf("tgtd log:\n%s", b)
			}
		}
	})
	d.waitReady(t)
	d.addTarget(t, 1, tgtPlain, filepath.Join(dir, "plain.img"))
	d.addTarget(t, 2, tgtCHAP, filepath.Join(dir, "chap.img"))
	// The tuned target turns on what tgt leaves off by default: digests,
	// unsolicited Data-Out, several R2Ts in flight, and NOP-In pings.
	d.addTarget(t, 3, tgtTuned, filepath.Join(dir, "tuned.img"))
	for _, kv := range [][2]string{
		{"HeaderDigest", "CRC32C,None"}, {"DataDigest", "CRC32C,None"}, {"InitialR2T", "No"},
		{"MaxRecvDataSegmentLength", "65536"}, {"MaxXmitDataSegmentLength", "65536"},
		{"FirstBurstLength", "131072"}, {"MaxBurstLength", "1048576"}, {"MaxOutstandingR2T", "4"},
		{"nop_interval", "1"}, {"nop_count", "3"},
	} {
		d.adm(t, "--mode", "target", "--op", "update", "--tid", "3", "--name", kv[0], "--value", kv[1])
	}
	d.adm(t, "--mode", "account", "--op", "new", "--user", tgtUser, "--password", tgtSecret)
	d.adm(t, "--mode", "account", "--op", "new", "--user", tgtOutUser, "--password", tgtOutSecret)
	d.adm(t, "--mode", "account", "--op", "bind", "--tid", "2", "--user", tgtUser)
	d.adm(t, "--mode", "account", "--op", "bind", "--tid", "2", "--user", tgtOutUser, "--outgoing")
	return d
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// freeControlPort picks a tgtd control port (tgtd takes at most 32767) whose
// socket no running tgtd holds.
func freeControlPort(t *testing.T) int {
	t.Helper()
	for range 100 {
		p := 20000 + rand.IntN(12000)
		if _, err := os.Stat(fmt.Sprintf("/var/run/tgtd/socket.%d", p)); os.IsNotExist(err) {
			return p
		}
	}
	t.Fatal("no free tgtd control port")
	return 0
}

func (d *tgtd) waitReady(t *testing.T) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command("tgtadm", "-C", d.ctrl, "--lld", "iscsi", "--mode", "target", "--op", "show").CombinedOutput()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("tgtd not ready: %v: %s", err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *tgtd) adm(t *testing.T, args ...string) {
	t.Helper()
	args = append([]string{"-C", d.ctrl, "--lld", "iscsi"}, args...)
	if out, err := exec.Command("tgtadm", args...).CombinedOutput(); err != nil {
		t.Fatalf("tgtadm %v: %v: %s", args, err, out)
	}
}

func (d *tgtd) addTarget(t *testing.T, tid int, name, backing string) {
	t.Helper()
	if err := os.WriteFile(backing, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(backing, tgtLUNSize); err != nil {
		t.Fatal(err)
	}
	id := strconv.Itoa(tid)
	d.adm(t, "--mode", "target", "--op", "new", "--tid", id, "--targetname", name)
	d.adm(t, "--mode", "logicalunit", "--op", "new", "--tid", id, "--lun", "1", "--backing-store", backing)
	d.adm(t, "--mode", "target", "--op", "bind", "--tid", id, "--initiator-address", "ALL")
}

func tgtCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestTGT(t *testing.T) {
	d := startTGT(t)
	t.Run("ReadWrite", func(t *testing.T) { testTGTReadWrite(t, d, Config{TargetName: tgtPlain}) })
	t.Run("ReadWriteNoImmediate", func(t *testing.T) {
		testTGTReadWrite(t, d, Config{TargetName: tgtPlain, ImmediateData: No, MaxRecvDataSegmentLength: 8192})
	})
	t.Run("ReadWriteSmallBursts", func(t *testing.T) {
		testTGTReadWrite(t, d, Config{TargetName: tgtPlain, FirstBurstLength: 4096, MaxBurstLength: 16384})
	})
	t.Run("Tuned", func(t *testing.T) {
		cfg := Config{TargetName: tgtTuned, HeaderDigest: true, DataDigest: true, MaxOutstandingR2T: 4, FirstBurstLength: 65536}
		s := testTGTReadWrite(t, d, cfg)
		p := s.Negotiated()
		if p.InitialR2T || !p.ImmediateData || p.MaxOutstandingR2T != 4 || p.TargetMaxRecvDataSegmentLength != 65536 {
			t.Errorf("tuned target negotiated %+v", withoutKeys(p))
		}
	})
	t.Run("Pings", func(t *testing.T) { testTGTPings(t, d) })
	t.Run("CHAP", func(t *testing.T) { testTGTCHAP(t, d) })
	t.Run("Discover", func(t *testing.T) { testTGTDiscover(t, d) })
	t.Run("Management", func(t *testing.T) { testTGTManagement(t, d) })
	t.Run("Bench", func(t *testing.T) { testTGTBench(t, d) })
}

// testTGTReadWrite logs in with cfg, checks reads and writes of sizes
// around the negotiated limits, and logs out. It returns the closed session
// for its parameters.
func testTGTReadWrite(t *testing.T, d *tgtd, cfg Config) *Session {
	ctx := tgtCtx(t)
	cfg.Addr = d.addr
	s, err := Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p := s.Negotiated()
	t.Logf("negotiated: %+v", withoutKeys(p))
	if cfg.TargetName == tgtTuned && (p.HeaderDigest != cfg.HeaderDigest || p.DataDigest != cfg.DataDigest) {
		t.Errorf("digests %v/%v, want %v/%v", p.HeaderDigest, p.DataDigest, cfg.HeaderDigest, cfg.DataDigest)
	}
	if err := s.TestUnitReady(ctx, 1); err != nil {
		t.Fatal(err)
	}
	capy, err := s.ReadCapacity(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if capy.Bytes() != tgtLUNSize || capy.BlockSize != 512 {
		t.Fatalf("capacity %+v, want %d bytes of 512-byte blocks", capy, tgtLUNSize)
	}
	// Sizes straddle the negotiated limits: one block, one PDU, bursts,
	// and a write far larger than FirstBurstLength.
	for i, blocks := range []uint32{1, 8, 17, 128, 600, 2048} {
		lba := uint64(i) * 4096
		buf := pattern(int(blocks)*512, byte(i+1))
		if err := s.Write(ctx, 1, lba, blocks, 512, buf); err != nil {
			t.Fatalf("write %d blocks: %v", blocks, err)
		}
		got := make([]byte, len(buf))
		if err := s.Read(ctx, 1, lba, blocks, 512, got); err != nil {
			t.Fatalf("read %d blocks: %v", blocks, err)
		}
		if !bytes.Equal(got, buf) {
			t.Fatalf("read back %d blocks at LBA %d: data differs", blocks, lba)
		}
	}
	// READ(16)/WRITE(16) past what 10-byte CDBs address in one go.
	big := pattern(70000*512, 0x77)
	if err := s.Write(ctx, 1, 40000, 70000, 512, big); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(big))
	if err := s.Read(ctx, 1, 40000, 70000, 512, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, big) {
		t.Fatal("READ(16) read back differs")
	}
	// A read past the end is a CHECK CONDITION with sense data.
	err = s.Read(ctx, 1, tgtLUNSize/512, 1, 512, make([]byte, 512))
	var serr *SCSIError
	if !errors.As(err, &serr) {
		t.Fatalf("read past end: %v, want *SCSIError", err)
	}
	if key, asc, _ := serr.SenseKey(); key != senseIllegalRequest || asc != 0x21 {
		t.Errorf("read past end: %v, want ILLEGAL REQUEST / LBA out of range", serr)
	}
	if err := s.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

// testTGTPings idles on a target that pings every second and gives up on
// an initiator after three unanswered pings: the session must survive.
func testTGTPings(t *testing.T, d *tgtd) {
	ctx := tgtCtx(t)
	s, err := Dial(ctx, Config{Addr: d.addr, TargetName: tgtTuned, HeaderDigest: true, DataDigest: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	select {
	case <-s.Done():
		t.Fatalf("session dropped while idle: %v", s.Err())
	case <-time.After(5 * time.Second):
	}
	if err := s.Read(ctx, 1, 0, 1, 512, make([]byte, 512)); err != nil {
		t.Fatal(err)
	}
	if err := s.Logout(ctx); err != nil {
		t.Fatal(err)
	}
}

func withoutKeys(p Params) Params {
	p.Sent, p.Received = nil, nil
	return p
}

// pattern fills n bytes with data that differs per byte and per seed.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) * 2654435761
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

func testTGTCHAP(t *testing.T, d *tgtd) {
	ctx := tgtCtx(t)
	base := Config{Addr: d.addr, TargetName: tgtCHAP}

	if _, err := Dial(ctx, base); err == nil {
		t.Fatal("login without credentials to a CHAP target succeeded")
	} else {
		t.Logf("without CHAP: %v", err)
	}

	bad := base
	bad.CHAPUser, bad.CHAPSecret = tgtUser, "wrong-secret-0000"
	_, err := Dial(ctx, bad)
	var le *LoginError
	if !errors.As(err, &le) || le.Class != pdu.LoginInitiatorErr || le.Detail != pdu.LoginDetailAuthFailed {
		t.Fatalf("wrong secret: %v, want authentication failure", err)
	}
	t.Logf("wrong secret: %v", err)

	one := base
	one.CHAPUser, one.CHAPSecret = tgtUser, tgtSecret
	s, err := Dial(ctx, one)
	if err != nil {
		t.Fatalf("one-way CHAP: %v", err)
	}
	t.Logf("one-way CHAP chose CHAP_A=%d", s.Negotiated().CHAPAlgorithm)
	if err := s.Logout(ctx); err != nil {
		t.Fatal(err)
	}

	mutual := one
	mutual.MutualUser, mutual.MutualSecret = tgtOutUser, tgtOutSecret
	s, err = Dial(ctx, mutual)
	if err != nil {
		t.Fatalf("mutual CHAP: %v", err)
	}
	buf := make([]byte, 4096)
	if err := s.Read(ctx, 1, 0, 8, 512, buf); err != nil {
		t.Fatal(err)
	}
	if err := s.Logout(ctx); err != nil {
		t.Fatal(err)
	}

	wrongTarget := mutual
	wrongTarget.MutualSecret = "not-the-target-secret"
	if _, err := Dial(ctx, wrongTarget); err == nil {
		t.Fatal("mutual CHAP accepted a target that does not know our secret")
	} else {
		t.Logf("mutual CHAP with the wrong target secret: %v", err)
	}
}

func testTGTDiscover(t *testing.T, d *tgtd) {
	ctx := tgtCtx(t)
	targets, err := Discover(ctx, d.addr, "")
	if err != nil {
		t.Fatal(err)
	}
	names := map[string][]Portal{}
	for _, tg := range targets {
		names[tg.Name] = tg.Portals
	}
	for _, want := range []string{tgtPlain, tgtCHAP} {
		ps, ok := names[want]
		if !ok || len(ps) == 0 || ps[0].Addr != d.addr {
			t.Errorf("target %s: portals %+v, want %s (all: %+v)", want, ps, d.addr, targets)
		}
	}
	one, err := DiscoverTarget(ctx, d.addr, "", tgtPlain, WithDigests(true, true))
	if err != nil {
		t.Fatal(err)
	}
	if len(one) != 1 || one[0].Name != tgtPlain {
		t.Errorf("SendTargets=%s: %+v", tgtPlain, one)
	}
}

func testTGTManagement(t *testing.T, d *tgtd) {
	ctx := tgtCtx(t)
	s, err := Dial(ctx, Config{Addr: d.addr, TargetName: tgtPlain})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.NOP(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := s.TaskMgmt(ctx, pdu.TMFAbortTask, 1, 0x12345)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ABORT TASK of an unknown ITT: response %d", resp)
	if resp != pdu.TMFRespNoTask && resp != pdu.TMFRespComplete {
		t.Errorf("ABORT TASK of an unknown ITT: response %d", resp)
	}
	resp, err = s.TaskMgmt(ctx, pdu.TMFLUNReset, 1, 0)
	if err != nil || resp != pdu.TMFRespComplete {
		t.Fatalf("LUN RESET: response %d, err %v", resp, err)
	}
	// After the reset the LUN reports a unit attention, which Read retries.
	if err := s.Read(ctx, 1, 0, 1, 512, make([]byte, 512)); err != nil {
		t.Fatal(err)
	}
	if err := s.Logout(ctx); err != nil {
		t.Fatal(err)
	}
}

func testTGTBench(t *testing.T, d *tgtd) {
	ctx := tgtCtx(t)
	cfg := Config{Addr: d.addr, TargetName: tgtPlain}
	secs := 5 * time.Second
	if testing.Short() {
		secs = time.Second
	}
	// The headline figure: 4K random reads, queue depth 32, one session.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	cpu0 := processCPU()
	res, err := Bench(ctx, cfg, BenchConfig{Pattern: "randread", QueueDepth: 32, BlockSize: 4096, Duration: secs, LUN: 1},
		testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	cpu := processCPU() - cpu0
	runtime.ReadMemStats(&after)
	t.Logf("tgt randread 4K QD32 x1: %v", res)
	t.Logf("initiator CPU per command: %v", cpu/time.Duration(max(res.Ops, 1)))
	// Login, logout and the histograms are fixed costs; per command the
	// initiator allocates nothing itself. The one allocation per Data-In
	// PDU left is pdu.ReadData's trailer scratch escaping through
	// io.ReadFull.
	perOp := float64(after.Mallocs-before.Mallocs) / float64(res.Ops)
	t.Logf("allocations per command: %.3f", perOp)
	if perOp > 1.5 {
		t.Errorf("%.2f allocations per command", perOp)
	}
	if res.Errors != 0 || res.Ops == 0 {
		t.Errorf("randread: %d errors (first: %s), %d ops", res.Errors, res.FirstError, res.Ops)
	}
	// Verified mixed load over two sessions, on the tuned target so that
	// digests, unsolicited data and several R2Ts are all in play.
	cfg.TargetName, cfg.HeaderDigest, cfg.DataDigest = tgtTuned, true, true
	res, err = Bench(ctx, cfg, BenchConfig{Pattern: "randrw", Sessions: 2, QueueDepth: 8, BlockSize: 64 << 10,
		Duration: 2 * time.Second, LUN: 1, Span: 16 << 20, Verify: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("tgt randrw 64K QD8 x2 verified: %v", res)
	if res.Errors != 0 || res.Reads == 0 || res.Writes == 0 {
		t.Errorf("randrw: %d errors (first: %s), %d reads, %d writes", res.Errors, res.FirstError, res.Reads, res.Writes)
	}
}

// processCPU is the user+system time this process has used; tgtd runs in
// its own process, so this is the initiator's cost (plus the test's).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// testWriter sends bench progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
