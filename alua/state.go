package alua

import (
	"fmt"
	"strings"
)

// State is a target port group's asymmetric access state, with the codes of
// the ASYMMETRIC ACCESS STATE field (SPC-4 6.37, table 307 in spc4r36j; the
// same values in the Linux initiator's scsi_dh_alua.c and LIO's
// target_core_alua.h). LBA dependent (0x4) is not implemented.
type State uint8

// The states this package produces and encodes.
const (
	ActiveOptimized    State = 0x0
	ActiveNonOptimized State = 0x1
	Standby            State = 0x2
	Unavailable        State = 0x3
	Offline            State = 0xE
	Transitioning      State = 0xF
)

// stateNames holds, per state, the name String reports and the scst.conf/CLI
// spelling ParseState accepts besides it.
var stateNames = map[State][2]string{
	ActiveOptimized:    {"active/optimized", "active"},
	ActiveNonOptimized: {"active/non-optimized", "nonoptimized"},
	Standby:            {"standby", "standby"},
	Unavailable:        {"unavailable", "unavailable"},
	Offline:            {"offline", "offline"},
	Transitioning:      {"transitioning", "transitioning"},
}

func (s State) String() string {
	if n, ok := stateNames[s]; ok {
		return n[0]
	}
	return fmt.Sprintf("state(%#x)", uint8(s))
}

// Valid reports whether s is one of the states above, so decoders can
// refuse codes this package does not implement.
func (s State) Valid() bool {
	_, ok := stateNames[s]
	return ok
}

// ParseState reads a state as scst.conf and the CLI spell it (active,
// nonoptimized, standby, unavailable, offline, transitioning) or as String
// prints it, ignoring case, so both configuration and our own output parse.
func ParseState(text string) (State, error) {
	t := strings.ToLower(strings.TrimSpace(text))
	for s, n := range stateNames {
		if t == n[0] || t == n[1] {
			return s, nil
		}
	}
	return 0, fmt.Errorf("alua: unknown asymmetric access state %q", text)
}

// Sense is the sense key and additional sense code a command ends with.
type Sense struct{ Key, ASC, ASCQ byte }

// Sense keys used here (SPC-4 table 48).
const (
	keyNotReady       = 0x2
	keyUnitAttention  = 0x6
	ascNotAccessible  = 0x04 // LOGICAL UNIT NOT ACCESSIBLE / NOT READY family
	ascqTransition    = 0x0A // ... ASYMMETRIC ACCESS STATE TRANSITION
	ascqStandby       = 0x0B // ... TARGET PORT IN STANDBY STATE
	ascqUnavailable   = 0x0C // ... TARGET PORT IN UNAVAILABLE STATE
	ascStateChanged   = 0x2A
	ascqAccessChanged = 0x06 // ASYMMETRIC ACCESS STATE CHANGED
)

// StateChanged is the UNIT ATTENTION (2A/06 ASYMMETRIC ACCESS STATE CHANGED)
// to raise on every I_T nexus of a LUN when any of its groups changes state,
// so initiators read REPORT TARGET PORT GROUPS again.
var StateChanged = Sense{Key: keyUnitAttention, ASC: ascStateChanged, ASCQ: ascqAccessChanged}

// MediaAccess says whether a media-access command (READ, WRITE, ...) may run
// on a port in state s, and if not, the CHECK CONDITION it gets instead.
//
// The NOT READY codes are SPC-4's (table D.1, listed for every device type):
// 04/0A for transitioning, 04/0B for standby, 04/0C for unavailable. Offline
// also gets 04/0C: SPC-4's only "offline" code, 04/12 LOGICAL UNIT NOT READY,
// OFFLINE, is defined for media changers and ADC devices, not for direct
// access block devices (LIO sends it anyway), while 04/0C is defined for all
// and makes every multipath initiator leave the path. An offline port should
// not receive commands at all; the case exists so that a wrong state can
// never let a command through. Codes that are not states deny the same way.
func (s State) MediaAccess() (allowed bool, sense Sense) {
	switch s {
	case ActiveOptimized, ActiveNonOptimized:
		return true, Sense{}
	case Standby:
		return false, notReady(ascqStandby)
	case Transitioning:
		return false, notReady(ascqTransition)
	default: // Unavailable, Offline, and anything unknown
		return false, notReady(ascqUnavailable)
	}
}

func notReady(ascq byte) Sense {
	return Sense{Key: keyNotReady, ASC: ascNotAccessible, ASCQ: ascq}
}
