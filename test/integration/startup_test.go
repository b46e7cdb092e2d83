package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hatarget/hatarget/test/nodetest"
)

// TestStartupErrors starts `hatarget serve` on broken configurations: it
// must exit non-zero at once, and its stderr must say where the problem is.
func TestStartupErrors(t *testing.T) {
	t.Parallel()
	bin := nodetest.Binary(t)
	good := guideConf
	cases := []struct {
		name string
		// conf is written as broken.conf; ^ marks where the error must
		// point. Without a marker, want alone is checked.
		conf string
		want []string
	}{
		{"bad boolean", strings.Replace(good, "nv_cache 1", "nv_cache ^maybe", 1), []string{`"maybe"`}},
		{"unterminated block", strings.TrimSuffix(strings.Replace(good, "TARGET_DRIVER iscsi {", "TARGET_DRIVER iscsi ^{", 1), "}\n"), []string{"unterminated"}},
		{"LUN names an unknown device", strings.Replace(good, "        LUN 1 disk02", "        ^LUN 1 disk09", 1), []string{"disk09"}},
		{"bad negotiation value", strings.Replace(good, "        enabled 1\n    }\n}", "        MaxBurstLength ^100\n        enabled 1\n    }\n}", 1), []string{"MaxBurstLength"}},
		{"unknown handler", strings.Replace(good, "HANDLER vdisk_fileio", "HANDLER ^vdisk_teleport", 1), []string{"vdisk_teleport"}},
		{"missing backing file without size", strings.Replace(good, "{{disk02}}", "{{DIR}}/nowhere/disk02.img", 1),
			[]string{"disk02", "nowhere/disk02.img", "does not exist"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			disks := makeDisks(t, "disk01", "disk02")
			conf, line, col := marked(strings.ReplaceAll(fill(tc.conf, disks), "{{DIR}}", dir))
			path := filepath.Join(dir, "broken.conf")
			if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}
			stderr, err := runServe(t, bin, "--config", path)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("hatarget serve: %v; want a non-zero exit\n%s", err, stderr)
			}
			want := tc.want
			if line > 0 {
				want = append(want, fmt.Sprintf("broken.conf:%d:%d: ", line, col))
			}
			for _, w := range want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}

	t.Run("missing config file", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "absent.conf")
		stderr, err := runServe(t, bin, "--config", path)
		if err == nil || !strings.Contains(stderr, path) {
			t.Fatalf("hatarget serve: %v; want a non-zero exit naming %s\n%s", err, path, stderr)
		}
	})
}

// runServe runs `hatarget serve` on an ephemeral port, expecting it to exit
// by itself, and returns its stderr.
func runServe(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir()}, args...)...)
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("hatarget serve still running after 10s: it accepted a broken configuration\n%s", stderr.String())
	}
	return stderr.String(), err
}

// TestServerRunsWithSysmonPolling: hatarget serve re-executes itself, in
// the same process and under its own name, with the runtime setting that
// keeps Go's sysmon from sleeping between I/Os (cmd/hatarget/sysmon.go).
func TestServerRunsWithSysmonPolling(t *testing.T) {
	t.Parallel()
	n, _ := startGuideNode(t)
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", n.PID()))
	if err != nil {
		t.Fatal(err)
	}
	godebug := ""
	for _, kv := range strings.Split(string(env), "\x00") {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok {
			godebug = v
		}
	}
	if !slices.Contains(strings.Split(godebug, ","), "schedtrace=2147483647") {
		t.Errorf("the server runs with GODEBUG=%q, want schedtrace=2147483647 among its settings", godebug)
	}
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", n.PID())); err != nil || string(comm) != "hatarget\n" {
		t.Errorf("the server's process name: %q, %v; want hatarget", comm, err)
	}
}
