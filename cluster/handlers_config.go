package cluster

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm"
)

func (n *Node) readTargets(_ *http.Request, s *fsm.State) (any, error) {
	out := []api.Target{}
	for _, iqn := range fsm.SortedKeys(s.Targets) {
		out = append(out, targetView(s, s.Targets[iqn]))
	}
	return out, nil
}

func (n *Node) readTarget(r *http.Request, s *fsm.State) (any, error) {
	iqn := r.PathValue("iqn")
	t := s.Targets[iqn]
	if t == nil {
		return nil, &fsm.Error{Code: fsm.CodeNotFound, Msg: fmt.Sprintf("no target %s", iqn)}
	}
	return targetView(s, t), nil
}

func (n *Node) buildCreateTarget(r *http.Request) (fsm.Command, func(any, uint64) any, error) {
	var req api.CreateTarget
	if err := decodeBody(r, &req); err != nil {
		return nil, nil, err
	}
	return &fsm.CreateTarget{IQN: req.IQN, Alias: req.Alias}, n.renderTargetByName(req.IQN), nil
}

// renderTargetByName answers a target change with the target as it is
// after the change.
func (n *Node) renderTargetByName(iqn string) func(any, uint64) any {
	return func(any, uint64) any {
		s := n.fsm.State()
		if t := s.Targets[iqn]; t != nil {
			return targetView(s, t)
		}
		return api.Result{Generation: s.Index}
	}
}

func (n *Node) buildUpdateTarget(r *http.Request) (fsm.Command, func(any, uint64) any, error) {
	var req api.UpdateTarget
	if err := decodeBody(r, &req); err != nil {
		return nil, nil, err
	}
	iqn := r.PathValue("iqn")
	c := &fsm.SetTarget{IQN: iqn, Alias: req.Alias, Enabled: req.Enabled}
	for _, k := range fsm.SortedKeys(req.Params) {
		c.Params = append(c.Params, fsm.Param{Key: k, Value: req.Params[k]})
	}
	return c, n.renderTargetByName(iqn), nil
}

func (n *Node) buildDeleteTarget(r *http.Request) (fsm.Command, func(any, uint64) any, error) {
	return &fsm.DeleteTarget{IQN: r.PathValue("iqn"), Force: isTrue(r.URL.Query().Get("force"))}, resultOnly, nil
}

func (n *Node) buildSetCHAP(r *http.Request) (fsm.Command, func(any, uint64) any, error) {
	var req api.SetCHAP
	if err := decodeBody(r, &req); err != nil {
		return nil, nil, err
	}
	c := &fsm.SetCHAP{IQN: r.PathValue("iqn")}
	if req.User != "" || req.Secret != "" {
		c.Incoming = []fsm.CHAPUser{{User: req.User, Secret: req.Secret}}
	}
	if req.MutualUser != "" || req.MutualSecret != "" {
		c.Mutual = &fsm.CHAPUser{User: req.MutualUser, Secret: req.MutualSecret}
	}
	return c, resultOnly, nil
}

func (n *Node) buildAddACL(r *http.Request) (fsm.Command, func(any, uint64) any, error) {
	var req api.ACLEntry
	if err := decodeBody(r, &req); err != nil {
		return nil, nil, err
	}
	return &fsm.SetACL{IQN: r.PathValue("iqn"), Initiator: req.Initiator, Allow: true}, resultOnly, nil
}

func (n *Node) buildRemoveACL(r *http.Request) (fsm.Command, func(any, uint64) any, error) {
	return &fsm.SetACL{IQN: r.PathValue("iqn"), Initiator: r.PathValue("initiator"), Allow: false}, resultOnly, nil
}

func (n *Node) buildDeleteLUN(r *http.Request) (fsm.Command, func(any, uint64) any, error) {
	lun, err := pathLUN(r)
	if err != nil {
		return nil, nil, err
	}
	return &fsm.DeleteLUN{Target: r.PathValue("iqn"), LUN: lun}, resultOnly, nil
}

func (n *Node) readLUNs(r *http.Request, s *fsm.State) (any, error) {
	devs := make([]*fsm.Device, 0, len(s.Devices))
	for _, name := range fsm.SortedKeys(s.Devices) {
		devs = append(devs, s.Devices[name])
	}
	return n.lunViews(r.Context(), s, devs), nil
}

func (n *Node) readLUN(r *http.Request, s *fsm.State) (any, error) {
	name := r.PathValue("name")
	d := s.Devices[name]
	if d == nil {
		return nil, &fsm.Error{Code: fsm.CodeNotFound, Msg: fmt.Sprintf("no LUN named %q", name)}
	}
	return n.lunView(r.Context(), s, d), nil
}

// renderLUN answers a LUN change with the LUN as the change left it.
func (n *Node) renderLUN(res any, _ uint64) any {
	d, ok := res.(*fsm.Device)
	if !ok {
		return res
	}
	return n.lunView(context.Background(), n.fsm.State(), d)
}

func (n *Node) buildCreateLUN(r *http.Request) (fsm.Command, func(any, uint64) any, error) {
	var req api.CreateLUN
	if err := decodeBody(r, &req); err != nil {
		return nil, nil, err
	}
	d := fsm.Device{
		Name: req.Name, Handler: strOrDefault(req.Handler, fsm.HandlerFileIO), Size: req.Size,
		BlockSize: req.BlockSize, Thin: req.Thin, ReadOnly: req.ReadOnly, NVCache: req.NVCache,
	}
	if d.BlockSize == 0 {
		d.BlockSize = 512
	}
	switch req.NonOwner {
	case "", api.NonOwnerActive:
	case api.NonOwnerStandby:
		d.Standby = true
	default:
		return nil, nil, badRequest("non_owner %q: want %s or %s", req.NonOwner, api.NonOwnerActive, api.NonOwnerStandby)
	}
	// Cheap checks first, so that a bad name never touches the filesystem.
	probe := d
	probe.Serial, probe.NAA, probe.Path = "x", "x", "/x"
	if probe.Size == 0 {
		probe.Size = int64(probe.BlockSize)
	}
	if err := probe.Check(); err != nil {
		return nil, nil, err
	}
	if err := fsm.CheckIQN(req.Target); err != nil {
		return nil, nil, err
	}
	s, nodes := n.placementState(r.Context())
	if s.Devices[req.Name] != nil {
		return nil, nil, &fsm.Error{Code: fsm.CodeConflict, Msg: fmt.Sprintf("a LUN named %q already exists", req.Name)}
	}
	replicas, err := replicaCount(req, nodes)
	if err != nil {
		return nil, nil, err
	}
	if replicas > 0 {
		if err := replicatedPath(req, &d); err != nil {
			return nil, nil, err
		}
		if err := n.placeReplicas(&d, replicas); err != nil {
			if req.Replicas == 0 {
				err = explainDefaultReplicas(err, replicas)
			}
			return nil, nil, err
		}
	} else {
		if err := storagePath(req, &d); err != nil {
			return nil, nil, err
		}
		n.placeOwners(&d)
	}
	fillIdentity(&d)
	return &fsm.CreateLUN{Target: req.Target, LUN: req.LUN, Device: d}, n.renderLUN, nil
}

// registrationWait bounds how long a create waits for the nodes of a
// cluster that just formed to register, so that replicas can be placed on
// them.
const registrationWait = 5 * time.Second

// placementState returns the state to place a new LUN in and the number
// of nodes in the cluster. Right after the cluster formed, a Raft voter
// may be alive but not registered yet: the copies would be placed as if
// the cluster were smaller, so it waits for those (up to
// registrationWait).
func (n *Node) placementState(ctx context.Context) (*fsm.State, int) {
	ctx, cancel := context.WithTimeout(ctx, registrationWait)
	defer cancel()
	for {
		s := n.fsm.State()
		nodes, unregistered := n.clusterNodes(s)
		if !unregistered {
			return s, nodes
		}
		select {
		case <-ctx.Done():
			return s, nodes
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// clusterNodes counts the nodes of the cluster, Raft voters and
// registered nodes, and reports whether a voter gossip sees alive has
// not registered yet.
func (n *Node) clusterNodes(s *fsm.State) (count int, unregistered bool) {
	count = len(s.Nodes)
	members := n.members()
	for _, p := range n.voterPeers() {
		if s.Nodes[p.Name] == nil {
			count++
			m, ok := members[p.Name]
			unregistered = unregistered || (ok && m.State == memberlist.StateAlive)
		}
	}
	return count, unregistered
}

// defaultReplicas is how many copies a new LUN gets unless told: enough
// to survive one failure with an in-sync copy to spare.
const defaultReplicas = 3

// replicaCount is how many nodes keep a copy of the LUN req creates in a
// cluster of nodes nodes: 0 for shared storage and nullio, else what req
// asks, or by default defaultReplicas (every node of a smaller cluster).
func replicaCount(req api.CreateLUN, nodes int) (int, error) {
	switch {
	case req.Handler == fsm.HandlerNullIO:
		if req.Shared || req.Replicas != 0 {
			return 0, badRequest("the nullio handler stores nothing to share or replicate; drop --shared and --replicas")
		}
		return 0, nil
	case req.Shared && req.Replicas != 0:
		return 0, badRequest("--shared storage is one copy every node reaches, not replicated: give --shared or --replicas, not both")
	case req.Shared && req.Path == "":
		return 0, badRequest("--shared needs --path: the file or device every node reaches at that path (with --size, a new sparse file there)")
	case req.Shared:
		return 0, nil
	case nodes == 0:
		return 0, &fsm.Error{Code: fsm.CodeConflict, Msg: "no node has registered in the cluster yet to hold a replica; retry in a few seconds"}
	case req.Replicas < 0 || req.Replicas > nodes:
		return 0, badRequest("--replicas %d: want 1 to %d, the number of nodes in the cluster", req.Replicas, nodes)
	case req.Replicas == 0:
		return min(defaultReplicas, nodes), nil
	}
	return req.Replicas, nil
}

// explainDefaultReplicas completes a refusal to place the replicas the
// operator did not ask for with how to ask for something else.
func explainDefaultReplicas(err error, count int) error {
	code := fsm.CodeOf(err)
	if code == "" {
		code = fsm.CodeConflict
	}
	return &fsm.Error{Code: code, Msg: fmt.Sprintf(
		"%v (by default this LUN gets %d replicas: give --replicas with fewer, or --shared with --path for storage every node reaches)", err, count)}
}

func (n *Node) buildResize(r *http.Request) (fsm.Command, func(any, uint64) any, error) {
	var req api.Resize
	if err := decodeBody(r, &req); err != nil {
		return nil, nil, err
	}
	name := r.PathValue("name")
	if d := n.fsm.State().Devices[name]; d != nil && !d.Create && d.Handler != fsm.HandlerNullIO {
		size, err := storageSize(d.Path)
		if err != nil {
			return nil, nil, badRequest("%v", err)
		}
		if size < req.Size {
			return nil, nil, badRequest("%s holds %d bytes; grow the file or device first, then resize the LUN", d.Path, size)
		}
	}
	return &fsm.ResizeDevice{Name: name, Size: req.Size}, n.renderLUN, nil
}
