package cluster

import (
	"fmt"
	"net/http"

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

func (n *Node) readLUNs(_ *http.Request, s *fsm.State) (any, error) {
	out := []api.LUN{}
	for _, name := range fsm.SortedKeys(s.Devices) {
		out = append(out, n.lunView(s, s.Devices[name]))
	}
	return out, nil
}

func (n *Node) readLUN(r *http.Request, s *fsm.State) (any, error) {
	name := r.PathValue("name")
	d := s.Devices[name]
	if d == nil {
		return nil, &fsm.Error{Code: fsm.CodeNotFound, Msg: fmt.Sprintf("no LUN named %q", name)}
	}
	return n.lunView(s, d), nil
}

func (n *Node) renderLUN(res any, _ uint64) any {
	d, ok := res.(*fsm.Device)
	if !ok {
		return res
	}
	return n.lunView(n.fsm.State(), d)
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
	if s := n.fsm.State(); s.Devices[req.Name] != nil {
		return nil, nil, &fsm.Error{Code: fsm.CodeConflict, Msg: fmt.Sprintf("a LUN named %q already exists", req.Name)}
	}
	if req.Replicas > 0 {
		if err := replicatedPath(req, &d); err != nil {
			return nil, nil, err
		}
		if err := n.placeReplicas(&d, req.Replicas); err != nil {
			return nil, nil, err
		}
	} else {
		if err := n.storagePath(req, &d); err != nil {
			return nil, nil, err
		}
		n.placeOwners(&d)
	}
	fillIdentity(&d)
	return &fsm.CreateLUN{Target: req.Target, LUN: req.LUN, Device: d}, n.renderLUN, nil
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
