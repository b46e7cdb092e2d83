package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hatarget/hatarget/cluster"
	"github.com/hatarget/hatarget/cluster/api"
)

func newClusterCommand() *cobra.Command {
	cmd := groupCommand("cluster", "Show and manage the cluster's nodes and Raft state",
		`  hatarget cluster status
  hatarget cluster members --addr node2
  hatarget cluster snapshot save backup.snap`)
	cmd.Long = `Cluster commands talk to the management API of one node (--addr, default
` + defaultCtlAddr + `); any node answers, and writes are forwarded to the Raft leader.`
	addCtlFlags(cmd)
	cmd.AddCommand(newClusterStatusCommand(), newClusterMembersCommand(), newClusterRemoveCommand(),
		newClusterTransferCommand(), newClusterSnapshotCommand())
	cmd.AddCommand(newClusterRebalanceCommand())
	cmd.AddCommand(newClusterUpgradeCommand())
	cmd.AddCommand(newClusterKeyringCommand())
	return cmd
}

func newClusterStatusCommand() *cobra.Command {
	var stale bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the leader, the cluster version and every node's role, health, release and generation",
		Long: `Status shows the Raft leader, term and commit index, the active cluster
version, and for every node its API and iSCSI addresses, Raft role, health,
release and the configuration generation (applied Raft index) it serves.
The protocol tables follow (see "hatarget version"), each with the nodes
that advertise it; a line "MIXED VERSIONS" names which nodes run which
release while they differ, as in the middle of a rolling upgrade.

The answer is linearizable: the node confirms the leader first. --stale lets
the node answer from its own state, which works without a quorum.`,
		Example: `  hatarget cluster status
  hatarget cluster status -o json | jq -r .leader
  hatarget cluster status --stale --addr 10.0.0.3`,
		Args: cobra.NoArgs,
		RunE: ctlRun(func(ctx context.Context, c *ctl, _ []string) error {
			s, err := clusterStatus(ctx, c.client, stale)
			if err != nil {
				return err
			}
			return c.show(s, func(w io.Writer) { printClusterStatus(w, s) })
		}),
	}
	cmd.Flags().BoolVar(&stale, "stale", false, "answer from the node's own, possibly older state (works without quorum)")
	return cmd
}

// clusterStatus calls the route directly for --stale: the client's Status
// has no stale parameter.
func clusterStatus(ctx context.Context, c *api.Client, stale bool) (*api.ClusterStatus, error) {
	if !stale {
		return c.Status(ctx)
	}
	var s api.ClusterStatus
	return &s, c.Do(ctx, http.MethodGet, "/v1/status?stale=1", nil, &s)
}

func printClusterStatus(w io.Writer, s *api.ClusterStatus) {
	leader := s.Leader
	if leader == "" {
		leader = "none (no quorum or election running)"
	}
	fmt.Fprintf(w, "leader %s, term %d, commit index %d\n", leader, s.Term, s.CommitIdx)
	if s.ClusterVersion == 0 {
		fmt.Fprintln(w, "cluster version not reported (the answering node predates cluster versions)")
	} else {
		fmt.Fprintf(w, "cluster version %d\n", s.ClusterVersion)
	}
	fmt.Fprintln(w, "NAME\tADDRESS\tISCSI\tROLE\tHEALTHY\tVERSION\tGENERATION")
	for _, n := range s.Nodes {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", n.Name, dash(n.Address), dash(n.ISCSIAddress),
			dash(n.RaftRole), yesNo(n.Healthy), dash(n.Version), n.Generation)
	}
	for _, n := range s.Nodes {
		if n.Error != "" {
			fmt.Fprintf(w, "%s: %s\n", n.Name, n.Error)
		}
	}
	printProtocols(w, s.Nodes)
}

// printProtocols prints the protocol tables with the nodes sharing each,
// and names who runs what when the cluster runs more than one release or
// table. It decides for itself rather than reading mixed_versions, which
// a node of an older release does not report.
func printProtocols(w io.Writer, nodes []api.NodeStatus) {
	var tables, releases []string
	byTable, byRelease := map[string][]string{}, map[string][]string{}
	for _, n := range nodes {
		t := cluster.FormatProtocols(n.Protocols)
		switch {
		case n.Protocols == nil && n.Version == "":
			continue
		case n.Protocols == nil:
			t = fmt.Sprintf("not advertised (command protocol %d)", n.Protocol)
		}
		if byTable[t] == nil {
			tables = append(tables, t)
		}
		byTable[t] = append(byTable[t], n.Name)
		if n.Version != "" {
			if byRelease[n.Version] == nil {
				releases = append(releases, n.Version)
			}
			byRelease[n.Version] = append(byRelease[n.Version], n.Name)
		}
	}
	for _, t := range tables {
		fmt.Fprintf(w, "protocols of %s: %s\n", strings.Join(byTable[t], ", "), t)
	}
	if !cluster.MixedVersions(nodes) {
		return
	}
	if len(releases) < 2 {
		fmt.Fprintln(w, "MIXED VERSIONS: one release, different protocol tables (above)")
		return
	}
	running := make([]string, len(releases))
	for i, r := range releases {
		running[i] = r + " on " + strings.Join(byRelease[r], ", ")
	}
	fmt.Fprintf(w, "MIXED VERSIONS: %s\n", strings.Join(running, "; "))
}

func newClusterMembersCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "members",
		Short: "List the gossip members with their addresses and protocol",
		Long: `Members lists what memberlist knows of every node: its gossip state (alive,
suspect, dead, left), whether it votes in Raft, its release and the highest
command protocol it decodes, which is what the version gate checks.`,
		Example: `  hatarget cluster members
  hatarget cluster members -o json`,
		Args: cobra.NoArgs,
		RunE: ctlRun(func(ctx context.Context, c *ctl, _ []string) error {
			ms, err := c.client.Members(ctx)
			if err != nil {
				return err
			}
			return c.show(ms, func(w io.Writer) { printMembers(w, ms) })
		}),
	}
}

func printMembers(w io.Writer, ms []api.Member) {
	fmt.Fprintln(w, "NAME\tGOSSIP\tVOTER\tVERSION\tPROTOCOL\tAPI\tISCSI\tRAFT\tGOSSIP ADDRESS")
	for _, m := range ms {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", m.Name, dash(m.Gossip), yesNo(m.Voter),
			dash(m.Version), m.Protocol, dash(m.APIAddr), dash(m.ISCSI), dash(m.RaftAddr), dash(m.Address))
	}
}

func newClusterRemoveCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a dead node from Raft and the configuration",
		Long: `Remove takes a node that is gone for good out of the Raft voters and the
replicated configuration, so that the quorum is counted without it. Do not
remove a node that is only down for maintenance: it rejoins by itself.`,
		Example: `  hatarget cluster remove node3`,
		Args:    cobra.ExactArgs(1),
		RunE: ctlRun(func(ctx context.Context, c *ctl, args []string) error {
			r, err := c.client.RemoveNode(ctx, args[0])
			if err != nil {
				return err
			}
			return c.show(r, func(w io.Writer) {
				fmt.Fprintf(w, "removed node %s (generation %d)\n", args[0], r.Generation)
			})
		}),
	}
}

func newClusterTransferCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "transfer-leadership [NAME]",
		Short: "Hand Raft leadership to another node",
		Long: `Transfer-leadership makes the current leader step down in favour of NAME,
or of the most up-to-date follower when NAME is omitted; use it before
taking the leader down for maintenance.`,
		Example: `  hatarget cluster transfer-leadership
  hatarget cluster transfer-leadership node2`,
		Args: cobra.MaximumNArgs(1),
		RunE: ctlRun(func(ctx context.Context, c *ctl, args []string) error {
			to := ""
			if len(args) == 1 {
				to = args[0]
			}
			s, err := c.client.TransferLeadership(ctx, to)
			if err != nil {
				return err
			}
			return c.show(s, func(w io.Writer) { printTransfer(w, s) })
		}),
	}
}

func printTransfer(w io.Writer, s *api.LocalStatus) {
	if s.Leader == "" {
		fmt.Fprintf(w, "leadership handed over; no leader elected yet (term %d)\n", s.Term)
		return
	}
	fmt.Fprintf(w, "leader is now %s (term %d)\n", s.Leader, s.Term)
}

func newClusterSnapshotCommand() *cobra.Command {
	cmd := groupCommand("snapshot", "Save or restore the replicated configuration",
		`  hatarget cluster snapshot save backup.snap
  hatarget cluster snapshot restore backup.snap`)
	cmd.AddCommand(newSnapshotSaveCommand(), newSnapshotRestoreCommand())
	return cmd
}

// snapshotSaved is the -o json answer of snapshot save.
type snapshotSaved struct {
	File  string `json:"file"`
	Bytes int    `json:"bytes"`
}

func newSnapshotSaveCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "save FILE",
		Short: "Download a snapshot of the replicated configuration",
		Long: `Save writes a snapshot of the replicated configuration (targets, LUNs,
ACLs, CHAP secrets, nodes) to FILE, readable only by its owner because it
holds secrets; "-" writes it to stdout. The file appears whole or not at all.`,
		Example: `  hatarget cluster snapshot save /var/backups/hatarget-$(date +%F).snap
  hatarget cluster snapshot save - | gzip > backup.snap.gz`,
		Args: cobra.ExactArgs(1),
		RunE: ctlRun(func(ctx context.Context, c *ctl, args []string) error {
			snap, err := c.client.SnapshotSave(ctx)
			if err != nil {
				return err
			}
			if err := writeOutput(c, args[0], snap); err != nil || args[0] == "-" {
				return err
			}
			return c.show(snapshotSaved{File: args[0], Bytes: len(snap)}, func(w io.Writer) {
				fmt.Fprintf(w, "saved a snapshot of %d bytes to %s\n", len(snap), args[0])
			})
		}),
	}
}

func newSnapshotRestoreCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the replicated configuration with a saved snapshot",
		Long: `Restore replaces the whole configuration of the cluster with the snapshot
in FILE ("-" reads stdin). Every target and LUN not in the snapshot goes
away on every node.`,
		Example: `  hatarget cluster snapshot restore /var/backups/hatarget-2026-01-31.snap
  gunzip -c backup.snap.gz | hatarget cluster snapshot restore -`,
		Args: cobra.ExactArgs(1),
		RunE: ctlRun(func(ctx context.Context, c *ctl, args []string) error {
			snap, err := readInput(c, args[0])
			if err != nil {
				return err
			}
			r, err := c.client.SnapshotRestore(ctx, snap)
			if err != nil {
				return err
			}
			return c.show(r, func(w io.Writer) {
				fmt.Fprintf(w, "restored the snapshot from %s (generation %d)\n", inputName(args[0]), r.Generation)
			})
		}),
	}
}

// inputName names a FILE argument in messages.
func inputName(file string) string {
	if file == "-" {
		return "stdin"
	}
	return file
}
