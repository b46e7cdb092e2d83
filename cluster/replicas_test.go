package cluster_test

import (
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/cluster/clustertest"
)

// TestReplicaCommands runs the operator's replica commands against a
// three-node cluster: a LUN with two replicas has its non-owner copy
// replaced by the third node, which starts out of sync; a forced
// promotion is refused while the owner, in sync, is alive; once the owner
// dies the out-of-sync replica is forced to own the LUN.
func TestReplicaCommands(t *testing.T) {
	c := clustertest.New(t, 3, crashable)
	ctx := t.Context()
	const iqn = iqnPrefix + "replicas"
	cl := c.Client(1)
	must(cl.CreateTarget(ctx, api.CreateTarget{IQN: iqn})).get(t)
	must(cl.CreateLUN(ctx, api.CreateLUN{Target: iqn, LUN: 1, Name: "shared0", Size: 16 * mib, Shared: true, Path: filepath.Join(c.StorageDir, "shared0.img")})).get(t)
	lun := must(cl.CreateLUN(ctx, api.CreateLUN{Target: iqn, LUN: 0, Name: "r0", Size: 16 * mib, Replicas: 2})).get(t)
	owner, epoch := lun.Owner, lun.Epoch
	var other, outsider string
	for i := 1; i <= c.N(); i++ {
		name := fmt.Sprintf("n%d", i)
		switch {
		case name == owner:
		case slices.ContainsFunc(lun.Replicas, func(r api.Replica) bool { return r.Node == name }):
			other = name
		default:
			outsider = name
		}
	}
	if owner == "" || other == "" || outsider == "" {
		t.Fatalf("created LUN %+v: want an owner, another replica and a node without a copy", lun)
	}
	t.Logf("r0: owner %s, replica %s; %s holds no copy", owner, other, outsider)

	t.Run("replace-replica refusals", func(t *testing.T) {
		for _, tc := range []struct {
			name, lun, old, new string
			code                string
			status              int
			msg                 string
		}{
			{"the owner", "r0", owner, outsider, api.CodeConflict, http.StatusConflict, "move the LUN first (hatarget lun move r0 --to " + other + ")"},
			{"new already a replica", "r0", other, owner, api.CodeConflict, http.StatusConflict, "already a replica"},
			{"old not a replica", "r0", outsider, other, api.CodeConflict, http.StatusConflict, "holds no copy"},
			{"unknown new node", "r0", other, "n9", api.CodeNotFound, http.StatusNotFound, `no node "n9"`},
			{"shared storage", "shared0", other, outsider, api.CodeInvalid, http.StatusBadRequest, "not a replicated LUN"},
			{"unknown LUN", "nope", other, outsider, api.CodeNotFound, http.StatusNotFound, `no LUN named "nope"`},
			{"no new node", "r0", other, "", api.CodeInvalid, http.StatusBadRequest, "give old"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := c.Client(2).ReplaceReplica(ctx, tc.lun, tc.old, tc.new)
				apiErr(t, err, tc.code, tc.status)
				if !strings.Contains(err.Error(), tc.msg) {
					t.Errorf("message %q does not say %q", err, tc.msg)
				}
			})
		}
	})

	t.Run("replace-replica", func(t *testing.T) {
		got := must(c.Client(3).ReplaceReplica(ctx, "r0", other, outsider)).get(t)
		states := map[string]string{}
		for _, r := range got.Replicas {
			states[r.Node] = r.State
		}
		want := map[string]string{owner: api.ReplicaInSync, outsider: api.ReplicaOutOfSync}
		if fmt.Sprint(states) != fmt.Sprint(want) || got.Owner != owner || got.Epoch != epoch {
			t.Fatalf("after the replacement: owner %s epoch %d replicas %v; want owner %s epoch %d replicas %v",
				got.Owner, got.Epoch, states, owner, epoch, want)
		}
		for _, i := range c.Running() {
			why := clustertest.Poll(5*time.Second, func() (bool, string) {
				d := c.Node(i).State().Devices["r0"]
				wantReplicas := slices.Sorted(slices.Values([]string{owner, outsider}))
				if d == nil || !slices.Equal(d.Replicas, wantReplicas) || !slices.Equal(d.InSync, []string{owner}) {
					return false, fmt.Sprintf("n%d's state: %+v", i, d)
				}
				return true, ""
			})
			if why != "" {
				t.Errorf("replicas %s and %s, only %s in sync: %s", owner, outsider, owner, why)
			}
		}
		_, err := c.Client(1).ReplaceReplica(ctx, "r0", other, outsider)
		apiErr(t, err, api.CodeConflict, http.StatusConflict) // a retry: other is no replica any more
	})

	t.Run("force-promote refused while an in-sync replica is alive", func(t *testing.T) {
		for _, tc := range []struct {
			name, lun, to string
			dryRun        bool
			code          string
			status        int
			msg           string
		}{
			{"dry run", "r0", outsider, true, api.CodeConflict, http.StatusConflict, "node " + owner + " owns LUN r0, holds an in-sync copy and is "},
			{"for real", "r0", outsider, false, api.CodeConflict, http.StatusConflict, "nothing needs forcing"},
			{"the owner", "r0", owner, false, api.CodeConflict, http.StatusConflict, "already owns"},
			{"a node without a copy", "r0", other, false, api.CodeConflict, http.StatusConflict, "holds no copy"},
			{"unknown node", "r0", "n9", false, api.CodeNotFound, http.StatusNotFound, `no node "n9"`},
			{"shared storage", "shared0", outsider, true, api.CodeInvalid, http.StatusBadRequest, "not a replicated LUN"},
			{"unknown LUN", "nope", outsider, true, api.CodeNotFound, http.StatusNotFound, `no LUN named "nope"`},
			{"no node", "r0", "", false, api.CodeInvalid, http.StatusBadRequest, "give to"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := c.Client(2).ForcePromote(ctx, tc.lun, api.ForcePromote{To: tc.to, DryRun: tc.dryRun})
				apiErr(t, err, tc.code, tc.status)
				if !strings.Contains(err.Error(), tc.msg) {
					t.Errorf("message %q does not say %q", err, tc.msg)
				}
			})
		}
		got := must(c.Client(1).LUN(ctx, "r0")).get(t)
		if got.Owner != owner || got.Epoch != epoch {
			t.Errorf("refusals changed r0: owner %s epoch %d", got.Owner, got.Epoch)
		}
	})

	t.Run("force-promote once the in-sync copies are lost", func(t *testing.T) {
		c.Kill(t, c.Index(owner))
		c.WaitLeader(t, 15*time.Second)
		survivor := c.Client(c.Index(outsider))
		// The leader refuses until gossip has declared the owner dead and
		// its lease has run out.
		var plan *api.ForcePromoteResult
		why := clustertest.Poll(30*time.Second, func() (bool, string) {
			var err error
			plan, err = survivor.ForcePromote(ctx, "r0", api.ForcePromote{To: outsider, DryRun: true})
			return err == nil, fmt.Sprint(err)
		})
		if why != "" {
			t.Fatalf("the dry run is still refused with the owner %s dead: %s", owner, why)
		}
		if !plan.DryRun || !slices.Equal(plan.Overridden, []string{owner}) || plan.LUN.Owner != owner || plan.Generation != 0 {
			t.Fatalf("dry run: %+v; want %s overridden and r0 unchanged", plan, owner)
		}
		if got := must(survivor.LUN(ctx, "r0")).get(t); got.Owner != owner || got.Epoch != epoch {
			t.Fatalf("the dry run changed r0: owner %s epoch %d", got.Owner, got.Epoch)
		}

		res := must(survivor.ForcePromote(ctx, "r0", api.ForcePromote{To: outsider})).get(t)
		if res.DryRun || res.Generation == 0 || !slices.Equal(res.Overridden, []string{owner}) ||
			res.LUN.Owner != outsider || res.LUN.Epoch != epoch+1 {
			t.Fatalf("promotion: %+v; want owner %s at epoch %d over %s", res, outsider, epoch+1, owner)
		}
		states := map[string]string{}
		for _, r := range res.LUN.Replicas {
			states[r.Node] = r.State
			if r.Owner != (r.Node == outsider) {
				t.Errorf("replica %+v: only %s owns r0", r, outsider)
			}
		}
		if want := map[string]string{owner: api.ReplicaDown, outsider: api.ReplicaInSync}; fmt.Sprint(states) != fmt.Sprint(want) {
			t.Errorf("replicas after the promotion %v, want %v", states, want)
		}
		for _, i := range c.Running() {
			why := clustertest.Poll(5*time.Second, func() (bool, string) {
				d := c.Node(i).State().Devices["r0"]
				if d == nil || d.Owner != outsider || d.Epoch != epoch+1 || !slices.Equal(d.InSync, []string{outsider}) {
					return false, fmt.Sprintf("n%d's state: %+v", i, d)
				}
				return true, ""
			})
			if why != "" {
				t.Errorf("r0 owned by %s alone in sync: %s", outsider, why)
			}
		}
		_, err := survivor.ForcePromote(ctx, "r0", api.ForcePromote{To: outsider})
		apiErr(t, err, api.CodeConflict, http.StatusConflict) // a retry: it owns r0 now
	})
}
