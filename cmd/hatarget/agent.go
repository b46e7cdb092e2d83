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
	"strconv"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/hatarget/hatarget/cluster"
	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/target"
	"github.com/hatarget/hatarget/target/scsi"
)

type agentOptions struct {
	name            string
	dataDir         string
	bind            string
	iscsiPort       int
	apiPort         int
	raftPort        int
	gossipPort      int
	forwardPort     int
	replPort        int
	join            []string
	bootstrapExpect int
	token           string
	storageDir      string
	portal          portalOptions
	debugAddr       string
	protocol        uint16
	autoFinalize    bool
	metricsPublic   bool
	tlsCA           string
	tlsCert         string
	tlsKey          string
	gossipKey       string
}

func newAgentCommand() *cobra.Command {
	var o agentOptions
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a cluster node",
		Long: `Agent runs one node of a hatarget cluster: Raft keeps the configuration
(targets, LUNs, ACLs, reservations) consistent on every node, gossip
(memberlist) detects failures, every node serves every target over iSCSI and
answers the management API (and /metrics).

Ports on the --bind address: iSCSI 3260, API and metrics 9260, Raft 9261,
gossip 9262, replication 9263, command forwarding 9264 (each overridable). With --bootstrap-expect N, the first N fresh
nodes that see each other form the cluster by themselves. A restarted node
rejoins from its --data-dir. A new node joins a running cluster with --join.
SIGTERM hands Raft leadership over, leaves the cluster and stops.

Every flag is also a setting of the configuration file (--config, default
/etc/hatarget/agent.toml, TOML: data-dir = "/var/lib/hatarget") and an
environment variable (HATARGET_DATA_DIR; lists comma-separated). Flags win
over the environment, the environment over the file. Under systemd
(Type=notify) the node reports ready once it has caught up with the cluster
and opened its iSCSI portal. SIGHUP rereads the settings and logs the
changed ones that wait for a restart; these apply at once: ` + strings.Join(liveSettingNames(), ", ") + `.

With --tls-ca, --tls-cert and --tls-key every node channel is mutual TLS
under the cluster CA (docs/tls.md); SIGHUP also rereads those files, and
established connections carry on. --gossip-key encrypts gossip; hatarget
cluster keyring rotates the key.`,
		Example: `  # three nodes, one command each
  hatarget agent --name n1 --bind 10.0.0.1 --data-dir /var/lib/hatarget --bootstrap-expect 3 --join 10.0.0.2 --join 10.0.0.3
  hatarget agent --name n2 --bind 10.0.0.2 --data-dir /var/lib/hatarget --bootstrap-expect 3 --join 10.0.0.1
  hatarget agent --name n3 --bind 10.0.0.3 --data-dir /var/lib/hatarget --bootstrap-expect 3 --join 10.0.0.1
  # a fourth node joins the running cluster
  hatarget agent --name n4 --bind 10.0.0.4 --data-dir /var/lib/hatarget --join 10.0.0.1`,
		Args:        cobra.NoArgs,
		Annotations: map[string]string{serverAnnotation: ""}, // sysmon.go
		RunE: func(cmd *cobra.Command, _ []string) error {
			settings, err := loadAgentSettings(cmd.Flags(), os.LookupEnv)
			if err != nil {
				return err
			}
			var level slog.LevelVar
			log, err := newLeveledLogger(cmd, &level)
			if err != nil {
				return err
			}
			settings.logSources(log)
			run := o
			if err := run.fillDefaults(os.Getenv); err != nil {
				return err
			}
			r := &reloader{running: cmd.Flags(), level: &level, log: log, lookupEnv: os.LookupEnv}
			return runAgent(cmd.Context(), run, log, cmd.OutOrStdout(), newNotifier(os.Getenv("NOTIFY_SOCKET")), r)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.name, "name", "", "node name, unique in the cluster (default: the host name)")
	f.StringVar(&o.dataDir, "data-dir", "", "directory for the Raft log, snapshots and node state (default: $STATE_DIRECTORY, which systemd sets from the unit's StateDirectory=, else hatarget-data)")
	f.StringVar(&o.bind, "bind", "127.0.0.1", "IP address every service of this node listens on and other nodes reach")
	f.IntVar(&o.iscsiPort, "iscsi-port", api.DefaultISCSIPort, "iSCSI portal port")
	f.IntVar(&o.apiPort, "api-port", api.DefaultAPIPort, "management API and /metrics port")
	f.IntVar(&o.raftPort, "raft-port", api.DefaultRaftPort, "Raft port")
	f.IntVar(&o.gossipPort, "gossip-port", api.DefaultGossipPort, "gossip (memberlist) port, TCP and UDP")
	f.IntVar(&o.forwardPort, "forward-port", api.DefaultForwardPort, "port for SCSI commands other nodes forward to the LUNs this node owns")
	f.IntVar(&o.replPort, "replication-port", api.DefaultReplicationPort, "port where owners of replicated LUNs write to this node's copies (authenticated with --token)")
	f.StringArrayVar(&o.join, "join", nil, "gossip address HOST[:PORT] of another node to join through, repeatable")
	f.IntVar(&o.bootstrapExpect, "bootstrap-expect", 0, "form a new cluster once this many fresh nodes see each other")
	f.StringVar(&o.token, "token", "", "require this bearer token on API calls")
	f.StringVar(&o.storageDir, "storage-dir", "", "where this node keeps its copies of replicated LUNs created without --path (default DATA-DIR/luns)")
	o.portal.addFlags(f)
	f.StringVar(&o.debugAddr, "debug-addr", "", "serve Go's /debug/pprof on this address")
	f.BoolVar(&o.metricsPublic, "metrics-public", false, "serve /metrics without an API token once tokens are on (hatarget token bootstrap), for a Prometheus without one; every other route still needs a token")
	f.BoolVar(&o.autoFinalize, "auto-finalize", false, "while this node leads, finalize an upgrade by itself once every node runs a release that supports the new cluster version, as 'hatarget cluster upgrade finalize' does: after it, the previous release can no longer run on any node's data dir")
	f.StringVar(&o.tlsCA, "tls-ca", "", "cluster CA certificate file (PEM): with --tls-cert and --tls-key, every node channel (Raft, forwarding, replication, the API) is mutual TLS and peers must present a certificate of this CA naming a member; see docs/tls.md")
	f.StringVar(&o.tlsCert, "tls-cert", "", "this node's certificate file (PEM), made by hatarget tls cert create; reread on SIGHUP")
	f.StringVar(&o.tlsKey, "tls-key", "", "this node's private key file (PEM, mode 0600); reread on SIGHUP")
	f.StringVar(&o.gossipKey, "gossip-key", "", "encrypt gossip with this key (base64 of 16, 24 or 32 bytes: openssl rand -base64 32); the node saves its keyring in the data dir, after which hatarget cluster keyring rotates it")
	f.Uint16Var(&o.protocol, "advertise-protocol", 0, "advertise an older command protocol (testing the version gate)")
	_ = f.MarkHidden("advertise-protocol")
	f.String(configFlag, defaultAgentConfig, "configuration file (TOML) to read the settings from; a missing default file is fine, \"\" reads none")
	return cmd
}

// fillDefaults resolves the defaults that depend on the host. The flags
// keep their empty defaults, so that a reload does not see the resolved
// values as changed settings.
func (o *agentOptions) fillDefaults(getenv func(string) string) error {
	if o.name == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("--name not set, and no host name to default to: %w", err)
		}
		o.name = host
	}
	if o.dataDir == "" {
		// systemd joins several StateDirectory= entries with colons; the
		// unit names one.
		o.dataDir, _, _ = strings.Cut(getenv("STATE_DIRECTORY"), ":")
	}
	if o.dataDir == "" {
		o.dataDir = "hatarget-data"
	}
	return nil
}

func (o agentOptions) addr(port int) string {
	return net.JoinHostPort(o.bind, strconv.Itoa(port))
}

// joinAddrs adds the default gossip port to join addresses without one.
func (o agentOptions) joinAddrs() []string {
	out := make([]string, 0, len(o.join))
	for _, j := range o.join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			j = net.JoinHostPort(j, strconv.Itoa(api.DefaultGossipPort))
		}
		out = append(out, j)
	}
	return out
}

func runAgent(ctx context.Context, o agentOptions, log *slog.Logger, out io.Writer, sd *notifier, r *reloader) error {
	notify := func(states ...string) {
		if err := sd.Notify(states...); err != nil {
			log.Warn("telling the service manager", "err", err)
		}
	}
	// Before anything slow: SIGHUP's default action would kill the node.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	notify(sdStatus("starting"))
	// Before anything is created in the data dir: one that a newer release
	// finalized is left exactly as it is.
	if err := cluster.CheckDataDir(o.dataDir); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	stateDir := filepath.Join(o.dataDir, "state")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	network, err := agentNetwork(o, log, reg, r)
	if err != nil {
		return err
	}
	gossipKey, err := o.parseGossipKey()
	if err != nil {
		return err
	}
	prs := cluster.NewReservations()
	membership := cluster.NewMembership()
	lease := scsi.NewLease()
	srv := target.New(target.Options{
		Logger: log, StateDir: stateDir, ISCSI: o.portal.iscsi(), Registerer: reg, Reservations: prs, Lease: lease,
		ForwardDial: func(ctx context.Context, addr string) (net.Conn, error) { return network.DialContext(ctx, "tcp", addr) },
		Replication: target.ReplicationOptions{Self: o.name, Secret: o.token, Dial: network.DialContext, Membership: membership},
	})
	fwd, err := network.Listen(cluster.PortForward, o.addr(o.forwardPort))
	if err != nil {
		return fmt.Errorf("forwarding listener: %w", err)
	}
	go func() {
		if err := srv.ServeForward(fwd); err != nil {
			log.Error("forwarding listener stopped", "err", err)
		}
	}()
	repl, err := network.Listen(cluster.PortReplication, o.addr(o.replPort))
	if err != nil {
		return fmt.Errorf("replication listener: %w", err)
	}
	go func() {
		if err := srv.ServeReplication(repl); err != nil {
			log.Error("replication listener stopped", "err", err)
		}
	}()
	node, err := cluster.Start(cluster.Config{
		Name: o.name, DataDir: o.dataDir,
		ISCSIAddr: o.addr(o.iscsiPort), APIAddr: o.addr(o.apiPort), RaftAddr: o.addr(o.raftPort), GossipAddr: o.addr(o.gossipPort),
		ForwardAddr: o.addr(o.forwardPort), ReplicationAddr: o.addr(o.replPort), Membership: membership, Network: network, Lease: lease,
		Join: o.joinAddrs(), BootstrapExpect: o.bootstrapExpect, GossipKey: gossipKey,
		Version: version, Protocol: o.protocol, Token: o.token, StorageDir: o.storageDir, AutoFinalize: o.autoFinalize,
		MetricsPublic: o.metricsPublic, Logger: log, Registry: reg, Dataplane: srv, Reservations: prs,
	})
	if err != nil {
		srv.Shutdown(context.Background())
		return err
	}
	fmt.Fprintf(out, "hatarget node %s started (API %s); the iSCSI portal opens once it has caught up with the cluster\n", o.name, o.addr(o.apiPort))
	// status is what `systemctl status` shows between notifications.
	status := fmt.Sprintf("catching up with the cluster; API %s, the iSCSI portal opens after", o.addr(o.apiPort))
	notify(sdStatus("%s", status))
	caughtUp := node.Ready()
	serving := false
	for {
		select {
		case <-caughtUp:
			caughtUp = nil
			if _, err := srv.Listen(o.addr(o.iscsiPort)); err != nil {
				_ = shutdownAgent(node, srv, log)
				return err
			}
			if o.debugAddr != "" {
				if err := serveDebug(o.debugAddr, log); err != nil {
					log.Error("debug server", "err", err)
				}
			}
			fmt.Fprintf(out, "hatarget node %s: caught up with the cluster; iSCSI %s, API %s (hatarget cluster status --addr %s)\n",
				o.name, o.addr(o.iscsiPort), o.addr(o.apiPort), o.addr(o.apiPort))
			// Ready means serving the configuration the node has applied:
			// systemd holds back units ordered after this one until now.
			serving = true
			status = fmt.Sprintf("serving: iSCSI %s, API %s", o.addr(o.iscsiPort), o.addr(o.apiPort))
			notify(sdReady, sdStatus("%s", status))
		case <-hup:
			// READY=1 ends a reload, so only a serving node announces one.
			if serving {
				notify(sdReloading, sdStatus("reloading the settings"))
			}
			reloaded := status
			needRestart, err := r.reload()
			switch {
			case err != nil:
				log.Error("reload failed; the settings it could not apply keep their running values", "err", err)
				reloaded += "; last reload failed, see the log"
			case len(needRestart) > 0:
				reloaded += "; changed settings waiting for a restart: " + strings.Join(needRestart, ", ")
			}
			if serving {
				notify(sdReady, sdStatus("%s", reloaded))
			} else {
				notify(sdStatus("%s", reloaded))
			}
		case <-ctx.Done():
			notify(sdStopping, sdStatus("stopping: handing Raft leadership over, leaving the cluster, finishing running commands"))
			return shutdownAgent(node, srv, log)
		}
	}
}

// shutdownAgent leaves the cluster (handing Raft leadership over first),
// then lets running commands finish and flushes the devices.
func shutdownAgent(node *cluster.Node, srv *target.Server, log *slog.Logger) error {
	log.Info("shutting down: handing over leadership, leaving the cluster, finishing running commands")
	sctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	nerr := node.Shutdown(sctx)
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	return nerr
}
