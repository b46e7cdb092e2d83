package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hatarget/hatarget/cluster/api"
)

// Commands on the replicas of replicated LUNs: replace-replica,
// force-promote and watch.

func newLUNReplaceReplicaCommand() *cobra.Command {
	var oldNode, newNode string
	cmd := &cobra.Command{
		Use:   "replace-replica NAME --old NODE --new NODE",
		Short: "Move a replicated LUN's copy from one node to another",
		Long: `Replace-replica makes node --new, which holds no copy of the replicated LUN
NAME, one of its replicas in place of --old, typically a node that died
for good or is being retired. The new replica starts out of sync: the
owner copies the whole LUN to it, and it counts as in sync (and can take
over) once that resync is done; follow it with "hatarget lun watch NAME".

--old cannot be the owner: move the LUN to another in-sync replica first
("hatarget lun move NAME --to NODE"). The change is one Raft entry,
conditional on the LUN's ownership epoch.`,
		Example: `  hatarget lun replace-replica db0 --old n2 --new n4
  hatarget lun replace-replica db0 --old n2 --new n4 && hatarget lun watch db0 --until-in-sync`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeLUNArg,
		RunE: ctlRun(func(ctx context.Context, c *ctl, args []string) error {
			if oldNode == "" || newNode == "" {
				return fmt.Errorf("give --old NODE (the replica to replace) and --new NODE (the node to take its place)")
			}
			if oldNode == newNode {
				return fmt.Errorf("--old and --new are both %s: give the node to take %s's place", oldNode, oldNode)
			}
			l, err := c.client.ReplaceReplica(ctx, args[0], oldNode, newNode)
			if err != nil {
				return err
			}
			return c.show(l, func(w io.Writer) {
				fmt.Fprintf(w, "LUN %s: %s replaced %s as a replica; it is out of sync until %s has copied the LUN to it\n",
					l.Name, newNode, oldNode, dash(l.Owner))
				fmt.Fprintf(w, "Replicas:\t%s\n", replicaText(l.Replicas))
			})
		}),
	}
	f := cmd.Flags()
	f.StringVar(&oldNode, "old", "", "the replica to replace (required)")
	f.StringVar(&newNode, "new", "", "the node to hold the copy instead, not a replica yet (required)")
	_ = cmd.RegisterFlagCompletionFunc("old", completeNodeFlag)
	_ = cmd.RegisterFlagCompletionFunc("new", completeNodeFlag)
	return cmd
}

// completeNodeFlag completes a flag naming a node.
func completeNodeFlag(cmd *cobra.Command, _ []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return completeNodeArg(cmd, nil, "")
}

func newLUNForcePromoteCommand() *cobra.Command {
	var to string
	var yes bool
	cmd := &cobra.Command{
		Use:   "force-promote NAME --to NODE [--yes]",
		Short: "Make an out-of-sync replica own a LUN whose in-sync copies are all lost",
		Long: `Force-promote is the last resort for a replicated LUN that serves no I/O
because every in-sync copy is on nodes that are down (for example the owner
and the only other in-sync replica died together). It makes NODE, a live
replica that is NOT in sync, the owner with a new ownership epoch and the
only in-sync copy, so that the LUN serves again from NODE's copy.

What may be lost: every write acknowledged after NODE's copy fell out of
sync. Those writes are on the in-sync copies it overrides only, and
initiators will read NODE's older data instead. The overridden replicas
stay replicas, out of sync: one that comes back is resynced from NODE,
which overwrites what it had; replace those that are gone for good with
"hatarget lun replace-replica".

The cluster refuses while any in-sync replica is alive (nothing needs
forcing: it fails over to that replica by itself, or "hatarget lun move"
does), while NODE is dead or drained, and while the old owner may still
hold its lease.

Without --yes nothing changes: the command asks the cluster whether the
promotion would be accepted, prints which in-sync copies it would override
and stops. With --yes it promotes NODE and prints the new owner and epoch.`,
		Example: `  hatarget lun force-promote db0 --to n3
  hatarget lun force-promote db0 --to n3 --yes`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeLUNArg,
		RunE: ctlRun(func(ctx context.Context, c *ctl, args []string) error {
			if to == "" {
				return fmt.Errorf("--to NODE is required: the out-of-sync replica to promote")
			}
			r, err := c.client.ForcePromote(ctx, args[0], api.ForcePromote{To: to, DryRun: !yes})
			if err != nil {
				return err
			}
			if !yes {
				if err := c.show(r, func(w io.Writer) { printForcePromotePlan(w, r, to) }); err != nil {
					return err
				}
				return fmt.Errorf("LUN %s not promoted: run again with --yes to make %s its owner anyway", r.LUN.Name, to)
			}
			return c.show(r, func(w io.Writer) {
				fmt.Fprintf(w, "LUN %s is owned by %s (epoch %d), its only in-sync copy\n", r.LUN.Name, r.LUN.Owner, r.LUN.Epoch)
				if len(r.Overridden) > 0 {
					fmt.Fprintf(w, "overridden: %s, out of sync now: resynced from %s if they come back\n",
						strings.Join(r.Overridden, ", "), r.LUN.Owner)
				}
			})
		}),
	}
	f := cmd.Flags()
	f.StringVar(&to, "to", "", "the live, out-of-sync replica to make owner (required)")
	f.BoolVar(&yes, "yes", false, "promote, accepting the loss of the writes only the overridden copies have")
	_ = cmd.RegisterFlagCompletionFunc("to", completeNodeFlag)
	return cmd
}

// printForcePromotePlan says what a forced promotion would override.
func printForcePromotePlan(w io.Writer, r *api.ForcePromoteResult, to string) {
	overridden := "no in-sync copy"
	if len(r.Overridden) > 0 {
		overridden = "the in-sync copies on " + strings.Join(r.Overridden, ", ") + " (none of them alive)"
	}
	fmt.Fprintf(w, "Force-promoting %s to own LUN %s overrides %s.\n", to, r.LUN.Name, overridden)
	fmt.Fprintf(w, "Writes acknowledged after %s's copy fell out of sync are on those copies only: they will be lost,\n", to)
	fmt.Fprintf(w, "and initiators will read %s's older data instead.\n", to)
}

// watchNow is the watch command's clock; tests replace it.
var watchNow = time.Now

// watchOptions are the flags of lun watch.
type watchOptions struct {
	interval    time.Duration
	untilInSync bool
}

func newLUNWatchCommand() *cobra.Command {
	var o watchOptions
	cmd := &cobra.Command{
		Use:   "watch NAME [--interval 1s] [--until-in-sync]",
		Short: "Follow the state and resync progress of a replicated LUN's copies",
		Long: `Watch polls the LUN every --interval and shows one line per replica: the
node, its state (in-sync, out-of-sync, resyncing or down) and, while the
owner resyncs it, a progress bar with the percentage, the copy rate and the
time left. Any node can be watched: one that does not own the LUN asks the
owner for the progress, and says so when the owner does not answer.

On a terminal the lines are redrawn in place; otherwise (a pipe, a file)
every poll prints a new snapshot of plain lines, headed by the time. With
-o json every poll prints the LUN as the API answers it.

Watch runs until interrupted (Ctrl-C), or with --until-in-sync until every
replica is in sync, when it exits with status 0.`,
		Example: `  hatarget lun watch db0
  hatarget lun watch db0 --until-in-sync --interval 5s`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeLUNArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newCtl(cmd)
			if err != nil {
				return err
			}
			if o.interval <= 0 {
				return fmt.Errorf("--interval %s: want a positive duration, e.g. 1s", o.interval)
			}
			w := &lunWatch{c: c, name: args[0], opts: o, tty: c.format == outputTable && isTerminal(c.out), now: watchNow}
			return c.explain(w.run(cmd.Context()))
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.interval, "interval", time.Second, "time between polls")
	f.BoolVar(&o.untilInSync, "until-in-sync", false, "exit (status 0) once every replica is in sync")
	return cmd
}

// isTerminal reports whether w is a character device (a terminal), where
// watch may redraw in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("TERM") == "dumb" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// lunWatch is one run of lun watch.
type lunWatch struct {
	c    *ctl
	name string
	opts watchOptions
	tty  bool
	now  func() time.Time
	// progress is the first resync sample seen of each node, for its rate.
	progress map[string]resyncSample
	// drawn is how many lines the last frame took on the terminal.
	drawn int
}

// resyncSample is a replica's resync progress at one moment.
type resyncSample struct {
	done, total int64
	at          time.Time
}

func (w *lunWatch) run(ctx context.Context) error {
	w.progress = map[string]resyncSample{}
	polled := false
	for {
		l, err := w.poll(ctx)
		switch {
		case ctx.Err() != nil:
			return w.interrupted()
		case err != nil && (!polled || api.IsCode(err, api.CodeNotFound) || api.IsCode(err, api.CodeUnauthorized)):
			return err
		case err != nil:
			// The cluster may be failing over: keep watching.
			w.draw([]string{fmt.Sprintf("%s  %s: %v", w.now().Format(time.TimeOnly), w.name, w.c.explain(err))})
		case len(l.Replicas) == 0:
			return fmt.Errorf("LUN %s is on shared storage: it has no replicas to watch", l.Name)
		default:
			polled = true
			if err := w.show(l); err != nil {
				return err
			}
			if w.opts.untilInSync && allInSync(l.Replicas) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return w.interrupted()
		case <-time.After(w.opts.interval):
		}
	}
}

// interrupted ends a watch stopped by Ctrl-C: the normal end of a plain
// watch, an error when it was waiting for the replicas to be in sync.
func (w *lunWatch) interrupted() error {
	if w.opts.untilInSync {
		return fmt.Errorf("interrupted before every replica of %s was in sync", w.name)
	}
	return nil
}

func (w *lunWatch) poll(ctx context.Context) (*api.LUN, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	return w.c.client.LUN(ctx, w.name)
}

func (w *lunWatch) show(l *api.LUN) error {
	if w.c.format == outputJSON {
		return writeJSON(w.c.out, l)
	}
	w.draw(w.frame(l))
	return nil
}

// draw prints a frame: on a terminal over the previous one, else after it.
func (w *lunWatch) draw(lines []string) {
	var b strings.Builder
	if w.tty && w.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA\r\x1b[J", w.drawn) // up to the frame's first line, clear to the end
	}
	for _, line := range lines {
		b.WriteString(line)
		b.WriteByte('\n')
	}
	_, _ = io.WriteString(w.c.out, b.String())
	w.drawn = len(lines)
}

// frame renders one snapshot of l: a header, then a line per replica.
func (w *lunWatch) frame(l *api.LUN) []string {
	now := w.now()
	header := fmt.Sprintf("%s  LUN %s  owner %s", now.Format(time.TimeOnly), l.Name, ownerText(l))
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, r := range l.Replicas {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", r.Node, replicaLabel(r), w.resyncText(r, now))
	}
	_ = tw.Flush()
	lines := []string{header}
	for line := range strings.Lines(b.String()) {
		lines = append(lines, strings.TrimRight(line, " \n"))
	}
	if l.ResyncUnavailable != "" {
		lines = append(lines, "  "+l.ResyncUnavailable)
	}
	return lines
}

// replicaLabel is a replica's state, marked when it owns the LUN.
func replicaLabel(r api.Replica) string {
	if r.Owner {
		return r.State + " (owner)"
	}
	return r.State
}

// resyncText is the progress bar, percentage, rate and time left of a
// replica's resync, or "" when the view shows none. The rate is averaged
// from the first sample this watch saw of the resync.
func (w *lunWatch) resyncText(r api.Replica, now time.Time) string {
	if r.ResyncTotal <= 0 || r.State == api.ReplicaInSync {
		delete(w.progress, r.Node)
		return ""
	}
	done := min(max(r.ResyncDone, 0), r.ResyncTotal)
	first, ok := w.progress[r.Node]
	if !ok || first.total != r.ResyncTotal || done < first.done {
		// A new resync (or a restarted one): measure from here.
		first = resyncSample{done: done, total: r.ResyncTotal, at: now}
		w.progress[r.Node] = first
	}
	text := fmt.Sprintf("%s %5.1f%%", progressBar(done, r.ResyncTotal, 20), 100*float64(done)/float64(r.ResyncTotal))
	if elapsed := now.Sub(first.at).Seconds(); elapsed > 0 {
		rate := float64(done-first.done) / elapsed
		text += fmt.Sprintf("  %s/s", humanSize(int64(rate)))
		if rate > 0 {
			left := time.Duration(float64(r.ResyncTotal-done) / rate * float64(time.Second))
			text += "  " + left.Round(time.Second).String() + " left"
		}
	}
	return text
}

// progressBar draws done/total as width cells: [#####.....].
func progressBar(done, total int64, width int) string {
	full := 0
	if total > 0 {
		full = int(done * int64(width) / total)
	}
	full = min(max(full, 0), width)
	return "[" + strings.Repeat("#", full) + strings.Repeat(".", width-full) + "]"
}

func allInSync(rs []api.Replica) bool {
	for _, r := range rs {
		if r.State != api.ReplicaInSync {
			return false
		}
	}
	return len(rs) > 0
}
