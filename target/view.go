package target

import (
	"github.com/hatarget/hatarget/target/iscsi"
	"github.com/hatarget/hatarget/target/scsi"
)

type lunEntry struct {
	lu     *scsi.LU
	device string
}

// view is an immutable LUN map, the scsi.View one initiator sees.
type view struct {
	luns    map[uint64]lunEntry
	numbers []uint64
}

func newView(m map[uint64]lunEntry) *view {
	return &view{luns: m, numbers: sortedLUNs(m)}
}

func (v *view) LU(lun uint64) *scsi.LU {
	if e, ok := v.luns[lun]; ok {
		return e.lu
	}
	return nil
}

func (v *view) LUNs() []uint64 { return v.numbers }

type groupView struct {
	patterns []string
	view     *view
}

// viewsFor implements LUN masking: an initiator in a group sees the group's
// LUNs (first matching group wins, as in SCST), everybody else the default.
func viewsFor(def *view, groups []groupView) func(string) scsi.View {
	return func(initiator string) scsi.View {
		for _, g := range groups {
			if iscsi.MatchInitiator(g.patterns, initiator) {
				return g.view
			}
		}
		return def
	}
}
