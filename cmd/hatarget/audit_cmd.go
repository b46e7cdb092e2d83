package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newAuditCommand() *cobra.Command {
	var since string
	cmd := &cobra.Command{
		Use:   "audit [--since DURATION|TIME]",
		Short: "Show who changed the configuration, from where and when",
		Long: `Audit lists the committed configuration changes as the Raft leader's audit
log recorded them (DATA-DIR/audit.jsonl on every node): the Raft index, when
the change was proposed, the token name ("node:NAME" for a node's own
changes, "anonymous" before tokens, "unknown" for changes older than the
audit log), the caller's address and the command, with CHAP secrets and
token hashes redacted. Every node also logs each change it applies.
Needs an admin token.`,
		Example: `  hatarget audit
  hatarget audit --since 1h
  hatarget audit --since 2026-01-02T15:04:05Z -o json`,
		Args: cobra.NoArgs,
		RunE: ctlRun(func(ctx context.Context, c *ctl, _ []string) error {
			from, err := parseSince(since, time.Now())
			if err != nil {
				return err
			}
			recs, err := c.client.Audit(ctx, from)
			if err != nil {
				return err
			}
			return c.show(recs, func(w io.Writer) {
				fmt.Fprintln(w, "INDEX\tTIME\tPRINCIPAL\tROLE\tSOURCE\tCOMMAND")
				for _, r := range recs {
					fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\n", r.Index, auditTime(r.Time), r.Principal,
						dash(r.Role), dash(r.Source), r.Command)
				}
			})
		}),
	}
	addCtlFlags(cmd)
	cmd.Flags().StringVar(&since, "since", "", "only changes from this long ago (1h, 30m) or since this RFC 3339 time")
	return cmd
}

// parseSince reads --since: a duration back from now, or a time.
func parseSince(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since %q: want a positive duration", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q: want a duration (1h, 30m) or an RFC 3339 time (2026-01-02T15:04:05Z)", s)
	}
	return t, nil
}

func auditTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}
