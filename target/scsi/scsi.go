// Package scsi executes SCSI commands (SPC-4 / SBC-3) for the logical units of
// a target. It knows nothing of iSCSI: the transport hands it a CDB, the data
// the initiator sent and a buffer for the data to return, and gets back a
// status, sense data and the length it transferred.
//
// One dispatch table (dispatch.go) lists every command with its CDB usage
// data and its ALUA and reservation rules; execution, reserved-bit checking
// and REPORT SUPPORTED OPERATION CODES all read it. Errors are Sense values,
// encoded in fixed or descriptor format as the control mode page's D_SENSE
// bit says.
//
// Data lengths: Result.Transfer is what the CDB asks to move (allocation
// length capped by the data available, or transfer length times block
// size); the transport derives residuals by comparing it with the expected
// data transfer length. READ fills DataIn up to its length; WRITE stores the
// whole blocks it was sent, never more than the CDB says (rw.go).
//
// Unit attentions are queued per I_T nexus; a nexus an LU has not seen gets
// POWER ON, RESET first, and INQUIRY, REPORT LUNS and REQUEST SENSE run
// regardless of them.
//
// Reservations (persistent ones, SPC-4 5.13, and SPC-2 RESERVE/RELEASE) are
// decided by one state machine, PRState, behind the ReservationStore an LU
// is given, so that a cluster can replicate it (reservations.go).
//
// COMPARE AND WRITE, ORWRITE and WRITE ATOMIC are atomic against every
// other command on the LU through a striped LBA range lock (rangelock.go).
// A thin LU (LUConfig.Thin on a device that can punch holes) adds UNMAP,
// WRITE SAME with UNMAP, LBPME/LBPRZ and VPD page B2h; GET LBA STATUS asks
// the device for holes. SANITIZE runs only with LUConfig.SanitizeAllowed.
//
// EXTENDED COPY (LID1, block to block) copies between the LUs of the
// nexus's View, and only those (xcopy.go); RECEIVE COPY RESULTS and VPD
// page 8Fh describe the copy manager (copyresults.go).
package scsi

import "time"

// Status is a SCSI status byte (SAM-5).
type Status byte

const (
	StatusGood                Status = 0x00
	StatusCheckCondition      Status = 0x02
	StatusConditionMet        Status = 0x04
	StatusBusy                Status = 0x08
	StatusReservationConflict Status = 0x18
	StatusTaskSetFull         Status = 0x28
	StatusACAActive           Status = 0x30
	StatusTaskAborted         Status = 0x40
)

// Nexus is one I_T nexus: an initiator port talking to a target port. Unit
// attentions, reservations and task management are kept per nexus. The
// transport creates one per session and passes the same pointer with every
// command of that session; Key identifies the nexus across sessions (a
// reinstated session is the same nexus).
type Nexus struct {
	// Key is InitiatorPort + "|" + TargetPort, unique per I_T nexus.
	Key string
	// InitiatorName is the initiator's iSCSI name (IQN or EUI).
	InitiatorName string
	// InitiatorPort is InitiatorName + ",i,0x" + ISID in hex (RFC 7143 13.6).
	InitiatorPort string
	// TargetName is the target's iSCSI name.
	TargetName string
	// TargetPort is TargetName + ",t,0x" + portal group tag in hex.
	TargetPort string
	// RelativePort is the relative target port identifier (VPD 0x83).
	RelativePort uint16
	// PortGroup is the target port group of this port (VPD 0x83, ALUA).
	PortGroup uint16
	// Established is when the transport made the nexus (its session's
	// login); zero for a nexus whose commands another node forwards.
	Established time.Time
}

// NewNexus builds the nexus of an initiator port (name and 6-byte ISID) and a
// target port (name and portal group tag).
func NewNexus(initiator string, isid [6]byte, target string, tpgt uint16, relPort, portGroup uint16) *Nexus {
	const hexdigits = "0123456789abcdef"
	isidHex := make([]byte, 12)
	for i, b := range isid {
		isidHex[2*i] = hexdigits[b>>4]
		isidHex[2*i+1] = hexdigits[b&0xf]
	}
	tpgtHex := []byte{hexdigits[tpgt>>12], hexdigits[(tpgt>>8)&0xf], hexdigits[(tpgt>>4)&0xf], hexdigits[tpgt&0xf]}
	n := &Nexus{
		InitiatorName: initiator,
		InitiatorPort: initiator + ",i,0x" + string(isidHex),
		TargetName:    target,
		TargetPort:    target + ",t,0x" + string(tpgtHex),
		RelativePort:  relPort,
		PortGroup:     portGroup,
	}
	n.Key = n.InitiatorPort + "|" + n.TargetPort
	return n
}

// Command is one SCSI command as the transport delivers it. The transport
// reuses Command values; nothing may keep a reference after Execute returns.
type Command struct {
	Nexus *Nexus
	// LUN is the decoded logical unit number (see DecodeLUN).
	LUN uint64
	CDB []byte
	// DataOut holds the data the initiator sent (WRITE and friends), at most
	// the expected data transfer length; nil when none.
	DataOut []byte
	// DataIn is where the command puts the data it returns; its length is the
	// expected data transfer length the initiator announced for reads.
	DataIn []byte
	// TaskTag identifies the task for task management (the iSCSI ITT).
	TaskTag uint32
	// View is the set of LUNs the nexus may address. Execute sets it; the
	// LU reads it for EXTENDED COPY, whose copy targets must be LUs of
	// this View and of nothing wider (the LUN masking of the nexus, or an
	// initiator could copy from and to LUs outside its ACL). A caller of
	// LU.Execute may set it to the nexus's View; nil confines EXTENDED
	// COPY to the addressed LU.
	View View

	started startedWrite // ExecuteAsync's
}

// Result is the outcome of a command.
type Result struct {
	Status Status
	// Sense is the sense data for CHECK CONDITION (fixed or descriptor format
	// as the LU's D_SENSE bit selects); it may alias a per-command buffer.
	Sense []byte
	// DataInLen is how many bytes of DataIn hold returned data.
	DataInLen int
	// Transfer is the number of bytes the command itself wanted to transfer
	// (the CDB's allocation or transfer length, in bytes), so the transport can
	// report residual overflow or underflow against what the initiator expected.
	// It is set for failed commands too whenever the CDB could be decoded.
	Transfer int
	// SenseBuf is the storage Sense points into. It lives in Result so that a
	// transport reusing Result values (one per task slot) builds sense data
	// without allocating; the longest sense this package builds is 40 bytes.
	SenseBuf [SenseBufLen]byte
}

// SenseBufLen is the size of Result.SenseBuf.
const SenseBufLen = 64

// EncodeLUN returns the 8-byte SAM LUN field for lun: peripheral device
// addressing below 256, flat space addressing up to 16383.
func EncodeLUN(lun uint64) [8]byte {
	var b [8]byte
	if lun < 256 {
		b[1] = byte(lun)
	} else {
		b[0] = 0x40 | byte(lun>>8)&0x3f
		b[1] = byte(lun)
	}
	return b
}

// DecodeLUN reads an 8-byte SAM LUN field (peripheral or flat addressing; the
// first level only).
func DecodeLUN(b [8]byte) uint64 {
	switch b[0] >> 6 {
	case 0: // peripheral device addressing
		return uint64(b[1])
	case 1: // flat space addressing
		return uint64(b[0]&0x3f)<<8 | uint64(b[1])
	default:
		// Logical unit and extended addressing are not used by our targets; an
		// impossible number makes the command fail as an unknown LUN.
		return ^uint64(0)
	}
}
