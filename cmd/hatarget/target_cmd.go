package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hatarget/hatarget/cluster/api"
)

func newTargetCommand() *cobra.Command {
	cmd := groupCommand("target", "Create, change and delete iSCSI targets",
		`  hatarget target create iqn.2025-01.com.example:db --alias db
  hatarget target list
  hatarget target acl add iqn.2025-01.com.example:db iqn.1993-08.org.debian:01:host1`)
	cmd.Long = `Target commands manage the cluster's iSCSI targets: every node serves every
target, so an initiator can log in through any node's portal.`
	addCtlFlags(cmd)
	cmd.AddCommand(newTargetCreateCommand(), newTargetDeleteCommand(), newTargetListCommand(),
		newTargetShowCommand(), newTargetSetCommand(), newTargetCHAPCommand(), newTargetACLCommand())
	return cmd
}

var completeTargetArg = completeFirstArg(targetNames)

func newTargetCreateCommand() *cobra.Command {
	var alias string
	cmd := &cobra.Command{
		Use:   "create IQN",
		Short: "Create a target without LUNs",
		Long: `Create adds an enabled target that any initiator may log in to; add LUNs
with "hatarget lun create" and restrict initiators with "target acl add".`,
		Example: `  hatarget target create iqn.2025-01.com.example:db
  hatarget target create iqn.2025-01.com.example:db --alias "database volumes"`,
		Args: cobra.ExactArgs(1),
		RunE: ctlRun(func(ctx context.Context, c *ctl, args []string) error {
			t, err := c.client.CreateTarget(ctx, api.CreateTarget{IQN: args[0], Alias: alias})
			if err != nil {
				return err
			}
			return c.show(t, func(w io.Writer) { fmt.Fprintf(w, "created target %s\n", t.IQN) })
		}),
	}
	cmd.Flags().StringVar(&alias, "alias", "", "TargetAlias reported to initiators")
	return cmd
}

func newTargetDeleteCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "delete IQN",
		Short: "Delete a target",
		Long: `Delete removes a target and logs its sessions out. A target that still has
LUNs is refused unless --force, which deletes its LUNs too (the backing
files stay on disk).`,
		Example: `  hatarget target delete iqn.2025-01.com.example:db
  hatarget target delete iqn.2025-01.com.example:db --force`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeTargetArg,
		RunE: ctlRun(func(ctx context.Context, c *ctl, args []string) error {
			r, err := c.client.DeleteTarget(ctx, args[0], force)
			if err != nil {
				return err
			}
			return c.show(r, func(w io.Writer) {
				fmt.Fprintf(w, "deleted target %s (generation %d)\n", args[0], r.Generation)
			})
		}),
	}
	cmd.Flags().BoolVar(&force, "force", false, "delete the target's LUNs too")
	return cmd
}

func newTargetListCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List targets with their LUNs, ACL and CHAP",
		Example: `  hatarget target list
  hatarget target list -o json | jq -r '.[].iqn'`,
		Args: cobra.NoArgs,
		RunE: ctlRun(func(ctx context.Context, c *ctl, _ []string) error {
			ts, err := c.client.Targets(ctx)
			if err != nil {
				return err
			}
			return c.show(ts, func(w io.Writer) { printTargets(w, ts) })
		}),
	}
}

func printTargets(w io.Writer, ts []api.Target) {
	fmt.Fprintln(w, "IQN\tALIAS\tENABLED\tLUNS\tINITIATORS\tCHAP")
	for _, t := range ts {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", t.IQN, dash(t.Alias), yesNo(t.Enabled),
			dash(lunMapList(t.LUNs)), initiatorList(t.AllowedInitiators), chapSummary(t))
	}
}

// lunMapList prints LUN maps as "0=disk01,1=disk02".
func lunMapList(ls []api.LUNMap) string {
	parts := make([]string, 0, len(ls))
	for _, l := range ls {
		p := strconv.FormatUint(l.LUN, 10) + "=" + l.Name
		if l.ReadOnly {
			p += "(ro)"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ",")
}

// initiatorList says "any" for an empty ACL because that is what it means.
func initiatorList(is []string) string {
	if len(is) == 0 {
		return "any"
	}
	return strings.Join(is, ",")
}

func chapSummary(t api.Target) string {
	switch {
	case len(t.CHAPUsers) == 0:
		return "off"
	case t.MutualCHAPUser != "":
		return strings.Join(t.CHAPUsers, ",") + " (mutual " + t.MutualCHAPUser + ")"
	default:
		return strings.Join(t.CHAPUsers, ",")
	}
}

func newTargetShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "show IQN",
		Short:             "Show one target in detail",
		Example:           `  hatarget target show iqn.2025-01.com.example:db`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeTargetArg,
		RunE: ctlRun(func(ctx context.Context, c *ctl, args []string) error {
			t, err := c.client.Target(ctx, args[0])
			if err != nil {
				return err
			}
			return c.show(t, func(w io.Writer) { printTarget(w, t) })
		}),
	}
}

func printTarget(w io.Writer, t *api.Target) {
	fmt.Fprintf(w, "IQN:\t%s\n", t.IQN)
	fmt.Fprintf(w, "Alias:\t%s\n", dash(t.Alias))
	fmt.Fprintf(w, "Enabled:\t%s\n", yesNo(t.Enabled))
	fmt.Fprintf(w, "Portals:\t%s\n", dash(strings.Join(t.Portals, ", ")))
	fmt.Fprintf(w, "CHAP:\t%s\n", chapSummary(*t))
	fmt.Fprintf(w, "Initiators:\t%s\n", initiatorList(t.AllowedInitiators))
	fmt.Fprintf(w, "Params:\t%s\n", dash(paramList(t.Params)))
	fmt.Fprintf(w, "LUNs:\t%s\n", dash(lunMapList(t.LUNs)))
	for _, g := range t.Groups {
		fmt.Fprintf(w, "Group %s:\tinitiators %s; LUNs %s\n", g.Name,
			dash(strings.Join(g.Initiators, ",")), dash(lunMapList(g.LUNs)))
	}
}

// paramList sorts the keys so that the output is stable.
func paramList(ps map[string]string) string {
	parts := make([]string, 0, len(ps))
	for _, k := range slices.Sorted(maps.Keys(ps)) {
		parts = append(parts, k+"="+ps[k])
	}
	return strings.Join(parts, " ")
}

func newTargetSetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "set IQN KEY=VALUE...",
		Short: "Change a target's alias, enabled flag or iSCSI parameters",
		Long: `Set changes settings of a target. "alias" sets the TargetAlias, "enabled"
(0, 1, true or false) enables or disables the target; every other KEY is an
iSCSI parameter as in scst.conf (MaxRecvDataSegmentLength, HeaderDigest,
QueuedCommands, ...). An empty VALUE resets a parameter to its default.`,
		Example: `  hatarget target set iqn.2025-01.com.example:db enabled=0
  hatarget target set iqn.2025-01.com.example:db alias=db HeaderDigest=CRC32C,None
  hatarget target set iqn.2025-01.com.example:db MaxRecvDataSegmentLength=`,
		Args:              cobra.MinimumNArgs(2),
		ValidArgsFunction: completeTargetArg,
		RunE: ctlRun(func(ctx context.Context, c *ctl, args []string) error {
			req, err := parseTargetSettings(args[1:])
			if err != nil {
				return err
			}
			t, err := c.client.UpdateTarget(ctx, args[0], req)
			if err != nil {
				return err
			}
			return c.show(t, func(w io.Writer) { fmt.Fprintf(w, "updated target %s\n", args[0]) })
		}),
	}
}

// parseTargetSettings turns KEY=VALUE arguments into a PATCH body.
func parseTargetSettings(pairs []string) (api.UpdateTarget, error) {
	var req api.UpdateTarget
	seen := map[string]bool{}
	for _, p := range pairs {
		key, value, ok := strings.Cut(p, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" {
			return api.UpdateTarget{}, fmt.Errorf("%q: want KEY=VALUE, e.g. enabled=0 or alias=db", p)
		}
		if seen[strings.ToLower(key)] {
			return api.UpdateTarget{}, fmt.Errorf("%s is given twice", key)
		}
		seen[strings.ToLower(key)] = true
		if err := applySetting(&req, key, value); err != nil {
			return api.UpdateTarget{}, err
		}
	}
	return req, nil
}

func applySetting(req *api.UpdateTarget, key, value string) error {
	switch strings.ToLower(key) {
	case "alias":
		req.Alias = &value
	case "enabled":
		on, err := parseOnOff(value)
		if err != nil {
			return fmt.Errorf("enabled=%s: %w", value, err)
		}
		req.Enabled = &on
	default:
		if req.Params == nil {
			req.Params = map[string]string{}
		}
		req.Params[key] = value
	}
	return nil
}

// parseOnOff takes scst.conf's 0 and 1 as well as true and false.
func parseOnOff(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "true":
		return true, nil
	case "0", "false":
		return false, nil
	default:
		return false, fmt.Errorf("want 0, 1, true or false")
	}
}

func newTargetCHAPCommand() *cobra.Command {
	var req api.SetCHAP
	var off bool
	cmd := &cobra.Command{
		Use:   "chap IQN (--user U --secret S [--mutual-user MU --mutual-secret MS] | --off)",
		Short: "Set or turn off CHAP authentication of a target",
		Long: `Chap makes initiators authenticate with CHAP user U and secret S before
they log in to the target; --mutual-user and --mutual-secret make the target
authenticate itself to the initiator too. --off turns CHAP off.

Secrets given on the command line are visible to other local users in the
process list; run this from a machine you trust.`,
		Example: `  hatarget target chap iqn.2025-01.com.example:db --user host1 --secret host1-secret-1
  hatarget target chap iqn.2025-01.com.example:db --user host1 --secret s3cret-s3cret \
      --mutual-user db --mutual-secret other-s3cret
  hatarget target chap iqn.2025-01.com.example:db --off`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeTargetArg,
		RunE: ctlRun(func(ctx context.Context, c *ctl, args []string) error {
			if !off && (req.User == "" || req.Secret == "") {
				return fmt.Errorf("give --user and --secret, or --off to turn CHAP off")
			}
			if off {
				req = api.SetCHAP{}
			}
			r, err := c.client.SetCHAP(ctx, args[0], req)
			if err != nil {
				return err
			}
			return c.show(r, func(w io.Writer) { printCHAPSet(w, args[0], req, r) })
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.User, "user", "", "CHAP user name the initiator logs in with")
	f.StringVar(&req.Secret, "secret", "", "CHAP secret of --user")
	f.StringVar(&req.MutualUser, "mutual-user", "", "user name the target answers mutual CHAP with")
	f.StringVar(&req.MutualSecret, "mutual-secret", "", "secret of --mutual-user")
	f.BoolVar(&off, "off", false, "turn CHAP off")
	cmd.MarkFlagsRequiredTogether("user", "secret")
	cmd.MarkFlagsRequiredTogether("mutual-user", "mutual-secret")
	cmd.MarkFlagsMutuallyExclusive("off", "user")
	cmd.MarkFlagsMutuallyExclusive("off", "mutual-user")
	return cmd
}

func printCHAPSet(w io.Writer, iqn string, req api.SetCHAP, r *api.Result) {
	switch {
	case req.User == "":
		fmt.Fprintf(w, "CHAP is off on %s (generation %d)\n", iqn, r.Generation)
	case req.MutualUser != "":
		fmt.Fprintf(w, "CHAP user %s with mutual user %s set on %s (generation %d)\n", req.User, req.MutualUser, iqn, r.Generation)
	default:
		fmt.Fprintf(w, "CHAP user %s set on %s (generation %d)\n", req.User, iqn, r.Generation)
	}
}

func newTargetACLCommand() *cobra.Command {
	cmd := groupCommand("acl", "Allow or disallow initiators to log in to a target",
		`  hatarget target acl add iqn.2025-01.com.example:db iqn.1993-08.org.debian:01:host1
  hatarget target acl remove iqn.2025-01.com.example:db iqn.1993-08.org.debian:01:host1`)
	cmd.Long = `A target with an empty ACL accepts every initiator; once it lists one, only
the initiators it lists (names, or patterns with * and ?) can log in.`
	cmd.AddCommand(newACLAddCommand(), newACLRemoveCommand())
	return cmd
}

func newACLAddCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "add IQN INITIATOR-IQN",
		Short: "Allow an initiator (name or pattern) to log in to a target",
		Example: `  hatarget target acl add iqn.2025-01.com.example:db iqn.1993-08.org.debian:01:host1
  hatarget target acl add iqn.2025-01.com.example:db 'iqn.1993-08.org.debian:01:*'`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: completeTargetArg,
		RunE: ctlRun(func(ctx context.Context, c *ctl, args []string) error {
			r, err := c.client.AddACL(ctx, args[0], args[1])
			if err != nil {
				return err
			}
			return c.show(r, func(w io.Writer) {
				fmt.Fprintf(w, "allowed %s on %s (generation %d)\n", args[1], args[0], r.Generation)
			})
		}),
	}
}

func newACLRemoveCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "remove IQN INITIATOR-IQN",
		Short:             "Remove an initiator (name or pattern) from a target's ACL",
		Example:           `  hatarget target acl remove iqn.2025-01.com.example:db iqn.1993-08.org.debian:01:host1`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: completeTargetArg,
		RunE: ctlRun(func(ctx context.Context, c *ctl, args []string) error {
			r, err := c.client.RemoveACL(ctx, args[0], args[1])
			if err != nil {
				return err
			}
			return c.show(r, func(w io.Writer) {
				fmt.Fprintf(w, "removed %s from the ACL of %s (generation %d)\n", args[1], args[0], r.Generation)
			})
		}),
	}
}
