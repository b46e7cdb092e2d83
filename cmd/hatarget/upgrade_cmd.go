package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/hatarget/hatarget/cluster/api"
)

func newClusterUpgradeCommand() *cobra.Command {
	cmd := groupCommand("upgrade", "Steps of a rolling upgrade",
		`  hatarget cluster upgrade plan
  hatarget cluster upgrade status
  hatarget cluster upgrade finalize`)
	cmd.AddCommand(newUpgradePlanCommand(), newUpgradeStatusCommand(), newUpgradeFinalizeCommand())
	return cmd
}

func newUpgradeFinalizeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "finalize",
		Short: "Raise the cluster version once every node runs the new release",
		Long: `Finalize raises the active cluster version to the highest the leader's
release supports, which lets the cluster use what that release brings.
Until then, any node may go back to the previous release; afterwards it
cannot. Finalize refuses, naming them, while a voter or a node holding a
replica is down or runs a release that does not support the new version.
Finalizing again is harmless.`,
		Example: `  hatarget cluster upgrade finalize`,
		Args:    cobra.NoArgs,
		RunE: ctlRun(func(ctx context.Context, c *ctl, _ []string) error {
			r, err := c.client.FinalizeUpgrade(ctx)
			if err != nil {
				return err
			}
			return c.show(r, func(w io.Writer) { printFinalize(w, r) })
		}),
	}
}

func printFinalize(w io.Writer, r *api.FinalizeResult) {
	if r.ClusterVersion == r.Previous {
		fmt.Fprintf(w, "cluster version %d, finalized already\n", r.ClusterVersion)
		return
	}
	fmt.Fprintf(w, "cluster version %d (was %d); nodes can no longer go back to an older release\n", r.ClusterVersion, r.Previous)
}
