package nodetest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Release is a previous release of hatarget, built from this repository's
// history: the old binary of an upgrade test.
type Release struct {
	Version string
	Commit  string
	Bin     string
}

// PreviousRelease builds the release named in test/upgrade/previous-release
// (once per machine: the binary is kept in the temp dir under its commit)
// from a `git worktree` of that commit. A clone without that history (a
// shallow one) fails the test, saying so: the upgrade cannot be tested
// without the old binary.
func PreviousRelease(t testing.TB) Release {
	t.Helper()
	releaseOnce.Do(func() { release, releaseErr = buildPreviousRelease() })
	if releaseErr != nil {
		t.Fatal(releaseErr)
	}
	return release
}

var (
	releaseOnce sync.Once
	release     Release
	releaseErr  error
)

func buildPreviousRelease() (Release, error) {
	root := moduleRoot()
	r, err := readPreviousRelease(filepath.Join(root, "test", "upgrade", "previous-release"))
	if err != nil {
		return Release{}, err
	}
	r.Bin = filepath.Join(os.TempDir(), "hatarget-release-"+r.Commit, "hatarget")
	if _, err := os.Stat(r.Bin); err == nil {
		return r, nil
	}
	if out, err := git(root, "cat-file", "-e", r.Commit+"^{commit}"); err != nil {
		return Release{}, fmt.Errorf("release %s: commit %s is not in this clone (a shallow clone? `git fetch --unshallow`): %v\n%s",
			r.Version, r.Commit, err, out)
	}
	if err := os.MkdirAll(filepath.Dir(r.Bin), 0o755); err != nil {
		return Release{}, err
	}
	src, err := os.MkdirTemp(filepath.Dir(r.Bin), "src-")
	if err != nil {
		return Release{}, err
	}
	defer os.RemoveAll(src)
	if out, err := git(root, "worktree", "add", "--detach", "--force", src, r.Commit); err != nil {
		return Release{}, fmt.Errorf("release %s: git worktree add: %v\n%s", r.Version, err, out)
	}
	defer git(root, "worktree", "remove", "--force", src)
	tmp := r.Bin + fmt.Sprintf(".%d", os.Getpid())
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version="+r.Version, "-o", tmp, "./cmd/hatarget")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return Release{}, fmt.Errorf("release %s: go build: %v\n%s", r.Version, err, out)
	}
	// Another test process may be building it too: the rename is atomic.
	if err := os.Rename(tmp, r.Bin); err != nil {
		return Release{}, err
	}
	return r, nil
}

// readPreviousRelease reads the "<version> <commit>" line of path.
func readPreviousRelease(path string) (Release, error) {
	f, err := os.Open(path)
	if err != nil {
		return Release{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 || len(fields[1]) != 40 {
			return Release{}, fmt.Errorf("%s:%d: want \"<version> <40-hex commit>\", got %q", path, n, line)
		}
		return Release{Version: fields[0], Commit: fields[1]}, nil
	}
	if err := sc.Err(); err != nil {
		return Release{}, err
	}
	return Release{}, fmt.Errorf("%s: no release line", path)
}

func git(dir string, args ...string) ([]byte, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	return cmd.CombinedOutput()
}
