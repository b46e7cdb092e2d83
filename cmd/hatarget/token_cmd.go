package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/hatarget/hatarget/cluster/api"
)

func newTokenCommand() *cobra.Command {
	cmd := groupCommand("token", "Manage the API tokens and their roles",
		`  hatarget token bootstrap
  hatarget token create --name ci --role operator
  hatarget token list
  hatarget token revoke ci`)
	cmd.Long = `Until "token bootstrap" runs, the API is open (or needs the agents' shared
--token, the cluster secret). Bootstrap turns tokens on and prints the first
admin token, once; from then on every API call needs a token (--token or
HATARGET_TOKEN), and its role bounds what it may do:

  read-only  status, lists, LUN details and /metrics
  operator   also targets, LUNs, ACLs, CHAP, imports, moves, drains and
             rebalancing
  admin      also membership, tokens, snapshots, upgrades, the gossip
             keyring and the audit log

Only hashes of the tokens are stored (in Raft): a token is shown once, when it
is created, and cannot be shown again. A revoked token is refused by every
node as soon as it has applied the change (well within a second).`
	addCtlFlags(cmd)
	cmd.AddCommand(newTokenBootstrapCommand(), newTokenCreateCommand(), newTokenListCommand(), newTokenRevokeCommand())
	return cmd
}

func newTokenBootstrapCommand() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "bootstrap [--name NAME]",
		Short: "Turn tokens on and print the first admin token (once per cluster)",
		Long: `Bootstrap turns API tokens on and prints the first admin token. It works
once per cluster: keep the token safe, and create the others with it.
The agents must share a --token (the cluster secret) or use TLS, so that
the nodes can still tell each other from callers.`,
		Example: `  export HATARGET_TOKEN=$(hatarget token bootstrap -o json | jq -r .secret)`,
		Args:    cobra.NoArgs,
		RunE: ctlRun(func(ctx context.Context, c *ctl, _ []string) error {
			t, err := c.client.BootstrapTokens(ctx, name)
			if err != nil {
				return err
			}
			return c.show(t, func(w io.Writer) { printNewToken(w, t) })
		}),
	}
	cmd.Flags().StringVar(&name, "name", "bootstrap", "name of the admin token, as the audit log shows it")
	return cmd
}

func newTokenCreateCommand() *cobra.Command {
	var req api.CreateToken
	cmd := &cobra.Command{
		Use:   "create --name NAME --role admin|operator|read-only",
		Short: "Create a token and print it (once)",
		Example: `  hatarget token create --name ci --role operator
  hatarget token create --name grafana --role read-only -o json`,
		Args: cobra.NoArgs,
		RunE: ctlRun(func(ctx context.Context, c *ctl, _ []string) error {
			t, err := c.client.CreateToken(ctx, req)
			if err != nil {
				return err
			}
			return c.show(t, func(w io.Writer) { printNewToken(w, t) })
		}),
	}
	f := cmd.Flags()
	f.StringVar(&req.Name, "name", "", "the token's name, as listings and the audit log show it")
	f.StringVar(&req.Role, "role", "", "admin, operator or read-only")
	_ = cmd.MarkFlagRequired("name")
	_ = cmd.MarkFlagRequired("role")
	_ = cmd.RegisterFlagCompletionFunc("role", cobra.FixedCompletions(
		[]string{api.RoleAdmin, api.RoleOperator, api.RoleReadOnly}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func newTokenListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List the tokens: names and roles, never secrets",
		Example: `  hatarget token list`,
		Args:    cobra.NoArgs,
		RunE: ctlRun(func(ctx context.Context, c *ctl, _ []string) error {
			ts, err := c.client.Tokens(ctx)
			if err != nil {
				return err
			}
			return c.show(ts, func(w io.Writer) {
				fmt.Fprintln(w, "NAME\tROLE\tCREATED AT GENERATION")
				for _, t := range ts {
					fmt.Fprintf(w, "%s\t%s\t%d\n", t.Name, t.Role, t.Index)
				}
			})
		}),
	}
}

func newTokenRevokeCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "revoke NAME",
		Short:   "Revoke a token: every node refuses it once the change is applied",
		Example: `  hatarget token revoke ci`,
		Args:    cobra.ExactArgs(1),
		ValidArgsFunction: completeFirstArg(func(ctx context.Context, c *api.Client) ([]string, error) {
			ts, err := c.Tokens(ctx)
			names := make([]string, len(ts))
			for i, t := range ts {
				names[i] = t.Name
			}
			return names, err
		}),
		RunE: ctlRun(func(ctx context.Context, c *ctl, args []string) error {
			r, err := c.client.RevokeToken(ctx, args[0])
			if err != nil {
				return err
			}
			return c.show(r, func(w io.Writer) {
				fmt.Fprintf(w, "token %s revoked (generation %d)\n", args[0], r.Generation)
			})
		}),
	}
}

// printNewToken prints the secret on a line of its own, so that a script
// can take it with tail -1.
func printNewToken(w io.Writer, t *api.NewToken) {
	fmt.Fprintf(w, "created %s token %s (generation %d); it is shown only now:\n", t.Role, t.Name, t.Generation)
	fmt.Fprintln(w, t.Secret)
}
