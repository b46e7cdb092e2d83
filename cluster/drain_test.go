package cluster_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/cluster/clustertest"
	"github.com/hatarget/hatarget/fsm"
	"github.com/hatarget/hatarget/target"
)

// waitLog records what a wait reported it waits for.
type waitLog struct {
	mu sync.Mutex
	// seen holds every line reported.
	seen []string
}

func (l *waitLog) progress(waiting []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen = append(l.seen, waiting...)
}

// has waits until a reported line contains want.
func (l *waitLog) has(want string) string {
	return clustertest.Poll(10*time.Second, func() (bool, string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		return slices.ContainsFunc(l.seen, func(s string) bool { return strings.Contains(s, want) }), fmt.Sprintf("%q", l.seen)
	})
}

// setInSync changes a replicated LUN's in-sync set as its owner's
// dataplane does, at the LUN's current epoch.
func setInSync(t *testing.T, c *clustertest.Cluster, lun string, add, remove []string) {
	t.Helper()
	l := must(c.Client(1).LUN(t.Context(), lun)).get(t)
	req := fsm.SetInSync{Device: lun, Epoch: l.Epoch, Add: add, Remove: remove}
	if err := c.Client(1).Do(t.Context(), http.MethodPost, "/v1/internal/in-sync", req, nil); err != nil {
		t.Fatalf("in-sync set of %s: adding %v, removing %v: %v", lun, add, remove, err)
	}
}

// ownedBy lists the LUNs node owns in the leader's state.
func ownedBy(t *testing.T, c *clustertest.Cluster, node string) []string {
	var out []string
	s := c.Node(c.Leader(t)).State()
	for _, name := range fsm.SortedKeys(s.Devices) {
		if s.Devices[name].Owner == node {
			out = append(out, name)
		}
	}
	return out
}

// TestDrainAndRebalance walks a rolling upgrade's steps on three nodes:
// drain refuses a node holding a LUN's only copy; drain --wait of the
// owner of a replicated LUN whose other copy is resyncing waits for the
// resync, then moves the LUN; undrain --wait waits for the node's copy to
// be back in sync; draining the leader hands its leadership over; and
// rebalance gives the undrained node its share of LUNs back.
func TestDrainAndRebalance(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.Options{})
	ctx := t.Context()
	const iqn = iqnPrefix + "drain"
	cl := c.Client(1)
	must(cl.CreateTarget(ctx, api.CreateTarget{IQN: iqn})).get(t)
	for i := range 3 {
		name := fmt.Sprintf("s%d", i)
		must(cl.CreateLUN(ctx, api.CreateLUN{Target: iqn, LUN: uint64(i), Name: name, Size: 8 * mib, Shared: true,
			Path: filepath.Join(c.StorageDir, name+".img")})).get(t)
	}
	r0 := must(cl.CreateLUN(ctx, api.CreateLUN{Target: iqn, LUN: 3, Name: "r0", Size: 16 * mib, Replicas: 2})).get(t)
	owner, other := r0.Owner, r0.Replicas[0].Node
	if other == owner {
		other = r0.Replicas[1].Node
	}
	const poll = 100 * time.Millisecond

	t.Run("refused: the only copy", func(t *testing.T) {
		one := must(cl.CreateLUN(ctx, api.CreateLUN{Target: iqn, LUN: 4, Name: "one", Size: 8 * mib, Replicas: 1})).get(t)
		_, err := c.Client(2).DrainNode(ctx, one.Owner)
		apiErr(t, err, api.CodeConflict, http.StatusConflict)
		if want := "LUN one: " + one.Owner + " holds its only copy"; !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
		if c.Node(c.Leader(t)).State().Nodes[one.Owner].Drained {
			t.Errorf("the refused drain marked %s drained", one.Owner)
		}
		s := must(cl.StopSafety(ctx, one.Owner)).get(t)
		if s.Safe || !s.Blocked {
			t.Errorf("safety of %s: %+v; want blocked", one.Owner, s)
		}
		must(cl.DeleteLUN(ctx, iqn, 4)).get(t)
	})

	t.Run("drain --wait waits for a resync", func(t *testing.T) {
		setInSync(t, c, "r0", nil, []string{other})
		_, err := cl.DrainNode(ctx, owner)
		apiErr(t, err, api.CodeConflict, http.StatusConflict)
		if want := fmt.Sprintf("LUN r0: %s holds its only in-sync copy (%s is out of sync, no resync running)", owner, other); !strings.Contains(err.Error(), want) {
			t.Fatalf("refusal %q does not say %q", err, want)
		}

		dp := c.Member(c.Index(owner)).Dataplane
		dp.SetResync("r0", map[string]target.ResyncProgress{other: {Done: 4 * mib, Total: 16 * mib, State: "copying"}})
		res := must(cl.DrainNode(ctx, owner)).get(t)
		if !slices.Equal(res.Kept, []string{"r0"}) {
			t.Errorf("drain of %s: %+v; want r0 kept, its other copy out of sync", owner, res)
		}
		log := &waitLog{}
		done := make(chan error, 1)
		var safety *api.StopSafety
		go func() {
			var err error
			safety, err = cl.WaitStoppable(ctx, owner, false, poll, cl.StopSafety, log.progress)
			done <- err
		}()
		if why := log.has(fmt.Sprintf("LUN r0: %s holds its only in-sync copy (%s is out of sync, resyncing 25%%)", owner, other)); why != "" {
			t.Fatalf("drain --wait does not say it waits for the resync: %s", why)
		}
		select {
		case err := <-done:
			t.Fatalf("drain --wait returned while the resync runs: %v, %+v", err, safety)
		default:
		}
		dp.SetResync("r0", nil)
		setInSync(t, c, "r0", []string{other}, nil)
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("drain --wait did not return once the resync was done")
		}
		if !safety.Stoppable() {
			t.Errorf("drain --wait returned %+v", safety)
		}
		if got := ownedBy(t, c, owner); len(got) > 0 {
			t.Errorf("%s still owns %v", owner, got)
		}
		if l := must(cl.LUN(ctx, "r0")).get(t); l.Owner != other {
			t.Errorf("r0 is owned by %s; want %s, its other in-sync copy", l.Owner, other)
		}
	})

	t.Run("undrain --wait waits for the copy", func(t *testing.T) {
		setInSync(t, c, "r0", nil, []string{owner}) // it missed writes while stopped
		r := must(cl.UndrainNode(ctx, owner)).get(t)
		log := &waitLog{}
		done := make(chan error, 1)
		go func() { done <- cl.WaitCaughtUp(ctx, owner, r.Generation, poll, log.progress) }()
		if why := log.has(fmt.Sprintf("LUN r0: %s is out of sync; waiting for its owner %s to resync it", owner, other)); why != "" {
			t.Fatalf("undrain --wait does not say it waits for the copy: %s", why)
		}
		setInSync(t, c, "r0", []string{owner}, nil)
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("undrain --wait did not return once the copy was in sync")
		}
	})

	t.Run("drain --wait of the leader", func(t *testing.T) {
		leader := c.Leader(t)
		name := c.Member(leader).Name
		if l := must(cl.LUN(ctx, "s0")).get(t); l.Owner != name {
			must(cl.MoveLUN(ctx, "s0", name)).get(t)
		}
		via := c.Client(c.Followers(leader)[0]) // forwarded to the leader it drains
		res := must(via.DrainNode(ctx, name)).get(t)
		if res.Leader == "" || res.Leader == name || res.Moved["s0"] == "" {
			t.Errorf("drain of the leader %s: %+v; want s0 moved and leadership handed over", name, res)
		}
		s := must(via.WaitStoppable(ctx, name, false, poll, via.StopSafety, func([]string) {})).get(t)
		if !s.Stoppable() {
			t.Errorf("safety of the drained leader: %+v", s)
		}
		if now := c.WaitLeader(t, 10*time.Second); now == leader {
			t.Errorf("the drained node %s still leads", name)
		}
		if got := ownedBy(t, c, name); len(got) > 0 {
			t.Errorf("the drained leader %s still owns %v", name, got)
		}
		// Stopping it now costs nothing: the others keep serving.
		c.Stop(t, leader)
		c.WaitLeader(t, 10*time.Second)
		c.Restart(t, leader)
		r := must(cl.UndrainNode(ctx, name)).get(t)
		waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := cl.WaitCaughtUp(waitCtx, name, r.Generation, poll, func([]string) {}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("rebalance", func(t *testing.T) {
		var idle string
		for i := 1; i <= c.N(); i++ {
			if name := c.Member(i).Name; len(ownedBy(t, c, name)) == 0 {
				idle = name
			}
		}
		if idle == "" {
			t.Fatal("every node owns a LUN; want the undrained one to own none")
		}
		plan := must(cl.Rebalance(ctx, api.Rebalance{DryRun: true})).get(t)
		if len(plan.Moves) != 1 || plan.Moves[0].To != idle || !plan.DryRun {
			t.Fatalf("rebalance plan %+v; want one LUN moved to %s", plan, idle)
		}
		if got := ownedBy(t, c, idle); len(got) > 0 {
			t.Fatalf("the dry run moved %v", got)
		}
		res := must(cl.Rebalance(ctx, api.Rebalance{})).get(t)
		if !slices.Equal(res.Moves, plan.Moves) || res.Generation == 0 {
			t.Errorf("rebalance %+v; want the plan %+v", res, plan.Moves)
		}
		if got := ownedBy(t, c, idle); !slices.Equal(got, []string{plan.Moves[0].LUN}) {
			t.Errorf("%s owns %v after the rebalance; want %s", idle, got, plan.Moves[0].LUN)
		}
		if again := must(cl.Rebalance(ctx, api.Rebalance{DryRun: true})).get(t); len(again.Moves) != 0 {
			t.Errorf("a second rebalance plans %+v; want nothing", again.Moves)
		}
	})
}
