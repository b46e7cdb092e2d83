package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm"
	"github.com/hatarget/hatarget/target"
)

// Membership changes replicated LUNs' in-sync sets for the dataplane
// (replication.Membership): an owner whose write a replica failed drops
// the replica through Raft before acknowledging the write without it.
// Created before the node (the dataplane needs it first) and bound by
// Start.
type Membership struct {
	n *Node
}

// NewMembership returns a Membership to pass to both the dataplane and
// Config.Membership.
func NewMembership() *Membership { return &Membership{} }

func (m *Membership) bind(n *Node) { m.n = n }

// Drop removes node from device's in-sync set in epoch, and returns once
// the change is committed; an error means it may not be (no leader, no
// quorum, a newer epoch).
func (m *Membership) Drop(ctx context.Context, device string, epoch uint64, node string) error {
	if m.n == nil {
		return errors.New("cluster: membership not started")
	}
	m.n.log.Warn("dropping a replica from the in-sync set", "lun", device, "replica", node, "epoch", epoch)
	return m.n.commitInSync(ctx, &fsm.SetInSync{Device: device, Epoch: epoch, Remove: []string{node}})
}

// Readmit adds node, resynchronised, to device's in-sync set in epoch, and
// returns once the change is committed; an error means it may not be.
func (m *Membership) Readmit(ctx context.Context, device string, epoch uint64, node string) error {
	if m.n == nil {
		return errors.New("cluster: membership not started")
	}
	m.n.log.Info("readmitting a resynchronised replica to the in-sync set", "lun", device, "replica", node, "epoch", epoch)
	return m.n.commitInSync(ctx, &fsm.SetInSync{Device: device, Epoch: epoch, Add: []string{node}})
}

// resyncReporter is the dataplane's view of its resyncs
// (target.Server.ResyncProgress).
type resyncReporter interface {
	ResyncProgress(device string) map[string]target.ResyncProgress
}

// resyncProgress is the progress of the resyncs of d this node runs as
// its owner, by node; nil when it runs none (or does not own d).
func (n *Node) resyncProgress(d *fsm.Device) map[string]target.ResyncProgress {
	if d.Owner != n.cfg.Name {
		return nil
	}
	if r, ok := n.cfg.Dataplane.(resyncReporter); ok {
		return r.ResyncProgress(d.Name)
	}
	return nil
}

// commitInSync commits an in-sync set change: proposed here on the
// leader, sent to the leader's internal route otherwise. While there is
// no leader to take it -- the replica that failed a write may well have
// been the leader -- it tries again for as long as the others take to
// elect one (inSyncElectionWait), then gives up: an owner cut off from
// the cluster must fail its writes, not hold them. A change of the set is
// idempotent, so one committed without our knowing is committed again
// harmlessly.
func (n *Node) commitInSync(ctx context.Context, c *fsm.SetInSync) error {
	giveUp := time.Now().Add(inSyncElectionWait * n.cfg.RaftTimeout)
	for {
		err := n.commitInSyncOnce(ctx, c)
		if err == nil || !leaderUnavailable(err) || time.Now().After(giveUp) {
			return err
		}
		t := time.NewTimer(inSyncRetryInterval)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (no leader took it: %w)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// An election takes one heartbeat timeout (RaftTimeout) to notice the
// leader is gone and up to an election timeout (1.5 RaftTimeout) more;
// commitInSync waits 3 RaftTimeouts for one, trying every
// inSyncRetryInterval.
const (
	inSyncElectionWait  = 3
	inSyncRetryInterval = 100 * time.Millisecond
)

func (n *Node) commitInSyncOnce(ctx context.Context, c *fsm.SetInSync) error {
	if n.isLeader() {
		_, _, err := n.propose(c)
		return err
	}
	_, addr := n.leader()
	if addr == "" {
		return errNoLeader
	}
	client := &api.Client{Base: "http://" + addr, Token: n.cfg.Token, HTTP: n.forward}
	return client.Do(ctx, http.MethodPost, "/v1/internal/in-sync", c, nil)
}

var errNoLeader = errors.New("no Raft leader")

// leaderUnavailable reports whether err says that no leader could take a
// proposal now, rather than that the proposal itself was refused.
func leaderUnavailable(err error) bool {
	var ae *api.Error
	switch {
	case errors.Is(err, errNoLeader), errors.Is(err, errNotLeader), errors.Is(err, errOutcomeUnknown):
		return true
	case errors.As(err, &ae):
		return ae.Code == api.CodeNoLeader || ae.Code == api.CodeUnavailable || ae.Code == api.CodeTimeout
	case fsm.CodeOf(err) != "":
		return false
	}
	// The leader we knew of did not answer (it is down, or partitioned).
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, syscall.ECONNREFUSED)
}

func (n *Node) buildSetInSync(r *http.Request) (fsm.Command, func(any, uint64) any, error) {
	var c fsm.SetInSync
	if err := decodeBody(r, &c); err != nil {
		return nil, nil, err
	}
	return &c, resultOnly, nil
}
