package integration

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/test/nodetest"
)

// Targets of the negotiation node: the defaults, one whose own limits force
// many Data-Out PDUs and several outstanding R2Ts, and one configured with a
// MaxBurstLength below the FirstBurstLength initiators commonly offer.
const (
	negDefaultIQN = "iqn.2024-01.io.hatarget:neg-default"
	negSmallIQN   = "iqn.2024-01.io.hatarget:neg-small"
	negBurstIQN   = "iqn.2024-01.io.hatarget:neg-burst"
)

const negTargets = `
TARGET_DRIVER iscsi {
    enabled 1
    TARGET ` + negDefaultIQN + ` {
        LUN 0 disk01
        enabled 1
    }
    TARGET ` + negSmallIQN + ` {
        LUN 0 disk02
        MaxRecvDataSegmentLength 8192
        MaxBurstLength 65536
        FirstBurstLength 32768
        MaxOutstandingR2T 4
        enabled 1
    }
    TARGET ` + negBurstIQN + ` {
        LUN 0 disk03
        MaxBurstLength 32768
        enabled 1
    }
}
`

// Transfer sizes: single sector, below and above FirstBurstLength (65536)
// and MaxBurstLength (262144), and sizes that are not a multiple of either.
var transferSizes = []int{512, 8 << 10, 65536 + 512, 300 << 10, 1 << 20}

// TestNegotiationProfiles logs in with the parameter sets real initiators
// use, checks what was negotiated and moves verified data through every
// Data-Out and Data-In path those parameters select.
func TestNegotiationProfiles(t *testing.T) {
	t.Parallel()
	disks := makeDisks(t, "disk01", "disk02", "disk03")
	n := nodetest.Start(t, handlerBlock(disks, "disk01", "disk02", "disk03")+negTargets, nodetest.Options{})
	ctx := testCtx(t, 120*time.Second)

	linux := initiator.Config{
		ImmediateData: initiator.Yes, InitialR2T: initiator.No,
		FirstBurstLength: 65536, MaxBurstLength: 262144, MaxRecvDataSegmentLength: 262144,
	}
	with := func(c initiator.Config, f func(*initiator.Config)) initiator.Config { f(&c); return c }

	type want struct {
		immediateData, initialR2T, digests  bool
		firstBurst, maxBurst, mrdsl, maxR2T uint32
	}
	cases := []struct {
		name   string
		target string
		disk   string
		cfg    initiator.Config
		want   want
		// declared is the MaxRecvDataSegmentLength the target declares,
		// checked once rather than in every case.
		declared uint32
	}{
		{"open-iscsi defaults", negDefaultIQN, "disk01", linux,
			want{true, false, false, 65536, 262144, 262144, 1}, 262144},
		{"open-iscsi with CRC32C digests", negDefaultIQN, "disk01",
			with(linux, func(c *initiator.Config) { c.HeaderDigest, c.DataDigest = true, true }),
			want{true, false, true, 65536, 262144, 262144, 1}, 0},
		{"Windows", negDefaultIQN, "disk01", initiator.Config{
			ImmediateData: initiator.Yes, InitialR2T: initiator.Yes,
			FirstBurstLength: 65536, MaxBurstLength: 262144, MaxRecvDataSegmentLength: 65536,
		}, want{true, true, false, 65536, 262144, 65536, 1}, 0},
		{"pure R2T", negDefaultIQN, "disk01",
			with(linux, func(c *initiator.Config) { c.ImmediateData, c.InitialR2T = initiator.No, initiator.Yes }),
			want{false, true, false, 65536, 262144, 262144, 1}, 0},
		{"unsolicited Data-Out without immediate data", negDefaultIQN, "disk01",
			with(linux, func(c *initiator.Config) { c.ImmediateData = initiator.No }),
			want{false, false, false, 65536, 262144, 262144, 1}, 0},
		{"MaxRecvDataSegmentLength 512", negDefaultIQN, "disk01",
			with(linux, func(c *initiator.Config) { c.MaxRecvDataSegmentLength = 512 }),
			want{true, false, false, 65536, 262144, 512, 1}, 0},
		// The target's own limits: immediate data and unsolicited Data-Out
		// split into 8 KiB PDUs, solicited data in 64 KiB bursts with up to
		// four R2Ts outstanding.
		{"target limits: 8k segments, 4 outstanding R2Ts", negSmallIQN, "disk02",
			with(linux, func(c *initiator.Config) { c.MaxOutstandingR2T = 8 }),
			want{true, false, false, 32768, 65536, 262144, 4}, 0},
		// open-iscsi offers FirstBurstLength 65536; a target configured
		// with a smaller MaxBurstLength must not answer a FirstBurstLength
		// above it (RFC 7143 13.14).
		{"target MaxBurstLength below offered FirstBurstLength", negBurstIQN, "disk03", linux,
			want{true, false, false, 32768, 32768, 262144, 1}, 0},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := tc.cfg
			cfg.Addr, cfg.TargetName = n.Addr(), tc.target
			s := dial(t, ctx, cfg)
			p := s.Negotiated()
			w := tc.want
			got := want{p.ImmediateData, p.InitialR2T, p.HeaderDigest && p.DataDigest,
				p.FirstBurstLength, p.MaxBurstLength, p.MaxRecvDataSegmentLength, p.MaxOutstandingR2T}
			if got != w {
				t.Errorf("negotiated %+v\nwant       %+v", got, w)
			}
			// An initiator that never learns the target's declaration stays
			// at the RFC default of 8192; TestOpenISCSILoginTranscript shows
			// why it is missed.
			if tc.declared != 0 && p.TargetMaxRecvDataSegmentLength != tc.declared {
				t.Errorf("TargetMaxRecvDataSegmentLength = %d, want the target's declared %d", p.TargetMaxRecvDataSegmentLength, tc.declared)
			}
			if p.HeaderDigest != p.DataDigest {
				t.Errorf("HeaderDigest=%v DataDigest=%v; offered both or neither", p.HeaderDigest, p.DataDigest)
			}
			if p.FirstBurstLength > p.MaxBurstLength {
				t.Errorf("FirstBurstLength %d > MaxBurstLength %d", p.FirstBurstLength, p.MaxBurstLength)
			}

			// Each case owns an 8 MiB region of its disk.
			base := uint64(i) * (8 << 20) / blockSize % (diskSize / blockSize)
			lba := base
			for _, size := range transferSizes {
				if err := writeVerify(ctx, s, 0, lba, randomBytes(t, size), disks[tc.disk]); err != nil {
					t.Fatalf("%d bytes: %v", size, err)
				}
				lba += uint64(size / blockSize)
			}
			// Concurrent commands interleave their R2Ts and Data-In on
			// the one connection.
			concurrent(t, ctx, s, disks[tc.disk], lba, 8, 128<<10)
		})
	}
}

// concurrent runs writers commands at once, each writing and verifying its
// own size-byte extent starting at lba.
func concurrent(t *testing.T, ctx context.Context, s *initiator.Session, path string, lba uint64, writers, size int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		data := randomBytes(t, size)
		at := lba + uint64(w*size/blockSize)
		wg.Go(func() { errs <- writeVerify(ctx, s, 0, at, data, path) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent: %v", err)
		}
	}
}
