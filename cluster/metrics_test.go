package cluster_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/cluster/clustertest"
	"github.com/hatarget/hatarget/fsm"
)

// TestAlertMetrics checks the series that deploy/monitoring/alerts.yml
// relies on beyond the plain gauges: a LUN without an owner is listed
// with owner "" and no ALUA state (LUN unavailable); the leader counts a
// failover per LUN, every LUN's counter being exported at 0 beforehand
// (failover happened); and every node reports whether gossip sees each
// registered node alive (node down) and its release from Raft, so a node
// restarted with another release shows up everywhere (mixed versions).
func TestAlertMetrics(t *testing.T) {
	c := clustertest.New(t, 3, crashable)
	ctx := t.Context()
	const iqn = iqnPrefix + "alerts"
	cl := c.Client(1)
	must(cl.CreateTarget(ctx, api.CreateTarget{IQN: iqn})).get(t)

	t.Run("unowned LUN", func(t *testing.T) {
		for i := 1; i <= c.N(); i++ {
			must(cl.DrainNode(ctx, fmt.Sprintf("n%d", i))).get(t)
		}
		lun := must(cl.CreateLUN(ctx, api.CreateLUN{Target: iqn, LUN: 0, Name: "idle", Size: 8 * mib, Handler: fsm.HandlerNullIO})).get(t)
		if lun.Owner != "" {
			t.Fatalf("idle created with owner %s while every node is drained", lun.Owner)
		}
		c.WaitGenerations(t, c.Node(c.Leader(t)).State().Index, 5*time.Second)
		for i := 1; i <= c.N(); i++ {
			got := scrape(t, c.Client(i))
			if v, ok := got[`hatarget_lun_owner{lun="idle",owner=""}`]; !ok || v != 1 {
				t.Errorf("n%d: hatarget_lun_owner of the unowned idle = %v (exported: %v); want 1 with owner \"\"", i, v, ok)
			}
			for series := range got {
				if strings.HasPrefix(series, `hatarget_lun_alua_state{lun="idle",`) {
					t.Errorf("n%d exports %s for a LUN no node owns", i, series)
				}
			}
		}
		for i := 1; i <= c.N(); i++ {
			must(cl.UndrainNode(ctx, fmt.Sprintf("n%d", i))).get(t)
		}
		if why := clustertest.Poll(10*time.Second, func() (bool, string) {
			d := c.Node(1).State().Devices["idle"]
			return d != nil && d.Owner != "", fmt.Sprintf("idle: %+v", d)
		}); why != "" {
			t.Fatalf("idle got no owner once the nodes were undrained: %s", why)
		}
	})

	must(cl.CreateLUN(ctx, api.CreateLUN{Target: iqn, LUN: 1, Name: "fo", Size: 8 * mib, Handler: fsm.HandlerNullIO})).get(t)
	// The leader loop places a new LUN's owner after the create commits.
	var fo fsm.Device
	if why := clustertest.Poll(10*time.Second, func() (bool, string) {
		d := c.Node(c.Leader(t)).State().Devices["fo"]
		if d != nil {
			fo = *d
		}
		return d != nil && d.Owner != "", fmt.Sprintf("fo: %+v", d)
	}); why != "" {
		t.Fatalf("fo got no owner: %s", why)
	}
	gone := c.Index(fo.Owner)

	t.Run("failover counted per LUN", func(t *testing.T) {
		c.WaitGenerations(t, c.Node(c.Leader(t)).State().Index, 5*time.Second)
		for i := 1; i <= c.N(); i++ {
			got := scrape(t, c.Client(i))
			for _, lun := range []string{"idle", "fo"} {
				if v, ok := got[`hatarget_failovers_total{lun="`+lun+`"}`]; !ok || v != 0 {
					t.Errorf("n%d: hatarget_failovers_total of %s = %v (exported: %v); want 0 before any failover", i, lun, v, ok)
				}
			}
		}
		c.Kill(t, gone)
		if why := clustertest.Poll(30*time.Second, func() (bool, string) {
			leader := c.WaitLeader(t, 15*time.Second)
			d := c.Node(leader).State().Devices["fo"]
			return d != nil && d.Owner != fo.Owner, fmt.Sprintf("fo: %+v", d)
		}); why != "" {
			t.Fatalf("fo did not fail over from the killed %s: %s", fo.Owner, why)
		}
		// The leader counts the failover once its proposal returns, which
		// may be after the state shows it.
		var sums map[string]float64
		clustertest.Poll(5*time.Second, func() (bool, string) {
			sums = map[string]float64{}
			for _, i := range c.Running() {
				got := scrape(t, c.Client(i))
				for _, lun := range []string{"idle", "fo"} {
					sums[lun] += got[`hatarget_failovers_total{lun="`+lun+`"}`]
				}
			}
			return sums["fo"] >= 1, ""
		})
		for _, i := range c.Running() {
			got := scrape(t, c.Client(i))
			for j := 1; j <= c.N(); j++ {
				want := 1.0
				if j == gone {
					want = 0
				}
				series := fmt.Sprintf(`hatarget_cluster_node_alive{node="n%d"}`, j)
				if v, ok := got[series]; !ok || v != want {
					t.Errorf("n%d: %s = %v (exported: %v); want %v", i, series, v, ok, want)
				}
			}
		}
		// idle moved only if the killed node owned it too, which the
		// placement on the least loaded node rules out.
		if sums["fo"] != 1 || sums["idle"] != 0 {
			t.Errorf("failovers counted by the running nodes: %v; want fo 1, idle 0", sums)
		}
	})

	t.Run("releases", func(t *testing.T) {
		const next = "next"
		c.Member(gone).Config.Version = next
		c.Restart(t, gone)
		for _, i := range c.Running() {
			why := clustertest.Poll(15*time.Second, func() (bool, string) {
				got := scrape(t, c.Client(i))
				for j := 1; j <= c.N(); j++ {
					release := clustertest.DefaultVersion
					if j == gone {
						release = next
					}
					for _, series := range []string{
						fmt.Sprintf(`hatarget_cluster_node_release{node="n%d",release="%s"}`, j, release),
						fmt.Sprintf(`hatarget_cluster_node_alive{node="n%d"}`, j),
					} {
						if got[series] != 1 {
							return false, series + " is not 1"
						}
					}
				}
				n := 0
				for series := range got {
					if strings.HasPrefix(series, "hatarget_cluster_node_release{") {
						n++
					}
				}
				return n == c.N(), fmt.Sprintf("%d release series for %d nodes", n, c.N())
			})
			if why != "" {
				t.Errorf("n%d: %s", i, why)
			}
		}
	})
}
