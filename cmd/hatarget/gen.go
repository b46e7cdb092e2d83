package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newGenCommand writes the files that packages ship and that come from the
// commands themselves, so that they never drift from the binary: the
// default configuration file and the man pages (shell completions come from
// cobra's `hatarget completion`).
func newGenCommand() *cobra.Command {
	gen := &cobra.Command{
		Use:    "gen",
		Short:  "Write files generated from the commands (make deb)",
		Hidden: true,
		Args:   cobra.NoArgs,
	}
	gen.AddCommand(&cobra.Command{
		Use:   "config",
		Short: "Print the default agent configuration file, every setting commented out",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return writeDefaultConfig(cmd.OutOrStdout())
		},
	}, &cobra.Command{
		Use:   "man DIR",
		Short: "Write a man page per command into DIR",
		Long: `Man writes section 1 man pages, one per command. Their date is
$SOURCE_DATE_EPOCH when set, so that a package build is reproducible.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			date := time.Now()
			if epoch := os.Getenv("SOURCE_DATE_EPOCH"); epoch != "" {
				sec, err := strconv.ParseInt(epoch, 10, 64)
				if err != nil {
					return fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", epoch, err)
				}
				date = time.Unix(sec, 0).UTC()
			}
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return fmt.Errorf("man page directory: %w", err)
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			header := &doc.GenManHeader{Section: "1", Date: &date, Source: "hatarget " + version, Manual: "hatarget manual"}
			if err := doc.GenManTree(root, header, args[0]); err != nil {
				return fmt.Errorf("man pages: %w", err)
			}
			return nil
		},
	})
	return gen
}
