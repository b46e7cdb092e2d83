package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hatarget/hatarget/cluster"
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

// waitOptions are the flags of the node commands that can wait.
type waitOptions struct {
	wait     bool
	timeout  time.Duration
	interval time.Duration
}

func (o *waitOptions) addFlags(cmd *cobra.Command, until string) {
	f := cmd.Flags()
	f.BoolVar(&o.wait, "wait", false, "return only once "+until)
	f.DurationVar(&o.timeout, "timeout", 10*time.Minute, "with --wait, give up after this long")
	f.DurationVar(&o.interval, "interval", time.Second, "with --wait, time between checks")
}

// run is ctlRun for a command that may wait: with --wait it is bounded by
// --timeout rather than by one request's timeout, and fn prints its
// progress through the progress function it is given (to stderr with -o
// json, whose stdout is the answer alone).
func (o *waitOptions) run(fn func(ctx context.Context, c *ctl, args []string, progress func([]string)) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := newCtl(cmd)
		if err != nil {
			return err
		}
		timeout := requestTimeout
		if o.wait {
			if o.timeout <= 0 || o.interval <= 0 {
				return fmt.Errorf("--timeout %s, --interval %s: want positive durations", o.timeout, o.interval)
			}
			timeout = o.timeout
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
		defer cancel()
		w := c.out
		if c.format == outputJSON {
			w = cmd.ErrOrStderr()
		}
		return c.explain(fn(ctx, c, args, progressPrinter(w)))
	}
}

// progressPrinter prints what a wait still waits for, each time it
// changes, so that a slow resync does not flood the terminal.
func progressPrinter(w io.Writer) func([]string) {
	var last string
	return func(waiting []string) {
		text := strings.Join(waiting, "\n  ")
		if text == last {
			return
		}
		last = text
		fmt.Fprintf(w, "%s waiting for:\n  %s\n", time.Now().Format(time.TimeOnly), text)
	}
}

// drained is the -o json answer of node drain: the drain, and with --wait
// the safety check that let it return.
type drained struct {
	*api.DrainResult
	Safety *api.StopSafety `json:"safety,omitempty"`
}

func newNodeDrainCommand() *cobra.Command {
	var o waitOptions
	var force bool
	cmd := &cobra.Command{
		Use:   "drain NAME [--wait [--timeout D]] [--force]",
		Short: "Move every LUN a node owns to other nodes and keep new ones away",
		Long: `Drain marks the node drained, so no LUN is given to it, then moves each
LUN it owns to the least loaded live node, one committed move at a time, and
hands Raft leadership to another node if the node leads.

Drain refuses a node whose stop would make a LUN unavailable or cost Raft
its quorum, and says which LUN and why: it holds the only in-sync copy of a
replicated LUN and no resync of another copy runs, no other node can own a
LUN it owns, or too few other voters are alive. --force drains it anyway.

With --wait, drain returns only once the node can be stopped: it is idle
(drained, owning no LUN, not leading Raft) and stopping it is safe (Raft
keeps its quorum, and every LUN keeps an owner and a live in-sync copy, for
example once a running resync of another copy is done). Meanwhile it prints
what it waits for. With --force it waits only until the node is idle.`,
		Example: `  hatarget node drain n2
  hatarget node drain n2 --wait --timeout 30m && systemctl stop hatarget`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNodeArg,
		RunE: o.run(func(ctx context.Context, c *ctl, args []string, progress func([]string)) error {
			name := args[0]
			r, err := c.client.DrainNodeWith(ctx, name, api.Drain{Force: force})
			if err != nil {
				return err
			}
			out := drained{DrainResult: r}
			if o.wait {
				if out.Safety, err = c.client.WaitStoppable(ctx, name, force, o.interval, c.stopSafety, progress); err != nil {
					return err
				}
			}
			return c.show(out, func(w io.Writer) { printDrained(w, name, out) })
		}),
	}
	o.addFlags(cmd, "the node can be stopped safely")
	cmd.Flags().BoolVar(&force, "force", false, "drain even when stopping the node would make a LUN unavailable or cost the quorum")
	return cmd
}

// stopSafety asks the cluster whether node may stop. A leader of a release
// from before the safety route (v0.1.0, in the first steps of an upgrade
// from it) answers 404: the same check then runs here on its status and
// LUN list, and this command hands Raft leadership over itself, which
// such a leader's drain does not do.
func (c *ctl) stopSafety(ctx context.Context, node string) (*api.StopSafety, error) {
	s, err := c.client.StopSafety(ctx, node)
	if !api.IsRouteMissing(err) {
		return s, err
	}
	st, err := c.client.Status(ctx)
	if err != nil {
		return nil, err
	}
	if st.Leader == node {
		if _, err := c.client.TransferLeadership(ctx, ""); err != nil {
			return nil, fmt.Errorf("handing Raft leadership over from %s: %w", node, err)
		}
		if st, err = c.client.Status(ctx); err != nil {
			return nil, err
		}
	}
	luns, err := c.client.LUNs(ctx)
	if err != nil {
		return nil, err
	}
	safety := cluster.StopSafetyFromStatus(st, luns, node, node)
	return &safety, nil
}

func printDrained(w io.Writer, name string, d drained) {
	fmt.Fprintf(w, "node %s drained; %s moved\n", name, plural(len(d.Moved), "LUN"))
	for _, lun := range slices.Sorted(maps.Keys(d.Moved)) {
		fmt.Fprintf(w, "  %s -> %s\n", lun, d.Moved[lun])
	}
	if len(d.Kept) > 0 && d.Safety == nil {
		fmt.Fprintf(w, "still owns %s: no other node holds an in-sync copy yet\n", strings.Join(d.Kept, ", "))
	}
	if d.Leader != "" {
		fmt.Fprintf(w, "Raft leadership handed over to %s\n", d.Leader)
	}
	switch {
	case d.Safety == nil:
	case d.Safety.Safe:
		fmt.Fprintf(w, "node %s can be stopped\n", name)
	default:
		fmt.Fprintf(w, "node %s is idle, but stopping it is NOT safe (forced):\n  %s\n", name, strings.Join(d.Safety.Reasons, "\n  "))
	}
}

func newNodeUndrainCommand() *cobra.Command {
	var o waitOptions
	cmd := &cobra.Command{
		Use:   "undrain NAME [--wait [--timeout D]]",
		Short: "Let a drained node own LUNs again",
		Long: `Undrain lets the node own LUNs again. LUNs do not move back by themselves:
move them with "hatarget lun move", or spread them with "hatarget cluster
rebalance".

With --wait, undrain returns only once the node has caught up: it is
healthy and serves at least the configuration generation that undrained it
(it has replayed the Raft log up to there), and every replicated LUN it
holds a copy of has that copy back in sync. Meanwhile it prints what it
waits for, including copies no resync can bring back (their LUN's owner is
down).`,
		Example: `  hatarget node undrain n2
  hatarget node undrain n2 --wait --timeout 1h`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeNodeArg,
		RunE: o.run(func(ctx context.Context, c *ctl, args []string, progress func([]string)) error {
			name := args[0]
			r, err := c.client.UndrainNode(ctx, name)
			if err != nil {
				return err
			}
			if o.wait {
				if err := c.client.WaitCaughtUp(ctx, name, r.Generation, o.interval, progress); err != nil {
					return err
				}
			}
			return c.show(r, func(w io.Writer) {
				fmt.Fprintf(w, "node %s undrained\n", name)
				if o.wait {
					fmt.Fprintf(w, "node %s has caught up and its copies are in sync\n", name)
				}
			})
		}),
	}
	o.addFlags(cmd, "the node has caught up and its copies are in sync")
	return cmd
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
