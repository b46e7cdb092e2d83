package nodetest

import (
	"os/exec"
	"testing"
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
