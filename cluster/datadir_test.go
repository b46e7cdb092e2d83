package cluster

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/hatarget/hatarget/fsm"
	"github.com/hatarget/hatarget/test/nodetest"
)

// markerJSON is a format.json as this binary would write it.
func markerJSON(format, clusterVersion uint16) string {
	return fmt.Sprintf(`{"format": %d, "cluster_version": %d, "release": "v9.9.9", "updated": "2026-11-26T12:00:00Z"}`,
		format, clusterVersion)
}

func TestParseMarker(t *testing.T) {
	updated := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		in   string
		want dataDirMarker
		err  string
	}{
		{"format 2", markerJSON(2, 2), dataDirMarker{Format: 2, ClusterVersion: 2, Release: "v9.9.9", Updated: updated}, ""},
		{"format 1", markerJSON(1, 1), dataDirMarker{Format: 1, ClusterVersion: 1, Release: "v9.9.9", Updated: updated}, ""},
		{"a newer format, with fields this binary does not know", `{"format": 3, "cluster_version": 4, "release": "v1.0.0", "store": "x"}`,
			dataDirMarker{Format: 3, ClusterVersion: 4, Release: "v1.0.0"}, ""},
		{"a newer format, other fields unreadable", `{"format": 7, "cluster_version": "x"}`, dataDirMarker{Format: 7}, ""},
		{"an unknown field in a known format", `{"format": 2, "cluster_version": 2, "release": "r", "updated": "2026-11-26T12:00:00Z", "x": 1}`,
			dataDirMarker{}, "unknown field"},
		{"data after it", markerJSON(2, 2) + `{}`, dataDirMarker{}, "after top-level value"},
		{"format 0", markerJSON(0, 1), dataDirMarker{}, "format 0 does not exist"},
		{"no format", `{"cluster_version": 1, "release": "r"}`, dataDirMarker{}, "format 0 does not exist"},
		{"cluster version 0", markerJSON(2, 0), dataDirMarker{}, "cluster version 0"},
		{"no release", `{"format": 2, "cluster_version": 2, "updated": "2026-11-26T12:00:00Z"}`, dataDirMarker{}, "no release"},
		{"a format out of range", `{"format": 70000}`, dataDirMarker{}, "not a format marker"},
		{"not JSON", "format=2", dataDirMarker{}, "not a format marker"},
		{"empty", "", dataDirMarker{}, "not a format marker"},
		{"too large", `{"format": 2, "release": "` + strings.Repeat("x", markerMaxSize) + `"}`, dataDirMarker{}, "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMarker([]byte(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("parseMarker = %+v, %v; want an error with %q", got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseMarker = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestMarkerCheck(t *testing.T) {
	tests := []struct {
		name string
		m    dataDirMarker
		want []string // in the refusal; none: accepted
	}{
		{"unmarked", unmarkedDir, nil},
		{"this binary's newest", dataDirMarker{Format: raftStoreFormat, ClusterVersion: fsm.ClusterVersion, Release: "r"}, nil},
		{"a newer format", dataDirMarker{Format: raftStoreFormat + 1, ClusterVersion: fsm.ClusterVersion, Release: "v1.2.3"},
			[]string{"/d", "release v1.2.3", "run v1.2.3 or a later release", "Nothing was changed"}},
		{"a newer cluster version", dataDirMarker{Format: raftStoreFormat, ClusterVersion: fsm.ClusterVersion + 1, Release: "v1.2.3",
			Updated: time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)},
			[]string{fmt.Sprintf("cluster version %d", fsm.ClusterVersion+1), "release v1.2.3 on 2027-01-02T03:04:05Z"}},
		{"a newer format from an unknown release", dataDirMarker{Format: raftStoreFormat + 1}, []string{"written by a newer release", "run a newer release"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.m.check("/d")
			if (err != nil) != (tt.want != nil) {
				t.Fatalf("check = %v; want refused %v", err, tt.want != nil)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("refusal %q lacks %q", err, w)
				}
			}
		})
	}
}

// FuzzParseMarker: the parser never panics, and what it accepts in a
// format this binary knows survives writing and reading again.
func FuzzParseMarker(f *testing.F) {
	f.Add([]byte(markerJSON(2, 2)))
	f.Add([]byte(markerJSON(1, 1)))
	f.Add([]byte(`{"format": 3, "cluster_version": 4, "release": "v1", "new": [1]}`))
	f.Add([]byte(`{"format": 2, "cluster_version": 2, "release": "r", "updated": "2026-11-26T12:00:00+01:00"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseMarker(b)
		if err != nil || m.Format > raftStoreFormat {
			return
		}
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("marshalling %+v: %v", m, err)
		}
		again, err := parseMarker(out)
		if err != nil {
			t.Fatalf("%s parsed as %+v, whose encoding %s does not parse: %v", b, m, out, err)
		}
		if again.Format != m.Format || again.ClusterVersion != m.ClusterVersion || again.Release != m.Release || !again.Updated.Equal(m.Updated) {
			t.Fatalf("round trip of %s: %+v, then %+v", b, m, again)
		}
	})
}

// entry is one file or directory of a data directory in a test: a
// directory when content is "/".
type entry struct{ path, content string }

const dirEntry = "/"

func writeTree(t *testing.T, root string, entries []entry) {
	t.Helper()
	for _, e := range entries {
		p := filepath.Join(root, e.path)
		var err error
		if e.content == dirEntry {
			err = os.MkdirAll(p, 0o700)
		} else if err = os.MkdirAll(filepath.Dir(p), 0o700); err == nil {
			err = os.WriteFile(p, []byte(e.content), 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// layoutOf summarises the Raft directory and the marker as the tests
// compare them: each entry of raft/ as name, "file" or "dir", and a
// file's content; the guard's README as "README"; the marker's format.
func layoutOf(t *testing.T, dataDir string) []string {
	t.Helper()
	var out []string
	raftDir := filepath.Join(dataDir, raftDirName)
	ents, err := os.ReadDir(raftDir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range ents {
		p := filepath.Join(raftDir, e.Name())
		if e.IsDir() {
			kids, _ := os.ReadDir(p)
			names := []string{}
			for _, k := range kids {
				names = append(names, k.Name())
			}
			out = append(out, e.Name()+" dir "+strings.Join(names, ","))
			continue
		}
		b, _ := os.ReadFile(p)
		out = append(out, e.Name()+" file "+string(b))
	}
	m, err := readMarker(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	return append(out, fmt.Sprintf("format %d cluster version %d", m.Format, m.ClusterVersion))
}

func dataDirNode(dataDir string) *Node {
	return &Node{cfg: Config{DataDir: dataDir, Version: "v-test"}, log: slog.New(slog.DiscardHandler)}
}

// TestOpenRaftDir: what a start finds in the data directory, and what it
// leaves there before it opens the Raft store: the store's path in the
// directory's layout, the end of an interrupted migration, or a refusal
// that changes nothing at all.
func TestOpenRaftDir(t *testing.T) {
	const store = "the log"
	migrated := []string{"raft.db dir README", "store.db file " + store, "format 2 cluster version 2"}
	tests := []struct {
		name   string
		before []entry // nil: the data directory does not exist
		store  string  // the path openRaftDir returns, under raft/
		after  []string
		err    string // the refusal; the directory must then be unchanged
	}{
		{name: "fresh", store: "raft.db", after: []string{"format 1 cluster version 1"}},
		{name: "v0.1.0's layout", before: []entry{{"raft/raft.db", store}, {"raft/snapshots", dirEntry}}, store: "raft.db",
			after: []string{"raft.db file " + store, "snapshots dir ", "format 1 cluster version 1"}},
		{name: "format 1 marked", before: []entry{{markerFile, markerJSON(1, 1)}, {"raft/raft.db", store}}, store: "raft.db",
			after: []string{"raft.db file " + store, "format 1 cluster version 1"}},
		{name: "migrated", before: []entry{{markerFile, markerJSON(2, 2)}, {"raft/store.db", store}, {"raft/raft.db/README", "x"}},
			store: "store.db", after: migrated},
		{name: "interrupted before the store moved", before: []entry{{markerFile, markerJSON(2, 2)}, {"raft/raft.db", store}},
			store: "store.db", after: migrated},
		{name: "interrupted while the guard was made", before: []entry{{markerFile, markerJSON(2, 2)}, {"raft/raft.db", store},
			{"raft/" + guardTempName + "/.README.tmp-1", "half"}}, store: "store.db", after: migrated},
		{name: "interrupted before the guard was in place", before: []entry{{markerFile, markerJSON(2, 2)}, {"raft/store.db", store},
			{"raft/" + guardTempName + "/README", "x"}}, store: "store.db", after: migrated},
		{name: "format 2 without a store", before: []entry{{markerFile, markerJSON(2, 2)}}, store: "store.db",
			after: []string{"raft.db dir README", "format 2 cluster version 2"}},
		{name: "two stores", before: []entry{{markerFile, markerJSON(2, 2)}, {"raft/raft.db", store}, {"raft/store.db", store}},
			err: "both"},
		{name: "a newer format", before: []entry{{markerFile, markerJSON(raftStoreFormat+1, fsm.ClusterVersion)}, {"raft/store.db", store},
			{"raft/raft.db/README", "x"}, {"state", dirEntry}}, err: "Nothing was changed"},
		{name: "a newer cluster version", before: []entry{{markerFile, markerJSON(raftStoreFormat, fsm.ClusterVersion+1)},
			{"raft/raft.db", store}}, err: "Nothing was changed"},
		{name: "a newer format without the raft directory", before: []entry{{markerFile, markerJSON(raftStoreFormat+1, fsm.ClusterVersion+1)}},
			err: "Nothing was changed"},
		{name: "an unreadable marker", before: []entry{{markerFile, "{"}, {"raft/raft.db", store}}, err: "not a format marker"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			if tt.before != nil {
				writeTree(t, dir, tt.before)
			}
			sums := nodetest.TreeSums(t, dir)
			path, err := startRaftDir(dataDirNode(dir))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("openRaftDir = %q, %v; want an error with %q", path, err, tt.err)
				}
				if after := nodetest.TreeSums(t, dir); !slices.Equal(after, sums) {
					t.Errorf("a refused start changed the data directory:\nbefore %q\nafter  %q", sums, after)
				}
				return
			}
			if err != nil {
				t.Fatalf("openRaftDir: %v", err)
			}
			if want := filepath.Join(dir, raftDirName, tt.store); path != want {
				t.Errorf("store at %s; want %s", path, want)
			}
			if got := layoutOf(t, dir); !slices.Equal(got, tt.after) {
				t.Errorf("layout\n %q\nwant\n %q", got, tt.after)
			}
		})
	}
}

// startRaftDir does what Start does before it opens the Raft store.
func startRaftDir(n *Node) (string, error) {
	m, err := loadMarker(n.cfg.DataDir)
	if err != nil {
		return "", err
	}
	return n.openRaftDir(m)
}

// TestMigrateDataDir: a node moves its data directory to the guarded
// layout while its Raft store is open and in use, once and only once the
// cluster version calls for it, and the store keeps everything written
// before and after the move.
func TestMigrateDataDir(t *testing.T) {
	dir := t.TempDir()
	n := dataDirNode(dir)
	path, err := startRaftDir(n)
	if err != nil {
		t.Fatal(err)
	}
	store, err := raftboltdb.New(raftboltdb.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	appendLog := func(s *raftboltdb.BoltStore, i uint64) {
		t.Helper()
		if err := s.StoreLog(&raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	appendLog(store, 1)

	for _, v := range []uint16{fsm.ClusterVersionBase, fsm.ClusterVersionBase} {
		if changed, err := n.migrateDataDir(v); changed || err != nil {
			t.Fatalf("migrating for cluster version %d: changed %v, %v; want nothing to do", v, changed, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, markerFile)); !os.IsNotExist(err) {
		t.Fatalf("format.json written for the base cluster version: %v", err)
	}

	if changed, err := n.migrateDataDir(2); !changed || err != nil {
		t.Fatalf("migrating for cluster version 2: changed %v, %v", changed, err)
	}
	m, err := readMarker(dir)
	if err != nil || m.Format != 2 || m.ClusterVersion != 2 || m.Release != "v-test" || m.Updated.IsZero() {
		t.Fatalf("marker %+v, %v", m, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, markerFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("format.json: %v, %v; want mode 0600", fi.Mode(), err)
	}
	readme, err := os.ReadFile(filepath.Join(dir, raftDirName, legacyStoreName, guardReadme))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"cluster\nversion 2", "hatarget v-test", "raft/store.db", "hatarget v0.1.0"} {
		if !strings.Contains(string(readme), want) {
			t.Errorf("the guard's README lacks %q:\n%s", want, readme)
		}
	}
	appendLog(store, 2) // through the file bbolt holds open, now named store.db

	if changed, err := n.migrateDataDir(2); changed || err != nil {
		t.Fatalf("migrating again: changed %v, %v; want nothing to do", changed, err)
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	path, err = startRaftDir(n)
	if err != nil || path != filepath.Join(dir, raftDirName, storeName) {
		t.Fatalf("restart: store %q, %v", path, err)
	}
	reopened, err := raftboltdb.New(raftboltdb.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	for i := uint64(1); i <= 2; i++ {
		var l raft.Log
		if err := reopened.GetLog(i, &l); err != nil || l.Data[0] != byte(i) {
			t.Errorf("log %d after the migration: %+v, %v", i, l, err)
		}
	}
	// The guard is what stops v0.1.0: bbolt cannot open it read-write.
	if s, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, raftDirName, legacyStoreName)}); err == nil {
		s.Close()
		t.Error("the guard opens as a Raft store")
	}
}

// TestStartRefusesNewerDataDir: a node refuses a data directory that a
// newer release finalized before it creates anything in it, the default
// storage directory included.
func TestStartRefusesNewerDataDir(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, []entry{{markerFile, markerJSON(raftStoreFormat+1, fsm.ClusterVersion+1)}, {"raft/store.db", "log"},
		{"raft/raft.db/README", "guard"}})
	sums := nodetest.TreeSums(t, dir)
	const addr = "127.0.0.1:1"
	n, err := Start(Config{Name: "n1", DataDir: dir, ISCSIAddr: addr, APIAddr: addr, RaftAddr: addr, GossipAddr: addr,
		Logger: slog.New(slog.DiscardHandler)})
	if err == nil {
		_ = n.Shutdown(t.Context())
		t.Fatal("a node started on a data directory of a newer format")
	}
	if !strings.Contains(err.Error(), "release v9.9.9") {
		t.Errorf("refusal %q does not name the release that wrote the directory", err)
	}
	if after := nodetest.TreeSums(t, dir); !slices.Equal(after, sums) {
		t.Errorf("a refused start changed the data directory:\nbefore %q\nafter  %q", sums, after)
	}
}
