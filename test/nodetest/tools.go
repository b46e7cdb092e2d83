package nodetest

import (
	"bytes"
	"context"
	"os/exec"
	"testing"
	"time"
)

// LookTool finds an external initiator (libiscsi's tools, qemu-io) or skips
// the test, saying what to install; CI installs them all.
func LookTool(t *testing.T, name, pkg string) string {
	t.Helper()
	if testing.Short() {
		t.Skipf("%s interoperability skipped in -short mode", name)
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (apt-get install %s): interoperability NOT tested", name, pkg)
	}
	return p
}

// RunTool runs an external program with a deadline and returns its
// combined output.
func RunTool(ctx context.Context, path string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// Poll calls cond every interval until it holds or timeout passes, and
// reports whether it held: tests wait for conditions, never for time.
func Poll(timeout, every time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(every)
	}
}
