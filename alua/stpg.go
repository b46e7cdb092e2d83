package alua

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// GroupRequest is one descriptor of SET TARGET PORT GROUPS: put group Group
// into state State.
type GroupRequest struct {
	State State
	Group uint16
}

// ErrParamLength says the parameter list length cuts the header or a
// descriptor short: PARAMETER LIST LENGTH ERROR (1A/00).
var ErrParamLength = errors.New("alua: SET TARGET PORT GROUPS parameter list length cuts a descriptor short")

// FieldError locates a bad field in the parameter list, for INVALID FIELD IN
// PARAMETER LIST (26/00) with its sense-key specific field pointer.
type FieldError struct {
	// Offset is the byte of the field from the start of the parameter list.
	Offset int
	// Bit is the field's most significant bit within that byte, as the bit
	// pointer names a multi-bit field, or -1 when the field is whole bytes.
	Bit    int
	Reason string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("alua: SET TARGET PORT GROUPS parameter byte %d: %s", e.Offset, e.Reason)
}

// Layout of the SET TARGET PORT GROUPS parameter list (SPC-4 6.45 in r36e):
// four reserved bytes, then four-byte descriptors with the state in the low
// four bits of byte 0 and the group in bytes 2-3.
const (
	stpgHeaderLen = 4
	stpgDescLen   = 4
	stateMask     = 0x0f
	stateFieldBit = 3
	groupFieldOff = 2
)

// ParseSetTargetPortGroups reads the parameter list of SET TARGET PORT
// GROUPS. An empty list transfers and asks for nothing, so it is no error
// (SPC's rule for a zero PARAMETER LIST LENGTH).
// Only the primary states an initiator may ask for are accepted —
// active/optimized, active/non-optimized, standby and unavailable: the
// device server alone enters transitioning, offline names a port rather than
// a group, and LBA dependent is not implemented. A group named twice is
// refused, since the list would not say which state it should end in.
// Reserved fields are not checked, as SPC-4 allows.
func ParseSetTargetPortGroups(param []byte) ([]GroupRequest, error) {
	if len(param) == 0 {
		return nil, nil
	}
	if len(param) < stpgHeaderLen || (len(param)-stpgHeaderLen)%stpgDescLen != 0 {
		return nil, ErrParamLength
	}
	reqs := make([]GroupRequest, 0, (len(param)-stpgHeaderLen)/stpgDescLen)
	seen := make(map[uint16]bool)
	for off := stpgHeaderLen; off < len(param); off += stpgDescLen {
		req, err := parseDescriptor(param[off:off+stpgDescLen], off)
		if err != nil {
			return nil, err
		}
		if seen[req.Group] {
			return nil, &FieldError{Offset: off + groupFieldOff, Bit: -1, Reason: fmt.Sprintf("target port group %d named twice", req.Group)}
		}
		seen[req.Group] = true
		reqs = append(reqs, req)
	}
	return reqs, nil
}

// parseDescriptor reads the descriptor d found at offset off of the list.
func parseDescriptor(d []byte, off int) (GroupRequest, error) {
	st := State(d[0] & stateMask)
	if !requestable(st) {
		return GroupRequest{}, &FieldError{Offset: off, Bit: stateFieldBit, Reason: fmt.Sprintf("state %s may not be requested", st)}
	}
	return GroupRequest{State: st, Group: binary.BigEndian.Uint16(d[groupFieldOff:])}, nil
}

func requestable(st State) bool {
	switch st {
	case ActiveOptimized, ActiveNonOptimized, Standby, Unavailable:
		return true
	}
	return false
}
