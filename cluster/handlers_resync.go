package cluster

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm"
	"github.com/hatarget/hatarget/target"
)

// The progress of a replicated LUN's resyncs is known only to its owner's
// dataplane. Any node's view of the LUN shows it: taken locally on the
// owner, asked of the owner's API (GET /v1/internal/resync) elsewhere.

// resyncTimeout bounds the wait for an owner's account of its resyncs: a
// view without progress is better than a command that hangs on a node
// that does not answer.
const resyncTimeout = time.Second

// lunResyncs is what a view knows of the resyncs of one LUN's replicas:
// their progress by node, or why it has none.
type lunResyncs struct {
	progress    map[string]api.ResyncProgress
	unavailable string
}

// lunView renders d with the progress of its resyncs.
func (n *Node) lunView(ctx context.Context, s *fsm.State, d *fsm.Device) api.LUN {
	return n.lunViews(ctx, s, []*fsm.Device{d})[0]
}

// lunViews renders devs, asking each remote owner once, concurrently, for
// the progress of the resyncs of the LUNs it owns among them.
func (n *Node) lunViews(ctx context.Context, s *fsm.State, devs []*fsm.Device) []api.LUN {
	view := n.clusterView()
	resyncs := n.gatherResyncs(ctx, s, view, devs)
	out := make([]api.LUN, 0, len(devs))
	for _, d := range devs {
		out = append(out, describeLUN(s, d, view, resyncs[d.Name]))
	}
	return out
}

// gatherResyncs collects the progress of the resyncs of devs, by LUN. A
// LUN all of whose replicas are in sync or down has none to ask about.
func (n *Node) gatherResyncs(ctx context.Context, s *fsm.State, view clusterView, devs []*fsm.Device) map[string]lunResyncs {
	out := map[string]lunResyncs{}
	remote := map[string][]string{} // LUN names by owner
	for _, d := range devs {
		switch {
		case !mayResync(d, view):
		case d.Owner == n.cfg.Name:
			out[d.Name] = lunResyncs{progress: n.localResyncs(d)}
		case view.gone(d.Owner):
			out[d.Name] = lunResyncs{unavailable: fmt.Sprintf("progress unavailable: the owner %s is down", d.Owner)}
		default:
			remote[d.Owner] = append(remote[d.Owner], d.Name)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, resyncTimeout)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for owner, names := range remote {
		wg.Go(func() {
			status, err := n.fetchResyncs(ctx, s, owner, names)
			mu.Lock()
			defer mu.Unlock()
			for _, name := range names {
				progress, owned := status[name]
				switch {
				case err != nil && ctx.Err() != nil:
					out[name] = lunResyncs{unavailable: fmt.Sprintf("progress unavailable: the owner %s did not answer within %s", owner, resyncTimeout)}
				case err != nil:
					out[name] = lunResyncs{unavailable: fmt.Sprintf("progress unavailable: asking the owner %s: %v", owner, err)}
				case !owned:
					out[name] = lunResyncs{unavailable: fmt.Sprintf("progress unavailable: %s does not own the LUN in its own view (ownership is changing)", owner)}
				default:
					out[name] = lunResyncs{progress: progress}
				}
			}
		})
	}
	wg.Wait()
	return out
}

// mayResync reports whether d's owner may be resyncing a replica: one is
// out of sync and not known to be down.
func mayResync(d *fsm.Device, view clusterView) bool {
	return d.Replicated() && d.Owner != "" && slices.ContainsFunc(d.Replicas, func(r string) bool {
		return !d.IsInSync(r) && !view.gone(r)
	})
}

// fetchResyncs asks node's API how the resyncs of the LUNs names stand.
func (n *Node) fetchResyncs(ctx context.Context, s *fsm.State, node string, names []string) (api.ResyncStatus, error) {
	addr := n.apiAddr(s, node)
	if addr == "" {
		return nil, fmt.Errorf("no API address known for %s", node)
	}
	client := &api.Client{Base: "http://" + addr, Token: n.cfg.Token, HTTP: n.forward}
	var status api.ResyncStatus
	err := client.Do(ctx, http.MethodGet, "/v1/internal/resync?"+url.Values{"lun": names}.Encode(), nil, &status)
	return status, err
}

// apiAddr is where node's API listens, as gossip announces it or, failing
// that, as it registered.
func (n *Node) apiAddr(s *fsm.State, node string) string {
	if m, ok := n.members()[node]; ok && m.MetaErr == nil && m.Meta.API != "" {
		return m.Meta.API
	}
	if rec := s.Nodes[node]; rec != nil {
		return rec.APIAddr
	}
	return ""
}

// handleResync answers the resyncs this node runs as owner
// (api.ResyncStatus) from its own state and dataplane: never forwarded,
// since no other node knows.
func (n *Node) handleResync(w http.ResponseWriter, r *http.Request) {
	s := n.fsm.State()
	names := r.URL.Query()["lun"]
	if len(names) == 0 {
		names = fsm.SortedKeys(s.Devices)
	}
	out := api.ResyncStatus{}
	for _, name := range names {
		if d := s.Devices[name]; d != nil && d.Replicated() && d.Owner == n.cfg.Name {
			out[name] = n.localResyncs(d)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// localResyncs is the progress of the resyncs of d this node's dataplane
// runs, by node.
func (n *Node) localResyncs(d *fsm.Device) map[string]api.ResyncProgress {
	return apiResyncs(n.resyncProgress(d))
}

func apiResyncs(local map[string]target.ResyncProgress) map[string]api.ResyncProgress {
	out := make(map[string]api.ResyncProgress, len(local))
	for node, p := range local {
		out[node] = api.ResyncProgress{Done: p.Done, Total: p.Total, Phase: p.State, Error: p.Err}
	}
	return out
}
