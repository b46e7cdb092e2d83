package target

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/hatarget/hatarget/target/backend"
)

// TestApplyRemovesDeletedCopies: a replicated device leaving the
// configuration (its LUN deleted) takes along the copy file the cluster
// created and its replication state; a file an operator gave stays.
func TestApplyRemovesDeletedCopies(t *testing.T) {
	stateDir, storage := t.TempDir(), t.TempDir()
	srv := New(Options{Logger: slog.New(slog.DiscardHandler), StateDir: stateDir,
		Replication: ReplicationOptions{Self: "a"}})
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	device := func(name string, own bool) Device {
		return Device{Name: name, OwnCopy: own, Backend: backend.Options{Handler: backend.FileIO,
			Path: filepath.Join(storage, name+".img"), Size: 1 << 20, BlockSize: 512}}
	}
	repl := Replication{Owner: "b", Epoch: 1}
	cfg := Config{
		Devices:     []Device{device("created", true), device("given", false), device("kept", true)},
		Replication: map[string]Replication{"created": repl, "given": repl, "kept": repl},
	}
	if err := srv.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"created", "given", "kept"} {
		fi, err := os.Stat(filepath.Join(stateDir, name+".repl", "activity"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("activity log of %s: %v, %v", name, fi, err)
		}
		if fi, err := os.Stat(filepath.Join(stateDir, name+".repl")); err != nil || fi.Mode().Perm() != 0o700 {
			t.Fatalf("state dir of %s: %v, %v", name, fi, err)
		}
	}
	cfg.Devices = cfg.Devices[2:]
	delete(cfg.Replication, "created")
	delete(cfg.Replication, "given")
	if err := srv.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	gone := func(path string) bool {
		_, err := os.Stat(path)
		return errors.Is(err, os.ErrNotExist)
	}
	switch {
	case !gone(filepath.Join(storage, "created.img")):
		t.Error("the copy the cluster created outlived its LUN")
	case gone(filepath.Join(storage, "given.img")):
		t.Error("a file the operator gave was deleted with its LUN")
	case gone(filepath.Join(storage, "kept.img")) || gone(filepath.Join(stateDir, "kept.repl", "activity")):
		t.Error("a LUN still configured lost its copy or state")
	}
	for _, name := range []string{"created", "given"} {
		if !gone(filepath.Join(stateDir, name+".repl")) {
			t.Errorf("the replication state of the deleted %s outlived it", name)
		}
	}
}
