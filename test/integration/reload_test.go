package integration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/target/iscsi/pdu"
	"github.com/hatarget/hatarget/test/nodetest"
)

// reportedLUNsChanged is UNIT ATTENTION / REPORTED LUNS DATA HAS CHANGED.
var reportedLUNsChanged = senseCode{keyUnitAttention, 0x3f, 0x0e}

// backgroundIO keeps a session writing and verifying data until stopped,
// to show that whatever else happens does not disturb it.
type backgroundIO struct {
	stop  chan struct{}
	done  chan struct{}
	count atomic.Int64
	err   error
}

func startBackgroundIO(t *testing.T, ctx context.Context, s *initiator.Session, lun uint64, path string, firstLBA uint64) *backgroundIO {
	t.Helper()
	b := &backgroundIO{stop: make(chan struct{}), done: make(chan struct{})}
	data := randomBytes(t, 64<<10)
	go func() {
		defer close(b.done)
		for i := uint64(0); ; i++ {
			select {
			case <-b.stop:
				return
			default:
			}
			data[0], data[1] = byte(i), byte(i>>8) // each pass writes new content
			lba := firstLBA + i%64*uint64(len(data)/blockSize)
			if err := writeVerify(ctx, s, lun, lba, data, path); err != nil {
				b.err = err
				return
			}
			b.count.Add(1)
		}
	}()
	t.Cleanup(b.halt)
	return b
}

func (b *backgroundIO) halt() {
	select {
	case <-b.stop:
	default:
		close(b.stop)
	}
	<-b.done
}

// progress waits until the background session completed n more passes,
// failing early if it broke.
func (b *backgroundIO) progress(t *testing.T, n int64) {
	t.Helper()
	target := b.count.Load() + n
	eventually(t, 20*time.Second, "background I/O to make progress", func() bool {
		select {
		case <-b.done:
			t.Fatalf("background session failed: %v", b.err)
		default:
		}
		return b.count.Load() >= target
	})
}

// finish stops the background session and reports its first error.
func (b *backgroundIO) finish(t *testing.T) {
	t.Helper()
	b.halt()
	if b.err != nil {
		t.Fatalf("background session: %v", b.err)
	}
}

// reloadAndWait rewrites the config, sends SIGHUP and waits for the node to
// log the outcome (the k-th such line, as reloads may repeat).
func reloadAndWait(t *testing.T, n *nodetest.Node, conf, logLine string) {
	t.Helper()
	before := strings.Count(n.Logs(), logLine)
	n.WriteConfig(conf)
	if err := n.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the node to log "+logLine, func() bool {
		return strings.Count(n.Logs(), logLine) > before
	})
}

const (
	reloadedLine     = "configuration reloaded"
	reloadFailedLine = "reload failed"
)

// TestReloadAddLUN adds a device and a LUN with SIGHUP while sessions run:
// they keep working, learn of the change from REPORTED LUNS DATA HAS
// CHANGED on their next command, and REPORT LUNS shows the new LUN.
func TestReloadAddLUN(t *testing.T) {
	t.Parallel()
	disks := makeDisks(t, "disk01", "disk02", "disk03")
	n := nodetest.Start(t, fill(guideConf, disks), nodetest.Options{})
	ctx := testCtx(t, 60*time.Second)

	s := dial(t, ctx, initiator.Config{Addr: n.Addr(), TargetName: guideIQN, InitiatorName: "iqn.2024-01.io.hatarget:watcher"})
	// The unit attentions of a new nexus (power on) are consumed first, so
	// that the next one must come from the reload.
	if err := s.TestUnitReady(ctx, 0); err != nil {
		t.Fatal(err)
	}
	busy := dial(t, ctx, initiator.Config{Addr: n.Addr(), TargetName: guideIQN, InitiatorName: "iqn.2024-01.io.hatarget:busy"})
	bg := startBackgroundIO(t, ctx, busy, 1, disks["disk02"], 0)
	bg.progress(t, 2)

	conf := handlerBlock(disks, "disk01", "disk02", "disk03") + `
TARGET_DRIVER iscsi {
    enabled 1
    TARGET ` + guideIQN + ` {
        LUN 0 disk01
        LUN 1 disk02
        LUN 2 disk03
        enabled 1
    }
}
`
	reloadAndWait(t, n, conf, reloadedLine)

	expectSense(t, ctx, s, 0, reportedLUNsChanged)
	luns, err := reportLUNs(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(luns, []uint64{0, 1, 2}) {
		t.Fatalf("REPORT LUNS after reload = %v, want [0 1 2]", luns)
	}
	// REPORT LUNS cleared the condition (SPC-4 6.33).
	if r, err := tur(ctx, s, 0); err != nil || r.Status != initiator.StatusGood {
		t.Fatalf("TEST UNIT READY after REPORT LUNS: %+v, %v", r, err)
	}
	if err := writeVerify(ctx, s, 2, 0, randomBytes(t, 256<<10), disks["disk03"]); err != nil {
		t.Fatalf("new LUN 2: %v", err)
	}
	bg.progress(t, 2)
	bg.finish(t)
}

// TestReloadRemoveTarget removes one of two targets with SIGHUP: its
// sessions are closed and new logins refused, the other target's sessions
// carry on.
func TestReloadRemoveTarget(t *testing.T) {
	t.Parallel()
	const keepIQN, dropIQN = "iqn.2024-01.io.hatarget:keep", "iqn.2024-01.io.hatarget:drop"
	disks := makeDisks(t, "disk01", "disk02")
	target := func(name, disk string) string {
		return fmt.Sprintf("    TARGET %s {\n        LUN 0 %s\n        enabled 1\n    }\n", name, disk)
	}
	both := handlerBlock(disks, "disk01", "disk02") + "TARGET_DRIVER iscsi {\n    enabled 1\n" +
		target(keepIQN, "disk01") + target(dropIQN, "disk02") + "}\n"
	n := nodetest.Start(t, both, nodetest.Options{})
	ctx := testCtx(t, 60*time.Second)

	keep := dial(t, ctx, initiator.Config{Addr: n.Addr(), TargetName: keepIQN})
	drop := dial(t, ctx, initiator.Config{Addr: n.Addr(), TargetName: dropIQN})
	for _, s := range []*initiator.Session{keep, drop} {
		if err := s.TestUnitReady(ctx, 0); err != nil {
			t.Fatal(err)
		}
	}
	bg := startBackgroundIO(t, ctx, keep, 0, disks["disk01"], 0)
	bg.progress(t, 2)

	reloadAndWait(t, n, handlerBlock(disks, "disk01", "disk02")+"TARGET_DRIVER iscsi {\n    enabled 1\n"+
		target(keepIQN, "disk01")+"}\n", reloadedLine)

	waitDone(t, drop, 10*time.Second, "session to the removed target")
	if _, err := initiator.Dial(ctx, initiator.Config{Addr: n.Addr(), TargetName: dropIQN}); err == nil {
		t.Error("login to the removed target succeeded")
	} else if le, ok := loginError(err); !ok || le.Detail != pdu.LoginDetailNotFound {
		t.Errorf("login to the removed target: %v; want status 0203 (target not found)", err)
	}
	bg.progress(t, 2)
	bg.finish(t)
	acceptsLogins(t, ctx, n.Addr(), keepIQN)
}

// TestReloadBrokenConfig sends SIGHUP after breaking the file in different
// ways: the error is logged with its position and the running
// configuration keeps serving, sessions and new logins alike.
func TestReloadBrokenConfig(t *testing.T) {
	t.Parallel()
	good := guideConf
	cases := []struct {
		name string
		// conf is the broken file; ^ marks where the error must point.
		conf string
		// want is what the log line must say besides the position.
		want string
	}{
		{"syntax: bad boolean", strings.Replace(good, "nv_cache 1", "nv_cache ^maybe", 1), "maybe"},
		{"syntax: unterminated block", strings.TrimSuffix(strings.Replace(good, "TARGET_DRIVER iscsi {", "TARGET_DRIVER iscsi ^{", 1), "}\n"), "unterminated"},
		{"LUN names an unknown device", strings.Replace(good, "        LUN 1 disk02", "        LUN 1 disk02\n        ^LUN 2 disk09", 1), "disk09"},
		{"missing backing file", strings.Replace(strings.Replace(good, "HANDLER vdisk_fileio {", "HANDLER vdisk_fileio {\n    DEVICE disk03 {\n        filename {{DIR}}/missing.img\n    }", 1),
			"        LUN 1 disk02", "        LUN 1 disk02\n        LUN 2 disk03", 1), "missing.img"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			disks := makeDisks(t, "disk01", "disk02")
			n := nodetest.Start(t, fill(good, disks), nodetest.Options{})
			ctx := testCtx(t, 60*time.Second)
			s := dial(t, ctx, initiator.Config{Addr: n.Addr(), TargetName: guideIQN})
			bg := startBackgroundIO(t, ctx, s, 1, disks["disk02"], 0)
			bg.progress(t, 1)

			conf, line, col := marked(fill(tc.conf, disks))
			reloadAndWait(t, n, conf, reloadFailedLine)
			logLine := lineWith(n.Logs(), reloadFailedLine)
			if !strings.Contains(logLine, tc.want) {
				t.Errorf("reload error does not mention %q:\n%s", tc.want, logLine)
			}
			if line > 0 && !strings.Contains(logLine, fmt.Sprintf("scst.conf:%d:%d: ", line, col)) {
				t.Errorf("reload error does not point at scst.conf:%d:%d:\n%s", line, col, logLine)
			}

			bg.progress(t, 2)
			luns, err := reportLUNs(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(luns, []uint64{0, 1}) {
				t.Errorf("REPORT LUNS after a failed reload = %v, want the old [0 1]", luns)
			}
			bg.finish(t)
			acceptsLogins(t, ctx, n.Addr(), guideIQN)
			alive(t, n)
		})
	}
}

// marked removes the ^ marker from conf and returns its 1-based line and
// byte column (0, 0 without a marker).
func marked(conf string) (string, int, int) {
	i := strings.IndexByte(conf, '^')
	if i < 0 {
		return conf, 0, 0
	}
	line := strings.Count(conf[:i], "\n") + 1
	col := i - strings.LastIndexByte(conf[:i], '\n')
	return conf[:i] + conf[i+1:], line, col
}

// lineWith returns the last log line containing s.
func lineWith(logs, s string) string {
	lines := strings.Split(logs, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], s) {
			return lines[i]
		}
	}
	return ""
}

// TestReloadGroupLUN adds a LUN to an initiator GROUP with SIGHUP: the
// group's members, whose LUN map changed, must be told with REPORTED LUNS
// DATA HAS CHANGED like everybody else.
func TestReloadGroupLUN(t *testing.T) {
	t.Parallel()
	disks := makeDisks(t, "disk01", "disk02", "disk03")
	conf := func(groupLUNs string) string {
		return handlerBlock(disks, "disk01", "disk02", "disk03") + `
TARGET_DRIVER iscsi {
    enabled 1
    TARGET ` + guideIQN + ` {
        LUN 0 disk01
        GROUP special {
` + groupLUNs + `
            INITIATOR iqn.x:special*
        }
        enabled 1
    }
}
`
	}
	n := nodetest.Start(t, conf("            LUN 0 disk02"), nodetest.Options{})
	ctx := testCtx(t, 60*time.Second)
	s := dial(t, ctx, initiator.Config{Addr: n.Addr(), TargetName: guideIQN, InitiatorName: "iqn.x:special-host"})
	if err := s.TestUnitReady(ctx, 0); err != nil {
		t.Fatal(err)
	}

	reloadAndWait(t, n, conf("            LUN 0 disk02\n            LUN 1 disk03"), reloadedLine)

	expectSense(t, ctx, s, 0, reportedLUNsChanged)
	luns, err := reportLUNs(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(luns, []uint64{0, 1}) {
		t.Fatalf("REPORT LUNS after reload = %v, want [0 1]", luns)
	}
}
