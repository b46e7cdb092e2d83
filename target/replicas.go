package target

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"github.com/hatarget/hatarget/replication"
	"github.com/hatarget/hatarget/target/backend"
)

// Synchronous replication (replication/DESIGN.md): each node holding a
// copy of a replicated device keeps it open. The owner's LU writes through
// a replication.Volume, which writes its copy and every other in-sync copy
// before a write completes; every other copy is written only by the
// replication server, for the owner of the current epoch.

// Replication is a replicated device as this node takes part in it.
type Replication struct {
	// Owner names the node whose writes the copies take; Epoch is its
	// ownership epoch.
	Owner string
	Epoch uint64
	// Peers are the in-sync replicas other than the owner, with their
	// replication addresses: where the owner writes.
	Peers []Replica
	// Resync are the replicas out of the in-sync set that can be reached:
	// the owner brings each up to date while it serves, and readmits it
	// to the set (replication/resync.go).
	Resync []Replica
	// Replicas names every node holding a copy, reachable or not.
	Replicas []string
	// ResumeState: the owner may resume the dirty bitmaps it persisted
	// (replication.VolumeConfig.ResumeState).
	ResumeState bool
}

// Replica is a node holding a copy, and where its replication server is.
type Replica struct {
	Node string
	Addr string
}

// ReplicationOptions connect the dataplane to its replica set.
type ReplicationOptions struct {
	// Self is this node's name, as Replication.Owner and Replica.Node
	// spell it.
	Self string
	// Secret authenticates replication connections (both ends must agree;
	// empty: none).
	Secret string
	// Dial opens a node connection (the cluster's one dialer).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Membership removes a replica that failed from the in-sync set (a
	// Raft commit) before the owner acknowledges a write without it, and
	// readmits a resynchronised one.
	Membership replication.Membership
	// ResyncRate bounds the bytes per second the resyncs of one device
	// read and copy: 0 is replication.DefaultResyncRate, negative
	// unlimited.
	ResyncRate int64
}

// replicaAnswerTimeout bounds a replica's answer to one write; one that
// does not answer in time is dropped from the in-sync set.
const replicaAnswerTimeout = time.Second

// promotionTimeout bounds what a new owner does before serving: sealing
// the old epoch on every in-sync copy and rewriting the regions that had
// writes in flight.
const promotionTimeout = 5 * time.Second

// ownsHere reports whether this node executes the device's commands.
func (s *Server) ownsHere(cfg Config, device string) bool {
	o, ok := cfg.Owners[device]
	return ok && o.Addr == "" && !o.Gone
}

// luDevice is the device an LU of d uses: the replicated volume when this
// node owns a replicated device, else its own storage. A new owner seals
// the old epoch on every in-sync copy and makes the regions that had
// writes in flight identical everywhere before its LU may write.
func (s *Server) luDevice(cfg Config, d Device, u *unit) (backend.Device, error) {
	repl, replicated := cfg.Replication[d.Name]
	if !replicated || !s.ownsHere(cfg, d.Name) || d.Backend.Handler == backend.NullIO {
		u.vol = nil
		return u.dev, nil
	}
	peers, err := s.replicaPeers(repl.Peers)
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", d.Name, err)
	}
	if u.vol != nil && u.vol.Epoch() == repl.Epoch {
		// updateVolumes gives it the new state once the configuration is
		// applied.
		return u.vol.Device(), nil
	}
	// Resyncs start once the configuration is applied (updateVolumes): a
	// volume left behind by a configuration that fails must not write.
	vol, err := replication.NewVolume(replication.VolumeConfig{
		Device: d.Name, Local: u.dev, Epoch: repl.Epoch, Self: s.repl.Self, InSync: peers,
		Membership: s.repl.Membership, Timeout: replicaAnswerTimeout, ResyncRate: s.repl.ResyncRate,
		Logger: s.log.With("lun", d.Name), StateDir: s.replStateDir(d.Name),
		ResumeState: repl.ResumeState,
	})
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", d.Name, err)
	}
	if err := s.promote(d.Name, vol, peers); err != nil {
		return nil, fmt.Errorf("device %s: taking over epoch %d: %w", d.Name, repl.Epoch, err)
	}
	u.vol = vol
	return vol.Device(), nil
}

// promote seals the new epoch on every in-sync copy (from then on none
// takes a write of an older owner) and starts rewriting, from this node's
// copy, every region some copy saw a write to recently: a write the old
// owner had in flight may have reached some copies and not others. The
// rewrite runs while the LU serves (it may cover the whole LUN), so only
// the seal bounds how long a failover takes.
func (s *Server) promote(device string, vol *replication.Volume, peers []*replication.Peer) error {
	ctx, cancel := context.WithTimeout(context.Background(), promotionTimeout)
	defer cancel()
	if err := vol.Seal(ctx); err != nil {
		return err
	}
	regions := s.replSrv.ActivityLog(device)
	for _, p := range peers {
		ext, err := p.Activity(ctx, device, vol.Epoch())
		if err != nil {
			// A copy that cannot answer was dropped by the seal or will be
			// by the first write; its regions come back with its resync.
			continue
		}
		regions = append(regions, ext...)
	}
	vol.ReconcileInBackground(regions)
	return nil
}

// replicaPeers returns a connection to each replica, reusing those already
// open; one to a replica that is down keeps redialling, so that writes to
// it fail and drop it rather than forget it.
func (s *Server) replicaPeers(replicas []Replica) ([]*replication.Peer, error) {
	out := make([]*replication.Peer, 0, len(replicas))
	for _, r := range replicas {
		key := r.Node + "@" + r.Addr
		p := s.peers[key]
		if p == nil {
			var err error
			p, err = replication.NewPeer(replication.PeerConfig{
				Node: r.Node, Addr: r.Addr, Self: s.repl.Self, Secret: s.repl.Secret, Dial: s.repl.Dial,
				Logger: s.log.With("replica", r.Node),
			})
			if err != nil {
				return nil, err
			}
			s.peers[key] = p
		}
		out = append(out, p)
	}
	return out, nil
}

// updateVolumes runs once cfg is applied: it hands every replicated
// volume this node owns its in-sync set and the replicas to resync, stops
// the resyncs of the volumes no longer used, and publishes the volumes
// for ResyncProgress. Only the writable unit of a device resyncs.
func (s *Server) updateVolumes(cfg Config, next map[unitKey]*unit) {
	vols := map[string]*replication.Volume{}
	for k, u := range next {
		if u.vol == nil {
			continue
		}
		repl := cfg.Replication[k.device]
		peers, err := s.replicaPeers(repl.Peers)
		if err != nil {
			s.log.Error("replicated volume not updated", "lun", k.device, "err", err)
			continue
		}
		var resync []*replication.Peer
		if !k.readOnly {
			if resync, err = s.replicaPeers(repl.Resync); err != nil {
				s.log.Error("out-of-sync replicas not resynced", "lun", k.device, "err", err)
				resync = nil
			}
			vols[k.device] = u.vol
		}
		u.vol.Update(repl.Epoch, peers, resync)
		u.vol.Retain(repl.Replicas)
	}
	for k, u := range s.units {
		if u.vol != nil && (next[k] == nil || next[k].vol != u.vol) {
			u.vol.StopResync()
		}
	}
	s.volMu.Lock()
	s.vols = vols
	s.volMu.Unlock()
}

// ResyncProgress is where the resync of one out-of-sync replica stands.
type ResyncProgress = replication.ResyncProgress

// ResyncProgress reports the resyncs of the out-of-sync replicas of a
// replicated device this node owns, by node; nil when it owns no such
// device or resyncs none.
func (s *Server) ResyncProgress(device string) map[string]ResyncProgress {
	s.volMu.Lock()
	vol := s.vols[device]
	s.volMu.Unlock()
	if vol == nil {
		return nil
	}
	p := vol.Resync()
	if len(p) == 0 {
		return nil
	}
	return p
}

// closeUnusedPeers closes the connections no replicated device of cfg
// writes through any more.
func (s *Server) closeUnusedPeers(cfg Config) {
	used := map[string]bool{}
	for name, r := range cfg.Replication {
		if s.ownsHere(cfg, name) {
			for _, p := range r.Peers {
				used[p.Node+"@"+p.Addr] = true
			}
			for _, p := range r.Resync {
				used[p.Node+"@"+p.Addr] = true
			}
		}
	}
	for key, p := range s.peers {
		if !used[key] {
			p.Close()
			delete(s.peers, key)
		}
	}
}

// replicaDevices is what the replication server writes: this node's copy
// of every replicated device it holds, for the device's owner.
func (s *Server) replicaDevices(cfg Config, units map[unitKey]*unit) map[string]replication.ReplicaDevice {
	out := map[string]replication.ReplicaDevice{}
	for k, u := range units {
		r, ok := cfg.Replication[k.device]
		if !ok || k.readOnly || u.cfg.Backend.Handler == backend.NullIO {
			continue
		}
		rd := replication.ReplicaDevice{Device: u.dev, Owner: r.Owner, Epoch: r.Epoch}
		if dir := s.replStateDir(k.device); dir != "" {
			rd.ActivityFile = filepath.Join(dir, "activity")
		}
		out[k.device] = rd
	}
	return out
}

// replStateDir is where a replicated device's state survives a restart:
// the owner's dirty bitmaps of the other copies, and this copy's activity
// log. Empty without a state dir.
func (s *Server) replStateDir(device string) string {
	if s.stateDir == "" {
		return ""
	}
	return filepath.Join(s.stateDir, stateFileName(device)+".repl")
}

// ServeReplication takes, on l, the writes owners of replicated devices
// send to this node's copies. It returns nil after Shutdown.
func (s *Server) ServeReplication(l net.Listener) error {
	err := s.replSrv.Serve(l)
	if errors.Is(err, replication.ErrServerClosed) {
		return nil
	}
	return err
}
