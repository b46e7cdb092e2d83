package alua

import "encoding/binary"

// SupportedStates is the byte of supported-state bits in a target port group
// descriptor: which states the group may ever report (SPC-4 6.37 in r36j).
type SupportedStates uint8

// The bits of SupportedStates, named after their SPC-4 fields. Bit 5 is
// reserved and never sent.
const (
	AOSup  SupportedStates = 0x01 // AO_SUP: active/optimized
	ANSup  SupportedStates = 0x02 // AN_SUP: active/non-optimized
	SSup   SupportedStates = 0x04 // S_SUP: standby
	USup   SupportedStates = 0x08 // U_SUP: unavailable
	LBDSup SupportedStates = 0x10 // LBD_SUP: logical block dependent
	OSup   SupportedStates = 0x40 // O_SUP: offline
	TSup   SupportedStates = 0x80 // T_SUP: transitioning
)

// supportedMask keeps the reserved bit out of what we send.
const supportedMask = AOSup | ANSup | SSup | USup | LBDSup | OSup | TSup

// Implemented is every state GroupState can produce, the natural value to
// report when nothing restricts the states.
const Implemented = AOSup | ANSup | SSup | USup | OSup | TSup

// stateBits maps each state to its supported-state bit.
var stateBits = map[State]SupportedStates{
	ActiveOptimized:    AOSup,
	ActiveNonOptimized: ANSup,
	Standby:            SSup,
	Unavailable:        USup,
	Offline:            OSup,
	Transitioning:      TSup,
}

// Has reports whether the set includes state st.
func (s SupportedStates) Has(st State) bool {
	bit, ok := stateBits[st]
	return ok && s&bit != 0
}

// Layout of the parameter data of REPORT TARGET PORT GROUPS.
const (
	rtpgHeaderLen    = 4    // RETURN DATA LENGTH
	rtpgExtHeaderLen = 8    // ... plus FORMAT TYPE, IMPLICIT TRANSITION TIME, reserved
	groupDescLen     = 8    // target port group descriptor without its ports
	portDescLen      = 4    // target port descriptor
	maxPortsPerGroup = 255  // TARGET PORT COUNT is one byte
	formatExtended   = 0x10 // FORMAT TYPE 001b in bits 6-4 of byte 4
	prefBit          = 0x80
)

// ReportTargetPortGroups encodes the parameter data of REPORT TARGET PORT
// GROUPS (SPC-4 6.37 in r36j) for groups, in the order given. With extended
// it uses the header of FORMAT TYPE 001b carrying implicitTransitionSecs, the
// time an initiator should allow an implicit transition; without it the
// length-only header, and implicitTransitionSecs is not sent. supported goes
// into every descriptor, since every node implements the same states. The
// caller applies the allocation length.
//
// RETURN DATA LENGTH counts every byte after itself (n - 3), the rest of the
// extended header included: sg_rtpg and the Linux initiator take the data to
// end at that length plus 4 and read descriptors from byte 8. LIO leaves the
// extended header's four bytes out, which makes those readers stop short.
// A group lists at most 255 ports, all TARGET PORT COUNT can say.
func ReportTargetPortGroups(groups []Group, extended bool, implicitTransitionSecs uint8, supported SupportedStates) []byte {
	hdr := rtpgHeaderLen
	if extended {
		hdr = rtpgExtHeaderLen
	}
	b := make([]byte, hdr, hdr+len(groups)*(groupDescLen+portDescLen))
	if extended {
		b[4], b[5] = formatExtended, implicitTransitionSecs
	}
	for _, g := range groups {
		b = appendGroup(b, g, supported)
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-rtpgHeaderLen))
	return b
}

// appendGroup appends one target port group descriptor and its target port
// descriptors, whose first two bytes are obsolete.
func appendGroup(b []byte, g Group, supported SupportedStates) []byte {
	ports := g.Ports[:min(len(g.Ports), maxPortsPerGroup)]
	first := byte(g.State) & 0x0f
	if g.Preferred {
		first |= prefBit
	}
	b = append(b, first, byte(supported&supportedMask))
	b = binary.BigEndian.AppendUint16(b, g.ID)
	b = append(b, 0, byte(g.Status), 0, byte(len(ports))) // reserved, STATUS CODE, vendor specific, TARGET PORT COUNT
	for _, p := range ports {
		b = append(b, 0, 0)
		b = binary.BigEndian.AppendUint16(b, p)
	}
	return b
}
