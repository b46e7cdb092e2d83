package cluster

// The data directory's layout is versioned (raftStoreFormat, versions.go)
// and recorded in DataDir/format.json; a directory without that file is in
// format 1, v0.1.0's.
//
// Format 2 exists to stop v0.1.0. That release knows nothing of cluster
// versions and skips the log entries it cannot decode, so on the data
// directory of a finalized cluster it would run on and silently diverge. It
// cannot be changed, and the first thing it writes is raft/raft.db: bbolt
// opens that path read-write, creating it, then creates its buckets. A
// directory at that path makes the open fail with EISDIR, and v0.1.0 exit
// naming the path, before it has changed anything. So format 2 keeps the
// store at raft/store.db and puts a directory at raft/raft.db, with a README
// for whoever follows the path from v0.1.0's error.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/hatarget/hatarget/fsm"
	"github.com/hatarget/hatarget/target/durable"
)

const (
	markerFile = "format.json"
	// markerMaxSize bounds what is read of format.json: it is a few dozen
	// bytes, and anything larger is not one this binary wrote.
	markerMaxSize = 4 << 10
	raftDirName   = "raft"
	// legacyStoreName is format 1's Raft store and format 2's guard.
	legacyStoreName = "raft.db"
	storeName       = "store.db"
	// guardTempName is where the guard is assembled before it is renamed
	// into place, so that raft.db is never a half-made directory.
	guardTempName = "raft.db.guard-tmp"
	guardReadme   = "README"
	// guardedFormat is the first format that guards the store.
	guardedFormat = 2
)

// dataDirMarker is the content of format.json. Fields are only ever added
// with a new Format, which older binaries refuse before decoding the rest.
type dataDirMarker struct {
	// Format is the layout (raftStoreFormat).
	Format uint16 `json:"format"`
	// ClusterVersion is the highest active cluster version this node has
	// seen: a binary that supports less cannot take part in the cluster.
	ClusterVersion uint16 `json:"cluster_version"`
	// Release wrote the file; refusals name it.
	Release string    `json:"release"`
	Updated time.Time `json:"updated"`
}

// unmarkedDir is what a directory without format.json is: v0.1.0's layout
// at its cluster version, or a fresh directory.
var unmarkedDir = dataDirMarker{Format: minRaftStoreFormat, ClusterVersion: fsm.ClusterVersionBase}

// storeFormatAt is the layout a data directory needs at cluster version v:
// the guarded one once the cluster is finalized past what v0.1.0 follows.
func storeFormatAt(v uint16) uint16 {
	if v > fsm.ClusterVersionBase {
		return guardedFormat
	}
	return minRaftStoreFormat
}

// parseMarker decodes format.json. The format is read first and leniently:
// a newer release may have added fields, and a refusal must still name the
// release that wrote them. A format this binary knows is decoded strictly.
func parseMarker(b []byte) (dataDirMarker, error) {
	if len(b) > markerMaxSize {
		return dataDirMarker{}, fmt.Errorf("%d bytes, more than a format marker holds", len(b))
	}
	var head struct {
		Format uint16 `json:"format"`
	}
	// Unmarshal also refuses anything after the object.
	if err := json.Unmarshal(b, &head); err != nil {
		return dataDirMarker{}, fmt.Errorf("not a format marker: %w", err)
	}
	if head.Format > raftStoreFormat {
		var newer dataDirMarker
		// Best effort: only the message uses the other fields.
		_ = json.Unmarshal(b, &newer)
		newer.Format = head.Format
		return newer, nil
	}
	var m dataDirMarker
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return dataDirMarker{}, fmt.Errorf("format %d marker: %w", head.Format, err)
	}
	switch {
	case m.Format < minRaftStoreFormat:
		return dataDirMarker{}, fmt.Errorf("format %d does not exist", m.Format)
	case m.ClusterVersion < fsm.ClusterVersionBase:
		return dataDirMarker{}, fmt.Errorf("cluster version %d does not exist", m.ClusterVersion)
	case m.Release == "":
		return dataDirMarker{}, errors.New("no release")
	}
	return m, nil
}

// check refuses a marker written for a layout or a cluster version this
// binary does not support.
func (m dataDirMarker) check(dir string) error {
	if m.Format <= raftStoreFormat && m.ClusterVersion <= fsm.ClusterVersion {
		return nil
	}
	by, run := "a newer release", "a newer release"
	if m.Release != "" {
		by = "release " + m.Release
		run = m.Release + " or a later release"
		if !m.Updated.IsZero() {
			by += " on " + m.Updated.UTC().Format(time.RFC3339)
		}
	}
	return newerDataDirError(fmt.Sprintf("data directory %s belongs to a cluster finalized at cluster version %d (data directory format %d, written by %s); "+
		"this binary supports cluster versions up to %d and formats up to %d and cannot take part: run %s. Nothing was changed",
		dir, m.ClusterVersion, m.Format, by, fsm.ClusterVersion, raftStoreFormat, run))
}

// ErrNewerDataDir is what a refusal of a data directory that a newer
// release finalized wraps: retrying cannot help, so the agent exits with
// a status its service manager does not restart on.
var ErrNewerDataDir = errors.New("data directory of a newer release")

type newerDataDirError string

func (e newerDataDirError) Error() string { return string(e) }
func (e newerDataDirError) Unwrap() error { return ErrNewerDataDir }

// readMarker reads format.json; a directory without one, or no directory
// at all, is unmarkedDir.
func readMarker(dir string) (dataDirMarker, error) {
	path := filepath.Join(dir, markerFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return unmarkedDir, nil
	}
	if err != nil {
		return dataDirMarker{}, fmt.Errorf("data directory format: %w", err)
	}
	m, err := parseMarker(b)
	if err != nil {
		return dataDirMarker{}, fmt.Errorf("data directory format: %s: %w", path, err)
	}
	return m, nil
}

// loadMarker is readMarker, refusing what this binary cannot use.
func loadMarker(dir string) (dataDirMarker, error) {
	m, err := readMarker(dir)
	if err != nil {
		return dataDirMarker{}, err
	}
	return m, m.check(dir)
}

// CheckDataDir returns an error when the data directory was written for a
// cluster version or a layout this binary does not support (a newer
// release finalized the cluster). It only reads: callers run it before
// they create or change anything in the directory, so that a refused
// start leaves it as it was.
func CheckDataDir(dir string) error {
	_, err := loadMarker(dir)
	return err
}

// writeMarker replaces format.json atomically and durably: a crash leaves
// the old marker or the new one.
func writeMarker(dir string, m dataDirMarker) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the format marker: %w", err)
	}
	if err := durable.WriteFile(filepath.Join(dir, markerFile), append(b, '\n')); err != nil {
		return fmt.Errorf("writing the format marker: %w", err)
	}
	return nil
}

// openRaftDir creates the Raft directory and returns the path of the Raft
// store in the layout m (loadMarker) records. A migration to the guarded
// layout that stopped half-way (a crash) is finished first: nothing may
// open the store before the guard is in place, or v0.1.0 could open it.
func (n *Node) openRaftDir(m dataDirMarker) (string, error) {
	dir := filepath.Join(n.cfg.DataDir, raftDirName)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("cluster: %w", err)
	}
	if m.Format < guardedFormat {
		return filepath.Join(dir, legacyStoreName), nil
	}
	finished, err := guardStore(dir, m)
	if err != nil {
		return "", fmt.Errorf("cluster: finishing the data directory's migration to format %d: %w", m.Format, err)
	}
	if finished {
		n.log.Warn("finished an interrupted data directory migration", "data_dir", n.cfg.DataDir, "format", m.Format)
	}
	return filepath.Join(dir, storeName), nil
}

// dataDirRetry is how long a failed migration waits before the next try.
const dataDirRetry = 10 * time.Second

// observeClusterVersion wakes dataDirLoop once the active cluster version
// may call for a migration. It runs on Raft's apply goroutine, which the
// migration's fsyncs must not hold up.
func (n *Node) observeClusterVersion(_ fsm.Command, _ any, s *fsm.State) {
	if s.ActiveVersion() > fsm.ClusterVersionBase {
		select {
		case n.dataDirWake <- struct{}{}:
		default:
		}
	}
}

// dataDirLoop migrates the data directory as soon as the active cluster
// version calls for it: at start, for a version restored from a snapshot,
// and whenever an applied entry raises it. Until it has, an older release
// could still open the directory.
func (n *Node) dataDirLoop() {
	var done uint16 // the version the directory is known to be migrated for
	var retry <-chan time.Time
	for {
		if v := n.fsm.State().ActiveVersion(); v > done && retry == nil {
			if _, err := n.migrateDataDir(v); err != nil {
				n.log.Error("migrating the data directory; retrying", "data_dir", n.cfg.DataDir, "cluster_version", v,
					"retry_in", dataDirRetry, "err", err)
				retry = time.After(dataDirRetry)
			} else {
				done = v
			}
		}
		select {
		case <-n.stop:
			return
		case <-n.dataDirWake:
		case <-retry:
			retry = nil
		}
	}
}

// migrateDataDir brings the data directory up to cluster version v: the
// marker first, so that a crash at any later step leaves a directory this
// binary knows how to finish (openRaftDir) rather than one a reader of the
// old layout would take as its own, then the guard. The Raft store stays
// open across the rename: bbolt and raft-boltdb work on the open file and
// never reopen it by path. It reports whether anything changed.
func (n *Node) migrateDataDir(v uint16) (bool, error) {
	m, err := loadMarker(n.cfg.DataDir)
	if err != nil {
		return false, err
	}
	want := m
	want.Format = max(m.Format, storeFormatAt(v))
	want.ClusterVersion = max(m.ClusterVersion, v)
	changed := want.Format != m.Format || want.ClusterVersion != m.ClusterVersion
	if changed {
		want.Release, want.Updated = n.cfg.Version, time.Now().UTC()
		if err := writeMarker(n.cfg.DataDir, want); err != nil {
			return false, err
		}
	}
	if want.Format >= guardedFormat {
		guarded, err := guardStore(filepath.Join(n.cfg.DataDir, raftDirName), want)
		if err != nil {
			return changed, err
		}
		changed = changed || guarded
	}
	if changed {
		n.log.Info("migrated the data directory", "data_dir", n.cfg.DataDir, "from_format", m.Format, "format", want.Format,
			"cluster_version", want.ClusterVersion)
	}
	return changed, nil
}

// guardStore brings the Raft directory into the guarded layout from
// wherever a migration stopped: the store renamed to store.db, then the
// guard, assembled aside, renamed to raft.db. Every state in between is
// one it finishes from, and raft.db is absent only between two renames.
// It reports whether it changed anything.
func guardStore(dir string, m dataDirMarker) (bool, error) {
	legacy, store := filepath.Join(dir, legacyStoreName), filepath.Join(dir, storeName)
	fi, err := os.Lstat(legacy)
	legacyExists := err == nil
	switch {
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return false, err
	case legacyExists && fi.IsDir():
		return false, nil // the guard is in place
	case legacyExists && !fi.Mode().IsRegular():
		return false, fmt.Errorf("%s is neither the Raft store nor its guard directory (%s)", legacy, fi.Mode().Type())
	case legacyExists:
		_, err := os.Lstat(store)
		if err == nil {
			// Two stores: one was put back by hand, or copied. Which
			// holds the node's log is for a person to decide.
			return false, fmt.Errorf("both %s and %s exist; keep the one holding this node's Raft log as %s and remove the other",
				legacy, store, store)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return false, err
		}
	}
	tmp := filepath.Join(dir, guardTempName)
	if err := makeGuard(tmp, m); err != nil {
		return false, err
	}
	if legacyExists {
		if err := os.Rename(legacy, store); err != nil {
			return false, fmt.Errorf("moving the Raft store: %w", err)
		}
	}
	if err := os.Rename(tmp, legacy); err != nil {
		return true, fmt.Errorf("putting the guard in place: %w", err)
	}
	return true, durable.SyncDir(dir)
}

// makeGuard builds the guard directory at tmp, replacing what an
// interrupted attempt left there.
func makeGuard(tmp string, m dataDirMarker) error {
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("removing an unfinished guard: %w", err)
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return fmt.Errorf("making the guard: %w", err)
	}
	if err := durable.WriteFile(filepath.Join(tmp, guardReadme), []byte(guardText(m))); err != nil {
		return fmt.Errorf("making the guard: %w", err)
	}
	return nil
}

// guardText is the guard's README: read by whoever follows the path an
// older release's error names.
func guardText(m dataDirMarker) string {
	return fmt.Sprintf(`This is not a Raft store: it stands in the way of older hatarget releases.

The cluster this data directory belongs to was finalized at cluster
version %[1]d, and hatarget %[2]s moved this node's data directory to
format %[3]d on %[4]s. The Raft log and stable store are now
raft/%[5]s, beside this directory; format.json, at the top of the data
directory, records the format and the cluster version.

Releases before data directory format %[6]d (hatarget v0.1.0) cannot use
this directory: they know nothing of cluster versions and would diverge
from the cluster. Their Raft store was this path, so they fail to open
it and stop before changing anything. Do not remove this directory. Run
%[2]s or a later release; `+"`hatarget version`"+` lists the cluster versions
("cluster") and data directory formats ("raftdb") a binary supports.
`, m.ClusterVersion, m.Release, m.Format, m.Updated.UTC().Format(time.RFC3339), storeName, guardedFormat)
}
