package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm"
)

func (n *Node) localStatus() api.LocalStatus {
	leader, _ := n.leader()
	stats := n.raft.Stats()
	var term uint64
	fmt.Sscan(stats["term"], &term)
	return api.LocalStatus{
		Name:       n.cfg.Name,
		RaftRole:   raftRole(n.raft.State()),
		Leader:     leader,
		Term:       term,
		CommitIdx:  n.raft.CommitIndex(),
		Generation: n.served.Load(),
		Version:    n.cfg.Version,
		Protocol:   n.cfg.Protocol,
		Protocols:  n.protocols(),
		Ready:      n.IsReady(),
		Settling:   n.settling(),
	}
}

func raftRole(s raft.RaftState) string {
	switch s {
	case raft.Leader:
		return "leader"
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	}
	return "none"
}

func (n *Node) handleLocal(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, n.localStatus())
}

// readStatus gathers every voter's and member's own view in parallel: a
// node's role, term and generation are only known to the node itself.
func (n *Node) readStatus(r *http.Request, s *fsm.State) (any, error) {
	local := n.localStatus()
	out := api.ClusterStatus{Leader: local.Leader, Term: local.Term, CommitIdx: local.CommitIdx, Generation: s.Index,
		ClusterVersion: s.ActiveVersion()}
	rows := n.statusRows(s)
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range rows {
		row := &rows[i]
		if row.Name == n.cfg.Name {
			fillLocal(row, &local)
			continue
		}
		if row.Address == "" || row.Gossip == "dead" || row.Gossip == "left" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ls, err := n.fetchLocal(ctx, row.Address)
			if err != nil {
				row.Healthy, row.Error = false, err.Error()
				return
			}
			fillLocal(row, ls)
		}()
	}
	wg.Wait()
	out.Nodes = rows
	out.MixedVersions = MixedVersions(rows)
	return out, nil
}

func fillLocal(row *api.NodeStatus, ls *api.LocalStatus) {
	row.RaftRole, row.Term, row.CommitIdx, row.Generation = ls.RaftRole, ls.Term, ls.CommitIdx, ls.Generation
	row.Version, row.Protocol, row.Protocols = ls.Version, ls.Protocol, ls.Protocols
	row.Ready = ls.Ready
	row.Healthy = row.Gossip == "alive" && ls.Ready
}

// statusRows lists every node the cluster knows of: Raft voters, gossip
// members and state records.
func (n *Node) statusRows(s *fsm.State) []api.NodeStatus {
	rows := map[string]*api.NodeStatus{}
	row := func(name string) *api.NodeStatus {
		if rows[name] == nil {
			rows[name] = &api.NodeStatus{Name: name, RaftRole: "none", Gossip: "unknown"}
		}
		return rows[name]
	}
	for name, rec := range s.Nodes {
		r := row(name)
		r.Address, r.ISCSIAddress, r.RaftAddress, r.PortGroup = rec.APIAddr, rec.ISCSIAddr, rec.RaftAddr, rec.PortGroup
		r.Version, r.Protocol = rec.Version, rec.Protocol
	}
	for name, m := range n.members() {
		r := row(name)
		r.Gossip = gossipState(m.State)
		if m.MetaErr == nil {
			r.Address, r.ISCSIAddress, r.RaftAddress = m.Meta.API, m.Meta.ISCSI, m.Meta.Raft
			r.Version, r.Protocol, r.Protocols = m.Meta.Version, m.Meta.Protocol, m.Meta.table
		}
	}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, srv := range f.Configuration().Servers {
			r := row(string(srv.ID))
			r.Voter = srv.Suffrage == raft.Voter
			if r.RaftAddress == "" {
				r.RaftAddress = string(srv.Address)
			}
		}
	}
	out := make([]api.NodeStatus, 0, len(rows))
	for _, name := range fsm.SortedKeys(rows) {
		out = append(out, *rows[name])
	}
	return out
}

func (n *Node) handleMembers(w http.ResponseWriter, _ *http.Request) {
	voters := map[string]bool{}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			voters[string(s.ID)] = s.Suffrage == raft.Voter
		}
	}
	members := n.members()
	out := []api.Member{}
	for _, name := range fsm.SortedKeys(members) {
		m := members[name]
		out = append(out, api.Member{
			Name: name, Address: m.Addr, Gossip: gossipState(m.State), Version: m.Meta.Version, Protocol: m.Meta.Protocol,
			APIAddr: m.Meta.API, ISCSI: m.Meta.ISCSI, RaftAddr: m.Meta.Raft, Voter: voters[name],
		})
	}
	writeJSON(w, http.StatusOK, out)
}

// handleRemoveNode removes a dead node from Raft and the configuration. A
// live node is refused: the leader would add it straight back.
func (n *Node) handleRemoveNode(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if name == n.cfg.Name {
		writeError(w, http.StatusConflict, api.CodeConflict, "cannot remove the leader itself; transfer leadership first (hatarget cluster transfer-leadership)")
		return
	}
	if m, ok := n.members()[name]; ok && (m.State == memberlist.StateAlive || m.State == memberlist.StateSuspect) {
		writeError(w, http.StatusConflict, api.CodeConflict, fmt.Sprintf("node %s is %s; stop it before removing it", name, gossipState(m.State)))
		return
	}
	inRaft := false
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			inRaft = inRaft || string(s.ID) == name
		}
	}
	inState := n.fsm.State().Nodes[name] != nil
	if !inRaft && !inState {
		writeError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("no node %q in the cluster", name))
		return
	}
	if inRaft {
		if err := n.raft.RemoveServer(raft.ServerID(name), 0, applyTimeout).Error(); err != nil {
			writeErr(w, fmt.Errorf("removing %s from Raft: %w", name, err))
			return
		}
	}
	var gen uint64
	if inState {
		var err error
		if _, gen, err = n.proposeAs(n.principalOf(r.Context()), &fsm.RemoveNode{Name: name}); err != nil {
			writeErr(w, err)
			return
		}
	}
	n.log.Info("removed node", "member", name)
	writeJSON(w, http.StatusOK, api.Result{Generation: max(gen, n.fsm.State().Index)})
}

func (n *Node) handleTransferLeadership(w http.ResponseWriter, r *http.Request) {
	var req api.TransferLeadership
	if r.ContentLength != 0 {
		if err := decodeBody(r, &req); err != nil {
			writeErr(w, err)
			return
		}
	}
	var f raft.Future
	if req.To == "" {
		f = n.raft.LeadershipTransfer()
	} else {
		addr := n.raftAddress(req.To)
		if addr == "" {
			writeError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("no voter named %q", req.To))
			return
		}
		if req.To == n.cfg.Name {
			writeJSON(w, http.StatusOK, n.localStatus())
			return
		}
		f = n.raft.LeadershipTransferToServer(raft.ServerID(req.To), raft.ServerAddress(addr))
	}
	if err := f.Error(); err != nil {
		writeErr(w, fmt.Errorf("leadership transfer: %w", err))
		return
	}
	// Answer once this node has heard from the new leader, so that the
	// answer names it.
	deadline := time.Now().Add(3 * time.Second)
	for leader, _ := n.leader(); (leader == "" || leader == n.cfg.Name) && time.Now().Before(deadline); leader, _ = n.leader() {
		time.Sleep(50 * time.Millisecond)
	}
	writeJSON(w, http.StatusOK, n.localStatus())
}

func (n *Node) raftAddress(name string) string {
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			if string(s.ID) == name {
				return string(s.Address)
			}
		}
	}
	return ""
}

func (n *Node) readSnapshot(_ *http.Request, s *fsm.State) (any, error) {
	return fsm.MarshalSnapshot(s)
}

func (n *Node) buildRestore(r *http.Request) (fsm.Command, func(any, uint64) any, error) {
	b, err := readRawBody(r)
	if err != nil {
		return nil, nil, err
	}
	s, err := fsm.UnmarshalSnapshot(b)
	if err != nil {
		return nil, nil, err
	}
	return &fsm.Restore{State: s}, resultOnly, nil
}

// newIdentity returns a fresh unit serial number and NAA designator. The
// NAA is type 6 (IEEE registered extended) with company id 0 and 100
// random bits: unique in practice, and stable because it is stored.
func newIdentity() (serial, naa string) {
	var b [21]byte
	_, _ = rand.Read(b[:])
	serial = hex.EncodeToString(b[:8])
	vendor := hex.EncodeToString(b[8:])[:25]
	return serial, "6000000" + vendor
}

// fillIdentity gives a device without a serial or NAA fresh ones.
func fillIdentity(d *fsm.Device) {
	serial, naa := newIdentity()
	if d.Serial == "" {
		d.Serial = serial
	}
	if d.NAA == "" {
		d.NAA = naa
	}
}

// storagePath checks, on the leader, the backing storage of a new LUN on
// shared storage (what the leader sees every node sees) and completes the
// device: a new file at the path, or the size of an existing one.
func storagePath(req api.CreateLUN, d *fsm.Device) error {
	if d.Handler == fsm.HandlerNullIO {
		if req.Path != "" {
			return badRequest("the nullio handler has no backing storage; drop --path")
		}
		if req.Size <= 0 {
			return badRequest("the nullio handler needs --size")
		}
		return nil
	}
	d.Path, d.Create = req.Path, req.Size > 0
	if !filepath.IsAbs(d.Path) {
		return badRequest("path %q must be absolute: every node opens it", d.Path)
	}
	if d.Create {
		if _, err := os.Stat(d.Path); err == nil {
			return &api.Error{Status: http.StatusConflict, Code: api.CodeConflict,
				Message: fmt.Sprintf("%s already exists; to use it as it is, give --path without --size", d.Path)}
		}
		if err := os.MkdirAll(filepath.Dir(d.Path), 0o700); err != nil {
			return badRequest("cannot create the directory for %s: %v", d.Path, err)
		}
		return nil
	}
	size, err := storageSize(d.Path)
	if err != nil {
		return badRequest("%v", err)
	}
	d.Size = size - size%int64(d.BlockSize)
	if d.Size == 0 {
		return badRequest("%s is smaller than one %d-byte block", d.Path, d.BlockSize)
	}
	return nil
}

// replicatedPath completes a replicated device's storage: each replica
// keeps its own copy, under its --storage-dir (the path is relative) or at
// --path, created sparse where missing. The leader cannot see the other
// nodes' disks, so only the request is checked here.
func replicatedPath(req api.CreateLUN, d *fsm.Device) error {
	switch {
	case req.Size <= 0:
		return badRequest("a replicated LUN needs --size: every replica creates its copy at that size (or uses the file or device at --path, " +
			"when it holds that much); for a file or device on storage every node reaches, give --shared")
	case req.Path == "":
		d.Path, d.Create = req.Name+".img", true
	case !filepath.IsAbs(req.Path):
		return badRequest("path %q must be absolute: every replica opens it", req.Path)
	default:
		d.Path, d.Create = req.Path, true
	}
	return nil
}

// removeCreatedFiles deletes the backing files the cluster created for
// LUNs a delete removed. Files the operator brought (--path without
// --size, imports) are never touched. The storage is shared, so the
// leader does it once; nodes that still have the file open keep working
// on the unlinked file until they close it.
func (n *Node) removeCreatedFiles(before, after *fsm.State) {
	inUse := map[string]bool{}
	for _, d := range after.Devices {
		inUse[d.Path] = true
	}
	for name, d := range before.Devices {
		// Each replica of a replicated LUN removes its own copy when its
		// dataplane applies the deletion (target.Device.OwnCopy).
		if after.Devices[name] != nil || !d.Create || d.Path == "" || inUse[d.Path] || d.Replicated() {
			continue
		}
		if err := os.Remove(d.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
			n.log.Warn("removing the backing file of a deleted LUN", "lun", name, "path", d.Path, "err", err)
			continue
		}
		n.log.Info("removed the backing file of a deleted LUN", "lun", name, "path", d.Path)
	}
}

func (n *Node) storageDir() string {
	dir, err := filepath.Abs(n.cfg.StorageDir)
	if err != nil {
		return n.cfg.StorageDir
	}
	return dir
}

// storageSize is the size of a file or block device.
func storageSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("%s does not exist; give --size to create it", path)
		}
		return 0, err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return size, nil
}

func sortedMappings(ms []fsm.Mapping) []api.Mapping {
	out := make([]api.Mapping, 0, len(ms))
	for _, m := range ms {
		out = append(out, api.Mapping{Target: m.Target, Group: m.Group, LUN: m.LUN, ReadOnly: m.ReadOnly})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Target != out[j].Target {
			return out[i].Target < out[j].Target
		}
		return out[i].LUN < out[j].LUN
	})
	return out
}

// describeLUN renders d as the API shows it, with what view and the
// owner's account of its resyncs (see lunViews) say of its replicas.
func describeLUN(s *fsm.State, d *fsm.Device, view clusterView, resyncs lunResyncs) api.LUN {
	return api.LUN{
		Name: d.Name, Handler: d.Handler, Path: d.Path, Size: d.Size, BlockSize: d.BlockSize,
		ReadOnly: d.ReadOnly, NVCache: d.NVCache, WriteThrough: d.WriteThrough, Thin: d.Thin, Removable: d.Removable,
		Serial: d.Serial, NAA: d.NAA, Owner: d.Owner, Epoch: d.Epoch, NonOwner: nonOwnerPolicy(d), Mappings: sortedMappings(s.Mappings(d.Name)),
		Replicas: replicaViews(d, view, resyncs.progress), ResyncUnavailable: resyncs.unavailable,
	}
}

// replicaViews describes the copies of a replicated LUN: the in-sync set
// from Raft, liveness from gossip (view), and the progress of the resyncs
// the owner runs, by node.
func replicaViews(d *fsm.Device, view clusterView, progress map[string]api.ResyncProgress) []api.Replica {
	if !d.Replicated() {
		return nil
	}
	out := make([]api.Replica, 0, len(d.Replicas))
	for _, node := range d.Replicas {
		r := api.Replica{Node: node, State: api.ReplicaOutOfSync, Owner: node == d.Owner}
		switch {
		case view.gone(node):
			r.State = api.ReplicaDown
		case d.IsInSync(node):
			r.State = api.ReplicaInSync
		}
		if p, ok := progress[node]; ok && r.State == api.ReplicaOutOfSync {
			r.State = api.ReplicaResyncing
			r.ResyncDone, r.ResyncTotal, r.ResyncPhase, r.ResyncError = p.Done, p.Total, p.Phase, p.Error
		}
		out = append(out, r)
	}
	return out
}

func nonOwnerPolicy(d *fsm.Device) string {
	if d.Standby {
		return api.NonOwnerStandby
	}
	return api.NonOwnerActive
}

func lunMaps(luns []fsm.LUN) []api.LUNMap {
	out := []api.LUNMap{}
	for _, l := range luns {
		out = append(out, api.LUNMap{LUN: l.Number, Name: l.Device, ReadOnly: l.ReadOnly})
	}
	return out
}

func targetView(s *fsm.State, t *fsm.Target) api.Target {
	v := api.Target{
		IQN: t.IQN, Alias: t.Alias, Enabled: t.Enabled, LUNs: lunMaps(t.LUNs),
		AllowedInitiators: append([]string{}, t.AllowedInitiators...), Portals: []string{},
	}
	for _, g := range t.Groups {
		v.Groups = append(v.Groups, api.InitiatorGroup{Name: g.Name, Initiators: g.Initiators, LUNs: lunMaps(g.LUNs)})
	}
	for _, u := range t.IncomingUsers {
		v.CHAPUsers = append(v.CHAPUsers, u.User)
	}
	if t.OutgoingUser != nil {
		v.MutualCHAPUser = t.OutgoingUser.User
	}
	if len(t.Params) > 0 {
		v.Params = map[string]string{}
		for _, p := range t.Params {
			v.Params[p.Key] = p.Value
		}
	}
	for _, p := range clusterPortals(s) {
		v.Portals = append(v.Portals, p.Addr)
	}
	return v
}

func strOrDefault(s, def string) string {
	if strings.TrimSpace(s) == "" {
		return def
	}
	return s
}
