// Package pdu encodes and decodes iSCSI protocol data units (RFC 7143): the
// 48-byte basic header segment of every opcode, additional header segments,
// data segment padding, CRC32C digests and login/text keys. It is a pure
// codec: no sockets, no session state.
package pdu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// HeaderLen is the size of the basic header segment.
const HeaderLen = 48

// Opcode is the six-bit iSCSI opcode.
type Opcode byte

// Initiator opcodes.
const (
	OpNOPOut      Opcode = 0x00
	OpSCSICommand Opcode = 0x01
	OpTaskMgmtReq Opcode = 0x02
	OpLoginReq    Opcode = 0x03
	OpTextReq     Opcode = 0x04
	OpDataOut     Opcode = 0x05
	OpLogoutReq   Opcode = 0x06
	OpSNACKReq    Opcode = 0x10
)

// Target opcodes.
const (
	OpNOPIn        Opcode = 0x20
	OpSCSIResponse Opcode = 0x21
	OpTaskMgmtResp Opcode = 0x22
	OpLoginResp    Opcode = 0x23
	OpTextResp     Opcode = 0x24
	OpDataIn       Opcode = 0x25
	OpLogoutResp   Opcode = 0x26
	OpR2T          Opcode = 0x31
	OpAsyncMsg     Opcode = 0x32
	OpReject       Opcode = 0x3f
)

var opcodeNames = map[Opcode]string{
	OpNOPOut: "NOP-Out", OpSCSICommand: "SCSI Command", OpTaskMgmtReq: "Task Management Request",
	OpLoginReq: "Login Request", OpTextReq: "Text Request", OpDataOut: "SCSI Data-Out",
	OpLogoutReq: "Logout Request", OpSNACKReq: "SNACK Request", OpNOPIn: "NOP-In",
	OpSCSIResponse: "SCSI Response", OpTaskMgmtResp: "Task Management Response",
	OpLoginResp: "Login Response", OpTextResp: "Text Response", OpDataIn: "SCSI Data-In",
	OpLogoutResp: "Logout Response", OpR2T: "R2T", OpAsyncMsg: "Asynchronous Message", OpReject: "Reject",
}

func (o Opcode) String() string {
	if s, ok := opcodeNames[o]; ok {
		return s
	}
	return fmt.Sprintf("opcode 0x%02x", byte(o))
}

// ReservedTag is the ITT/TTT value meaning "no task" (0xffffffff).
const ReservedTag = 0xffffffff

// Header is a raw basic header segment. Typed views (SCSICommand, DataIn, ...)
// are decoded from it and encoded into it without allocating.
type Header [HeaderLen]byte

func (h *Header) Opcode() Opcode  { return Opcode(h[0] & 0x3f) }
func (h *Header) Immediate() bool { return h[0]&0x40 != 0 }
func (h *Header) Final() bool     { return h[1]&0x80 != 0 }

// AHSLength is the length in bytes of the additional header segments.
func (h *Header) AHSLength() int { return int(h[4]) * 4 }

// DataSegmentLength is the length of the data segment, without padding.
func (h *Header) DataSegmentLength() int {
	return int(h[5])<<16 | int(h[6])<<8 | int(h[7])
}

// SetDataSegmentLength stores n, which must be below 1<<24.
func (h *Header) SetDataSegmentLength(n int) {
	h[5], h[6], h[7] = byte(n>>16), byte(n>>8), byte(n)
}

func (h *Header) ITT() uint32  { return be32(h, 16) }
func (h *Header) LUN() [8]byte { return [8]byte(h[8:16]) }

func (h *Header) setOpcode(op Opcode, immediate bool) {
	h[0] = byte(op)
	if immediate {
		h[0] |= 0x40
	}
}

func be16(h *Header, off int) uint16     { return binary.BigEndian.Uint16(h[off:]) }
func be32(h *Header, off int) uint32     { return binary.BigEndian.Uint32(h[off:]) }
func put16(h *Header, off int, v uint16) { binary.BigEndian.PutUint16(h[off:], v) }
func put32(h *Header, off int, v uint32) { binary.BigEndian.PutUint32(h[off:], v) }

func bit(b byte, mask byte) bool { return b&mask != 0 }

func flag(v bool, mask byte) byte {
	if v {
		return mask
	}
	return 0
}

// PadLen is the number of zero bytes that follow a data segment of n bytes.
func PadLen(n int) int { return (4 - n&3) & 3 }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CRC32C is the iSCSI digest of b; computing it over the padded segment is
// the caller's job (RFC 7143 11.1: padding bytes are covered).
func CRC32C(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// UpdateCRC32C extends a running digest.
func UpdateCRC32C(crc uint32, b []byte) uint32 { return crc32.Update(crc, castagnoli, b) }

// DigestBytes encodes a digest as it appears on the wire. RFC 7143 sends the
// CRC's bytes least significant first.
func DigestBytes(crc uint32) [4]byte {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], crc)
	return b
}

// DigestValue decodes a wire digest.
func DigestValue(b []byte) uint32 { return binary.LittleEndian.Uint32(b) }

// ErrAHS reports a malformed additional header segment.
var ErrAHS = errors.New("malformed additional header segment")

// ExtendedCDB finds the Extended CDB AHS (type 1) in ahs and returns the CDB
// bytes beyond the first 16.
func ExtendedCDB(ahs []byte) ([]byte, error) {
	for len(ahs) > 0 {
		if len(ahs) < 4 {
			return nil, ErrAHS
		}
		n := int(binary.BigEndian.Uint16(ahs))
		typ := ahs[2]
		total := 3 + n // length counts from the reserved byte after the type
		if total > len(ahs) {
			return nil, ErrAHS
		}
		if typ == 1 {
			if n < 1 {
				return nil, ErrAHS
			}
			return ahs[4:total], nil
		}
		total += PadLen(total)
		if total > len(ahs) {
			total = len(ahs)
		}
		ahs = ahs[total:]
	}
	return nil, nil
}
