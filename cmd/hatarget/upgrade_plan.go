package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hatarget/hatarget/cluster"
	"github.com/hatarget/hatarget/cluster/api"
)

// upgradePlan is what `cluster upgrade plan` and `status` show: the nodes
// in the order to upgrade them (the Raft leader last, so that leadership
// moves once at most), and for each what stopping it now would do.
type upgradePlan struct {
	ClusterVersion uint16 `json:"cluster_version"`
	MixedVersions  bool   `json:"mixed_versions"`
	// Target is the release of the node with the newest command protocol:
	// the release the cluster is being upgraded to.
	Target string        `json:"target_release"`
	Nodes  []upgradeNode `json:"nodes"`
	// Next is the first node in order that does not run Target yet.
	Next string `json:"next,omitempty"`
}

type upgradeNode struct {
	Name     string `json:"name"`
	Release  string `json:"release"`
	Protocol uint16 `json:"protocol"`
	Upgraded bool   `json:"upgraded"`
	Leader   bool   `json:"leader,omitempty"`
	Healthy  bool   `json:"healthy"`
	// Owns are the LUNs it owns; Copies the replicated LUNs it holds a
	// copy of, with the copy's state.
	Owns   []string `json:"owns,omitempty"`
	Copies []string `json:"copies,omitempty"`
	// Safety is the node's stop-safety (node drain --wait waits for it);
	// nil with SafetyError when the cluster could not say (a node of a
	// release without it answered).
	Safety      *api.StopSafety `json:"safety,omitempty"`
	SafetyError string          `json:"safety_error,omitempty"`
}

func newUpgradePlanCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "plan",
		Short: "The order to upgrade the nodes in, and whether each can be stopped now",
		Long: `Plan lists the nodes in the order a rolling upgrade takes them, the Raft
leader last, with each node's release, the LUNs it owns, the copies it
holds and whether stopping it now is safe (Raft keeps a quorum, no LUN
loses its owner or its last in-sync copy). Each step is: hatarget node
drain NAME --wait, stop the node, start the new release, hatarget node
undrain NAME --wait; then hatarget cluster upgrade finalize.`,
		Example: `  hatarget cluster upgrade plan
  hatarget cluster upgrade plan -o json`,
		Args: cobra.NoArgs,
		RunE: ctlRun(func(ctx context.Context, c *ctl, _ []string) error {
			p, err := buildUpgradePlan(ctx, c.client)
			if err != nil {
				return err
			}
			return c.show(p, func(w io.Writer) { printUpgradePlan(w, p) })
		}),
	}
}

func newUpgradeStatusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "How far a rolling upgrade is, and its next step",
		Long: `Status says which nodes run the newest release in the cluster, the active
cluster version, and the next step: the next node to upgrade and whether
it can be drained and stopped now, or finalize once every node is
upgraded.`,
		Example: `  hatarget cluster upgrade status`,
		Args:    cobra.NoArgs,
		RunE: ctlRun(func(ctx context.Context, c *ctl, _ []string) error {
			p, err := buildUpgradePlan(ctx, c.client)
			if err != nil {
				return err
			}
			return c.show(p, func(w io.Writer) { printUpgradeStatus(w, p) })
		}),
	}
}

func buildUpgradePlan(ctx context.Context, cl *api.Client) (*upgradePlan, error) {
	st, err := cl.Status(ctx)
	if err != nil {
		return nil, err
	}
	luns, err := cl.LUNs(ctx)
	if err != nil {
		return nil, err
	}
	p := &upgradePlan{ClusterVersion: st.ClusterVersion, MixedVersions: st.MixedVersions}
	var newest uint16
	for _, n := range st.Nodes {
		if n.Protocol > newest || n.Protocol == newest && n.Version > p.Target {
			newest, p.Target = n.Protocol, n.Version
		}
	}
	for _, n := range st.Nodes {
		un := upgradeNode{Name: n.Name, Release: n.Version, Protocol: n.Protocol, Leader: n.Name == st.Leader,
			Healthy: n.Healthy, Upgraded: n.Protocol == newest && n.Version == p.Target}
		for _, l := range luns {
			if l.Owner == n.Name {
				un.Owns = append(un.Owns, l.Name)
			}
			for _, r := range l.Replicas {
				if r.Node == n.Name {
					un.Copies = append(un.Copies, l.Name+" ("+r.State+")")
				}
			}
		}
		s, err := cl.StopSafety(ctx, n.Name)
		if api.IsRouteMissing(err) {
			// The node that answered, or the leader it asked, runs a
			// release from before the check (v0.1.0): the same check on
			// what it shows, which does not say who is drained.
			fallback := cluster.StopSafetyFromStatus(st, luns, n.Name)
			s, err = &fallback, nil
		}
		if err != nil {
			un.SafetyError = err.Error()
		} else {
			un.Safety = s
		}
		p.Nodes = append(p.Nodes, un)
	}
	slices.SortFunc(p.Nodes, func(a, b upgradeNode) int {
		if a.Leader != b.Leader {
			if a.Leader {
				return 1
			}
			return -1
		}
		return strings.Compare(a.Name, b.Name)
	})
	for _, n := range p.Nodes {
		if !n.Upgraded {
			p.Next = n.Name
			break
		}
	}
	return p, nil
}

func printUpgradePlan(w io.Writer, p *upgradePlan) {
	fmt.Fprintf(w, "cluster version %d; upgrading to %s\n", p.ClusterVersion, p.Target)
	fmt.Fprintln(w, "STEP\tNODE\tRELEASE\tOWNS\tCOPIES\tSTOP NOW")
	for i, n := range p.Nodes {
		name := n.Name
		if n.Leader {
			name += " (leader)"
		}
		release := n.Release
		if n.Upgraded {
			release += " (done)"
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\n", i+1, name, release, dash(strings.Join(n.Owns, ", ")),
			dash(strings.Join(n.Copies, ", ")), stopVerdict(n))
	}
	fmt.Fprintln(w, "each step: node drain NAME --wait; stop; start the new release; node undrain NAME --wait; then: cluster upgrade finalize")
}

func printUpgradeStatus(w io.Writer, p *upgradePlan) {
	done := 0
	for _, n := range p.Nodes {
		if n.Upgraded {
			done++
		}
	}
	fmt.Fprintf(w, "%d of %d nodes run %s; cluster version %d\n", done, len(p.Nodes), p.Target, p.ClusterVersion)
	if p.MixedVersions {
		fmt.Fprintln(w, "MIXED VERSIONS: finish the upgrade, or go back, before finalizing")
	}
	if p.Next == "" {
		fmt.Fprintln(w, "next: hatarget cluster upgrade finalize")
		return
	}
	for _, n := range p.Nodes {
		if n.Name == p.Next {
			fmt.Fprintf(w, "next: %s (%s): hatarget node drain %s --wait; stop now: %s\n", n.Name, n.Release, n.Name, stopVerdict(n))
		}
	}
}

// stopVerdict says whether a node can be stopped now, and why not.
func stopVerdict(n upgradeNode) string {
	s := n.Safety
	switch {
	case s == nil:
		return "unknown (" + n.SafetyError + ")"
	case s.Stoppable():
		return "yes"
	case s.Safe:
		return "after drain: " + strings.Join(s.Pending, "; ")
	case s.Blocked:
		return "NO: " + strings.Join(s.Reasons, "; ")
	}
	return "not yet: " + strings.Join(s.Reasons, "; ")
}
