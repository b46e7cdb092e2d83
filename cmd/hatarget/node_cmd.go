package main

import (
	"context"
	"fmt"
	"io"
	"sort"

	"github.com/spf13/cobra"

	"github.com/hatarget/hatarget/cluster/api"
)

var completeNodeArg = completeFirstArg(nodeNames)

func nodeNames(ctx context.Context, c *api.Client) ([]string, error) {
	ms, err := c.Members(ctx)
	names := make([]string, 0, len(ms))
	for _, m := range ms {
		names = append(names, m.Name)
	}
	return names, err
}

func newNodeCommand() *cobra.Command {
	cmd := groupCommand("node", "Drain a node of its LUNs before maintenance, and undrain it",
		`  hatarget node drain n2
  hatarget node undrain n2`)
	cmd.Long = `Node commands move LUN ownership off a node (drain) and let it own LUNs
again (undrain). A drained node keeps serving its paths: they are
active/non-optimized (or standby) for every LUN.`
	addCtlFlags(cmd)
	cmd.AddCommand(newNodeDrainCommand(), newNodeUndrainCommand())
	return cmd
}

func newNodeDrainCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "drain NAME",
		Short: "Move every LUN a node owns to other nodes and keep new ones away",
		Long: `Drain marks the node drained, so no LUN is given to it, then moves each
LUN it owns to the least loaded live node, one committed move at a time.`,
		Example:           `  hatarget node drain n2`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNodeArg,
		RunE: ctlRun(func(ctx context.Context, c *ctl, args []string) error {
			r, err := c.client.DrainNode(ctx, args[0])
			if err != nil {
				return err
			}
			return c.show(r, func(w io.Writer) {
				fmt.Fprintf(w, "node %s drained; %d LUN(s) moved\n", args[0], len(r.Moved))
				names := make([]string, 0, len(r.Moved))
				for name := range r.Moved {
					names = append(names, name)
				}
				sort.Strings(names)
				for _, name := range names {
					fmt.Fprintf(w, "  %s -> %s\n", name, r.Moved[name])
				}
			})
		}),
	}
}

func newNodeUndrainCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "undrain NAME",
		Short:             "Let a drained node own LUNs again",
		Long:              `Undrain lets the node own LUNs again. LUNs do not move back by themselves: move them with "hatarget lun move".`,
		Example:           `  hatarget node undrain n2`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNodeArg,
		RunE: ctlRun(func(ctx context.Context, c *ctl, args []string) error {
			r, err := c.client.UndrainNode(ctx, args[0])
			if err != nil {
				return err
			}
			return c.show(r, func(w io.Writer) { fmt.Fprintf(w, "node %s undrained\n", args[0]) })
		}),
	}
}

func newLUNMoveCommand() *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "move NAME --to NODE",
		Short: "Make another node the owner of a LUN",
		Long: `Move makes NODE the owner of the LUN: its port group turns
active/optimized and the old owner's active/non-optimized (or standby), and
initiators are told with an ASYMMETRIC ACCESS STATE CHANGED unit attention.`,
		Example:           `  hatarget lun move db0 --to n3`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeLUNArg,
		RunE: ctlRun(func(ctx context.Context, c *ctl, args []string) error {
			if to == "" {
				return fmt.Errorf("--to NODE is required")
			}
			l, err := c.client.MoveLUN(ctx, args[0], to)
			if err != nil {
				return err
			}
			return c.show(l, func(w io.Writer) { fmt.Fprintf(w, "LUN %s is owned by %s (epoch %d)\n", l.Name, l.Owner, l.Epoch) })
		}),
	}
	cmd.Flags().StringVar(&to, "to", "", "the node to own the LUN (required)")
	return cmd
}
