package nodetest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestPreviousRelease: the release the upgrade test starts from builds
// from this repository's history and reports its version.
func TestPreviousRelease(t *testing.T) {
	r := PreviousRelease(t)
	if _, err := os.Stat(r.Bin); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(r.Bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s version: %v\n%s", r.Bin, err, out)
	}
	if !strings.Contains(string(out), r.Version) {
		t.Fatalf("%s version says %q, want %s in it", r.Bin, out, r.Version)
	}
}
