package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "hatarget",
		Short:         "A highly available iSCSI target",
		Long:          "hatarget serves SCSI disks over iSCSI from files and block devices, configured with SCST's scst.conf format.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	addLogFlags(root.PersistentFlags())
	root.AddCommand(newServeCommand(), newAgentCommand(), newDemoCommand(), newBenchCommand(), newVersionCommand(), newGenCommand())
	root.AddCommand(newTLSCommand())
	// Control commands: clients of a node's management API.
	root.AddCommand(newClusterCommand(), newTargetCommand(), newLUNCommand(), newNodeCommand(), newImportCommand(), newExportCommand())
	root.AddCommand(newTokenCommand(), newAuditCommand())
	return root
}

// addLogFlags defines the logging flags every command inherits; the agent's
// settings (agentFlags) include them.
func addLogFlags(f *pflag.FlagSet) {
	f.String("log-level", "info", "log level: debug, info, warn or error")
	f.String("log-format", "text", "log format: text or json")
}

// newLogger builds the logger the persistent flags ask for.
func newLogger(cmd *cobra.Command) (*slog.Logger, error) {
	return newLeveledLogger(cmd, new(slog.LevelVar))
}

// newLeveledLogger is newLogger with its level in level, where a
// configuration reload can change it.
func newLeveledLogger(cmd *cobra.Command, level *slog.LevelVar) (*slog.Logger, error) {
	levelName, _ := cmd.Flags().GetString("log-level")
	format, _ := cmd.Flags().GetString("log-format")
	l, err := parseLogLevel(levelName)
	if err != nil {
		return nil, err
	}
	level.Set(l)
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

func parseLogLevel(name string) (slog.Level, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(name)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", name)
	}
	return level, nil
}
