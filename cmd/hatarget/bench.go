package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hatarget/hatarget/target/iscsi/initiator"
)

type benchOptions struct {
	portal, target, pattern, blockSize string
	lun                                uint64
	qd, sessions, readPercent          int
	duration                           time.Duration
	verify, digests                    bool
	chapUser, chapSecret               string
}

func newBenchCommand() *cobra.Command {
	var o benchOptions
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure an iSCSI LUN with the built-in initiator",
		Long: `Bench logs in to a target with hatarget's own initiator and runs a
workload for a fixed time, then prints IOPS, MB/s and latency percentiles.
It works against any iSCSI target, not only hatarget.`,
		Example: `  hatarget bench --portal 127.0.0.1:3260 --target iqn.2025-01.io.hatarget:demo --pattern randread --bs 4k --qd 32
  hatarget bench --portal 127.0.0.1:3260 --target iqn.2025-01.io.hatarget:demo --pattern write --bs 128k --qd 8 --sessions 4 --verify`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bs, err := parseSize(o.blockSize)
			if err != nil {
				return fmt.Errorf("--bs: %w", err)
			}
			cfg := initiator.Config{
				Addr: o.portal, TargetName: o.target,
				CHAPUser: o.chapUser, CHAPSecret: o.chapSecret,
				HeaderDigest: o.digests, DataDigest: o.digests,
			}
			bc := initiator.BenchConfig{
				Sessions: o.sessions, QueueDepth: o.qd, BlockSize: int(bs), Pattern: o.pattern,
				ReadPercent: o.readPercent, Duration: o.duration, LUN: o.lun, Verify: o.verify,
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "bench %s %s lun %d: %s, bs %s, qd %d x %d sessions, %s\n",
				o.portal, o.target, o.lun, o.pattern, o.blockSize, o.qd, o.sessions, o.duration)
			res, err := initiator.Bench(cmd.Context(), cfg, bc, out)
			if err != nil {
				return err
			}
			fmt.Fprintln(out, res)
			if res.Errors > 0 {
				return fmt.Errorf("%d I/O errors, first: %s", res.Errors, res.FirstError)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.portal, "portal", "127.0.0.1:3260", "target portal host:port")
	f.StringVar(&o.target, "target", "", "target IQN (required)")
	f.Uint64Var(&o.lun, "lun", 0, "logical unit number")
	f.StringVar(&o.pattern, "pattern", "randread", "randread, randwrite, randrw, read, write or caw (COMPARE AND WRITE)")
	f.StringVar(&o.blockSize, "bs", "4k", "I/O size (512, 4k, 128k, 1m, ...)")
	f.IntVar(&o.qd, "qd", 32, "queue depth per session")
	f.IntVar(&o.sessions, "sessions", 1, "number of sessions")
	f.IntVar(&o.readPercent, "read-percent", 50, "share of reads for randrw")
	f.DurationVar(&o.duration, "duration", 10*time.Second, "how long to run")
	f.BoolVar(&o.verify, "verify", false, "write self-checking data and verify every read")
	f.BoolVar(&o.digests, "digests", false, "offer CRC32C header and data digests")
	f.StringVar(&o.chapUser, "chap-user", "", "CHAP user name")
	f.StringVar(&o.chapSecret, "chap-secret", "", "CHAP secret")
	cmd.MarkFlagRequired("target")
	return cmd
}

// parseSize reads a byte count with an optional k/m/g suffix (powers of 1024).
func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch strings.ToLower(s[len(s)-min(len(s), 1):]) {
	case "k":
		mult = 1 << 10
	case "m":
		mult = 1 << 20
	case "g":
		mult = 1 << 30
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a size like 4k or 131072", s)
	}
	return n * mult, nil
}
