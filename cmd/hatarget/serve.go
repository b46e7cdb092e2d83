package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hatarget/hatarget/target"
	"github.com/hatarget/hatarget/target/backend"
)

const (
	demoTarget   = "iqn.2025-01.io.hatarget:demo"
	demoSize     = 1 << 30
	drainTimeout = 30 * time.Second
)

type serveOptions struct {
	config     string
	listen     []string
	dataDir    string
	queueDepth uint32
	portal     portalOptions
	debugAddr  string
}

func newServeCommand() *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve the targets of an scst.conf on this node",
		Long: `Serve runs a single node: it reads an SCST configuration file (HANDLER
vdisk_fileio / vdisk_blockio / vdisk_nullio devices, TARGET_DRIVER iscsi
targets with their LUNs, CHAP users and initiator groups) and serves it over
iSCSI. SIGHUP rereads the file and applies the difference live; SIGTERM lets
running commands finish, flushes the devices and exits.

Without --config it serves a demo LUN: a 1 GiB sparse file in --data-dir.`,
		Example: `  hatarget serve --config /etc/scst.conf
  hatarget serve --config scst.conf --listen 127.0.0.1:3260 --listen [::1]:3260
  hatarget serve --data-dir /tmp/hatarget-demo --listen 127.0.0.1:3260`,
		Args:        cobra.NoArgs,
		Annotations: map[string]string{serverAnnotation: ""}, // sysmon.go
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd)
			if err != nil {
				return err
			}
			return runServe(cmd.Context(), o, log, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.config, "config", "", "scst.conf file to serve (default: a demo LUN)")
	f.StringArrayVar(&o.listen, "listen", []string{"0.0.0.0:3260"}, "iSCSI portal address, repeatable (IPv6 as [addr]:port)")
	f.StringVar(&o.dataDir, "data-dir", "hatarget-data", "directory for state that survives restarts (reservations with APTPL) and the demo LUN")
	f.Uint32Var(&o.queueDepth, "queue-depth", 0, "commands a session may have outstanding (CmdSN window; default 64)")
	o.portal.addFlags(f)
	f.StringVar(&o.debugAddr, "debug-addr", "", "serve Go's /debug/pprof on this address (e.g. 127.0.0.1:6060)")
	return cmd
}

func runServe(ctx context.Context, o serveOptions, log *slog.Logger, out io.Writer) error {
	load := func() (target.Config, error) {
		if o.config == "" {
			return demoConfig(o.dataDir)
		}
		return loadSCST(o.config, log)
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	if o.queueDepth > 0 {
		setQueueDepth(&cfg, o.queueDepth)
	}
	stateDir := filepath.Join(o.dataDir, "state")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	srv := target.New(target.Options{Logger: log, StateDir: stateDir, ISCSI: o.portal.iscsi()})
	if err := srv.Apply(cfg); err != nil {
		return fmt.Errorf("applying configuration: %w", err)
	}
	var portals []net.Addr
	for _, addr := range o.listen {
		a, err := srv.Listen(addr)
		if err != nil {
			srv.Shutdown(context.Background())
			return err
		}
		portals = append(portals, a)
	}
	if o.debugAddr != "" {
		if err := serveDebug(o.debugAddr, log); err != nil {
			srv.Shutdown(context.Background())
			return err
		}
	}
	printConnectHelp(out, cfg, portals)

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-hup:
			reload(srv, load, o, log)
		case <-ctx.Done():
			log.Info("shutting down: finishing running commands and flushing devices")
			sctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
			defer cancel()
			return srv.Shutdown(sctx)
		}
	}
}

// reload applies the configuration file again; a broken file is reported
// and the running configuration stays.
func reload(srv *target.Server, load func() (target.Config, error), o serveOptions, log *slog.Logger) {
	cfg, err := load()
	if err == nil {
		if o.queueDepth > 0 {
			setQueueDepth(&cfg, o.queueDepth)
		}
		err = srv.Apply(cfg)
	}
	if err != nil {
		log.Error("reload failed, keeping the running configuration", "err", err)
		return
	}
	log.Info("configuration reloaded", "file", o.config)
}

func setQueueDepth(cfg *target.Config, qd uint32) {
	for i := range cfg.Targets {
		cfg.Targets[i].Params = append(cfg.Targets[i].Params, target.Param{Key: "QueuedCommands", Value: fmt.Sprint(qd)})
	}
}

// demoConfig serves one fileio LUN on a sparse file, for `make run`.
func demoConfig(dir string) (target.Config, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return target.Config{}, fmt.Errorf("demo data dir: %w", err)
	}
	path, err := filepath.Abs(filepath.Join(dir, "demo.img"))
	if err != nil {
		return target.Config{}, err
	}
	return target.Config{
		Devices: []target.Device{{
			Name:    "demo",
			Backend: backend.Options{Handler: backend.FileIO, Path: path, Size: demoSize, BlockSize: 512},
		}},
		Targets: []target.Target{{
			Name: demoTarget,
			LUNs: []target.LUN{{Number: 0, Device: "demo"}},
		}},
	}, nil
}

// printConnectHelp tells a newcomer how to reach what is served.
func printConnectHelp(out io.Writer, cfg target.Config, portals []net.Addr) {
	fmt.Fprintln(out, "hatarget is serving:")
	for _, t := range cfg.Targets {
		fmt.Fprintf(out, "  target %s (%d LUNs)\n", t.Name, len(t.LUNs))
	}
	if len(cfg.Targets) == 0 || len(portals) == 0 {
		return
	}
	portal := connectAddress(portals[0])
	t := cfg.Targets[0].Name
	fmt.Fprintln(out, "Connect with:")
	fmt.Fprintf(out, "  iscsi-ls -s iscsi://%s\n", portal)
	fmt.Fprintf(out, "  iscsi-inq iscsi://%s/%s/0\n", portal, t)
	fmt.Fprintf(out, "  iscsiadm -m discovery -t sendtargets -p %s && iscsiadm -m node -T %s -p %s --login\n", portal, t, portal)
	fmt.Fprintf(out, "  hatarget bench --portal %s --target %s --pattern randread --qd 32\n", portal, t)
	fmt.Fprintln(out, "Stop with Ctrl-C.")
}

// connectAddress turns a wildcard listen address into one a local client
// can dial.
func connectAddress(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	ip := ta.IP
	if ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(ta.Port))
}
