package target

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hatarget/hatarget/alua"
	"github.com/hatarget/hatarget/replication"
	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/forward"
	"github.com/hatarget/hatarget/target/iscsi"
	"github.com/hatarget/hatarget/target/scsi"
)

// Options configure the dataplane.
type Options struct {
	Logger *slog.Logger
	ISCSI  iscsi.Options
	// StateDir keeps per-device state that must survive a restart
	// (persistent reservations with APTPL). Empty: APTPL is not offered.
	StateDir string
	// Registerer, when set, receives the dataplane's Prometheus collectors
	// (metrics.go): per-LUN commands, bytes, latency and errors, sessions
	// per target and connections. New panics if it refuses them. Nil: no
	// metrics, and commands are not even timed.
	Registerer prometheus.Registerer
	// Reservations, when set, holds the persistent reservation state of
	// every device instead of this node's memory and APTPL files: a
	// cluster replicates it so that every node enforces the same
	// reservations.
	Reservations ReservationProvider
	// ForwardDial dials another node's forwarding listener (ServeForward)
	// for the devices Config.Owners places elsewhere: a cluster passes its
	// node dialer. Nil: no forwarding, and a Config naming an owner address
	// is refused.
	ForwardDial func(ctx context.Context, addr string) (net.Conn, error)
	// Lease, when set, is the cluster's owner lease: the LUs of devices
	// with an Owners entry execute commands only while it is valid.
	Lease *scsi.Lease
	// Replication connects the devices Config.Replication lists to their
	// other copies (replicas.go).
	Replication ReplicationOptions
}

// ReservationProvider supplies the reservation store of each device.
type ReservationProvider interface {
	// Store returns the store of a device's reservation state. Effects of
	// operations applied on other nodes (unit attentions, aborts) are
	// delivered to lu.
	Store(device string, lu scsi.EffectApplier) scsi.ReservationStore
	// Release forgets a device the dataplane no longer serves.
	Release(device string)
}

// Server serves a Config over iSCSI.
type Server struct {
	log      *slog.Logger
	iscsi    *iscsi.Server
	stateDir string
	metrics  *metrics    // nil without a Registerer
	lease    *scsi.Lease // the cluster's owner lease, nil on a single node
	prs      ReservationProvider

	forwardDial func(ctx context.Context, addr string) (net.Conn, error)
	fwd         *forward.Server // executes other nodes' commands (ServeForward)
	// routes is what fwd looks every forwarded command's device up in: an
	// immutable table that Apply replaces, so that the hot path takes no
	// lock.
	routes atomic.Pointer[map[string]route]

	mu sync.Mutex
	// clients forward to the owner addresses the configuration uses, one
	// per address whatever the number of devices it owns.
	clients map[string]*forward.Client
	// repl, replSrv and peers serve replicated devices (replicas.go):
	// the server writes this node's copies for their owners, peers are
	// the owner's connections to the other copies (guarded by mu).
	repl    ReplicationOptions
	replSrv *replication.Server
	peers   map[string]*replication.Peer
	// vols are the replicated volumes this node owns, by device, for
	// ResyncProgress (volMu: Apply holds mu while it promotes).
	volMu sync.Mutex
	vols  map[string]*replication.Volume
	// units are the opened devices with their logical units, by device
	// name and, for read-only mappings of writable devices, a second LU.
	units map[unitKey]*unit
	cfg   Config
}

type unitKey struct {
	device   string
	readOnly bool // a read-only mapping of a device that is itself writable
}

type unit struct {
	cfg    Device
	groups []alua.Group // the LU's port groups (Config.PortGroups)
	leased bool         // the LU obeys the owner lease (an Owners entry)
	dev    backend.Device
	// vol is the replicated volume over dev while this node owns a
	// replicated device; luDev what the LU writes: vol's device or dev.
	vol   *replication.Volume
	luDev backend.Device
	lu    *scsi.LU
	own   *ownership // lives as long as lu, across Applies
}

// ownership is where a writable unit's commands execute.
type ownership struct {
	// epoch is what the unit's forwarder sends with every command: a move
	// that keeps the owner address changes only this, not the forwarder.
	epoch atomic.Uint64
	// addr is the owner's forwarding address, "" when the LU executes here;
	// fwd its forwarder while addr is set; gone whether the owner is
	// unreachable. All are guarded by Server.mu.
	addr string
	fwd  *forward.LUForwarder
	gone bool
}

// route is how the forward server sees a device.
type route struct {
	lu    *scsi.LU
	epoch uint64
	owner bool
}

// New returns a server with an empty configuration.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	opts.ISCSI.Logger = opts.Logger
	srv := iscsi.NewServer(opts.ISCSI)
	s := &Server{
		log:         opts.Logger,
		iscsi:       srv,
		stateDir:    opts.StateDir,
		metrics:     newMetrics(opts.Registerer, srv),
		prs:         opts.Reservations,
		lease:       opts.Lease,
		forwardDial: opts.ForwardDial,
		units:       map[unitKey]*unit{},
		clients:     map[string]*forward.Client{},
		repl:        opts.Replication,
		replSrv:     replication.NewServer(replication.ServerConfig{Secret: opts.Replication.Secret, Logger: opts.Logger}),
		peers:       map[string]*replication.Peer{},
	}
	s.routes.Store(&map[string]route{})
	fwd, err := forward.NewServer(forward.ServerConfig{Lookup: s.lookup, Logger: opts.Logger})
	if err != nil {
		panic(err) // only a missing Lookup makes it fail
	}
	s.fwd = fwd
	return s
}

// Listen opens an iSCSI portal on addr.
func (s *Server) Listen(addr string) (net.Addr, error) { return s.iscsi.Listen(addr) }

// ISCSI exposes the transport for status queries (sessions, connections).
func (s *Server) ISCSI() *iscsi.Server { return s.iscsi }

// ServeForward executes, for the LUs this node owns, the commands other
// nodes forward to it on l. It returns nil after Shutdown (which closes l),
// and the accept error when l fails or is closed by the caller.
func (s *Server) ServeForward(l net.Listener) error {
	err := s.fwd.Serve(l)
	if errors.Is(err, forward.ErrServerClosed) {
		l.Close() // Serve leaves alone a listener it is handed after Close
		return nil
	}
	return err
}

// lookup is the forward server's view of a device: it owns the devices
// without an Owners entry, as a single node does.
func (s *Server) lookup(device string) (*scsi.LU, uint64, bool) {
	r := (*s.routes.Load())[device]
	return r.lu, r.epoch, r.owner
}

// Apply makes cfg the served configuration. It validates everything and
// opens every new device before changing anything, so a bad configuration
// leaves the old one serving untouched.
func (s *Server) Apply(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if s.forwardDial == nil {
		for name, o := range cfg.Owners {
			if o.Addr != "" {
				return fmt.Errorf("device %s: owned by %s, and this server cannot forward (no ForwardDial)", name, o.Addr)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Devices that left the served configuration stop being exported; so do
	// those of a refused one, whose series openUnits created.
	defer func() { s.metrics.retain(s.cfg) }()
	clients, err := s.forwardClients(cfg)
	if err != nil {
		return err
	}
	next, opened, commit, err := s.openUnits(cfg)
	if err != nil {
		closeClients(clients, s.clients)
		for _, u := range opened {
			u.dev.Close()
		}
		return err
	}
	if err := commit(); err != nil {
		s.log.Error("updating logical units", "err", err)
	}
	// Before the targets: a new LU of a device owned elsewhere must never
	// execute a command here.
	s.route(cfg, next, clients)
	targets, changedLUNs := s.buildTargets(cfg, next)
	s.iscsi.SetTargets(targets, cfg.DiscoveryUsers)
	for _, u := range changedLUNs {
		u.lu.RaiseReportedLUNsChanged()
	}
	s.closeRemoved(next)
	// No LU forwards through the clients left behind any more, but
	// commands sent through them may still be on their way back: closing
	// at once would fail them although the old owner may have executed
	// them, so the clients close once idle. A gone owner's answers are
	// not worth waiting for: whatever it still executes, it executes
	// under a lease that is running out, and the initiator retries.
	gone := goneOwners(cfg)
	for addr, c := range s.clients {
		switch {
		case clients[addr] == c:
		case gone[addr]:
			go c.Close()
		default:
			go c.CloseWhenIdle(ownerSilence)
		}
	}
	s.replSrv.SetDevices(s.replicaDevices(cfg, next))
	s.updateVolumes(cfg, next)
	s.removeDeleted(next)
	s.closeUnusedPeers(cfg)
	s.units, s.clients = next, clients
	s.cfg = cfg
	s.log.Info("configuration applied", "devices", len(cfg.Devices), "targets", len(cfg.Targets))
	return nil
}

// openUnits builds the unit table for cfg: unchanged devices are kept (with
// their unit attention and mode state), changed ones are reopened, new ones
// opened. LUs of changed devices are updated by the returned commit, which
// runs only once every device opened, so a failure changes nothing.
func (s *Server) openUnits(cfg Config) (map[unitKey]*unit, []*unit, func() error, error) {
	next := map[unitKey]*unit{}
	var opened []*unit
	var updates []func() error
	devices := map[string]Device{}
	for _, d := range cfg.Devices {
		devices[d.Name] = d
	}
	for _, key := range neededUnits(cfg, devices) {
		d := devices[key.device]
		groups := cfg.PortGroups[key.device]
		_, leased := cfg.Owners[key.device]
		old := s.units[key]
		if old != nil && old.cfg.Backend == d.Backend {
			u := &unit{cfg: d, groups: groups, leased: leased, dev: old.dev, vol: old.vol, lu: old.lu, own: old.own}
			var err error
			if u.luDev, err = s.luDevice(cfg, d, u); err != nil {
				return nil, opened, nil, err
			}
			if old.cfg != d || old.leased != leased || !slices.EqualFunc(old.groups, groups, alua.Group.Equal) || old.luDev != u.luDev {
				luCfg := s.luConfig(d, u.luDev, key, groups, leased)
				if err := luCfg.Validate(); err != nil {
					return nil, opened, nil, fmt.Errorf("device %s: %w", d.Name, err)
				}
				updates = append(updates, func() error { return u.lu.Update(luCfg) })
			}
			next[key] = u
			continue
		}
		dev, err := backend.Open(d.Backend)
		if err != nil {
			return nil, opened, nil, fmt.Errorf("device %s: %w", d.Name, err)
		}
		u := &unit{cfg: d, groups: groups, leased: leased, dev: dev, own: new(ownership)}
		opened = append(opened, u)
		if u.luDev, err = s.luDevice(cfg, d, u); err != nil {
			return nil, opened, nil, err
		}
		luCfg := s.luConfig(d, u.luDev, key, groups, leased)
		if old != nil {
			// Same device name, new storage: keep the LU and its nexus state.
			if err := luCfg.Validate(); err != nil {
				return nil, opened, nil, fmt.Errorf("device %s: %w", d.Name, err)
			}
			u.lu, u.own = old.lu, old.own
			updates = append(updates, func() error { return u.lu.Update(luCfg) })
		} else if u.lu, err = s.newLU(luCfg, key); err != nil {
			return nil, opened, nil, fmt.Errorf("device %s: %w", d.Name, err)
		}
		next[key] = u
	}
	// Every update was validated above, so an error here is a bug to
	// report, not a half-applied configuration to roll back.
	commit := func() error {
		var errs []error
		for _, f := range updates {
			errs = append(errs, f())
		}
		return errors.Join(errs...)
	}
	return next, opened, commit, nil
}

// forwardClients returns the forward client of every owner address cfg
// uses, keeping the current ones; the new ones dial on their first command.
func (s *Server) forwardClients(cfg Config) (map[string]*forward.Client, error) {
	next := map[string]*forward.Client{}
	for _, d := range cfg.Devices {
		o := cfg.Owners[d.Name]
		if o.Addr == "" || o.Gone || next[o.Addr] != nil {
			continue
		}
		addr := o.Addr
		c := s.clients[addr]
		if c == nil {
			var err error
			if c, err = forward.NewClient(forward.ClientConfig{Addr: addr, Dial: s.forwardDial, Logger: s.log, PeerTimeout: ownerSilence}); err != nil {
				closeClients(next, s.clients)
				return nil, fmt.Errorf("device %s: %w", d.Name, err)
			}
		}
		next[addr] = c
	}
	return next, nil
}

// closeClients closes the clients of m that keep does not hold. Commands
// still in flight through them end with a sense initiators retry.
func closeClients(m, keep map[string]*forward.Client) {
	for addr, c := range m {
		if keep[addr] != c {
			c.Close()
		}
	}
}

// route points every writable unit at where its commands execute, and
// publishes the table the forward server looks devices up in. A read-only
// mapping of a writable device is its own LU and always executes here,
// reading the shared storage: its unit attentions and reservations are
// this node's, not the owner's (a limit of read-only mappings in a
// cluster).
func (s *Server) route(cfg Config, units map[unitKey]*unit, clients map[string]*forward.Client) {
	table := make(map[string]route, len(units))
	for k, u := range units {
		if k.readOnly {
			continue
		}
		o := cfg.Owners[k.device]
		own := u.own
		// Stored even when the forwarder stays, so that its commands carry
		// the new epoch; commands an old forwarder is still sending carry
		// it too, and their old owner refuses them with a sense initiators
		// retry.
		own.epoch.Store(o.Epoch)
		if o.Addr != own.addr || o.Gone != own.gone {
			own.addr, own.gone, own.fwd = o.Addr, o.Gone, nil
			switch {
			case o.Gone:
				u.lu.SetOwnerGone()
			case o.Addr == "":
				u.lu.SetForwarder(nil)
			default:
				own.fwd = clients[o.Addr].ForLU(k.device, own.epoch.Load)
				u.lu.SetForwarder(own.fwd)
			}
		}
		table[k.device] = route{lu: u.lu, epoch: o.Epoch, owner: o.Addr == "" && !o.Gone}
	}
	s.routes.Store(&table)
}

// newLU creates a logical unit, with its reservations in the provider's
// store when there is one. A read-only mapping of a writable device keeps
// its own local state, as on a single node.
func (s *Server) newLU(cfg scsi.LUConfig, key unitKey) (*scsi.LU, error) {
	if s.prs == nil || key.readOnly {
		return scsi.NewLU(cfg)
	}
	sink := &effectSink{}
	cfg.Reservations, cfg.Persister = s.prs.Store(key.device, sink), nil
	lu, err := scsi.NewLU(cfg)
	if err != nil {
		s.prs.Release(key.device)
		return nil, err
	}
	sink.lu.Store(lu)
	return lu, nil
}

// effectSink lets a reservation store exist before its LU: effects that
// arrive before the LU does concern no nexus yet.
type effectSink struct{ lu atomic.Pointer[scsi.LU] }

func (e *effectSink) ApplyReservationEffects(effects []scsi.PREffect, except *scsi.Command) {
	if lu := e.lu.Load(); lu != nil {
		lu.ApplyReservationEffects(effects, except)
	}
}

// neededUnits lists the units the configuration maps, one per device plus
// one per read-only mapping of a writable device.
func neededUnits(cfg Config, devices map[string]Device) []unitKey {
	seen := map[unitKey]bool{}
	var out []unitKey
	add := func(l LUN) {
		k := unitKey{device: l.Device, readOnly: l.ReadOnly && !devices[l.Device].Backend.ReadOnly}
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for _, t := range cfg.Targets {
		for _, l := range t.LUNs {
			add(l)
		}
		for _, g := range t.Groups {
			for _, l := range g.LUNs {
				add(l)
			}
		}
	}
	// Unmapped devices are opened too, so a config error in one shows now
	// rather than when it is first mapped.
	for _, d := range cfg.Devices {
		add(LUN{Device: d.Name})
	}
	return out
}

// luConfig derives a logical unit's identity and behaviour from a device.
func (s *Server) luConfig(d Device, dev backend.Device, key unitKey, groups []alua.Group, leased bool) scsi.LUConfig {
	readOnly := key.readOnly
	serial := d.Serial
	if serial == "" {
		sum := sha256.Sum256([]byte(d.Name))
		serial = hex.EncodeToString(sum[:8])
	}
	cfg := scsi.LUConfig{
		PortGroups:      groups,
		Lease:           s.leaseIf(leased),
		Device:          dev,
		BlockSize:       d.Backend.BlockSize,
		VendorID:        d.VendorID,
		ProductID:       d.ProductID,
		Serial:          serial,
		DeviceID:        d.T10DeviceID,
		ReadOnly:        readOnly || d.Backend.ReadOnly,
		Rotational:      d.Rotational,
		Thin:            d.Thin,
		Removable:       d.Removable,
		WriteCache:      !d.Backend.WriteThrough,
		SanitizeAllowed: d.AllowSanitize,
		Aborter:         s.iscsi,
		Persister:       s.persister(key),
		Stats:           s.metrics.stats(d.Name),
	}
	if cfg.BlockSize == 0 {
		cfg.BlockSize = 512
	}
	if cfg.DeviceID == "" {
		cfg.DeviceID = d.Name
	}
	if naa, err := parseNAA(d.NAA); err == nil {
		cfg.NAA = naa
	}
	return cfg
}

// goneOwners lists the forwarding addresses of owners cfg says are gone.
func goneOwners(cfg Config) map[string]bool {
	out := map[string]bool{}
	for _, o := range cfg.Owners {
		if o.Gone && o.Addr != "" {
			out[o.Addr] = true
		}
	}
	return out
}

// ownerSilence is how long an owner may stay silent (no answer, not even
// to a ping) before the commands forwarded to it fail with a state the
// initiator retries: as long as the owner lease, after which the owner
// would stop serving anyway.
const ownerSilence = 1500 * time.Millisecond

// leaseIf is the lease a unit's LU obeys: the cluster's, for devices the
// cluster places (an Owners entry), none otherwise.
func (s *Server) leaseIf(leased bool) *scsi.Lease {
	if leased {
		return s.lease
	}
	return nil
}

// persister keeps a unit's APTPL reservation state in the state dir. A
// read-only mapping of a writable device is its own LU, so its file is too.
func (s *Server) persister(key unitKey) scsi.Persister {
	if s.stateDir == "" {
		return nil
	}
	name := stateFileName(key.device) + ".pr.json"
	if key.readOnly {
		name = strings.TrimSuffix(name, ".pr.json") + ".ro.pr.json"
	}
	return scsi.NewFilePersister(filepath.Join(s.stateDir, name))
}

// stateFileName is a device's name as the state dir's files start with it:
// device names come from configuration, so they are kept inside the
// directory.
func stateFileName(device string) string { return strings.ReplaceAll(device, "/", "%2F") }

// parseNAA reads a 16-byte NAA designator in hex (with or without 0x).
func parseNAA(s string) ([16]byte, error) {
	var out [16]byte
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	if s == "" {
		return out, errors.New("empty")
	}
	b, err := hex.DecodeString(s)
	if err != nil || (len(b) != 8 && len(b) != 16) {
		return out, fmt.Errorf("NAA %q: want 16 or 32 hex digits", s)
	}
	copy(out[:], b)
	return out, nil
}

// buildTargets turns the configuration into the transport's targets, and
// lists the units whose targets' LUN inventory changed.
func (s *Server) buildTargets(cfg Config, units map[unitKey]*unit) ([]*iscsi.Target, []*unit) {
	devices := map[string]Device{}
	for _, d := range cfg.Devices {
		devices[d.Name] = d
	}
	resolve := func(luns []LUN) *view {
		m := make(map[uint64]lunEntry, len(luns))
		for _, l := range luns {
			k := unitKey{device: l.Device, readOnly: l.ReadOnly && !devices[l.Device].Backend.ReadOnly}
			m[l.Number] = lunEntry{lu: units[k].lu, device: l.Device}
		}
		return newView(m)
	}
	oldTargets := map[string]Target{}
	for _, t := range s.cfg.Targets {
		oldTargets[t.Name] = t
	}
	var out []*iscsi.Target
	var changed []*unit
	for _, t := range cfg.Targets {
		limits := iscsi.DefaultLimits()
		for _, p := range t.Params {
			limits.SetParam(p.Key, p.Value) // validated in Config.Validate
		}
		def := resolve(t.LUNs)
		groups := make([]groupView, len(t.Groups))
		for i, g := range t.Groups {
			groups[i] = groupView{patterns: g.Initiators, view: resolve(g.LUNs)}
		}
		relPort := t.RelativePort
		if relPort == 0 {
			relPort = 1
		}
		out = append(out, &iscsi.Target{
			Name:              t.Name,
			Alias:             t.Alias,
			IncomingUsers:     t.IncomingUsers,
			OutgoingUser:      t.OutgoingUser,
			AllowedInitiators: t.AllowedInitiators,
			Limits:            limits,
			Views:             viewsFor(def, groups),
			RelativePort:      relPort,
			PortGroup:         max(t.PortGroup, 1),
			PortalGroupTag:    t.PortalGroupTag,
			Portals:           t.Portals,
		})
		if old, ok := oldTargets[t.Name]; ok && !sameLUNMaps(old, t) {
			changed = append(changed, unitsOf(old, units)...)
		}
	}
	return out, changed
}

func unitsOf(t Target, units map[unitKey]*unit) []*unit {
	devices := map[string]bool{}
	for _, l := range t.LUNs {
		devices[l.Device] = true
	}
	for _, g := range t.Groups {
		for _, l := range g.LUNs {
			devices[l.Device] = true
		}
	}
	var out []*unit
	for k, u := range units {
		if devices[k.device] {
			out = append(out, u)
		}
	}
	return out
}

func sameLUNMaps(a, b Target) bool {
	return slices.Equal(a.LUNs, b.LUNs) && slices.EqualFunc(a.Groups, b.Groups, func(x, y InitiatorGroup) bool {
		return x.Name == y.Name && slices.Equal(x.Initiators, y.Initiators) && slices.Equal(x.LUNs, y.LUNs)
	})
}

// removeDeleted deletes what this node kept of the devices the new
// configuration no longer has, once nothing uses them: the replication
// state and the copy files the cluster created (Device.OwnCopy).
func (s *Server) removeDeleted(next map[unitKey]*unit) {
	for k, u := range s.units {
		if k.readOnly || next[k] != nil {
			continue
		}
		if dir := s.replStateDir(k.device); dir != "" {
			if err := os.RemoveAll(dir); err != nil {
				s.log.Warn("removing the replication state of a deleted device", "device", k.device, "err", err)
			}
		}
		if !u.cfg.OwnCopy {
			continue
		}
		path := u.cfg.Backend.Path
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("removing the copy of a deleted replicated device", "device", k.device, "path", path, "err", err)
			continue
		}
		s.log.Info("removed the copy of a deleted replicated device", "device", k.device, "path", path)
	}
}

// closeRemoved closes units the new configuration no longer uses.
func (s *Server) closeRemoved(next map[unitKey]*unit) {
	for k, u := range s.units {
		n := next[k]
		if n != nil && n.dev == u.dev {
			continue
		}
		if n == nil {
			u.lu.Close()
			if s.prs != nil && !k.readOnly {
				s.prs.Release(k.device)
			}
		}
		if err := u.dev.Close(); err != nil {
			s.log.Warn("closing device", "device", k.device, "err", err)
		}
	}
}

// Shutdown stops serving: running commands finish and are answered, then
// every device is flushed and closed. Other nodes' commands stop alongside
// this node's sessions (those not started are refused with a sense their
// initiators retry); the forward clients close once the sessions drained,
// so that the forwarded commands of draining sessions get their answers.
func (s *Server) Shutdown(ctx context.Context) error {
	fwdDone := make(chan struct{})
	go func() {
		s.fwd.Close()
		close(fwdDone)
	}()
	err := s.iscsi.Shutdown(ctx)
	<-fwdDone
	s.replSrv.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.updateVolumes(Config{}, nil) // stops every resync
	for key, p := range s.peers {
		p.Close()
		delete(s.peers, key)
	}
	closeClients(s.clients, nil)
	s.clients = map[string]*forward.Client{}
	s.routes.Store(&map[string]route{})
	for k, u := range s.units {
		if ferr := u.dev.Flush(); ferr != nil {
			err = errors.Join(err, fmt.Errorf("flushing %s: %w", k.device, ferr))
		}
		u.lu.Close()
		if cerr := u.dev.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("closing %s: %w", k.device, cerr))
		}
	}
	s.units = map[unitKey]*unit{}
	return err
}
