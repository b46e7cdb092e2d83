package cluster_test

import (
	"fmt"
	"net/http"
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
