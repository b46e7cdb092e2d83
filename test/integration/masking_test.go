package integration

import (
	"slices"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/test/nodetest"
)

// TestLUNMasking gives initiators matching a GROUP's INITIATOR pattern the
// group's LUN map and everybody else the target's: REPORT LUNS, the data
// each LUN reaches and the refusal of LUNs outside the map all follow it.
func TestLUNMasking(t *testing.T) {
	t.Parallel()
	disks := makeDisks(t, "disk01", "disk02", "disk03")
	conf := handlerBlock(disks, "disk01", "disk02", "disk03") + `
TARGET_DRIVER iscsi {
    enabled 1
    TARGET ` + guideIQN + ` {
        LUN 0 disk01
        LUN 1 disk02
        GROUP special {
            LUN 0 disk02
            LUN 5 disk03
            INITIATOR iqn.x:special*
        }
        enabled 1
    }
}
`
	n := nodetest.Start(t, conf, nodetest.Options{})
	ctx := testCtx(t, 60*time.Second)

	// LOGICAL UNIT NOT SUPPORTED, for a LUN outside the initiator's map.
	notSupported := senseCode{keyIllegalRequest, 0x25, 0x00}
	cases := []struct {
		initiator string
		luns      []uint64
		disk      map[uint64]string // where each LUN's writes land
		hidden    []uint64
	}{
		{"iqn.x:special-host1", []uint64{0, 5}, map[uint64]string{0: "disk02", 5: "disk03"}, []uint64{1}},
		{"iqn.x:special", []uint64{0, 5}, map[uint64]string{0: "disk02", 5: "disk03"}, []uint64{1}},
		{"iqn.x:ordinary", []uint64{0, 1}, map[uint64]string{0: "disk01", 1: "disk02"}, []uint64{5}},
		{"iqn.x:specia", []uint64{0, 1}, map[uint64]string{0: "disk01", 1: "disk02"}, []uint64{5}},
	}
	for i, tc := range cases {
		t.Run(tc.initiator, func(t *testing.T) {
			t.Parallel()
			s := dial(t, ctx, initiator.Config{Addr: n.Addr(), TargetName: guideIQN, InitiatorName: tc.initiator})
			luns, err := reportLUNs(ctx, s)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(luns, tc.luns) {
				t.Fatalf("REPORT LUNS = %v, want %v", luns, tc.luns)
			}
			for _, lun := range tc.luns {
				// Cases write to distinct 1 MiB extents, so concurrent cases
				// sharing a disk do not overwrite each other.
				lba := uint64(i) * (1 << 20) / blockSize
				if err := writeVerify(ctx, s, lun, lba, randomBytes(t, 64<<10), disks[tc.disk[lun]]); err != nil {
					t.Errorf("LUN %d (%s): %v", lun, tc.disk[lun], err)
				}
			}
			for _, lun := range tc.hidden {
				r, err := tur(ctx, s, lun)
				if err != nil {
					t.Fatal(err)
				}
				if r.Status != initiator.StatusCheckCondition || senseOf(r) != notSupported {
					t.Errorf("TEST UNIT READY to hidden LUN %d: status %#x, %v; want %v", lun, r.Status, senseOf(r), notSupported)
				}
			}
		})
	}
}
