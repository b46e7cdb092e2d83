package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hatarget/hatarget/fsm"
)

func TestLoadIncarnation(t *testing.T) {
	dir := t.TempDir()
	first, err := loadIncarnation(dir)
	if err != nil || !validIncarnation(first) {
		t.Fatalf("new data dir: %q, %v", first, err)
	}
	if again, err := loadIncarnation(dir); err != nil || again != first {
		t.Fatalf("the same data dir again: %q, %v; want %q", again, err, first)
	}
	if fi, err := os.Stat(filepath.Join(dir, incarnationFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("incarnation file: %v, %v; want mode 0600", fi, err)
	}
	wiped := t.TempDir()
	if other, err := loadIncarnation(wiped); err != nil || other == first {
		t.Fatalf("a wiped data dir: %q, %v; want a new incarnation", other, err)
	}
	if err := os.WriteFile(filepath.Join(dir, incarnationFile), []byte("not hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadIncarnation(dir); err == nil || !strings.Contains(err.Error(), "not an incarnation") {
		t.Errorf("a damaged incarnation file: %v; want a refusal", err)
	}
}

func TestReincarnated(t *testing.T) {
	rec := func(inc string) *fsm.Node { return &fsm.Node{Name: "n2", Incarnation: inc} }
	tests := []struct {
		name     string
		stored   *fsm.Node
		gossiped string
		want     bool
	}{
		{"same data dir", rec("00112233aabbccdd"), "00112233aabbccdd", false},
		{"wiped", rec("00112233aabbccdd"), "ffeeddccbbaa9988", true},
		{"record from before incarnations", rec(""), "ffeeddccbbaa9988", false},
		{"node of a release without them", rec("00112233aabbccdd"), "", false},
		{"not registered", nil, "ffeeddccbbaa9988", false},
	}
	for _, tt := range tests {
		if got := reincarnated(tt.stored, tt.gossiped); got != tt.want {
			t.Errorf("%s: %v; want %v", tt.name, got, tt.want)
		}
	}
}
