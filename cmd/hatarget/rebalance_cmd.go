package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/hatarget/hatarget/cluster/api"
)

func newClusterRebalanceCommand() *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "rebalance [--dry-run]",
		Short: "Spread LUN ownership evenly over the nodes",
		Long: `Rebalance spreads the ownership of LUNs evenly over the live, undrained
nodes that may own them (for a replicated LUN, those holding an in-sync
copy), moving as few LUNs as possible: after a rolling upgrade, say, where
each drain moved LUNs away and undrain moved none back. Each move is a
"hatarget lun move", conditional on the ownership the plan saw. LUNs whose
owner is dead or drained are left to failover and drain.

--dry-run prints the plan and moves nothing.`,
		Example: `  hatarget cluster rebalance --dry-run
  hatarget cluster rebalance`,
		Args: cobra.NoArgs,
		RunE: ctlRun(func(ctx context.Context, c *ctl, _ []string) error {
			r, err := c.client.Rebalance(ctx, api.Rebalance{DryRun: dryRun})
			if err != nil {
				return err
			}
			return c.show(r, func(w io.Writer) { printRebalance(w, r) })
		}),
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the moves without making them")
	return cmd
}

func printRebalance(w io.Writer, r *api.RebalanceResult) {
	switch {
	case len(r.Moves) == 0:
		fmt.Fprintln(w, "ownership is balanced: nothing to move")
		return
	case r.DryRun:
		fmt.Fprintf(w, "would move %s (dry run):\n", plural(len(r.Moves), "LUN"))
	default:
		fmt.Fprintf(w, "moved %s (generation %d):\n", plural(len(r.Moves), "LUN"), r.Generation)
	}
	fmt.Fprintln(w, "LUN\tFROM\tTO")
	for _, m := range r.Moves {
		fmt.Fprintf(w, "%s\t%s\t%s\n", m.LUN, m.From, m.To)
	}
}
