package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/hatarget/hatarget/fsm"
	"github.com/hatarget/hatarget/fsm/scstconf"
	"github.com/hatarget/hatarget/target"
	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/iscsi"
)

// loadSCST reads an scst.conf into the dataplane's configuration, logging
// the parser's warnings and what the conversion skips.
func loadSCST(path string, log *slog.Logger) (target.Config, error) {
	f, err := scstconf.ParseFile(path)
	if err != nil {
		return target.Config{}, err
	}
	for _, w := range f.Warnings {
		log.Warn("scst.conf: " + w.String())
	}
	return scstToConfig(f, log)
}

// scstToConfig converts a parsed scst.conf. Targets with "enabled 0", or all
// of them when the iscsi driver is disabled, are not served.
func scstToConfig(f *scstconf.File, log *slog.Logger) (target.Config, error) {
	var cfg target.Config
	for _, d := range f.Devices {
		cfg.Devices = append(cfg.Devices, deviceFromSCST(d))
	}
	if f.ISCSIDriver.Pos.IsValid() && !f.ISCSIDriver.Enabled {
		log.Warn("scst.conf: TARGET_DRIVER iscsi is disabled (enabled 0): no target is served", "at", f.ISCSIDriver.Pos.String())
		return cfg, nil
	}
	if err := fsm.CheckCHAPSecrets("discovery", scstSecrets(f.ISCSIDriver.IncomingUsers), ""); err != nil {
		return target.Config{}, fmt.Errorf("%s: %w", f.ISCSIDriver.Pos, err)
	}
	cfg.DiscoveryUsers = chapUsers(f.ISCSIDriver.IncomingUsers)
	for _, t := range f.Targets {
		if !t.Enabled {
			log.Warn("scst.conf: target disabled (enabled 0), not served", "target", t.Name, "at", t.Pos.String())
			continue
		}
		tc, err := targetFromSCST(t, log)
		if err != nil {
			return target.Config{}, err
		}
		cfg.Targets = append(cfg.Targets, tc)
	}
	return cfg, nil
}

func deviceFromSCST(d scstconf.Device) target.Device {
	handler := backend.Handler(d.Handler)
	if handler == backend.FileIO && d.ODirect {
		handler = backend.BlockIO // fileio with o_direct bypasses the page cache like blockio
	}
	return target.Device{
		Name: d.Name,
		Backend: backend.Options{
			Handler:      handler,
			Path:         d.Filename,
			Size:         d.Size,
			BlockSize:    d.BlockSize,
			ReadOnly:     d.ReadOnly,
			NVCache:      d.NVCache,
			WriteThrough: d.WriteThrough,
		},
		Serial:        d.USN,
		NAA:           d.NAAID,
		T10DeviceID:   d.T10DevID,
		VendorID:      d.T10VendID,
		ProductID:     d.ProdID,
		Rotational:    d.Rotational,
		Thin:          d.ThinProvisioned,
		Removable:     d.Removable,
		AllowSanitize: d.AllowSanitize,
	}
}

func targetFromSCST(t scstconf.Target, log *slog.Logger) (target.Target, error) {
	var mutual string
	if len(t.OutgoingUsers) > 0 {
		mutual = t.OutgoingUsers[0].Secret
	}
	if err := fsm.CheckCHAPSecrets("target "+t.Name, scstSecrets(t.IncomingUsers), mutual); err != nil {
		return target.Target{}, fmt.Errorf("%s: %w", t.Pos, err)
	}
	tc := target.Target{
		Name:          t.Name,
		LUNs:          lunsFromSCST(t.LUNs),
		IncomingUsers: chapUsers(t.IncomingUsers),
		RelativePort:  t.RelTgtID,
	}
	if len(t.OutgoingUsers) > 0 {
		u := chapUsers(t.OutgoingUsers[:1])[0]
		tc.OutgoingUser = &u
	}
	for _, g := range t.Groups {
		tc.Groups = append(tc.Groups, target.InitiatorGroup{Name: g.Name, Initiators: g.Initiators, LUNs: lunsFromSCST(g.LUNs)})
	}
	limits := iscsi.DefaultLimits()
	for _, p := range t.Params {
		if p.Key == "allowed_initiator" {
			tc.AllowedInitiators = append(tc.AllowedInitiators, p.Value)
			continue
		}
		err := limits.SetParam(p.Key, p.Value)
		switch {
		case errors.Is(err, iscsi.ErrUnknownParam):
			log.Warn("scst.conf: target parameter not supported, ignored", "key", p.Key, "at", p.Pos.String())
		case err != nil:
			return target.Target{}, fmt.Errorf("%s: %w", p.Pos, err)
		default:
			tc.Params = append(tc.Params, target.Param{Key: p.Key, Value: p.Value})
		}
	}
	return tc, nil
}

func lunsFromSCST(ls []scstconf.LUN) []target.LUN {
	out := make([]target.LUN, 0, len(ls))
	for _, l := range ls {
		out = append(out, target.LUN{Number: l.Number, Device: l.Device, ReadOnly: l.ReadOnly})
	}
	return out
}

func scstSecrets(us []scstconf.CHAPUser) []string {
	var out []string
	for _, u := range us {
		out = append(out, u.Secret)
	}
	return out
}

func chapUsers(us []scstconf.CHAPUser) []target.CHAPUser {
	var out []target.CHAPUser
	for _, u := range us {
		out = append(out, target.CHAPUser{User: u.User, Secret: u.Secret})
	}
	return out
}
