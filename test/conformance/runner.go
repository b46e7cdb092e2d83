package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The tool's built-in initiator names, passed explicitly so a target that
// applies ACLs can be configured for exactly these two. The second one is
// used for the second session of the reservation and multipath tests.
const (
	Initiator1 = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test"
	Initiator2 = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2"
)

// DefaultFamilies are the test families run against a target: SCSI
// (commands) and iSCSI (protocol). ALL would repeat the SCSI suites and
// LINUX is for SG_IO devices.
var DefaultFamilies = []string{"SCSI", "iSCSI"}

// Tool is one iscsi-test-cu invocation.
type Tool struct {
	Path     string   // the iscsi-test-cu binary
	Families []string // test families to run
	// Tests, when set, narrows the run to these --test patterns (such as
	// "SCSI.ReadOnly*") within Families.
	Tests []string
	// Sanitize passes --allow-sanitize, for an LU opted in to SANITIZE.
	Sanitize bool
	// URLs are iscsi://host:port/iqn/lun; a second URL to the same LU
	// through another portal enables the multipath tests.
	URLs       []string
	Initiator  string
	Initiator2 string
}

// Args returns the tool's arguments.
//
// --test is given once with a comma-separated list because the tool keeps
// only the last --test it is given. --dataloss enables the write tests
// (the LU is scratch). --Verbose-scsi is what makes every skip visible:
// several skip messages are logged only at verbose level.
func (t Tool) Args() []string {
	tests := t.Tests
	if tests == nil {
		tests = t.Families
	}
	args := []string{
		"--dataloss",
		"--Verbose-scsi",
		"--test=" + strings.Join(tests, ","),
		"--initiator-name=" + t.Initiator,
		"--initiator-name-2=" + t.Initiator2,
	}
	if t.Sanitize {
		args = append(args, "--allow-sanitize")
	}
	return append(args, t.URLs...)
}

// Argv returns the full command line. When coreutils' stdbuf is available
// the tool is run with line-buffered output: its stdout is a pipe, so it
// would otherwise be block-buffered, and a killed run would lose the
// last few kilobytes, including which test was hanging.
func (t Tool) Argv() []string {
	argv := append([]string{t.Path}, t.Args()...)
	if sb, err := exec.LookPath("stdbuf"); err == nil {
		argv = append([]string{sb, "-oL", "-eL"}, argv...)
	}
	return argv
}

// ListTests runs `iscsi-test-cu --list` and parses it.
func ListTests(ctx context.Context, path string) (*Catalog, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, "--list")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s --list: %w: %s", path, err, strings.TrimSpace(stderr.String()))
	}
	return ParseList(&stdout)
}

// Outcome says how a run of the tool ended.
type Outcome struct {
	ExitCode int  // -1 when killed by a signal
	Stalled  bool // killed by the stall watchdog
	TimedOut bool // killed because ctx ended
	Elapsed  time.Duration
}

func (o Outcome) String() string {
	switch {
	case o.Stalled:
		return fmt.Sprintf("killed after %s: no output for the stall timeout (hung test?)", o.Elapsed.Round(time.Second))
	case o.TimedOut:
		return fmt.Sprintf("killed after %s: overall timeout", o.Elapsed.Round(time.Second))
	}
	return fmt.Sprintf("exited with status %d after %s", o.ExitCode, o.Elapsed.Round(time.Second))
}

var errStalled = errors.New("iscsi-test-cu produced no output within the stall timeout")

// Run runs the tool with stdout and stderr merged into out, in the order
// the tool wrote them. It is bounded twice: by ctx for the whole run, and
// by stall, the longest the tool may go without printing anything. The
// second bound exists because libiscsi's synchronous calls wait forever on
// a target that stops answering; with --Verbose-scsi every command is
// logged, so silence means a hang. stall must stay well above the tool's
// own per-command timeouts (a few seconds in the CmdSN/DataSN tests) so
// those still fire and are judged by the tool. The error is only for a
// tool that could not be started.
func (t Tool) Run(ctx context.Context, out io.Writer, stall time.Duration) (Outcome, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	// Checked here because under stdbuf a missing tool is only an exit
	// status of 127, easy to mistake for a crash of the tool.
	if _, err := exec.LookPath(t.Path); err != nil {
		return Outcome{}, fmt.Errorf("iscsi-test-cu: %w", err)
	}
	argv := t.Argv()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	w := &watchdogWriter{w: out, timer: time.AfterFunc(stall, func() { cancel(errStalled) }), stall: stall}
	defer w.stop()
	// One writer for both streams: os/exec then hands the child a single
	// pipe, so stderr lines land where they were written.
	cmd.Stdout, cmd.Stderr = w, w
	// Don't wait for ever on a grandchild holding the pipe after a kill.
	cmd.WaitDelay = 10 * time.Second

	start := time.Now()
	if err := cmd.Start(); err != nil {
		return Outcome{}, fmt.Errorf("starting %s: %w", strings.Join(argv, " "), err)
	}
	err := cmd.Wait()
	o := Outcome{ExitCode: cmd.ProcessState.ExitCode(), Elapsed: time.Since(start)}
	if ctx.Err() != nil {
		if errors.Is(context.Cause(ctx), errStalled) {
			o.Stalled = true
		} else {
			o.TimedOut = true
		}
	} else if err != nil && !errors.As(err, new(*exec.ExitError)) {
		return o, fmt.Errorf("waiting for iscsi-test-cu: %w", err)
	}
	return o, nil
}

// watchdogWriter re-arms the stall timer on every write.
type watchdogWriter struct {
	mu    sync.Mutex
	w     io.Writer
	timer *time.Timer
	stall time.Duration
}

func (w *watchdogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.timer.Reset(w.stall)
	return w.w.Write(p)
}

func (w *watchdogWriter) stop() { w.timer.Stop() }

// Daemon is a target process under test, in its own process group so
// stopping it cannot leave helpers behind.
type Daemon struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // valid once exited is closed
}

// StartDaemon starts argv with stdout and stderr appended to log.
func StartDaemon(argv []string, log io.Writer) (*Daemon, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", strings.Join(argv, " "), err)
	}
	d := &Daemon{cmd: cmd, exited: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		close(d.exited)
	}()
	return d, nil
}

// Exited is closed when the process has exited.
func (d *Daemon) Exited() <-chan struct{} { return d.exited }

// ExitErr is how the process ended; call only after Exited is closed.
func (d *Daemon) ExitErr() error { return d.err }

// Stop asks the process group to terminate, and kills it after grace.
// A grace of 0 kills at once, for daemons that ignore SIGTERM (tgtd does
// while it has targets configured).
func (d *Daemon) Stop(grace time.Duration) error {
	select {
	case <-d.exited:
		return d.err
	default:
	}
	pgid := -d.cmd.Process.Pid
	if grace > 0 {
		if err := syscall.Kill(pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("SIGTERM to process group %d: %w", -pgid, err)
		}
		select {
		case <-d.exited:
			return nil
		case <-time.After(grace):
		}
	}
	if err := syscall.Kill(pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("SIGKILL to process group %d: %w", -pgid, err)
	}
	<-d.exited
	if grace == 0 {
		return nil
	}
	return fmt.Errorf("did not exit within %s of SIGTERM; killed", grace)
}

// WaitListening polls until every addr accepts a TCP connection. It gives
// up when ctx ends or when the daemon exits, whichever is first, so a
// target that dies on start-up is reported at once rather than after the
// timeout.
func WaitListening(ctx context.Context, d *Daemon, addrs ...string) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	pending := addrs
	for {
		var still []string
		for _, a := range pending {
			conn, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", a)
			if err != nil {
				still = append(still, a)
				continue
			}
			conn.Close()
		}
		if pending = still; len(pending) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("target not accepting connections on %v: %w", pending, ctx.Err())
		case <-d.Exited():
			return fmt.Errorf("target exited before listening on %v: %v", pending, d.ExitErr())
		case <-tick.C:
		}
	}
}

// WriteSummary prints the verdict counts and every non-passing test.
func WriteSummary(w io.Writer, rep *Report, notRun []string) {
	c := rep.Counts()
	fmt.Fprintf(w, "%-8s %5s\n", "verdict", "count")
	for _, v := range []Verdict{Pass, Skip, Fail} {
		fmt.Fprintf(w, "%-8s %5d\n", v, c[v])
	}
	fmt.Fprintf(w, "%-8s %5d\n", "total", len(rep.Results))
	if len(notRun) > 0 {
		fmt.Fprintf(w, "%-8s %5d\n", "not run", len(notRun))
	}
	if rep.Summary != nil {
		s := rep.Summary
		fmt.Fprintf(w, "(CUnit's own count, which takes skips for passes: %d ran, %d passed, %d failed)\n", s.Ran, s.Passed, s.Failed)
	}
	var non []Result
	for _, r := range rep.Results {
		if r.Verdict != Pass {
			non = append(non, r)
		}
	}
	if len(non) > 0 {
		fmt.Fprintf(w, "\nnon-pass tests (%d):\n", len(non))
		for _, r := range non {
			fmt.Fprintf(w, "  %-4s  %-55s %s\n", r.Verdict, r.Name, r.Detail)
		}
	}
	if len(notRun) > 0 {
		fmt.Fprintf(w, "\ntests with no result (%d):\n", len(notRun))
		for _, n := range notRun {
			fmt.Fprintf(w, "  %s\n", n)
		}
	}
	if len(rep.SuiteInitFailed) > 0 {
		fmt.Fprintf(w, "\nsuites whose set-up (iSCSI login) failed, so none of their tests ran: %s\n",
			strings.Join(rep.SuiteInitFailed, ", "))
	}
	if len(rep.SuiteCleanupFailed) > 0 {
		fmt.Fprintf(w, "\nsuites whose clean-up failed: %s\n", strings.Join(rep.SuiteCleanupFailed, ", "))
	}
	if len(rep.Problems) > 0 {
		fmt.Fprintf(w, "\nproblems with the run:\n")
		for _, p := range rep.Problems {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
}

// writeFileAtomic replaces path without leaving a half-written file if the
// process dies mid-way (expected.txt is checked in).
func writeFileAtomic(path string, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("creating temp file for %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("closing temp file for %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("chmod temp file for %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replacing %s: %w", path, err)
	}
	return nil
}
