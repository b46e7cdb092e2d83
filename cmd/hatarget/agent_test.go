package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hatarget/hatarget/test/nodetest"
)

// TestAgentRefusesNewerDataDir: an agent whose data dir a newer release
// finalized fails naming that release, before it creates or changes
// anything in the directory (the state and storage directories included).
func TestAgentRefusesNewerDataDir(t *testing.T) {
	dir := t.TempDir()
	marker := `{"format": 99, "cluster_version": 99, "release": "v9.0.0", "updated": "2030-01-01T00:00:00Z"}`
	if err := os.WriteFile(filepath.Join(dir, "format.json"), []byte(marker), 0o600); err != nil {
		t.Fatal(err)
	}
	before := nodetest.TreeSums(t, dir)
	o := agentOptions{name: "n1", dataDir: dir, bind: "127.0.0.1"}
	r := &reloader{running: agentFlags(), level: new(slog.LevelVar), log: slog.New(slog.DiscardHandler), lookupEnv: os.LookupEnv}
	err := runAgent(t.Context(), o, slog.New(slog.DiscardHandler), new(strings.Builder), nil, r)
	if err == nil || !strings.Contains(err.Error(), "--data-dir") || !strings.Contains(err.Error(), "v9.0.0") {
		t.Fatalf("runAgent = %v; want a refusal of --data-dir naming release v9.0.0", err)
	}
	if got := exitStatus(err); got != exitConfig {
		t.Errorf("exit status %d for a newer data dir; want %d, which the unit does not restart on", got, exitConfig)
	}
	if after := nodetest.TreeSums(t, dir); !slices.Equal(after, before) {
		t.Errorf("the refused agent changed its data dir:\nbefore %q\nafter  %q", before, after)
	}
}
