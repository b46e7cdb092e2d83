package cluster_test

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/cluster/clustertest"
	"github.com/hatarget/hatarget/fsm"
	"github.com/hatarget/hatarget/target"
)

// TestReplicatedByDefault: a LUN created without replicas or shared gets
// three replicas, each node's view of it (linearizable or stale) shows the
// resync progress that only its owner's dataplane knows, the metrics
// report its replicas on every node and their resyncs on the owner, and a
// view made while the owner does not answer says that the progress is
// unavailable instead of hanging.
func TestReplicatedByDefault(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.Options{})
	ctx := t.Context()
	const iqn = iqnPrefix + "default"
	cl := c.Client(1)
	must(cl.CreateTarget(ctx, api.CreateTarget{IQN: iqn})).get(t)

	t.Run("refusals", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			req  api.CreateLUN
			msg  string
		}{
			{"more replicas than nodes", api.CreateLUN{Replicas: 4, Size: mib}, "--replicas 4: want 1 to 3"},
			{"negative replicas", api.CreateLUN{Replicas: -1, Size: mib}, "--replicas -1: want 1 to 3"},
			{"shared without a path", api.CreateLUN{Shared: true, Size: mib}, "--shared needs --path"},
			{"shared and replicas", api.CreateLUN{Shared: true, Replicas: 2, Path: "/srv/x.img", Size: mib}, "not both"},
			{"replicated without a size", api.CreateLUN{Path: "/dev/sdx"}, "a replicated LUN needs --size"},
			{"nullio shared", api.CreateLUN{Handler: fsm.HandlerNullIO, Shared: true, Size: mib}, "nullio handler stores nothing"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tc.req.Target, tc.req.LUN, tc.req.Name = iqn, 9, "refused"
				_, err := c.Client(2).CreateLUN(ctx, tc.req)
				apiErr(t, err, api.CodeInvalid, http.StatusBadRequest)
				if !strings.Contains(err.Error(), tc.msg) {
					t.Errorf("message %q does not say %q", err, tc.msg)
				}
			})
		}
	})

	lun := must(cl.CreateLUN(ctx, api.CreateLUN{Target: iqn, LUN: 0, Name: "p0", Size: 16 * mib})).get(t)
	if len(lun.Replicas) != 3 || lun.Path != "p0.img" || lun.Owner == "" {
		t.Fatalf("created LUN %+v; want three replicas, an owner and a path under each replica's storage", lun)
	}
	owner := c.Index(lun.Owner)
	behind := lun.Replicas[0].Node
	if behind == lun.Owner {
		behind = lun.Replicas[1].Node
	}
	// The owner drops a replica that failed a write, then resyncs it.
	drop := fsm.SetInSync{Device: "p0", Epoch: lun.Epoch, Remove: []string{behind}}
	if err := cl.Do(ctx, http.MethodPost, "/v1/internal/in-sync", drop, nil); err != nil {
		t.Fatalf("dropping %s from the in-sync set: %v", behind, err)
	}
	c.Member(owner).Dataplane.SetResync("p0", map[string]target.ResyncProgress{
		behind: {Done: 4 * mib, Total: 16 * mib, Copied: 3 * mib, State: "copying"},
	})
	c.WaitGenerations(t, c.Node(c.Leader(t)).State().Index, 5*time.Second)
	t.Logf("p0: owner %s, %s out of sync and resyncing", lun.Owner, behind)

	t.Run("progress through every node", func(t *testing.T) {
		for i := 1; i <= c.N(); i++ {
			for _, path := range []string{"/v1/luns/p0", "/v1/luns/p0?stale=1"} {
				var l api.LUN
				if err := c.Client(i).Do(ctx, http.MethodGet, path, nil, &l); err != nil {
					t.Fatalf("GET %s through n%d: %v", path, i, err)
				}
				r := replicaOf(l, behind)
				if r.State != api.ReplicaResyncing || r.ResyncDone != 4*mib || r.ResyncTotal != 16*mib || r.ResyncPhase != "copying" || l.ResyncUnavailable != "" {
					t.Errorf("GET %s through n%d: %s is %+v (%q); want resyncing, 4 of 16 MiB, copying", path, i, behind, r, l.ResyncUnavailable)
				}
			}
		}
		var ls []api.LUN
		other := owner%c.N() + 1
		if err := c.Client(other).Do(ctx, http.MethodGet, "/v1/luns?stale=1", nil, &ls); err != nil {
			t.Fatal(err)
		}
		if len(ls) != 1 || replicaOf(ls[0], behind).State != api.ReplicaResyncing {
			t.Errorf("the list through n%d: %+v; want p0 with %s resyncing", other, ls, behind)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		for i := 1; i <= c.N(); i++ {
			got := scrape(t, c.Client(i))
			want := map[string]float64{
				`hatarget_lun_replicas{lun="p0"}`:         3,
				`hatarget_lun_replicas_in_sync{lun="p0"}`: 2,
			}
			if i == owner {
				replica := `lun="p0",node="` + behind + `"`
				want[`hatarget_lun_replica_state{`+replica+`,state="resyncing"}`] = 1
				want[`hatarget_lun_replica_state{`+replica+`,state="out-of-sync"}`] = 0
				want[`hatarget_lun_replica_state{lun="p0",node="`+lun.Owner+`",state="in-sync"}`] = 1
				want[`hatarget_lun_resync_done_bytes{`+replica+`}`] = float64(4 * mib)
				want[`hatarget_lun_resync_total_bytes{`+replica+`}`] = float64(16 * mib)
				want[`hatarget_lun_resync_copied_bytes_total{`+replica+`}`] = float64(3 * mib)
				want[`hatarget_lun_resync_phase{`+replica+`,phase="copying"}`] = 1
			}
			for series, v := range want {
				if g, ok := got[series]; !ok || g != v {
					t.Errorf("n%d: %s = %v (exported: %v); want %v", i, series, g, ok, v)
				}
			}
			if i != owner {
				for series := range got {
					if strings.HasPrefix(series, "hatarget_lun_replica_state{") || strings.HasPrefix(series, "hatarget_lun_resync_") {
						t.Errorf("n%d, which does not own p0, exports %s", i, series)
					}
				}
			}
		}
	})

	t.Run("owner not answering", func(t *testing.T) {
		release := c.Member(owner).Dataplane.HoldResync()
		defer release()
		other := owner%c.N() + 1
		start := time.Now()
		var l api.LUN
		if err := c.Client(other).Do(ctx, http.MethodGet, "/v1/luns/p0?stale=1", nil, &l); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		if r := replicaOf(l, behind); r.State != api.ReplicaOutOfSync || r.ResyncTotal != 0 {
			t.Errorf("%s is %+v; want out-of-sync, as Raft knows it, without progress", behind, r)
		}
		if want := fmt.Sprintf("progress unavailable: the owner %s did not answer", lun.Owner); !strings.Contains(l.ResyncUnavailable, want) {
			t.Errorf("resync_unavailable %q; want it to say %q", l.ResyncUnavailable, want)
		}
		if took > 3*time.Second {
			t.Errorf("the view took %s; want it bounded by the owner timeout", took)
		}
		t.Logf("through n%d while %s does not answer: %q after %s", other, lun.Owner, l.ResyncUnavailable, took.Round(time.Millisecond))
	})
}

func replicaOf(l api.LUN, node string) api.Replica {
	for _, r := range l.Replicas {
		if r.Node == node {
			return r
		}
	}
	return api.Replica{}
}

// scrape reads a node's /metrics into values by series, as the text
// format writes them: name{label="value",...}.
func scrape(t *testing.T, cl *api.Client) map[string]float64 {
	t.Helper()
	var body []byte
	if err := cl.Do(t.Context(), http.MethodGet, "/metrics", nil, &body); err != nil {
		t.Fatalf("scraping %s: %v", cl.Base, err)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}
