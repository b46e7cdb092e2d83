package target

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hatarget/hatarget/alua"
	"github.com/hatarget/hatarget/target/backend"
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
	metrics  *metrics // nil without a Registerer
	prs      ReservationProvider

	mu sync.Mutex
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
	dev    backend.Device
	lu     *scsi.LU
}

// New returns a server with an empty configuration.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	opts.ISCSI.Logger = opts.Logger
	srv := iscsi.NewServer(opts.ISCSI)
	return &Server{
		log:      opts.Logger,
		iscsi:    srv,
		stateDir: opts.StateDir,
		metrics:  newMetrics(opts.Registerer, srv),
		prs:      opts.Reservations,
		units:    map[unitKey]*unit{},
	}
}

// Listen opens an iSCSI portal on addr.
func (s *Server) Listen(addr string) (net.Addr, error) { return s.iscsi.Listen(addr) }

// ISCSI exposes the transport for status queries (sessions, connections).
func (s *Server) ISCSI() *iscsi.Server { return s.iscsi }

// Apply makes cfg the served configuration. It validates everything and
// opens every new device before changing anything, so a bad configuration
// leaves the old one serving untouched.
func (s *Server) Apply(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Devices that left the served configuration stop being exported; so do
	// those of a refused one, whose series openUnits created.
	defer func() { s.metrics.retain(s.cfg) }()
	next, opened, commit, err := s.openUnits(cfg)
	if err != nil {
		for _, u := range opened {
			u.dev.Close()
		}
		return err
	}
	if err := commit(); err != nil {
		s.log.Error("updating logical units", "err", err)
	}
	targets, changedLUNs := s.buildTargets(cfg, next)
	s.iscsi.SetTargets(targets, cfg.DiscoveryUsers)
	for _, u := range changedLUNs {
		u.lu.RaiseReportedLUNsChanged()
	}
	s.closeRemoved(next)
	s.units = next
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
		old := s.units[key]
		if old != nil && old.cfg.Backend == d.Backend {
			u := &unit{cfg: d, groups: groups, dev: old.dev, lu: old.lu}
			if old.cfg != d || !slices.EqualFunc(old.groups, groups, alua.Group.Equal) {
				luCfg := s.luConfig(d, u.dev, key, groups)
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
		u := &unit{cfg: d, groups: groups, dev: dev}
		opened = append(opened, u)
		luCfg := s.luConfig(d, dev, key, groups)
		if old != nil {
			// Same device name, new storage: keep the LU and its nexus state.
			if err := luCfg.Validate(); err != nil {
				return nil, opened, nil, fmt.Errorf("device %s: %w", d.Name, err)
			}
			u.lu = old.lu
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
func (s *Server) luConfig(d Device, dev backend.Device, key unitKey, groups []alua.Group) scsi.LUConfig {
	readOnly := key.readOnly
	serial := d.Serial
	if serial == "" {
		sum := sha256.Sum256([]byte(d.Name))
		serial = hex.EncodeToString(sum[:8])
	}
	cfg := scsi.LUConfig{
		PortGroups:      groups,
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

// persister keeps a unit's APTPL reservation state in the state dir. A
// read-only mapping of a writable device is its own LU, so its file is too.
func (s *Server) persister(key unitKey) scsi.Persister {
	if s.stateDir == "" {
		return nil
	}
	// Device names come from configuration: keep them inside the directory.
	name := strings.ReplaceAll(key.device, "/", "%2F") + ".pr.json"
	if key.readOnly {
		name = strings.TrimSuffix(name, ".pr.json") + ".ro.pr.json"
	}
	return scsi.NewFilePersister(filepath.Join(s.stateDir, name))
}

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
// every device is flushed and closed.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.iscsi.Shutdown(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
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
