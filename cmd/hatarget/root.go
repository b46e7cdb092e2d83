package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "hatarget",
		Short:         "A highly available iSCSI target",
		Long:          "hatarget serves SCSI disks over iSCSI from files and block devices, configured with SCST's scst.conf format.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().String("log-format", "text", "log format: text or json")
	root.AddCommand(newServeCommand(), newAgentCommand(), newDemoCommand(), newBenchCommand(), newVersionCommand())
	// Control commands: clients of a node's management API.
	root.AddCommand(newClusterCommand(), newTargetCommand(), newLUNCommand(), newNodeCommand(), newImportCommand(), newExportCommand())
	return root
}

// newLogger builds the logger the persistent flags ask for.
func newLogger(cmd *cobra.Command) (*slog.Logger, error) {
	levelName, _ := cmd.Flags().GetString("log-level")
	format, _ := cmd.Flags().GetString("log-format")
	var level slog.Level
	if err := level.UnmarshalText([]byte(levelName)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", levelName)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
}
