package main

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	"github.com/spf13/pflag"

	"github.com/hatarget/hatarget/cluster/pki"
)

// liveSettings are the settings a reload (SIGHUP) applies to the running
// agent, each with the function that applies its new value. Any other
// changed setting is logged as waiting for a restart: ports, addresses, the
// data dir and the token are part of the node's identity in the cluster, or
// of listeners and stores opened once at start.
var liveSettings = map[string]func(r *reloader, value string) error{
	"log-level": func(r *reloader, value string) error {
		level, err := parseLogLevel(value)
		if err != nil {
			return err
		}
		r.level.Set(level)
		return nil
	},
}

func liveSettingNames() []string {
	return slices.Sorted(maps.Keys(liveSettings))
}

// reloader rereads the agent's settings on SIGHUP.
type reloader struct {
	// running holds the settings the agent runs with; a reload updates
	// those it applies, so the next reload compares against them.
	running   *pflag.FlagSet
	level     *slog.LevelVar
	log       *slog.Logger
	lookupEnv func(string) (string, bool)
	// tls are the node's TLS credentials (nil: plain TCP).
	tls *pki.Credentials
}

// reload resolves the settings again, the command line as the agent was
// started with and the environment and the configuration file as they are
// now, applies the changed settings that can change live and returns the
// names of those that need a restart. A file that does not load changes
// nothing.
//
// The TLS files are reread on every reload, not only when a path setting
// changes: a renewal rewrites them in place.
func (r *reloader) reload() (needRestart []string, err error) {
	tlsErr := r.reloadTLS()
	needRestart, err = r.reloadSettings()
	return needRestart, errors.Join(tlsErr, err)
}

// reloadTLS rereads the certificate, key and CA. New connections use them;
// established ones, and with them iSCSI sessions and Raft leadership, are
// left alone. Files that do not load leave the running credentials.
func (r *reloader) reloadTLS() error {
	if r.tls == nil {
		return nil
	}
	if err := r.tls.Reload(); err != nil {
		return err
	}
	logCredentials(r.log, r.tls, "TLS credentials reloaded")
	return nil
}

func (r *reloader) reloadSettings() (needRestart []string, err error) {
	fresh := agentFlags()
	r.running.VisitAll(func(f *pflag.Flag) {
		if err != nil || !isSetting(f) || !f.Changed {
			return
		}
		nf := fresh.Lookup(f.Name)
		err = setFlag(nf, flagValues(f))
		nf.Changed = true
	})
	if err != nil {
		return nil, fmt.Errorf("command line: %w", err)
	}
	settings, err := loadAgentSettings(fresh, r.lookupEnv)
	if err != nil {
		return nil, err
	}
	var applied []string
	var errs []error
	fresh.VisitAll(func(nf *pflag.Flag) {
		f := r.running.Lookup(nf.Name)
		if f == nil || f.Value.String() == nf.Value.String() {
			return
		}
		change := []any{"setting", nf.Name}
		if !isSecret(nf.Name) {
			change = append(change, "running", f.Value.String(), "new", nf.Value.String())
		}
		apply, live := liveSettings[nf.Name]
		if !live {
			needRestart = append(needRestart, nf.Name)
			r.log.Warn("setting changed; it takes effect at the next restart", change...)
			return
		}
		if err := apply(r, nf.Value.String()); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", nf.Name, err))
			return
		}
		if err := setFlag(f, flagValues(nf)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", nf.Name, err))
			return
		}
		applied = append(applied, nf.Name)
		r.log.Info("setting applied", change...)
	})
	file := settings.file
	if file == "" {
		file = "none"
	}
	r.log.Info("settings reloaded", "file", file, "applied", applied, "need_restart", needRestart)
	return needRestart, errors.Join(errs...)
}
