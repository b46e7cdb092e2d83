package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hatarget/hatarget/cluster/api"
)

type demoOptions struct {
	dataDir string
	nodes   int
}

func newDemoCommand() *cobra.Command {
	var o demoOptions
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a local three-node cluster with a demo LUN (make run)",
		Long: `Demo starts a cluster of agents on this machine, node i on 127.0.0.i with
the default ports, each as its own process with a data dir under --data-dir.
Each node keeps its LUN files in its own storage dir (<node>/luns), as nodes
with their own disks do. Once the cluster has a leader the demo creates the
demo target and a 1 GiB LUN replicated as LUNs are by default (a copy on
three nodes, or on every node of a smaller demo) unless they exist from an
earlier run, prints the cluster status and how to connect, and stops every
node on Ctrl-C.

The nodes talk mutual TLS and encrypt gossip: the first run makes a cluster
CA (DATA-DIR/ca), a certificate per node (DATA-DIR/NODE/tls) and a gossip
key (DATA-DIR/gossip.key); control commands connect with
--ca-cert DATA-DIR/ca/ca.crt (or HATARGET_CACERT).`,
		Example: `  hatarget demo
  hatarget demo --data-dir /tmp/hatarget-demo`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(cmd)
			if err != nil {
				return err
			}
			return runDemo(cmd.Context(), o, log, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&o.dataDir, "data-dir", "hatarget-data", "directory holding every node's data dir, its LUN files included")
	cmd.Flags().IntVar(&o.nodes, "nodes", 3, "number of nodes (1 to 9)")
	return cmd
}

// demoNode is one agent process of the demo.
type demoNode struct {
	name string
	ip   string
	cmd  *exec.Cmd
	// done is closed when the process has exited; err says how.
	done chan struct{}
	err  error
}

func runDemo(ctx context.Context, o demoOptions, log *slog.Logger, out io.Writer) error {
	if o.nodes < 1 || o.nodes > 9 {
		return fmt.Errorf("--nodes %d: want 1 to 9", o.nodes)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	dataDir, err := filepath.Abs(o.dataDir)
	if err != nil {
		return err
	}
	sec, err := prepareDemoSecurity(dataDir)
	if err != nil {
		return err
	}
	nodes := make([]*demoNode, o.nodes)
	for i := range nodes {
		nodes[i] = &demoNode{name: "node" + strconv.Itoa(i+1), ip: "127.0.0." + strconv.Itoa(i+1)}
	}
	defer stopDemo(nodes, log)
	for _, n := range nodes {
		if err := n.start(self, dataDir, nodes, sec); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "started %d nodes; logs in %s/<node>/agent.log\n", len(nodes), dataDir)
	client := sec.client(nodes[0].addr(api.DefaultAPIPort))
	if err := waitForLeader(ctx, client, nodes); err != nil {
		return err
	}
	if err := ensureDemoLUN(ctx, client, out); err != nil {
		return err
	}
	printDemo(ctx, out, nodes, sec.caFile)
	select {
	case <-ctx.Done():
		fmt.Fprintln(out, "\nstopping the nodes")
		return nil
	case err := <-firstExit(nodes):
		return err
	}
}

func (n *demoNode) addr(port int) string { return net.JoinHostPort(n.ip, strconv.Itoa(port)) }

func (n *demoNode) start(self, dataDir string, all []*demoNode, sec *demoSecurity) error {
	dir := filepath.Join(dataDir, n.name)
	storage := filepath.Join(dir, "luns")
	if err := os.MkdirAll(storage, 0o700); err != nil {
		return err
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	// --config= keeps the settings of an agent installed on this machine
	// (/etc/hatarget/agent.toml) out of the demo.
	args := []string{"agent", "--config=", "--name", n.name, "--bind", n.ip, "--data-dir", dir,
		"--storage-dir", storage, "--bootstrap-expect", strconv.Itoa(len(all))}
	for _, peer := range all {
		if peer != n {
			args = append(args, "--join", peer.ip)
		}
	}
	secArgs, err := sec.nodeArgs(n, dir)
	if err != nil {
		logFile.Close()
		return fmt.Errorf("%s: %w", n.name, err)
	}
	args = append(args, secArgs...)
	n.cmd = exec.Command(self, args...)
	n.cmd.Env = sec.env()
	n.cmd.Stdout, n.cmd.Stderr = logFile, logFile
	// Ctrl-C reaches the whole process group; the demo stops its nodes
	// itself, in order, so they must not see it.
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := n.cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("starting %s: %w", n.name, err)
	}
	n.done = make(chan struct{})
	go func() {
		err := n.cmd.Wait()
		logFile.Close()
		n.err = fmt.Errorf("%s exited (%v); see %s", n.name, err, logFile.Name())
		close(n.done)
	}()
	return nil
}

func firstExit(nodes []*demoNode) <-chan error {
	ch := make(chan error, len(nodes))
	for _, n := range nodes {
		go func() {
			<-n.done
			ch <- n.err
		}()
	}
	return ch
}

func stopDemo(nodes []*demoNode, log *slog.Logger) {
	for _, n := range nodes {
		if n.cmd != nil && n.cmd.Process != nil && n.cmd.ProcessState == nil {
			_ = n.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, n := range nodes {
		if n.done == nil {
			continue
		}
		select {
		case <-n.done:
		case <-time.After(drainTimeout):
			log.Warn("node did not stop in time, killing it", "node", n.name)
			_ = n.cmd.Process.Kill()
		}
	}
}

func waitForLeader(ctx context.Context, client *api.Client, nodes []*demoNode) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	exited := firstExit(nodes)
	for {
		if st, err := client.Local(ctx); err == nil && st.Leader != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("the cluster did not elect a leader within 30 s; see the agent logs")
		case err := <-exited:
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ensureDemoLUN creates the demo target and LUN unless an earlier run did.
func ensureDemoLUN(ctx context.Context, client *api.Client, out io.Writer) error {
	if _, err := client.Target(ctx, demoTarget); api.IsCode(err, api.CodeNotFound) {
		if _, err := client.CreateTarget(ctx, api.CreateTarget{IQN: demoTarget, Alias: "hatarget demo"}); err != nil {
			return fmt.Errorf("creating the demo target: %w", err)
		}
	} else if err != nil {
		return err
	}
	if _, err := client.LUN(ctx, "demo"); api.IsCode(err, api.CodeNotFound) {
		if _, err := client.CreateLUN(ctx, api.CreateLUN{Target: demoTarget, LUN: 0, Name: "demo", Size: demoSize}); err != nil {
			return fmt.Errorf("creating the demo LUN: %w", err)
		}
		fmt.Fprintln(out, "created target", demoTarget, "with a 1 GiB replicated LUN 0")
	} else if err != nil {
		return err
	}
	return nil
}

func printDemo(ctx context.Context, out io.Writer, nodes []*demoNode, caFile string) {
	status := newRootCommand()
	status.SetArgs([]string{"cluster", "status", "--addr", nodes[0].addr(api.DefaultAPIPort), "--ca-cert", caFile})
	status.SetOut(out)
	status.SetErr(out)
	fmt.Fprintln(out)
	if err := status.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(out, "cluster status:", err)
	}
	first := nodes[0].addr(api.DefaultISCSIPort)
	fmt.Fprintln(out, "\nConnect with:")
	fmt.Fprintf(out, "  iscsi-ls -s iscsi://%s\n", first)
	fmt.Fprintf(out, "  iscsiadm -m discovery -t sendtargets -p %s && iscsiadm -m node -T %s --login   # one session per node: multipath\n", first, demoTarget)
	fmt.Fprintf(out, "  hatarget bench --portal %s --target %s --pattern randread --qd 32\n", first, demoTarget)
	fmt.Fprintln(out, "Manage it from another terminal (the nodes talk TLS with the demo's CA):")
	fmt.Fprintf(out, "  export %s=%s\n", envCACert, caFile)
	fmt.Fprintln(out, "  hatarget cluster status")
	fmt.Fprintf(out, "  hatarget lun create %s 1 --name disk1 --size 10G --addr %s\n", demoTarget, nodes[len(nodes)-1].addr(api.DefaultAPIPort))
	fmt.Fprintln(out, "Stop with Ctrl-C.")
}
