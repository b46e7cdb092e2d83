package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/hatarget/hatarget/cluster"
	"github.com/hatarget/hatarget/cluster/api"
)

// version and commit are set at build time with -ldflags "-X
// main.version=... -X main.commit=..."; without a commit, the one the Go
// toolchain stamps from the checkout is used.
var (
	version = "dev"
	commit  = ""
)

// versionInfo is `hatarget version -o json`, a stable format documented in
// docs/api.md.
type versionInfo struct {
	Version string `json:"version"`
	// Commit is "unknown" when the binary was built outside a checkout.
	Commit string `json:"commit"`
	// Modified: the checkout had uncommitted changes.
	Modified  bool                  `json:"modified,omitempty"`
	Go        string                `json:"go"`
	Protocols []api.ProtocolVersion `json:"protocols"`
}

func currentVersion() versionInfo {
	v := versionInfo{Version: version, Commit: commit, Go: runtime.Version(), Protocols: cluster.ProtocolTable()}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			switch {
			case s.Key == "vcs.revision" && v.Commit == "":
				v.Commit = s.Value
			case s.Key == "vcs.modified":
				v.Modified = s.Value == "true"
			}
		}
	}
	if v.Commit == "" {
		v.Commit = "unknown"
	}
	return v
}

func newVersionCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the release, commit and the protocol versions this binary speaks",
		Long: `Version prints the release and commit of this binary, and for every channel
(Raft commands and snapshots, node-to-node forwarding, replication, gossip
metadata, the management API, on-disk formats) the version it speaks or
writes and the oldest it still accepts. "cluster" is the range of cluster
versions it can run at: "hatarget cluster status" shows the active one.`,
		Example: `  hatarget version
  hatarget version -o json | jq -r '.protocols[] | select(.channel == "cmd") | .version'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			format, err := parseOutput(output)
			if err != nil {
				return err
			}
			v := currentVersion()
			if format == outputJSON {
				return writeJSON(cmd.OutOrStdout(), v)
			}
			return printVersion(cmd.OutOrStdout(), v)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", string(outputTable), "output format: table or json")
	return cmd
}

func printVersion(w io.Writer, v versionInfo) error {
	commit := v.Commit
	if v.Modified {
		commit += " (modified)"
	}
	fmt.Fprintf(w, "hatarget %s, commit %s, %s\n\n", v.Version, commit, v.Go)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHANNEL\tVERSION\tACCEPTS\tWHAT")
	for _, p := range v.Protocols {
		accepts := fmt.Sprint(p.Version)
		if p.Min != p.Version {
			accepts = fmt.Sprintf("%d-%d", p.Min, p.Version)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", p.Channel, p.Version, accepts, cluster.DescribeChannel(p.Channel))
	}
	return tw.Flush()
}
