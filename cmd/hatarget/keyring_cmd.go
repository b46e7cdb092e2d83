package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hatarget/hatarget/cluster/api"
)

func newClusterKeyringCommand() *cobra.Command {
	cmd := groupCommand("keyring", "List and rotate the gossip encryption keys of every node",
		`  hatarget cluster keyring list
  hatarget cluster keyring install "$(openssl rand -base64 32)"
  hatarget cluster keyring use NEWKEY
  hatarget cluster keyring remove OLDKEY`)
	cmd.Long = `Keyring commands manage the keys that encrypt gossip (agents started with
--gossip-key). Every node encrypts with its primary key and decrypts with any
key of its keyring, so a key is rotated in three steps, each run on every
node before the next: install the new key, use it, remove the old one.
"use" is refused until every node has the key. Each command reports every
node; run it again for the nodes that failed (one that was down, say) before
the next step. Nodes save their keyring in their data dir.`
	cmd.AddCommand(newKeyringListCommand())
	for _, op := range []struct{ name, short, example string }{
		{api.KeyringInstall, "Add a key to every node's keyring, for decryption only", `  hatarget cluster keyring install "$(openssl rand -base64 32)"`},
		{api.KeyringUse, "Make an installed key the one every node encrypts with", "  hatarget cluster keyring use NEWKEY"},
		{api.KeyringRemove, "Remove a key that no node uses any more from every node", "  hatarget cluster keyring remove OLDKEY"},
	} {
		cmd.AddCommand(newKeyringChangeCommand(op.name, op.short, op.example))
	}
	return cmd
}

func newKeyringListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List every node's gossip keys, the primary first",
		Example: "  hatarget cluster keyring list -o json",
		Args:    cobra.NoArgs,
		RunE: ctlRun(func(ctx context.Context, c *ctl, _ []string) error {
			res, err := c.client.Keyring(ctx)
			if err != nil {
				return err
			}
			return showKeyring(c, res)
		}),
	}
}

func newKeyringChangeCommand(op, short, example string) *cobra.Command {
	return &cobra.Command{
		Use:     op + " KEY",
		Short:   short,
		Example: example,
		Args:    cobra.ExactArgs(1),
		RunE: ctlRun(func(ctx context.Context, c *ctl, args []string) error {
			res, err := c.client.ChangeKeyring(ctx, op, strings.TrimSpace(args[0]))
			if err != nil {
				return err
			}
			if err := showKeyring(c, res); err != nil {
				return err
			}
			if failed := res.Failed(); len(failed) > 0 {
				return fmt.Errorf("keyring %s failed on %s: run it again once they answer, before the next step", op, strings.Join(failed, ", "))
			}
			return nil
		}),
	}
}

func showKeyring(c *ctl, res *api.KeyringResult) error {
	return c.show(res, func(w io.Writer) {
		fmt.Fprintln(w, "NODE\tPRIMARY\tKEYS\tERROR")
		for _, n := range res.Nodes {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", n.Node, dash(n.Primary), dash(strings.Join(n.Keys, ",")), dash(n.Error))
		}
	})
}
