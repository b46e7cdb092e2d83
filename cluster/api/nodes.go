package api

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Drain, stop safety, catching up and rebalancing: the steps of a rolling
// upgrade. The waits poll, so that they survive leadership changes and
// work through any node.

// DrainNodeWith is DrainNode with options: req.Force drains a node whose
// stop would make a LUN unavailable.
func (c *Client) DrainNodeWith(ctx context.Context, name string, req Drain) (*DrainResult, error) {
	var r DrainResult
	return &r, c.Do(ctx, http.MethodPost, "/v1/nodes/"+esc(name)+"/drain", req, &r)
}

// StopSafety says whether stopping a node now is safe, and what a drain
// still has to do.
func (c *Client) StopSafety(ctx context.Context, name string) (*StopSafety, error) {
	var s StopSafety
	return &s, c.Do(ctx, http.MethodGet, "/v1/nodes/"+esc(name)+"/safety", nil, &s)
}

// Rebalance spreads LUN ownership evenly over the nodes that may own
// LUNs, or with req.DryRun says which moves that takes.
func (c *Client) Rebalance(ctx context.Context, req Rebalance) (*RebalanceResult, error) {
	var r RebalanceResult
	return &r, c.Do(ctx, http.MethodPost, "/v1/rebalance", req, &r)
}

// SafetyCheck says whether a node may stop now: Client.StopSafety, or a
// check that also works with older releases.
type SafetyCheck func(ctx context.Context, node string) (*StopSafety, error)

// WaitStoppable polls check, every interval until ctx ends, until node can
// be stopped (StopSafety.Stoppable), and tells progress what it still waits
// for. While the node is not idle (its leadership or a LUN came back to
// it, say) it drains it again. A blocked node is refused at once, unless
// force, which waits only until the node is idle.
func (c *Client) WaitStoppable(ctx context.Context, node string, force bool, interval time.Duration, check SafetyCheck, progress func(waiting []string)) (*StopSafety, error) {
	var waiting []string
	for {
		s, err := check(ctx, node)
		if err != nil {
			return nil, waitErr(ctx, err, node, "can be stopped", waiting)
		}
		switch {
		case s.Blocked && !force:
			return s, &Error{Status: http.StatusConflict, Code: CodeConflict, Message: fmt.Sprintf(
				"stopping %s would make a LUN unavailable or cost the quorum (--force drains it anyway):\n  %s", node, strings.Join(s.Reasons, "\n  "))}
		case s.Idle && (s.Safe || force):
			return s, nil
		case !s.Idle:
			if _, err := c.DrainNodeWith(ctx, node, Drain{Force: force}); err != nil {
				return s, waitErr(ctx, err, node, "can be stopped", waiting)
			}
		}
		waiting = append(append([]string{}, s.Pending...), s.Reasons...)
		progress(waiting)
		if err := sleep(ctx, interval); err != nil {
			return s, waitErr(ctx, err, node, "can be stopped", waiting)
		}
	}
}

// WaitCaughtUp polls, every interval until ctx ends, until node is
// healthy and serves generation gen (an undrain's, say: it has replayed
// the Raft log up to there), and every replicated LUN it holds a copy of
// has that copy in sync. progress is told what it still waits for,
// including LUNs no resync can bring back (their owner is down).
func (c *Client) WaitCaughtUp(ctx context.Context, node string, gen uint64, interval time.Duration, progress func(waiting []string)) error {
	var waiting []string
	for {
		var err error
		waiting, err = c.catchingUp(ctx, node, gen, waiting)
		switch {
		case err != nil:
			return waitErr(ctx, err, node, "has caught up", waiting)
		case len(waiting) == 0:
			return nil
		}
		progress(waiting)
		if err := sleep(ctx, interval); err != nil {
			return waitErr(ctx, err, node, "has caught up", waiting)
		}
	}
}

// catchingUp lists what node still lacks to have caught up; last is the
// previous answer, kept when a call fails.
func (c *Client) catchingUp(ctx context.Context, node string, gen uint64, last []string) ([]string, error) {
	st, err := c.Status(ctx)
	if err != nil {
		return last, err
	}
	var waiting []string
	found := false
	for _, row := range st.Nodes {
		if row.Name != node {
			continue
		}
		found = true
		switch {
		case !row.Healthy:
			why := "gossip " + row.Gossip
			if row.Error != "" {
				why = row.Error
			}
			waiting = append(waiting, fmt.Sprintf("%s is not healthy yet (%s)", node, why))
		case row.Generation < gen:
			waiting = append(waiting, fmt.Sprintf("%s is catching up with the Raft log: generation %d of %d", node, row.Generation, gen))
		}
	}
	if !found {
		return last, &Error{Status: http.StatusNotFound, Code: CodeNotFound, Message: fmt.Sprintf("no node %q in the cluster", node)}
	}
	luns, err := c.LUNs(ctx)
	if err != nil {
		return last, err
	}
	for _, l := range luns {
		for _, r := range l.Replicas {
			if r.Node == node && r.State != ReplicaInSync {
				waiting = append(waiting, copyWait(l, r))
			}
		}
	}
	return waiting, nil
}

// copyWait says why a replica is not in sync yet, or that nothing can
// resync it.
func copyWait(l LUN, r Replica) string {
	prefix := fmt.Sprintf("LUN %s: %s", l.Name, r.Node)
	ownerDown := false
	for _, o := range l.Replicas {
		ownerDown = ownerDown || (o.Owner && o.State == ReplicaDown)
	}
	switch {
	case r.State == ReplicaResyncing && r.ResyncTotal > 0:
		return fmt.Sprintf("%s is resyncing, %d%% (%s)", prefix, r.ResyncDone*100/r.ResyncTotal, r.ResyncPhase)
	case r.State == ReplicaResyncing:
		return fmt.Sprintf("%s is resyncing (%s)", prefix, r.ResyncPhase)
	case r.State == ReplicaDown:
		return prefix + " is down"
	case l.Owner == "":
		return prefix + " is out of sync, and no resync is possible: the LUN has no owner"
	case ownerDown:
		return fmt.Sprintf("%s is out of sync, and no resync is possible while its owner %s is down", prefix, l.Owner)
	case l.ResyncUnavailable != "":
		return fmt.Sprintf("%s is out of sync (%s)", prefix, l.ResyncUnavailable)
	}
	return fmt.Sprintf("%s is out of sync; waiting for its owner %s to resync it", prefix, l.Owner)
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// waitErr reports a wait that ended without its condition: once ctx has
// ended, with what it still waited for, since the bare deadline would not
// tell.
func waitErr(ctx context.Context, err error, node, what string, waiting []string) error {
	if ctx.Err() == nil {
		return err
	}
	if len(waiting) == 0 {
		return fmt.Errorf("gave up waiting until %s %s: %v", node, what, err)
	}
	return fmt.Errorf("gave up waiting until %s %s; still waiting for:\n  %s", node, what, strings.Join(waiting, "\n  "))
}
