package durable

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	for _, content := range []string{"first", "second, longer than the first", ""} {
		if err := WriteFile(path, []byte(content)); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Fatalf("after writing %q: read %q, %v", content, got, err)
		}
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}

func TestWriteFileRelative(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := WriteFile("state", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile("state"); err != nil || string(got) != "x" {
		t.Fatalf("read %q, %v", got, err)
	}
}

func TestReplaceFailsInMissingDir(t *testing.T) {
	if err := Replace(filepath.Join(t.TempDir(), "missing", "state"), []byte("x")); err == nil {
		t.Fatal("Replace into a missing directory succeeded")
	}
}
