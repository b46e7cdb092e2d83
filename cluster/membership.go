package cluster

import (
	"context"
	"errors"
	"net/http"

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
// leader, sent to the leader's internal route otherwise.
func (n *Node) commitInSync(ctx context.Context, c *fsm.SetInSync) error {
	if n.isLeader() {
		_, _, err := n.propose(c)
		return err
	}
	_, addr := n.leader()
	if addr == "" {
		return errors.New("no Raft leader")
	}
	client := &api.Client{Base: "http://" + addr, Token: n.cfg.Token, HTTP: n.forward}
	return client.Do(ctx, http.MethodPost, "/v1/internal/in-sync", c, nil)
}

func (n *Node) buildSetInSync(r *http.Request) (fsm.Command, func(any, uint64) any, error) {
	var c fsm.SetInSync
	if err := decodeBody(r, &c); err != nil {
		return nil, nil, err
	}
	return &c, resultOnly, nil
}
