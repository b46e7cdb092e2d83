package scsi

import "encoding/binary"

func getU16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }
func getU24(b []byte) uint32 { return uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]) }
func getU32(b []byte) uint32 { return binary.BigEndian.Uint32(b) }
func getU64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

func putU16(b []byte, v uint16) { binary.BigEndian.PutUint16(b, v) }
func putU32(b []byte, v uint32) { binary.BigEndian.PutUint32(b, v) }
func putU64(b []byte, v uint64) { binary.BigEndian.PutUint64(b, v) }

// padASCII copies s into b, filling the rest with spaces, as SPC requires of
// the INQUIRY identification fields.
func padASCII(b []byte, s string) {
	n := copy(b, s)
	for i := n; i < len(b); i++ {
		b[i] = ' '
	}
}

// respond hands parameter data back to the initiator. SPC transfers
// min(allocation length, data available); the transport compares that with
// the expected data transfer length to report residuals, and DataIn (whose
// length is that expected length) bounds what is actually copied.
func respond(cmd *Command, res *Result, data []byte, alloc int) {
	n := min(len(data), alloc)
	res.Transfer = n
	res.DataInLen = copy(cmd.DataIn, data[:n])
}
