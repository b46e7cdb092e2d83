package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/test/nodetest"
)

// guideIQN is the target of the deployment guide's example.
const guideIQN = "iqn.2006-10.net.vlnb:tgt"

const (
	blockSize = 512
	diskSize  = 64 << 20
)

// guideConf is the deployment guide's scst.conf, verbatim except for the
// filename values, which point at files each test creates.
const guideConf = `HANDLER vdisk_fileio {
    DEVICE disk01 {
        filename {{disk01}}
        nv_cache 1
    }
    DEVICE disk02 {
        filename {{disk02}}
        nv_cache 1
    }
}

TARGET_DRIVER iscsi {
    enabled 1
    TARGET iqn.2006-10.net.vlnb:tgt {
        LUN 0 disk01
        LUN 1 disk02
        enabled 1
    }
}
`

// makeDisks creates sparse backing files of diskSize bytes. They live in a
// directory of their own because nodetest creates the node's directory only
// when it starts the process, and fileio without a size needs the file to
// exist by then.
func makeDisks(t testing.TB, names ...string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	paths := make(map[string]string, len(names))
	for _, name := range names {
		p := filepath.Join(dir, name+".img")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(diskSize); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		paths[name] = p
	}
	return paths
}

// fill replaces {{name}} placeholders with the disks' paths.
func fill(conf string, disks map[string]string) string {
	var pairs []string
	for name, p := range disks {
		pairs = append(pairs, "{{"+name+"}}", p)
	}
	return strings.NewReplacer(pairs...).Replace(conf)
}

// handlerBlock declares the named disks as vdisk_fileio devices.
func handlerBlock(disks map[string]string, names ...string) string {
	var b strings.Builder
	b.WriteString("HANDLER vdisk_fileio {\n")
	for _, n := range names {
		fmt.Fprintf(&b, "    DEVICE %s {\n        filename %s\n        nv_cache 1\n    }\n", n, disks[n])
	}
	b.WriteString("}\n")
	return b.String()
}

// startGuideNode serves the deployment guide's configuration.
func startGuideNode(t *testing.T) (*nodetest.Node, map[string]string) {
	t.Helper()
	disks := makeDisks(t, "disk01", "disk02")
	return nodetest.Start(t, fill(guideConf, disks), nodetest.Options{}), disks
}

// testCtx bounds a test so a hung target fails it instead of the package.
func testCtx(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// dial logs in and closes the session when the test ends.
func dial(t testing.TB, ctx context.Context, cfg initiator.Config) *initiator.Session {
	t.Helper()
	s, err := initiator.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("login to %s at %s: %v", cfg.TargetName, cfg.Addr, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// writeVerify writes data at lba, reads it back through the session and
// compares; when path is set it also checks the backing file, which catches
// a target that reads and writes the same wrong place.
func writeVerify(ctx context.Context, s *initiator.Session, lun, lba uint64, data []byte, path string) error {
	blocks := uint32(len(data) / blockSize)
	if err := s.Write(ctx, lun, lba, blocks, blockSize, data); err != nil {
		return err
	}
	got := make([]byte, len(data))
	if err := s.Read(ctx, lun, lba, blocks, blockSize, got); err != nil {
		return err
	}
	if i := firstDiff(got, data); i >= 0 {
		return fmt.Errorf("LUN %d LBA %d+%d: read back differs from what was written at byte %d", lun, lba, blocks, i)
	}
	if path != "" {
		onDisk, err := readFileAt(path, int64(lba)*blockSize, len(data))
		if err != nil {
			return err
		}
		if i := firstDiff(onDisk, data); i >= 0 {
			return fmt.Errorf("LUN %d LBA %d+%d: backing file %s differs from what was written at byte %d", lun, lba, blocks, filepath.Base(path), i)
		}
	}
	return nil
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func readFileAt(path string, off int64, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("reading %s at %d: %w", path, off, err)
	}
	return buf, nil
}

// SCSI opcodes and sense codes the tests check.
const (
	opTestUnitReady = 0x00
	opReportLUNs    = 0xa0
	opWrite10       = 0x2a

	keyIllegalRequest = 0x05
	keyUnitAttention  = 0x06
)

type senseCode struct{ key, asc, ascq byte }

func (c senseCode) String() string {
	return fmt.Sprintf("sense key %#x ASC/ASCQ %02X/%02X", c.key, c.asc, c.ascq)
}

func senseOf(r initiator.Response) senseCode {
	e := initiator.SCSIError{Status: r.Status, Sense: r.Sense}
	k, a, q := e.SenseKey()
	return senseCode{k, a, q}
}

// tur sends one TEST UNIT READY without the initiator's unit attention
// retries, so the caller sees exactly what the target answered.
func tur(ctx context.Context, s *initiator.Session, lun uint64) (initiator.Response, error) {
	return s.Do(ctx, lun, []byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, nil)
}

// expectSense checks that the next command to lun fails with want.
func expectSense(t *testing.T, ctx context.Context, s *initiator.Session, lun uint64, want ...senseCode) {
	t.Helper()
	r, err := tur(ctx, s, lun)
	if err != nil {
		t.Fatalf("TEST UNIT READY LUN %d: %v", lun, err)
	}
	got := senseOf(r)
	if r.Status == initiator.StatusCheckCondition {
		for _, w := range want {
			if got == w {
				return
			}
		}
	}
	t.Fatalf("TEST UNIT READY LUN %d: status %#x, %v; want CHECK CONDITION with one of %v", lun, r.Status, got, want)
}

// reportLUNs issues REPORT LUNS and decodes the list (peripheral and flat
// space addressing).
func reportLUNs(ctx context.Context, s *initiator.Session) ([]uint64, error) {
	buf := make([]byte, 8+8*256)
	cdb := make([]byte, 12)
	cdb[0] = opReportLUNs
	binary.BigEndian.PutUint32(cdb[6:], uint32(len(buf)))
	r, err := s.Do(ctx, 0, cdb, nil, buf)
	if err != nil {
		return nil, err
	}
	if r.Status != initiator.StatusGood {
		return nil, fmt.Errorf("REPORT LUNS: status %#x, %v", r.Status, senseOf(r))
	}
	n := int(binary.BigEndian.Uint32(buf)) / 8
	if 8+8*n > r.DataInLen {
		return nil, fmt.Errorf("REPORT LUNS: list of %d LUNs in %d bytes", n, r.DataInLen)
	}
	luns := make([]uint64, 0, n)
	for i := range n {
		e := buf[8+8*i:]
		luns = append(luns, uint64(e[0]&0x3f)<<8|uint64(e[1]))
	}
	sort.Slice(luns, func(i, j int) bool { return luns[i] < luns[j] })
	return luns, nil
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitDone waits for a session to go down, as the target closing it does.
func waitDone(t testing.TB, s *initiator.Session, timeout time.Duration, what string) {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(timeout):
		t.Fatalf("%s: session still up after %v", what, timeout)
	}
}

// alive checks that the process has not exited.
func alive(t testing.TB, n *nodetest.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := n.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hatarget exited: %v", err)
	}
}

// acceptsLogins proves the node still serves: a fresh login, a command and
// a logout.
func acceptsLogins(t testing.TB, ctx context.Context, addr, target string) {
	t.Helper()
	s, err := initiator.Dial(ctx, initiator.Config{Addr: addr, TargetName: target, InitiatorName: "iqn.2024-01.io.hatarget:probe"})
	if err != nil {
		t.Fatalf("node no longer accepts logins: %v", err)
	}
	defer s.Close()
	if err := s.TestUnitReady(ctx, 0); err != nil {
		t.Fatalf("node accepts logins but not commands: %v", err)
	}
	if err := s.Logout(ctx); err != nil {
		t.Fatalf("logout: %v", err)
	}
}

// canListen reports whether host can be bound: 127.0.0.2 needs all of
// 127/8 routed to lo (Linux does, other systems may not), ::1 needs IPv6.
func canListen(host string) bool {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func loginError(err error) (*initiator.LoginError, bool) {
	var le *initiator.LoginError
	ok := errors.As(err, &le)
	return le, ok
}
