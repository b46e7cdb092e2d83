package scsi

import "fmt"

// Sense keys (SPC-4 table 48).
const (
	KeyNoSense        byte = 0x0
	KeyNotReady       byte = 0x2
	KeyMediumError    byte = 0x3
	KeyHardwareError  byte = 0x4
	KeyIllegalRequest byte = 0x5
	KeyUnitAttention  byte = 0x6
	KeyDataProtect    byte = 0x7
	KeyCopyAborted    byte = 0xa
	KeyAbortedCommand byte = 0xb
	KeyMiscompare     byte = 0xe
)

// ASC/ASCQ pairs this package reports, as ASC<<8 | ASCQ.
const (
	ascNoAdditionalSense       uint16 = 0x0000
	ascNotReadyCauseUnknown    uint16 = 0x0400
	ascSanitizeInProgress      uint16 = 0x041b
	ascWriteError              uint16 = 0x0c00
	ascUnrecoveredReadError    uint16 = 0x1100
	ascParamListLengthError    uint16 = 0x1a00
	ascMiscompareDuringVerify  uint16 = 0x1d00
	ascInvalidOpcode           uint16 = 0x2000
	ascLBAOutOfRange           uint16 = 0x2100
	ascInvalidFieldInCDB       uint16 = 0x2400
	ascLUNotSupported          uint16 = 0x2500
	ascInvalidFieldInParam     uint16 = 0x2600
	ascWriteProtected          uint16 = 0x2700
	ascSoftwareWriteProtected  uint16 = 0x2702
	ascPowerOnReset            uint16 = 0x2900
	ascBusDeviceReset          uint16 = 0x2903
	ascITNexusLoss             uint16 = 0x2907
	ascModeParametersChanged   uint16 = 0x2a01
	ascCapacityDataChanged     uint16 = 0x2a09
	ascAsymmetricAccessChanged uint16 = 0x2a06
	ascSavingParamsNotSupp     uint16 = 0x3900
	ascMediumNotPresent        uint16 = 0x3a00
	ascInquiryDataChanged      uint16 = 0x3f03
	ascReportedLUNsChanged     uint16 = 0x3f0e
	ascSanitizeFailed          uint16 = 0x3103
	ascInternalTargetFailure   uint16 = 0x4400
	ascMediumRemovalPrevented  uint16 = 0x5302
)

// Sense is a CHECK CONDITION a command ends with. Handlers return it as an
// error; Execute encodes it in the format the LU's D_SENSE bit selects.
type Sense struct {
	Key  byte
	ASC  byte
	ASCQ byte
	// Info is the INFORMATION field (the miscompare offset, for instance),
	// meaningful when HasInfo is set.
	Info    uint64
	HasInfo bool
	// Field locates the offending byte for ILLEGAL REQUEST (sense-key specific
	// field pointer), meaningful when HasField is set. InCDB says whether it
	// points into the CDB or into the parameter list; Bit is the bit number
	// (0-7) when HasBit is set.
	Field    uint16
	Bit      uint8
	HasField bool
	HasBit   bool
	InCDB    bool
	// Progress is the sense-key specific progress indication (0-65535 of
	// 65536) of NOT READY while an operation such as SANITIZE runs,
	// meaningful when HasProgress is set and HasField is not.
	Progress    uint16
	HasProgress bool
	// CSI is the COMMAND-SPECIFIC INFORMATION field (the number of the
	// segment EXTENDED COPY was processing), meaningful when HasCSI is set.
	CSI    uint64
	HasCSI bool
}

func (s Sense) Error() string {
	return fmt.Sprintf("scsi: sense key %#x asc/ascq %02x/%02x", s.Key, s.ASC, s.ASCQ)
}

func (s Sense) code() uint16 { return uint16(s.ASC)<<8 | uint16(s.ASCQ) }

func newSense(key byte, code uint16) Sense {
	return Sense{Key: key, ASC: byte(code >> 8), ASCQ: byte(code)}
}

// invalidCDB reports INVALID FIELD IN CDB pointing at bit bit of byte field;
// bit < 0 leaves the bit pointer unset (the whole byte or a multi-byte field).
func invalidCDB(field int, bit int) Sense {
	s := newSense(KeyIllegalRequest, ascInvalidFieldInCDB)
	s.HasField, s.InCDB, s.Field = true, true, uint16(field)
	if bit >= 0 {
		s.HasBit, s.Bit = true, uint8(bit)
	}
	return s
}

// invalidParam reports INVALID FIELD IN PARAMETER LIST, like invalidCDB.
func invalidParam(field int, bit int) Sense {
	s := invalidCDB(field, bit)
	s.ASC, s.ASCQ, s.InCDB = 0x26, 0x00, false // INVALID FIELD IN PARAMETER LIST
	return s
}

func illegal(code uint16) Sense { return newSense(KeyIllegalRequest, code) }

var (
	errInvalidOpcode   = illegal(ascInvalidOpcode)
	errLBAOutOfRange   = illegal(ascLBAOutOfRange)
	errParamListLength = illegal(ascParamListLengthError)
	errLUNotSupported  = illegal(ascLUNotSupported)
	errSavingParams    = illegal(ascSavingParamsNotSupp)
	errRemovalPrevent  = illegal(ascMediumRemovalPrevented)
	errWriteProtected  = newSense(KeyDataProtect, ascWriteProtected)
	errSoftwareWP      = newSense(KeyDataProtect, ascSoftwareWriteProtected)
	errNoMedium        = newSense(KeyNotReady, ascMediumNotPresent)
	errClosed          = newSense(KeyNotReady, ascNotReadyCauseUnknown)
	errWriteFailed     = newSense(KeyMediumError, ascWriteError)
	errReadFailed      = newSense(KeyMediumError, ascUnrecoveredReadError)
	errInternal        = newSense(KeyHardwareError, ascInternalTargetFailure)
)

func miscompare(offset uint64) Sense {
	s := newSense(KeyMiscompare, ascMiscompareDuringVerify)
	s.Info, s.HasInfo = offset, true
	return s
}

// encode writes s into buf in descriptor (0x72) or fixed (0x70) format and
// returns the length. buf must hold at least 40 bytes.
func (s *Sense) encode(buf []byte, descriptor bool) int {
	if descriptor {
		return s.encodeDescriptor(buf)
	}
	return s.encodeFixed(buf)
}

func (s *Sense) encodeFixed(b []byte) int {
	const n = 18
	clear(b[:n])
	b[0] = 0x70
	b[2] = s.Key & 0x0f
	// The fixed format's INFORMATION field has 32 bits; SPC-4 says to leave
	// VALID clear when the value does not fit.
	if s.HasInfo && s.Info <= 0xffffffff {
		b[0] |= 0x80
		putU32(b[3:], uint32(s.Info))
	}
	b[7] = n - 8
	if s.HasCSI && s.CSI <= 0xffffffff {
		putU32(b[8:], uint32(s.CSI))
	}
	b[12], b[13] = s.ASC, s.ASCQ
	s.putSenseKeySpecific(b[15:18])
	return n
}

func (s *Sense) encodeDescriptor(b []byte) int {
	clear(b[:40])
	b[0] = 0x72
	b[1] = s.Key & 0x0f
	b[2], b[3] = s.ASC, s.ASCQ
	n := 8
	if s.HasInfo {
		// Information descriptor (SPC-4 4.5.2.2).
		b[n], b[n+1], b[n+2] = 0x00, 0x0a, 0x80
		putU64(b[n+4:], s.Info)
		n += 12
	}
	if s.HasCSI {
		// Command-specific information descriptor (SPC-4 4.5.2.3).
		b[n], b[n+1] = 0x01, 0x0a
		putU64(b[n+4:], s.CSI)
		n += 12
	}
	if s.HasField || s.HasProgress {
		// Sense key specific descriptor (SPC-4 4.5.2.3).
		b[n], b[n+1] = 0x02, 0x06
		s.putSenseKeySpecific(b[n+4 : n+7])
		n += 8
	}
	b[7] = byte(n - 8)
	return n
}

// putSenseKeySpecific fills the 3-byte field pointer (SKSV, C/D, BPV).
func (s *Sense) putSenseKeySpecific(b []byte) {
	if !s.HasField {
		if s.HasProgress {
			b[0] = 0x80 // SKSV, progress indication (SPC-4 4.5.2.4.4)
			putU16(b[1:], s.Progress)
		}
		return
	}
	b[0] = 0x80 // SKSV
	if s.InCDB {
		b[0] |= 0x40
	}
	if s.HasBit {
		b[0] |= 0x08 | s.Bit&0x07
	}
	putU16(b[1:], s.Field)
}
