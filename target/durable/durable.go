// Package durable replaces small files so that a crash leaves either the
// old content or the new one, never a mix or nothing: the state files of
// replication, reservations, the data dir's format marker and the files
// ctl commands save.
package durable

import (
	"os"
	"path/filepath"
)

// Replace writes data to a temporary file beside path (mode 0600),
// syncs it and renames it over path. The rename is durable only once the
// directory is synced: callers replacing several files sync it once
// (SyncDir); WriteFile does both.
func Replace(path string, data []byte) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*") // mode 0600
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// WriteFile is Replace followed by a sync of path's directory.
func WriteFile(path string, data []byte) error {
	if err := Replace(path, data); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir makes the entries of dir (a rename, a new file) durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
