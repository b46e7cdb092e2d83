package cluster_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hatarget/hatarget/cluster"
	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/cluster/clustertest"
	"github.com/hatarget/hatarget/fsm"
)

// TestFinalizeUpgrade: finalize refuses, naming it, while a voter runs a
// release without the new cluster version or is down; the status shows the
// mixed versions meanwhile. Once every node runs the new release it raises
// the active version on every node, and a second finalize changes nothing.
func TestFinalizeUpgrade(t *testing.T) {
	const old = 3
	c := clustertest.New(t, 3, clustertest.Options{Configure: func(i int, cfg *cluster.Config) {
		if i == old {
			cfg.Protocol = fsm.ProtocolReplication
		}
	}})
	refused := func(why string) {
		t.Helper()
		_, err := c.Client(1).FinalizeUpgrade(t.Context())
		apiErr(t, err, api.CodeConflict, http.StatusConflict)
		if msg := err.Error(); !strings.Contains(msg, "n3 ("+why) || strings.Contains(msg, "n1") || strings.Contains(msg, "n2") {
			t.Errorf("refusal %q; want it to name n3 only, %s", msg, why)
		}
	}
	refused("release clustertest supports cluster version 1")

	st := must(c.Client(2).Status(t.Context())).get(t)
	if st.ClusterVersion != fsm.ClusterVersionBase || !st.MixedVersions {
		t.Errorf("status: cluster version %d, mixed %v; want %d, mixed", st.ClusterVersion, st.MixedVersions, fsm.ClusterVersionBase)
	}
	for _, n := range st.Nodes {
		if len(n.Protocols) == 0 {
			t.Errorf("status shows no protocol table for %s", n.Name)
		}
	}

	c.Stop(t, old)
	refused("dead")

	c.Member(old).Config.Protocol = 0 // the default: fsm.Protocol
	c.Restart(t, old)
	var res *api.FinalizeResult
	if why := clustertest.Poll(15*time.Second, func() (bool, string) {
		r, err := c.Client(old).FinalizeUpgrade(t.Context())
		if err != nil {
			return false, err.Error()
		}
		res = r
		return true, ""
	}); why != "" {
		t.Fatalf("finalize after the upgrade: %s", why)
	}
	if res.ClusterVersion != fsm.ClusterVersion || res.Previous != fsm.ClusterVersionBase || res.Generation == 0 {
		t.Errorf("finalize answered %+v", res)
	}
	if why := clustertest.Poll(5*time.Second, func() (bool, string) {
		for i := 1; i <= 3; i++ {
			if v := c.Node(i).State().ActiveVersion(); v != fsm.ClusterVersion {
				return false, fmt.Sprintf("n%d is at cluster version %d", i, v)
			}
		}
		return true, ""
	}); why != "" {
		t.Fatal(why)
	}
	st = must(c.Client(1).Status(t.Context())).get(t)
	if st.ClusterVersion != fsm.ClusterVersion || st.MixedVersions {
		t.Errorf("status after finalize: cluster version %d, mixed %v", st.ClusterVersion, st.MixedVersions)
	}
	again := must(c.Client(2).FinalizeUpgrade(t.Context())).get(t)
	if again.ClusterVersion != fsm.ClusterVersion || again.Previous != fsm.ClusterVersion {
		t.Errorf("second finalize answered %+v", again)
	}
}

// finalizedLayout reports why a node's data directory is not in the
// layout a finalized cluster needs, or "": format.json at format 2, the
// Raft store at raft/store.db and a directory with a README at
// raft/raft.db, where the previous release looks for its store.
func finalizedLayout(dataDir string) string {
	b, err := os.ReadFile(filepath.Join(dataDir, "format.json"))
	if err != nil {
		return err.Error()
	}
	var m struct {
		Format         uint16 `json:"format"`
		ClusterVersion uint16 `json:"cluster_version"`
	}
	if err := json.Unmarshal(b, &m); err != nil || m.Format != 2 || m.ClusterVersion != fsm.ClusterVersion {
		return fmt.Sprintf("format.json %s (%v)", b, err)
	}
	if fi, err := os.Stat(filepath.Join(dataDir, "raft", "store.db")); err != nil || !fi.Mode().IsRegular() {
		return fmt.Sprintf("raft/store.db: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "raft", "raft.db", "README")); err != nil {
		return fmt.Sprintf("the guard: %v", err)
	}
	return ""
}

// waitFinalized waits until every node runs at this binary's cluster
// version and has moved its data directory to the finalized layout.
func waitFinalized(t *testing.T, c *clustertest.Cluster, timeout time.Duration) {
	t.Helper()
	if why := clustertest.Poll(timeout, func() (bool, string) {
		for i := 1; i <= c.N(); i++ {
			if v := c.Node(i).State().ActiveVersion(); v != fsm.ClusterVersion {
				return false, fmt.Sprintf("n%d is at cluster version %d", i, v)
			}
			if why := finalizedLayout(c.Member(i).Config.DataDir); why != "" {
				return false, fmt.Sprintf("n%d's data directory: %s", i, why)
			}
		}
		return true, ""
	}); why != "" {
		t.Fatal(why)
	}
}

// TestFinalizeMigratesDataDir: finalize moves every running node's data
// directory to the layout the previous release cannot open, and the
// cluster restarts from it: after a restart of every node, the state
// written before the migration is there.
func TestFinalizeMigratesDataDir(t *testing.T) {
	const old = 3
	c := clustertest.New(t, 3, clustertest.Options{Configure: func(i int, cfg *cluster.Config) {
		if i == old {
			cfg.Protocol = fsm.ProtocolReplication
		}
	}})
	const iqn = "iqn.2025-01.com.example:before-finalize"
	ensureTarget(t, c, iqn)
	if why := finalizedLayout(c.Member(1).Config.DataDir); !strings.Contains(why, "no such file") {
		t.Fatalf("before finalize, n1's data directory is %q; want no format.json", why)
	}
	c.Stop(t, old)
	c.Member(old).Config.Protocol = 0 // the default: fsm.Protocol
	c.Restart(t, old)
	if why := clustertest.Poll(15*time.Second, func() (bool, string) {
		_, err := c.Client(2).FinalizeUpgrade(t.Context())
		return err == nil, fmt.Sprint(err)
	}); why != "" {
		t.Fatalf("finalize after the upgrade: %s", why)
	}
	waitFinalized(t, c, 10*time.Second)

	for i := 3; i >= 1; i-- {
		c.Stop(t, i)
	}
	for i := 1; i <= 3; i++ {
		c.Restart(t, i)
	}
	c.WaitLeader(t, clustertest.DefaultStartTimeout)
	for i := 1; i <= 3; i++ {
		select {
		case <-c.Node(i).Ready():
		case <-time.After(clustertest.DefaultStartTimeout):
			t.Fatalf("n%d has not caught up after the restart", i)
		}
		if s := c.Node(i).State(); s.Targets[iqn] == nil || s.ActiveVersion() != fsm.ClusterVersion {
			t.Errorf("n%d after the restart: target %s %v, cluster version %d", i, iqn, s.Targets[iqn] != nil, s.ActiveVersion())
		}
	}
	waitFinalized(t, c, time.Second)
}

// TestNewClusterStartsFinalized: a cluster bootstrapped by binaries that
// all support this cluster version starts at it, in the finalized data dir
// layout, without AutoFinalize.
func TestNewClusterStartsFinalized(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.Options{})
	waitFinalized(t, c, 10*time.Second)
}

// TestAutoFinalize: with AutoFinalize the leader waits, saying why, while
// a node runs a release without the new cluster version, and finalizes by
// itself once that node is upgraded.
func TestAutoFinalize(t *testing.T) {
	const old = 3
	c := clustertest.New(t, 3, clustertest.Options{Configure: func(i int, cfg *cluster.Config) {
		cfg.AutoFinalize = true
		if i == old {
			cfg.Protocol = fsm.ProtocolReplication
		}
	}})
	if why := clustertest.Poll(10*time.Second, func() (bool, string) {
		return strings.Contains(c.Logs(), "auto-finalize is waiting"), "the leader never said why it does not finalize"
	}); why != "" {
		t.Fatal(why)
	}
	for i := 1; i <= 3; i++ {
		if v := c.Node(i).State().ActiveVersion(); v != fsm.ClusterVersionBase {
			t.Fatalf("n%d is at cluster version %d while n%d runs a release without it", i, v, old)
		}
	}

	c.Stop(t, old)
	c.Member(old).Config.Protocol = 0 // the default: fsm.Protocol
	c.Restart(t, old)
	waitFinalized(t, c, 20*time.Second)
	if !strings.Contains(c.Logs(), "finalized the upgrade (auto-finalize)") {
		t.Error("the leader did not log that it finalized")
	}
}
