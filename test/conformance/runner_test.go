package conformance

import (
	"github.com/hatarget/hatarget/test/nodetest"

	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestToolArgs(t *testing.T) {
	tool := Tool{
		Path:       "/usr/bin/iscsi-test-cu",
		Families:   DefaultFamilies,
		URLs:       lunURLs(portalAddrs(3260), targetIQN, 0),
		Initiator:  Initiator1,
		Initiator2: Initiator2,
	}
	want := []string{
		"--dataloss",
		"--Verbose-scsi",
		"--test=SCSI,iSCSI",
		"--initiator-name=iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test",
		"--initiator-name-2=iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2",
		"iscsi://127.0.0.1:3260/iqn.2006-10.net.vlnb:tgt/0",
		"iscsi://127.0.0.2:3260/iqn.2006-10.net.vlnb:tgt/0",
	}
	if got := tool.Args(); !slices.Equal(got, want) {
		t.Errorf("Args() =\n%q\nwant\n%q", got, want)
	}
	argv := tool.Argv()
	if !slices.Equal(argv[len(argv)-len(want):], want) || !slices.Contains(argv, tool.Path) {
		t.Errorf("Argv() = %q does not end with the tool and its arguments", argv)
	}
}

func TestSCSTConfig(t *testing.T) {
	got := scstConfig("iqn.2006-10.net.vlnb:tgt", []string{"/d/disk01.img", "/d/disk02.img"}, nil)
	want := `HANDLER vdisk_fileio {
    DEVICE disk01 {
        filename /d/disk01.img
        nv_cache 1
    }
    DEVICE disk02 {
        filename /d/disk02.img
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
	if got != want {
		t.Errorf("scstConfig:\n%s\nwant:\n%s", got, want)
	}
}

// fakeTool writes a shell script standing in for iscsi-test-cu, so the
// watchdog and timeouts can be tested without a target. exec keeps the
// script a single process, like the real tool, so a kill reaches it all.
func fakeTool(t *testing.T, body string) Tool {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fake-iscsi-test-cu")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return Tool{Path: path, Families: DefaultFamilies}
}

func TestToolRun(t *testing.T) {
	cases := []struct {
		name         string
		script       string
		ctxTimeout   time.Duration
		stall        time.Duration
		wantStalled  bool
		wantTimedOut bool
		wantExit     int
		wantOut      []string
	}{
		{
			name:     "normal exit keeps the status and both streams",
			script:   `echo "Suite: Read10"; echo "error: to stderr" >&2; exit 3`,
			stall:    time.Minute,
			wantExit: 3,
			wantOut:  []string{"Suite: Read10", "error: to stderr"},
		},
		{
			name:        "silence beyond the stall timeout kills the tool",
			script:      `echo "  Test: Hangs ..."; exec sleep 60`,
			stall:       300 * time.Millisecond,
			wantStalled: true,
			wantExit:    -1,
			wantOut:     []string{"Test: Hangs"},
		},
		{
			name:         "steady output still ends at the overall timeout",
			script:       `while :; do echo tick; sleep 0.05; done`,
			ctxTimeout:   500 * time.Millisecond,
			stall:        time.Minute,
			wantTimedOut: true,
			wantExit:     -1,
			wantOut:      []string{"tick"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tool := fakeTool(t, tc.script)
			ctx := context.Background()
			if tc.ctxTimeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.ctxTimeout)
				defer cancel()
			}
			var out bytes.Buffer
			o, err := tool.Run(ctx, &out, tc.stall)
			if err != nil {
				t.Fatal(err)
			}
			if o.Stalled != tc.wantStalled || o.TimedOut != tc.wantTimedOut || o.ExitCode != tc.wantExit {
				t.Errorf("outcome %+v, want stalled=%v timedOut=%v exit=%d", o, tc.wantStalled, tc.wantTimedOut, tc.wantExit)
			}
			if o.Elapsed > 20*time.Second {
				t.Errorf("took %s: the kill did not take effect", o.Elapsed)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output %q lacks %q", out.String(), w)
				}
			}
		})
	}
}

func TestToolRunMissingBinary(t *testing.T) {
	tool := Tool{Path: filepath.Join(t.TempDir(), "absent"), Families: DefaultFamilies}
	if _, err := tool.Run(context.Background(), &bytes.Buffer{}, time.Minute); err == nil {
		t.Fatal("running a missing binary succeeded")
	}
}

func TestWaitListening(t *testing.T) {
	t.Run("listening", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		d, err := StartDaemon([]string{"sleep", "60"}, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Stop(time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := WaitListening(ctx, d, l.Addr().String()); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("daemon dies first", func(t *testing.T) {
		port := nodetest.FreePort(t, []string{"127.0.0.1"})
		d, err := StartDaemon([]string{"sh", "-c", "exit 7"}, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		start := time.Now()
		err = WaitListening(ctx, d, portalAddrs(port)[0])
		if err == nil || !strings.Contains(err.Error(), "exited") {
			t.Fatalf("error = %v, want the daemon's exit", err)
		}
		if time.Since(start) > 10*time.Second {
			t.Errorf("noticed the exit only after %s", time.Since(start))
		}
	})
}

func TestDaemonStop(t *testing.T) {
	// The script says "ready" once its trap is set, so the test cannot
	// signal it before it has started ignoring SIGTERM.
	const stubborn = "trap '' TERM; echo ready; while :; do sleep 0.1; done"
	cases := []struct {
		name    string
		argv    []string
		grace   time.Duration
		wantErr bool
	}{
		{"exits on SIGTERM", []string{"sh", "-c", "echo ready; exec sleep 60"}, 10 * time.Second, false},
		{"ignores SIGTERM, killed after grace", []string{"sh", "-c", stubborn}, 200 * time.Millisecond, true},
		{"grace 0 kills at once", []string{"sh", "-c", stubborn}, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			log := &nodetest.SyncBuffer{}
			d, err := StartDaemon(tc.argv, log)
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, 10*time.Second, func() bool { return strings.Contains(log.String(), "ready") })
			err = d.Stop(tc.grace)
			if (err != nil) != tc.wantErr {
				t.Errorf("Stop error = %v, want error %v", err, tc.wantErr)
			}
			select {
			case <-d.Exited():
			default:
				t.Error("process still running after Stop")
			}
		})
	}
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWriteSummary(t *testing.T) {
	rep := &Report{
		Results: []Result{
			{Name: "SCSI.Read10.Simple", Verdict: Pass},
			{Name: "SCSI.Unmap.Simple", Verdict: Skip, Detail: "UNMAP is not implemented."},
			{Name: "SCSI.Write10.Simple", Verdict: Fail, Detail: "WRITE10 failed"},
		},
		SuiteInitFailed: []string{"Read12"},
		Summary:         &RunSummary{Total: 3, Ran: 3, Passed: 2, Failed: 1},
		Problems:        []string{"something odd"},
	}
	var buf bytes.Buffer
	WriteSummary(&buf, rep, []string{"SCSI.Read16.Simple"})
	out := buf.String()
	for _, w := range []string{
		"pass         1", "skip         1", "fail         1", "total        3", "not run      1",
		"3 ran, 2 passed, 1 failed",
		"skip  SCSI.Unmap.Simple", "UNMAP is not implemented.",
		"fail  SCSI.Write10.Simple", "WRITE10 failed",
		"SCSI.Read16.Simple", "Read12", "something odd",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("summary lacks %q:\n%s", w, out)
		}
	}
}
