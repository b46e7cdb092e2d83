package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hatarget/hatarget/cluster"
	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/cluster/clustertest"
	"github.com/hatarget/hatarget/fsm"
	"github.com/hatarget/hatarget/target"
	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/scsi"
)

// The tests start their clusters one after the other: on a two-core
// machine under the race detector, two clusters at once delay Raft
// heartbeats enough to cause spurious elections.

const (
	iqnPrefix = "iqn.2025-01.com.example:"
	iqnA      = iqnPrefix + "a"
	mib       = int64(1) << 20
)

// crashable lets Kill stop a node without leadership transfer or gossip
// leave (see export_test.go).
var crashable = clustertest.Options{Crash: (*cluster.Node).CrashForTest}

// apiErr asserts that err is an API error with code and status.
func apiErr(t *testing.T, err error, code string, status int) {
	t.Helper()
	if err == nil {
		t.Fatalf("succeeded; want %s (%d)", code, status)
	}
	var e *api.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T %v; want an *api.Error %s (%d)", err, err, code, status)
	}
	if e.Code != code || e.Status != status {
		t.Fatalf("error %s (%d) %q; want %s (%d)", e.Code, e.Status, e.Message, code, status)
	}
	if strings.TrimSpace(e.Message) == "" {
		t.Errorf("error %s without a message", e.Code)
	}
}

// must carries a call's two results to get, which fails the test on an
// error: must(cl.Target(ctx, iqn)).get(t).
func must[T any](v T, err error) result[T] { return result[T]{v, err} }

type result[T any] struct {
	v   T
	err error
}

func (r result[T]) get(t *testing.T) T {
	t.Helper()
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.v
}

// ensureTarget creates a target unless it exists.
func ensureTarget(t *testing.T, c *clustertest.Cluster, iqn string) {
	t.Helper()
	_, err := c.Client(1).CreateTarget(t.Context(), api.CreateTarget{IQN: iqn})
	if err != nil && !api.IsCode(err, api.CodeConflict) {
		t.Fatalf("creating %s: %v", iqn, err)
	}
}

// serves reports whether cfg maps device name at LUN lun of target iqn.
func serves(cfg target.Config, iqn string, lun uint64, name string) bool {
	tg, ok := clustertest.FindTarget(cfg, iqn)
	if !ok {
		return false
	}
	if _, ok := clustertest.FindDevice(cfg, name); !ok {
		return false
	}
	return slices.ContainsFunc(tg.LUNs, func(l target.LUN) bool { return l.Number == lun && l.Device == name })
}

// waitAllServe waits (in parallel) until every running node's dataplane
// maps name at lun of iqn, and returns how long each took from since.
func waitAllServe(t *testing.T, c *clustertest.Cluster, iqn string, lun uint64, name string, since time.Time, timeout time.Duration) map[int]time.Duration {
	t.Helper()
	var mu sync.Mutex
	took := map[int]time.Duration{}
	var wg sync.WaitGroup
	for _, i := range c.Running() {
		wg.Go(func() {
			_, ok := c.Member(i).Dataplane.Wait(timeout, func(cfg target.Config) bool { return serves(cfg, iqn, lun, name) })
			d := time.Since(since)
			if !ok {
				t.Errorf("n%d's dataplane does not serve %s LUN %d (%s) after %s", i, iqn, lun, name, d.Round(time.Millisecond))
				return
			}
			mu.Lock()
			took[i] = d
			mu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return took
}

// TestCluster runs the checks that need an ordinary three-node cluster on
// one cluster, each subtest with its own targets and LUNs.
func TestCluster(t *testing.T) {
	start := time.Now()
	c := clustertest.New(t, 3, clustertest.Options{})
	t.Logf("three nodes bootstrapped, leader elected and all registered in %s", time.Since(start).Round(time.Millisecond))

	t.Run("bootstrap", func(t *testing.T) { testBootstrap(t, c) })
	t.Run("forwarded writes", func(t *testing.T) { testForwardedWrites(t, c) })
	t.Run("linearizable reads", func(t *testing.T) { testLinearizableReads(t, c) })
	t.Run("error codes", func(t *testing.T) { testErrorCodes(t, c) })
	t.Run("concurrent conflicting creates", func(t *testing.T) { testConcurrentCreates(t, c) })
	t.Run("reservations across nodes", func(t *testing.T) { testReservations(t, c) })
	t.Run("replicated LUN placement", func(t *testing.T) { testReplicatedPlacement(t, c) })

	for i := 1; i <= c.N(); i++ {
		if errs := c.Member(i).Dataplane.Errors(); len(errs) > 0 {
			t.Errorf("n%d's dataplane refused configurations: %v", i, errs)
		}
	}
}

// testBootstrap: BootstrapExpect 3 yields exactly one leader that every
// node names; all three nodes are registered with port groups 1..3; and
// once a target exists every dataplane serves it with every node's portal,
// tagged with that node's port group, and its own port group as the
// relative port, port group and portal group tag.
func testBootstrap(t *testing.T, c *clustertest.Cluster) {
	leaders, named := 0, map[string]bool{}
	for i := 1; i <= 3; i++ {
		ls := must(c.Local(i)).get(t)
		if ls.Name != fmt.Sprintf("n%d", i) {
			t.Errorf("n%d answers as %q", i, ls.Name)
		}
		if ls.RaftRole == "leader" {
			leaders++
		}
		named[ls.Leader] = true
		if ls.Protocol != fsm.Protocol {
			t.Errorf("n%d advertises protocol %d, want %d", i, ls.Protocol, fsm.Protocol)
		}
	}
	if leaders != 1 || len(named) != 1 {
		t.Fatalf("%d nodes lead and the nodes name %v; want exactly one leader everyone names", leaders, named)
	}

	var portals []target.Portal
	for i := 1; i <= 3; i++ {
		s := c.Node(i).State()
		if len(s.Nodes) != 3 {
			t.Fatalf("n%d's state has %d nodes, want 3: %v", i, len(s.Nodes), s.Nodes)
		}
		groups := map[uint16]string{}
		for name, rec := range s.Nodes {
			m := c.Member(c.Index(name))
			if rec.ISCSIAddr != m.Config.ISCSIAddr || rec.APIAddr != m.Config.APIAddr || rec.RaftAddr != m.Config.RaftAddr {
				t.Errorf("n%d's record of %s: %+v; want the node's addresses %s, %s, %s", i, name, rec, m.Config.ISCSIAddr, m.Config.APIAddr, m.Config.RaftAddr)
			}
			if rec.Protocol != fsm.Protocol || rec.Version != clustertest.DefaultVersion {
				t.Errorf("n%d's record of %s: version %q protocol %d", i, name, rec.Version, rec.Protocol)
			}
			if other, dup := groups[rec.PortGroup]; dup {
				t.Errorf("n%d's state: %s and %s share port group %d", i, name, other, rec.PortGroup)
			}
			groups[rec.PortGroup] = name
		}
		for pg := uint16(1); pg <= 3; pg++ {
			if groups[pg] == "" {
				t.Errorf("n%d's state: no node has port group %d (%v)", i, pg, groups)
			}
		}
		if i == 1 {
			for pg := uint16(1); pg <= 3; pg++ {
				portals = append(portals, target.Portal{Addr: s.Nodes[groups[pg]].ISCSIAddr, Tag: pg})
			}
		}
	}

	ensureTarget(t, c, iqnA)
	for i := 1; i <= 3; i++ {
		own := c.Node(i).State().Nodes[fmt.Sprintf("n%d", i)].PortGroup
		cfg, ok := c.Member(i).Dataplane.Wait(5*time.Second, func(cfg target.Config) bool {
			tg, ok := clustertest.FindTarget(cfg, iqnA)
			return ok && slices.Equal(tg.Portals, portals) && tg.RelativePort == own && tg.PortGroup == own && tg.PortalGroupTag == own
		})
		if !ok {
			t.Errorf("n%d's dataplane: latest configuration %+v; want %s with portals %v and its port group %d as relative port, port group and portal group tag",
				i, cfg, iqnA, portals, own)
		}
	}
}

// testForwardedWrites: a target and a sized LUN created through a follower
// reach every dataplane within a second of the call's return, and every
// node ends up serving the same generation.
func testForwardedWrites(t *testing.T, c *clustertest.Cluster) {
	leader := c.Leader(t)
	f := c.Followers(leader)[0]
	const iqn = iqnPrefix + "fwd"
	cl := c.Client(f)
	tg := must(cl.CreateTarget(t.Context(), api.CreateTarget{IQN: iqn, Alias: "forwarded"})).get(t)
	if tg.IQN != iqn || tg.Alias != "forwarded" || !tg.Enabled || len(tg.Portals) != 3 {
		t.Errorf("created target: %+v", tg)
	}
	wantPath := filepath.Join(c.StorageDir, "lun0.img")
	lun := must(cl.CreateLUN(t.Context(), api.CreateLUN{Target: iqn, LUN: 0, Name: "lun0", Size: 64 * mib, Shared: true, Path: wantPath})).get(t)
	returned := time.Now()
	if lun.Name != "lun0" || lun.Handler != fsm.HandlerFileIO || lun.Size != 64*mib || lun.Path != wantPath ||
		lun.Serial == "" || lun.NAA == "" || len(lun.Mappings) != 1 || lun.Mappings[0].Target != iqn {
		t.Errorf("created LUN: %+v; want fileio lun0, 64 MiB at %s, mapped to %s", lun, wantPath, iqn)
	}
	t.Logf("target and LUN created through follower n%d (leader n%d)", f, leader)

	took := waitAllServe(t, c, iqn, 0, "lun0", returned, 5*time.Second)
	for i, d := range took {
		t.Logf("n%d's dataplane serves the LUN %s after the call returned", i, d.Round(time.Millisecond))
		if d > time.Second {
			t.Errorf("n%d's dataplane took %s; want at most 1s", i, d.Round(time.Millisecond))
		}
		cfg, _ := c.Member(i).Dataplane.Latest()
		d, _ := clustertest.FindDevice(cfg, "lun0")
		if d.Backend.Handler != backend.FileIO || d.Backend.Path != wantPath || d.Backend.Size != 64*mib || d.Serial != lun.Serial || d.NAA != lun.NAA {
			t.Errorf("n%d's dataplane device: %+v; want the LUN as created (%+v)", i, d, lun)
		}
	}

	gen := c.WaitGenerations(t, c.Node(leader).State().Index, 5*time.Second)
	for i := 1; i <= 3; i++ {
		if idx := c.Node(i).State().Index; idx != gen {
			t.Errorf("n%d applied index %d, serves generation %d", i, idx, gen)
		}
	}
	t.Logf("every node serves generation %d", gen)
}

// testLinearizableReads: a read through any node right after a write
// through another one sees the write (reads go through the leader after a
// barrier, unless stale).
func testLinearizableReads(t *testing.T, c *clustertest.Cluster) {
	ctx := t.Context()
	for _, p := range [][2]int{{1, 3}, {3, 1}, {2, 3}, {1, 2}} {
		w, r := c.Client(p[0]), c.Client(p[1])
		for k := range 3 {
			iqn := fmt.Sprintf("%slin-%d-%d-%d", iqnPrefix, p[0], p[1], k)
			must(w.CreateTarget(ctx, api.CreateTarget{IQN: iqn, Alias: "v0"})).get(t)
			got, err := r.Target(ctx, iqn)
			if err != nil {
				t.Fatalf("created %s through n%d; reading it through n%d right after: %v", iqn, p[0], p[1], err)
			}
			if got.Alias != "v0" {
				t.Fatalf("read through n%d: alias %q, want v0", p[1], got.Alias)
			}
			alias := "v1"
			must(w.UpdateTarget(ctx, iqn, api.UpdateTarget{Alias: &alias})).get(t)
			list := must(r.Targets(ctx)).get(t)
			i := slices.IndexFunc(list, func(tg api.Target) bool { return tg.IQN == iqn })
			if i < 0 || list[i].Alias != "v1" {
				t.Fatalf("changed %s's alias to v1 through n%d; the list through n%d right after shows %+v", iqn, p[0], p[1], list)
			}
			must(w.DeleteTarget(ctx, iqn, false)).get(t)
			if _, err := r.Target(ctx, iqn); !api.IsCode(err, api.CodeNotFound) {
				t.Fatalf("deleted %s through n%d; reading it through n%d right after: %v, want not_found", iqn, p[0], p[1], err)
			}
		}
	}
}

// testErrorCodes: the state machine's refusals and the API's own checks
// map to stable codes and statuses, the same through the leader and
// through followers (whose requests are forwarded).
func testErrorCodes(t *testing.T, c *clustertest.Cluster) {
	const (
		iqn     = iqnPrefix + "errors"
		missing = iqnPrefix + "missing"
	)
	ensureTarget(t, c, iqn)
	must(c.Client(1).CreateLUN(t.Context(), api.CreateLUN{Target: iqn, LUN: 0, Name: "errlun", Size: 4 * mib, Handler: fsm.HandlerNullIO})).get(t)
	leader := c.Leader(t)
	before := c.Node(leader).State() // the leader has applied the create when it answers

	raw := func(method, path string, body any) func(context.Context, *api.Client) error {
		return func(ctx context.Context, cl *api.Client) error { return cl.Do(ctx, method, path, body, nil) }
	}
	cases := []struct {
		name   string
		call   func(context.Context, *api.Client) error
		code   string
		status int
	}{
		{"duplicate target", func(ctx context.Context, cl *api.Client) error {
			_, err := cl.CreateTarget(ctx, api.CreateTarget{IQN: iqn})
			return err
		}, api.CodeConflict, http.StatusConflict},
		{"duplicate LUN name", func(ctx context.Context, cl *api.Client) error {
			_, err := cl.CreateLUN(ctx, api.CreateLUN{Target: iqn, LUN: 5, Name: "errlun", Size: mib, Handler: fsm.HandlerNullIO})
			return err
		}, api.CodeConflict, http.StatusConflict},
		{"LUN number taken", func(ctx context.Context, cl *api.Client) error {
			_, err := cl.CreateLUN(ctx, api.CreateLUN{Target: iqn, LUN: 0, Name: "other", Size: mib, Handler: fsm.HandlerNullIO})
			return err
		}, api.CodeConflict, http.StatusConflict},
		{"missing target read", func(ctx context.Context, cl *api.Client) error {
			_, err := cl.Target(ctx, missing)
			return err
		}, api.CodeNotFound, http.StatusNotFound},
		{"missing target delete", func(ctx context.Context, cl *api.Client) error {
			_, err := cl.DeleteTarget(ctx, missing, false)
			return err
		}, api.CodeNotFound, http.StatusNotFound},
		{"LUN on a missing target", func(ctx context.Context, cl *api.Client) error {
			_, err := cl.CreateLUN(ctx, api.CreateLUN{Target: missing, Name: "orphan", Size: mib, Handler: fsm.HandlerNullIO})
			return err
		}, api.CodeNotFound, http.StatusNotFound},
		{"missing LUN read", func(ctx context.Context, cl *api.Client) error {
			_, err := cl.LUN(ctx, "nosuchlun")
			return err
		}, api.CodeNotFound, http.StatusNotFound},
		{"bad IQN", func(ctx context.Context, cl *api.Client) error {
			_, err := cl.CreateTarget(ctx, api.CreateTarget{IQN: "not-an-iqn"})
			return err
		}, api.CodeInvalid, http.StatusBadRequest},
		{"upper-case IQN", func(ctx context.Context, cl *api.Client) error {
			_, err := cl.CreateTarget(ctx, api.CreateTarget{IQN: "iqn.2025-01.com.Example:x"})
			return err
		}, api.CodeInvalid, http.StatusBadRequest},
		{"shrinking a LUN", func(ctx context.Context, cl *api.Client) error {
			_, err := cl.ResizeLUN(ctx, "errlun", mib)
			return err
		}, api.CodeInvalid, http.StatusBadRequest},
		{"unknown JSON field (target)", raw(http.MethodPost, "/v1/targets", map[string]any{"iqn": iqnPrefix + "colour", "colour": "blue"}), api.CodeInvalid, http.StatusBadRequest},
		{"unknown JSON field (LUN)", raw(http.MethodPost, "/v1/luns", map[string]any{"target": iqn, "lun": 9, "name": "typo", "sise": mib}), api.CodeInvalid, http.StatusBadRequest},
		{"body not JSON", raw(http.MethodPost, "/v1/targets", []byte("iqn="+iqn)), api.CodeInvalid, http.StatusBadRequest},
		{"reservation operation with an unknown field", raw(http.MethodPost, "/v1/internal/reservation",
			map[string]any{"device": "errlun", "origin": "test/1", "op": map[string]any{"kind": 1, "nexus": map[string]any{}, "bogus": true}}),
			api.CodeInvalid, http.StatusBadRequest},
		{"reservation on a missing LUN", raw(http.MethodPost, "/v1/internal/reservation",
			map[string]any{"device": "nosuchlun", "origin": "test/1", "op": map[string]any{"kind": 1, "nexus": map[string]any{}}}),
			api.CodeNotFound, http.StatusNotFound},
	}
	for _, tc := range cases {
		for i := 1; i <= 3; i++ {
			role := "follower"
			if i == leader {
				role = "leader"
			}
			t.Run(fmt.Sprintf("%s via n%d (%s)", tc.name, i, role), func(t *testing.T) {
				apiErr(t, tc.call(t.Context(), c.Client(i)), tc.code, tc.status)
			})
		}
	}

	// Nothing refused changed the configuration.
	after := c.Node(leader).State()
	for _, name := range []string{"other", "orphan", "typo"} {
		if after.Devices[name] != nil {
			t.Errorf("refused LUN %s exists", name)
		}
	}
	if after.Targets[iqnPrefix+"colour"] != nil || after.Targets["not-an-iqn"] != nil {
		t.Errorf("a refused target exists")
	}
	if after.Devices["errlun"].Size != before.Devices["errlun"].Size || after.Reservations["errlun"] != nil {
		t.Errorf("errlun changed: %+v, reservations %s", after.Devices["errlun"], after.Reservations["errlun"])
	}
}

// testConcurrentCreates: of 20 concurrent creates of the same thing,
// spread over the three nodes, exactly one succeeds and every other one is
// refused with conflict.
func testConcurrentCreates(t *testing.T, c *clustertest.Cluster) {
	const iqn = iqnPrefix + "race"
	ensureTarget(t, c, iqn)
	cases := []struct {
		name   string
		create func(ctx context.Context, cl *api.Client, g int) error
		check  func(t *testing.T, s *fsm.State)
	}{
		{"same LUN name", func(ctx context.Context, cl *api.Client, g int) error {
			_, err := cl.CreateLUN(ctx, api.CreateLUN{Target: iqn, LUN: uint64(g), Name: "racelun", Size: 8 * mib,
				Shared: true, Path: filepath.Join(c.StorageDir, "racelun.img")})
			return err
		}, func(t *testing.T, s *fsm.State) {
			if s.Devices["racelun"] == nil {
				t.Fatal("racelun does not exist")
			}
			if m := s.Mappings("racelun"); len(m) != 1 {
				t.Errorf("racelun is mapped %d times: %+v", len(m), m)
			}
			if n := len(s.Targets[iqn].LUNs); n != 1 {
				t.Errorf("%s has %d LUNs, want 1", iqn, n)
			}
		}},
		{"same target", func(ctx context.Context, cl *api.Client, g int) error {
			_, err := cl.CreateTarget(ctx, api.CreateTarget{IQN: iqnPrefix + "racetarget", Alias: fmt.Sprint(g)})
			return err
		}, func(t *testing.T, s *fsm.State) {
			if s.Targets[iqnPrefix+"racetarget"] == nil {
				t.Fatal("the target does not exist")
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			const n = 20
			errs := make([]error, n)
			ready := make(chan struct{})
			var wg sync.WaitGroup
			for g := range n {
				cl := c.Client(g%3 + 1)
				wg.Go(func() {
					<-ready
					errs[g] = tc.create(t.Context(), cl, g)
				})
			}
			close(ready)
			wg.Wait()
			ok := 0
			for g, err := range errs {
				switch {
				case err == nil:
					ok++
				case !api.IsCode(err, api.CodeConflict):
					t.Errorf("create %d through n%d: %v; want success or conflict", g, g%3+1, err)
				}
			}
			if ok != 1 {
				t.Errorf("%d creates succeeded, want exactly 1", ok)
			}
			leader := c.Leader(t)
			gen := c.WaitGenerations(t, c.Node(leader).State().Index, 5*time.Second)
			for i := 1; i <= 3; i++ {
				s := c.Node(i).State()
				if s.Index != gen {
					t.Errorf("n%d applied %d, want %d", i, s.Index, gen)
				}
				tc.check(t, s)
			}
		})
	}
}

// effects records what a replicated reservation store delivers to its
// LU.
type effects struct {
	mu  sync.Mutex
	got []scsi.PREffect
}

func (e *effects) ApplyReservationEffects(effects []scsi.PREffect, except *scsi.Command) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, effects...)
}

func (e *effects) list() []scsi.PREffect {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.got)
}

// uaRegistrationsPreempted is REGISTRATIONS PREEMPTED (ASC 2Ah ASCQ 05h).
const uaRegistrationsPreempted = 0x2a05

// testReservations: the reservation stores of one device on different
// nodes share one state through Raft. A registration and a reservation
// made through node A show on node B; a PREEMPT through B delivers its
// unit attention to A's LU (and not to B's, which applies its own
// effects); the proposer's store shows its change as soon as Apply
// returns, on a follower too.
func testReservations(t *testing.T, c *clustertest.Cluster) {
	const iqn = iqnPrefix + "pr"
	ensureTarget(t, c, iqn)
	must(c.Client(1).CreateLUN(t.Context(), api.CreateLUN{Target: iqn, LUN: 0, Name: "prlun", Size: 16 * mib, Handler: fsm.HandlerNullIO})).get(t)
	leader := c.Leader(t)
	c.WaitGenerations(t, c.Node(leader).State().Index, 5*time.Second)
	fs := c.Followers(leader)
	a, b := fs[0], fs[1] // both followers: their operations are forwarded to the leader
	var fxA, fxB, fxL effects
	storeA := c.Member(a).Reservations().Store("prlun", &fxA)
	storeB := c.Member(b).Reservations().Store("prlun", &fxB)
	storeL := c.Member(leader).Reservations().Store("prlun", &fxL)
	t.Logf("A is n%d, B is n%d, the leader n%d", a, b, leader)

	nexusA := scsi.NexusID{InitiatorPort: "iqn.1994-05.com.example:host-a,i,0x1", TargetPort: iqn + ",t,0x1", RelativePort: 1}
	nexusB := scsi.NexusID{InitiatorPort: "iqn.1994-05.com.example:host-b,i,0x2", TargetPort: iqn + ",t,0x2", RelativePort: 2}
	const keyA, keyB = 0xaaaa, 0xbbbb
	apply := func(s scsi.ReservationStore, who string, op scsi.PROp, want scsi.Status) scsi.PROutcome {
		t.Helper()
		out, err := s.Apply(op)
		if err != nil {
			t.Fatalf("%s: service action %d: %v", who, op.ServiceAction, err)
		}
		if out.Status != want {
			t.Fatalf("%s: service action %d: status %v (%+v), want %v", who, op.ServiceAction, out.Status, out, want)
		}
		return out
	}
	waitState := func(what string, cond func(*scsi.PRState) bool) {
		t.Helper()
		for name, s := range map[string]scsi.ReservationStore{"A": storeA, "B": storeB, "leader": storeL} {
			if why := clustertest.Poll(5*time.Second, func() (bool, string) {
				return cond(s.State()), fmt.Sprintf("%+v", s.State())
			}); why != "" {
				t.Fatalf("%s's store does not show %s: %s", name, what, why)
			}
		}
	}
	registered := func(keys ...uint64) func(*scsi.PRState) bool {
		return func(s *scsi.PRState) bool {
			var got []uint64
			for _, r := range s.Registrations {
				got = append(got, r.Key)
			}
			return slices.Equal(got, keys)
		}
	}
	heldBy := func(nexus scsi.NexusID) func(*scsi.PRState) bool {
		return func(s *scsi.PRState) bool {
			r := s.Reservation
			return r != nil && r.Type == scsi.PRWriteExclusive && r.HolderInitiatorPort == nexus.InitiatorPort && r.HolderTargetPort == nexus.TargetPort
		}
	}

	// REGISTER through A.
	apply(storeA, "A", scsi.PROp{Kind: scsi.OpPROut, Nexus: nexusA, ServiceAction: scsi.PRRegister, SAKey: keyA}, scsi.StatusGood)
	if !registered(keyA)(storeA.State()) {
		t.Fatalf("REGISTER returned on A, but A's store shows %+v", storeA.State())
	}
	waitState("A's registration", registered(keyA))

	// RESERVE (write exclusive) through A: B's writes now conflict.
	apply(storeA, "A", scsi.PROp{Kind: scsi.OpPROut, Nexus: nexusA, ServiceAction: scsi.PRReserve, Type: scsi.PRWriteExclusive, Key: keyA}, scsi.StatusGood)
	if !heldBy(nexusA)(storeA.State()) {
		t.Fatalf("RESERVE returned on A, but A's store shows %+v", storeA.State())
	}
	waitState("A's reservation", heldBy(nexusA))
	if !storeB.State().Conflict(nexusB.InitiatorPort, nexusB.TargetPort, nexusB.Key(), scsi.AccessConflictWE) {
		t.Errorf("B's store lets B's initiator write through A's write exclusive reservation")
	}
	if storeB.State().Conflict(nexusA.InitiatorPort, nexusA.TargetPort, nexusA.Key(), scsi.AccessConflictWE) {
		t.Errorf("B's store refuses the reservation holder's write")
	}

	// REGISTER through B, then PREEMPT A's key.
	apply(storeB, "B", scsi.PROp{Kind: scsi.OpPROut, Nexus: nexusB, ServiceAction: scsi.PRRegister, SAKey: keyB}, scsi.StatusGood)
	waitState("both registrations", registered(keyA, keyB))
	out := apply(storeB, "B", scsi.PROp{Kind: scsi.OpPROut, Nexus: nexusB, ServiceAction: scsi.PRPreempt, Type: scsi.PRWriteExclusive, Key: keyB, SAKey: keyA}, scsi.StatusGood)
	preemptedA := func(e scsi.PREffect) bool {
		return e.UA == uaRegistrationsPreempted && e.Target.Key == keyA && e.Target.InitiatorPort == nexusA.InitiatorPort
	}
	if !slices.ContainsFunc(out.Effects, preemptedA) {
		t.Errorf("PREEMPT's outcome: effects %+v; want REGISTRATIONS PREEMPTED for A", out.Effects)
	}
	if !heldBy(nexusB)(storeB.State()) || !registered(keyB)(storeB.State()) {
		t.Fatalf("PREEMPT returned on B, but B's store shows %+v", storeB.State())
	}
	waitState("B's reservation", func(s *scsi.PRState) bool { return heldBy(nexusB)(s) && registered(keyB)(s) })
	for name, fx := range map[string]*effects{"A": &fxA, "leader": &fxL} {
		if why := clustertest.Poll(5*time.Second, func() (bool, string) {
			got := fx.list()
			return slices.ContainsFunc(got, preemptedA), fmt.Sprintf("%+v", got)
		}); why != "" {
			t.Errorf("%s's LU did not receive REGISTRATIONS PREEMPTED: %s", name, why)
		}
	}
	if got := fxB.list(); len(got) > 0 {
		t.Errorf("B's LU received the effects of its own operation again: %+v", got)
	}

	// A's key is gone: its RESERVE conflicts now.
	apply(storeA, "A", scsi.PROp{Kind: scsi.OpPROut, Nexus: nexusA, ServiceAction: scsi.PRReserve, Type: scsi.PRWriteExclusive, Key: keyA}, scsi.StatusReservationConflict)
}

// TestToken: a cluster with an API token refuses calls without it or with
// a wrong one (401 unauthorized) on every node, and accepts them with it,
// forwarded writes included.
func TestToken(t *testing.T) {
	const token = "s3cret"
	c := clustertest.New(t, 3, clustertest.Options{Token: token})
	leader := c.Leader(t)
	ctx := t.Context()
	for i := 1; i <= 3; i++ {
		addr := c.Member(i).Config.APIAddr
		for _, bad := range []string{"", "S3CRET", "s3cret2", "s3cre"} {
			cl := api.NewClient(addr, bad)
			_, err := cl.Local(ctx)
			apiErr(t, err, api.CodeUnauthorized, http.StatusUnauthorized)
			_, err = cl.Targets(ctx)
			apiErr(t, err, api.CodeUnauthorized, http.StatusUnauthorized)
			_, err = cl.CreateTarget(ctx, api.CreateTarget{IQN: fmt.Sprintf("%stoken-bad-%d", iqnPrefix, i)})
			apiErr(t, err, api.CodeUnauthorized, http.StatusUnauthorized)
		}
		cl := c.Client(i)
		iqn := fmt.Sprintf("%stoken-%d", iqnPrefix, i)
		if _, err := cl.CreateTarget(ctx, api.CreateTarget{IQN: iqn}); err != nil {
			t.Fatalf("creating a target through n%d (leader n%d) with the token: %v", i, leader, err)
		}
		if _, err := cl.Target(ctx, iqn); err != nil {
			t.Fatalf("reading through n%d with the token: %v", i, err)
		}
		if _, err := cl.Status(ctx); err != nil {
			t.Fatalf("status through n%d with the token: %v", i, err)
		}
	}
	s := c.Node(leader).State()
	if len(s.Targets) != 3 {
		t.Errorf("the cluster has %d targets, want the 3 created with the token: %v", len(s.Targets), fsm.SortedKeys(s.Targets))
	}
}

// importConf is a small scst.conf that needs no files.
const importConf = `HANDLER vdisk_nullio {
	DEVICE n0 {
		size_mb 16
	}
}
TARGET_DRIVER iscsi {
	enabled 1
	TARGET iqn.2025-01.com.example:imported {
		enabled 1
		LUN 0 n0
	}
}
`

// TestVersionGate: with one node advertising protocol 1, an import
// (protocol 2) is refused before anything is proposed, with unsupported
// (422) naming that node; once the node runs the current protocol, the
// same import succeeds and reaches every dataplane.
func TestVersionGate(t *testing.T) {
	const old = 3
	c := clustertest.New(t, 3, clustertest.Options{Configure: func(i int, cfg *cluster.Config) {
		if i == old {
			cfg.Protocol = 1
		}
	}})
	const iqn = iqnPrefix + "imported"
	for i := 1; i <= 3; i++ {
		if p := c.Node(i).State().Nodes["n3"].Protocol; p != 1 {
			t.Fatalf("n%d's record of n3: protocol %d, want 1", i, p)
		}
	}
	for _, via := range []int{1, old} {
		_, err := c.Client(via).ImportSCST(t.Context(), []byte(importConf))
		apiErr(t, err, api.CodeUnsupported, http.StatusUnprocessableEntity)
		if msg := err.Error(); !strings.Contains(msg, "n3") || strings.Contains(msg, "n1") || strings.Contains(msg, "n2") {
			t.Errorf("refusal through n%d: %q; want it to name n3 only", via, msg)
		}
	}
	for i := 1; i <= 3; i++ {
		if s := c.Node(i).State(); s.Devices["n0"] != nil || s.Targets[iqn] != nil {
			t.Fatalf("n%d: the refused import changed the state", i)
		}
	}
	// Commands of protocol 1 still work.
	must(c.Client(old).CreateTarget(t.Context(), api.CreateTarget{IQN: iqnPrefix + "v1"})).get(t)

	c.Stop(t, old)
	c.Member(old).Config.Protocol = 0 // the default: fsm.Protocol
	c.Restart(t, old)
	if why := clustertest.Poll(15*time.Second, func() (bool, string) {
		for i := 1; i <= 3; i++ {
			// The restarted node's state is empty until it replays the log.
			rec := c.Node(i).State().Nodes["n3"]
			if rec == nil {
				return false, fmt.Sprintf("n%d has no record of n3 yet", i)
			}
			if rec.Protocol != fsm.Protocol {
				return false, fmt.Sprintf("n%d's record of n3 has protocol %d", i, rec.Protocol)
			}
		}
		return true, ""
	}); why != "" {
		t.Fatalf("the upgraded node's protocol is not registered: %s", why)
	}
	res, err := c.Client(old).ImportSCST(t.Context(), []byte(importConf))
	if err != nil {
		t.Fatalf("import after the upgrade: %v", err)
	}
	if !slices.Equal(res.Devices, []string{"n0"}) || !slices.Equal(res.Targets, []string{iqn}) || res.Generation == 0 {
		t.Errorf("import result: %+v", res)
	}
	waitAllServe(t, c, iqn, 0, "n0", time.Now(), 5*time.Second)
	for i := 1; i <= 3; i++ {
		cfg, _ := c.Member(i).Dataplane.Latest()
		d, _ := clustertest.FindDevice(cfg, "n0")
		if d.Backend.Handler != backend.NullIO || d.Backend.Size != 16*mib {
			t.Errorf("n%d's dataplane device n0: %+v; want nullio, 16 MiB", i, d)
		}
	}
	c.WaitGenerations(t, res.Generation, 5*time.Second)
}

// TestLeaderLoss: when the leader goes (handing leadership over, or
// crashing), a new leader is elected, writes through a survivor succeed,
// and the old leader catches up when it comes back.
func TestLeaderLoss(t *testing.T) {
	for _, tc := range []struct {
		name string
		stop func(c *clustertest.Cluster, t testing.TB, i int)
	}{
		{"graceful stop", (*clustertest.Cluster).Stop},
		{"crash", (*clustertest.Cluster).Kill},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := clustertest.New(t, 3, crashable)
			ctx := t.Context()
			must(c.Client(1).CreateTarget(ctx, api.CreateTarget{IQN: iqnA})).get(t)
			must(c.Client(2).CreateLUN(ctx, api.CreateLUN{Target: iqnA, LUN: 0, Name: "lun0", Size: 8 * mib, Handler: fsm.HandlerNullIO})).get(t)
			old := c.Leader(t)
			c.WaitGenerations(t, c.Node(old).State().Index, 5*time.Second)

			stopping := time.Now()
			tc.stop(c, t, old)
			stopped := time.Now()
			leader := c.WaitLeader(t, 15*time.Second)
			t.Logf("leader n%d stopped in %s; n%d leads %s later", old, stopped.Sub(stopping).Round(time.Millisecond),
				leader, time.Since(stopped).Round(time.Millisecond))
			if leader == old {
				t.Fatalf("the stopped node n%d is still the leader", old)
			}

			survivor := c.Followers(leader)[0] // a follower: the write is forwarded
			must(c.Client(survivor).CreateLUN(ctx, api.CreateLUN{Target: iqnA, LUN: 1, Name: "lun1", Size: 8 * mib, Handler: fsm.HandlerNullIO})).get(t)
			must(c.Client(leader).CreateTarget(ctx, api.CreateTarget{IQN: iqnPrefix + "after"})).get(t)
			waitAllServe(t, c, iqnA, 1, "lun1", time.Now(), 5*time.Second)
			want := c.Node(leader).State().Index

			c.Restart(t, old)
			restarted := time.Now()
			gen := c.WaitGenerations(t, want, 20*time.Second)
			t.Logf("n%d restarted; every node serves generation %d after %s", old, gen, time.Since(restarted).Round(time.Millisecond))
			c.WaitLeader(t, 15*time.Second)
			s := c.Node(old).State()
			if s.Devices["lun1"] == nil || s.Targets[iqnPrefix+"after"] == nil {
				t.Errorf("the restarted node's state misses the changes made while it was down")
			}
			c.Member(old).Dataplane.WaitFor(t, 5*time.Second, func(cfg target.Config) bool {
				_, ok := clustertest.FindTarget(cfg, iqnPrefix+"after")
				return ok && serves(cfg, iqnA, 1, "lun1")
			})
			// And the cluster of three takes writes again through the
			// restarted node.
			must(c.Client(old).CreateTarget(ctx, api.CreateTarget{IQN: iqnPrefix + "back"})).get(t)
		})
	}
}

// testReplicatedPlacement: a LUN created with two replicas gets an owner
// among them, both in sync; the replicas' dataplanes open their own copy
// under their storage directory, the third node a stand-in without data;
// and a move to the node without a copy is refused.
func testReplicatedPlacement(t *testing.T, c *clustertest.Cluster) {
	const iqn = iqnPrefix + "repl"
	cl := c.Client(1)
	must(cl.CreateTarget(t.Context(), api.CreateTarget{IQN: iqn})).get(t)
	lun := must(cl.CreateLUN(t.Context(), api.CreateLUN{Target: iqn, LUN: 0, Name: "rep0", Size: 16 * mib, Replicas: 2})).get(t)
	if len(lun.Replicas) != 2 || lun.Path != "rep0.img" {
		t.Fatalf("created LUN: %+v; want two replicas and a path relative to each replica's storage", lun)
	}
	holders := map[string]bool{}
	owners := 0
	for _, r := range lun.Replicas {
		holders[r.Node] = true
		if r.State != api.ReplicaInSync {
			t.Errorf("replica %s is %s, want %s", r.Node, r.State, api.ReplicaInSync)
		}
		if r.Owner {
			owners++
			if r.Node != lun.Owner {
				t.Errorf("replica %s is marked owner; the owner is %s", r.Node, lun.Owner)
			}
		}
	}
	if owners != 1 || !holders[lun.Owner] {
		t.Errorf("owner %s among replicas %+v", lun.Owner, lun.Replicas)
	}
	returned := time.Now()
	waitAllServe(t, c, iqn, 0, "rep0", returned, 5*time.Second)
	outsider := ""
	for i := 1; i <= c.N(); i++ {
		name := fmt.Sprintf("n%d", i)
		cfg, _ := c.Member(i).Dataplane.Latest()
		d, _ := clustertest.FindDevice(cfg, "rep0")
		switch {
		case holders[name] && (d.Backend.Handler != backend.FileIO || d.Backend.Path != filepath.Join(c.StorageDir, "rep0.img")):
			t.Errorf("%s holds a copy but serves %+v", name, d.Backend)
		case !holders[name] && (d.Backend.Handler != backend.NullIO || d.Backend.Path != ""):
			t.Errorf("%s holds no copy but serves %+v", name, d.Backend)
		case !holders[name]:
			outsider = name
		}
	}
	_, err := cl.MoveLUN(t.Context(), "rep0", outsider)
	if !api.IsCode(err, api.CodeConflict) {
		t.Errorf("moving rep0 to %s, which holds no copy: %v; want a conflict", outsider, err)
	}
}
