package pdu

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"
)

// codec is what every typed PDU with both directions implements.
type codec interface {
	Marshal(*Header)
	Unmarshal(*Header)
}

var lun = [8]byte{0x40, 0x01, 2, 3, 4, 5, 6, 7}

// roundTripCases lists one fully populated value per typed PDU. Every field
// is non-zero and distinct so that a field written to the wrong offset or
// dropped shows up as an inequality.
func roundTripCases() []struct {
	name string
	op   Opcode
	in   codec
	out  codec
} {
	return []struct {
		name string
		op   Opcode
		in   codec
		out  codec
	}{
		{"SCSICommand", OpSCSICommand, &SCSICommand{
			Immediate: true, Final: true, Read: true, Write: true, Attr: 5, DataLen: 0x123456,
			LUN: lun, ITT: 0x01020304, EDTL: 0x11121314, CmdSN: 0x21222324, ExpStatSN: 0x31323334,
			CDB: [16]byte{0x88, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
		}, &SCSICommand{}},
		{"SCSIResponse", OpSCSIResponse, &SCSIResponse{
			BidiOverflow: true, BidiUnderflow: true, Overflow: true, Underflow: true,
			Response: 1, Status: 2, DataLen: 18, ITT: 7, StatSN: 8, ExpCmdSN: 9, MaxCmdSN: 10,
			ExpDataSN: 11, BidiResidual: 12, Residual: 13,
		}, &SCSIResponse{}},
		{"DataOut", OpDataOut, &DataOut{
			Final: true, DataLen: 4096, LUN: lun, ITT: 1, TTT: 2, ExpStatSN: 3, DataSN: 4, BufferOffset: 5,
		}, &DataOut{}},
		{"DataInStatus", OpDataIn, &DataIn{
			Final: true, Ack: true, Overflow: true, Underflow: true, HasStatus: true, Status: 0x02,
			DataLen: 512, LUN: lun, ITT: 1, TTT: 2, StatSN: 3, ExpCmdSN: 4, MaxCmdSN: 5, DataSN: 6,
			BufferOffset: 7, Residual: 8,
		}, &DataIn{}},
		{"DataInNoStatus", OpDataIn, &DataIn{
			Ack: true, DataLen: 1, LUN: lun, ITT: 1, TTT: 2, ExpCmdSN: 4, MaxCmdSN: 5, DataSN: 6,
			BufferOffset: 7, Residual: 8,
		}, &DataIn{}},
		{"R2T", OpR2T, &R2T{
			LUN: lun, ITT: 1, TTT: 2, StatSN: 3, ExpCmdSN: 4, MaxCmdSN: 5, R2TSN: 6, BufferOffset: 7, DesiredLength: 8,
		}, &R2T{}},
		{"NOPOut", OpNOPOut, &NOPOut{
			Immediate: true, DataLen: 3, LUN: lun, ITT: 1, TTT: 2, CmdSN: 3, ExpStatSN: 4,
		}, &NOPOut{}},
		{"NOPIn", OpNOPIn, &NOPIn{
			DataLen: 3, LUN: lun, ITT: 1, TTT: 2, StatSN: 3, ExpCmdSN: 4, MaxCmdSN: 5,
		}, &NOPIn{}},
		{"TaskMgmtReq", OpTaskMgmtReq, &TaskMgmtReq{
			Immediate: true, Function: TMFLUNReset, LUN: lun, ITT: 1, RTT: 2, CmdSN: 3, ExpStatSN: 4,
			RefCmdSN: 5, ExpDataSN: 6,
		}, &TaskMgmtReq{}},
		{"TaskMgmtResp", OpTaskMgmtResp, &TaskMgmtResp{
			Response: TMFRespRejected, ITT: 1, StatSN: 2, ExpCmdSN: 3, MaxCmdSN: 4,
		}, &TaskMgmtResp{}},
		{"LoginReq", OpLoginReq, &LoginReq{
			Transit: true, Continue: true, CSG: 1, NSG: 3, VersionMax: 2, VersionMin: 1, DataLen: 100,
			ISID: [6]byte{0x80, 1, 2, 3, 4, 5}, TSIH: 0x1234, ITT: 1, CID: 0x4321, CmdSN: 2, ExpStatSN: 3,
		}, &LoginReq{}},
		{"LoginResp", OpLoginResp, &LoginResp{
			Transit: true, Continue: true, CSG: 0, NSG: 1, VersionMax: 2, VersionActive: 1, DataLen: 100,
			ISID: [6]byte{0x80, 1, 2, 3, 4, 5}, TSIH: 0x1234, ITT: 1, StatSN: 2, ExpCmdSN: 3, MaxCmdSN: 4,
			StatusClass: LoginInitiatorErr, StatusDetail: LoginDetailAuthFailed,
		}, &LoginResp{}},
		{"TextReq", OpTextReq, &TextReq{
			Immediate: true, Final: true, Continue: true, DataLen: 9, LUN: lun, ITT: 1, TTT: 2, CmdSN: 3, ExpStatSN: 4,
		}, &TextReq{}},
		{"TextResp", OpTextResp, &TextResp{
			Final: true, Continue: true, DataLen: 9, LUN: lun, ITT: 1, TTT: 2, StatSN: 3, ExpCmdSN: 4, MaxCmdSN: 5,
		}, &TextResp{}},
		{"LogoutReq", OpLogoutReq, &LogoutReq{
			Immediate: true, Reason: LogoutRecovery, ITT: 1, CID: 2, CmdSN: 3, ExpStatSN: 4,
		}, &LogoutReq{}},
		{"LogoutResp", OpLogoutResp, &LogoutResp{
			Response: LogoutRespCleanupFailed, ITT: 1, StatSN: 2, ExpCmdSN: 3, MaxCmdSN: 4, Time2Wait: 5, Time2Retain: 6,
		}, &LogoutResp{}},
		{"Reject", OpReject, &Reject{
			Reason: RejectProtocolError, DataLen: 48, StatSN: 1, ExpCmdSN: 2, MaxCmdSN: 3, DataSN: 4,
		}, &Reject{}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range roundTripCases() {
		t.Run(tc.name, func(t *testing.T) {
			var h Header
			tc.in.Marshal(&h)
			if got := h.Opcode(); got != tc.op {
				t.Fatalf("opcode %v, want %v", got, tc.op)
			}
			tc.out.Unmarshal(&h)
			if !reflect.DeepEqual(tc.in, tc.out) {
				t.Fatalf("round trip mismatch\n in: %+v\nout: %+v", tc.in, tc.out)
			}
			// Marshal must overwrite every byte, so stale content from a
			// reused Header cannot leak into the next PDU.
			dirty := Header{}
			for i := range dirty {
				dirty[i] = 0xff
			}
			tc.in.Marshal(&dirty)
			if dirty != h {
				t.Fatalf("Marshal into a dirty header differs:\n%x\n%x", dirty[:], h[:])
			}
		})
	}
}

// field is one expected run of bytes in a marshaled header.
type field struct {
	off int
	b   []byte
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// checkLayout asserts that h holds exactly the given fields and zeros
// elsewhere: the RFC 7143 offsets, checked independently of Unmarshal.
func checkLayout(t *testing.T, h *Header, fields ...field) {
	t.Helper()
	var want Header
	for _, f := range fields {
		copy(want[f.off:], f.b)
	}
	if *h != want {
		for i := range h {
			if h[i] != want[i] {
				t.Errorf("byte %d = %#02x, want %#02x", i, h[i], want[i])
			}
		}
	}
}

func TestWireLayout(t *testing.T) {
	var h Header
	dl := []byte{0x12, 0x34, 0x56}

	(&SCSICommand{Immediate: true, Final: true, Read: true, Attr: 1, DataLen: 0x123456, LUN: lun,
		ITT: 0xa1, EDTL: 0xa2, CmdSN: 0xa3, ExpStatSN: 0xa4, CDB: [16]byte{0x28, 15: 0xee}}).Marshal(&h)
	checkLayout(t, &h, field{0, []byte{0x41, 0xc1}}, field{5, dl}, field{8, lun[:]}, field{16, u32(0xa1)},
		field{20, u32(0xa2)}, field{24, u32(0xa3)}, field{28, u32(0xa4)}, field{32, []byte{0x28}}, field{47, []byte{0xee}})

	(&SCSIResponse{Overflow: true, Response: 1, Status: 2, DataLen: 0x123456, ITT: 0xa1, StatSN: 0xa2,
		ExpCmdSN: 0xa3, MaxCmdSN: 0xa4, ExpDataSN: 0xa5, BidiResidual: 0xa6, Residual: 0xa7}).Marshal(&h)
	checkLayout(t, &h, field{0, []byte{0x21, 0x84, 1, 2}}, field{5, dl}, field{16, u32(0xa1)},
		field{24, u32(0xa2)}, field{28, u32(0xa3)}, field{32, u32(0xa4)}, field{36, u32(0xa5)},
		field{40, u32(0xa6)}, field{44, u32(0xa7)})

	(&DataOut{Final: true, DataLen: 0x123456, LUN: lun, ITT: 0xa1, TTT: 0xa2, ExpStatSN: 0xa3, DataSN: 0xa4,
		BufferOffset: 0xa5}).Marshal(&h)
	checkLayout(t, &h, field{0, []byte{0x05, 0x80}}, field{5, dl}, field{8, lun[:]}, field{16, u32(0xa1)},
		field{20, u32(0xa2)}, field{28, u32(0xa3)}, field{36, u32(0xa4)}, field{40, u32(0xa5)})

	(&DataIn{Final: true, HasStatus: true, Underflow: true, Status: 2, DataLen: 0x123456, LUN: lun, ITT: 0xa1,
		TTT: 0xa2, StatSN: 0xa3, ExpCmdSN: 0xa4, MaxCmdSN: 0xa5, DataSN: 0xa6, BufferOffset: 0xa7, Residual: 0xa8}).Marshal(&h)
	checkLayout(t, &h, field{0, []byte{0x25, 0x83, 0, 2}}, field{5, dl}, field{8, lun[:]}, field{16, u32(0xa1)},
		field{20, u32(0xa2)}, field{24, u32(0xa3)}, field{28, u32(0xa4)}, field{32, u32(0xa5)},
		field{36, u32(0xa6)}, field{40, u32(0xa7)}, field{44, u32(0xa8)})

	// Without the S bit, status and StatSN are reserved and must stay zero.
	(&DataIn{Status: 2, StatSN: 9, DataLen: 1, ITT: 0xa1}).Marshal(&h)
	checkLayout(t, &h, field{0, []byte{0x25}}, field{7, []byte{1}}, field{16, u32(0xa1)})

	(&R2T{LUN: lun, ITT: 0xa1, TTT: 0xa2, StatSN: 0xa3, ExpCmdSN: 0xa4, MaxCmdSN: 0xa5, R2TSN: 0xa6,
		BufferOffset: 0xa7, DesiredLength: 0xa8}).Marshal(&h)
	checkLayout(t, &h, field{0, []byte{0x31, 0x80}}, field{8, lun[:]}, field{16, u32(0xa1)},
		field{20, u32(0xa2)}, field{24, u32(0xa3)}, field{28, u32(0xa4)}, field{32, u32(0xa5)},
		field{36, u32(0xa6)}, field{40, u32(0xa7)}, field{44, u32(0xa8)})

	(&NOPOut{Immediate: true, DataLen: 0x123456, LUN: lun, ITT: 0xa1, TTT: 0xa2, CmdSN: 0xa3, ExpStatSN: 0xa4}).Marshal(&h)
	checkLayout(t, &h, field{0, []byte{0x40, 0x80}}, field{5, dl}, field{8, lun[:]}, field{16, u32(0xa1)},
		field{20, u32(0xa2)}, field{24, u32(0xa3)}, field{28, u32(0xa4)})

	(&NOPIn{DataLen: 0x123456, LUN: lun, ITT: 0xa1, TTT: 0xa2, StatSN: 0xa3, ExpCmdSN: 0xa4, MaxCmdSN: 0xa5}).Marshal(&h)
	checkLayout(t, &h, field{0, []byte{0x20, 0x80}}, field{5, dl}, field{8, lun[:]}, field{16, u32(0xa1)},
		field{20, u32(0xa2)}, field{24, u32(0xa3)}, field{28, u32(0xa4)}, field{32, u32(0xa5)})

	(&TaskMgmtReq{Immediate: true, Function: TMFAbortTask, LUN: lun, ITT: 0xa1, RTT: 0xa2, CmdSN: 0xa3,
		ExpStatSN: 0xa4, RefCmdSN: 0xa5, ExpDataSN: 0xa6}).Marshal(&h)
	checkLayout(t, &h, field{0, []byte{0x42, 0x81}}, field{8, lun[:]}, field{16, u32(0xa1)},
		field{20, u32(0xa2)}, field{24, u32(0xa3)}, field{28, u32(0xa4)}, field{32, u32(0xa5)}, field{36, u32(0xa6)})

	(&TaskMgmtResp{Response: TMFRespNoTask, ITT: 0xa1, StatSN: 0xa2, ExpCmdSN: 0xa3, MaxCmdSN: 0xa4}).Marshal(&h)
	checkLayout(t, &h, field{0, []byte{0x22, 0x80, 1}}, field{16, u32(0xa1)}, field{24, u32(0xa2)},
		field{28, u32(0xa3)}, field{32, u32(0xa4)})

	isid := [6]byte{0x80, 1, 2, 3, 4, 5}
	(&LoginReq{Transit: true, CSG: 1, NSG: 3, DataLen: 0x123456, ISID: isid, TSIH: 0xb1b2, ITT: 0xa1,
		CID: 0xc1c2, CmdSN: 0xa3, ExpStatSN: 0xa4}).Marshal(&h)
	checkLayout(t, &h, field{0, []byte{0x43, 0x87}}, field{5, dl}, field{8, isid[:]}, field{14, u16(0xb1b2)},
		field{16, u32(0xa1)}, field{20, u16(0xc1c2)}, field{24, u32(0xa3)}, field{28, u32(0xa4)})

	(&LoginResp{Continue: true, CSG: 0, NSG: 1, VersionMax: 0, VersionActive: 0, DataLen: 0x123456, ISID: isid,
		TSIH: 0xb1b2, ITT: 0xa1, StatSN: 0xa2, ExpCmdSN: 0xa3, MaxCmdSN: 0xa4, StatusClass: 2, StatusDetail: 1}).Marshal(&h)
	checkLayout(t, &h, field{0, []byte{0x23, 0x41}}, field{5, dl}, field{8, isid[:]}, field{14, u16(0xb1b2)},
		field{16, u32(0xa1)}, field{24, u32(0xa2)}, field{28, u32(0xa3)}, field{32, u32(0xa4)}, field{36, []byte{2, 1}})

	(&TextReq{Final: true, DataLen: 0x123456, LUN: lun, ITT: 0xa1, TTT: 0xa2, CmdSN: 0xa3, ExpStatSN: 0xa4}).Marshal(&h)
	checkLayout(t, &h, field{0, []byte{0x04, 0x80}}, field{5, dl}, field{8, lun[:]}, field{16, u32(0xa1)},
		field{20, u32(0xa2)}, field{24, u32(0xa3)}, field{28, u32(0xa4)})

	(&TextResp{Continue: true, DataLen: 0x123456, LUN: lun, ITT: 0xa1, TTT: 0xa2, StatSN: 0xa3, ExpCmdSN: 0xa4,
		MaxCmdSN: 0xa5}).Marshal(&h)
	checkLayout(t, &h, field{0, []byte{0x24, 0x40}}, field{5, dl}, field{8, lun[:]}, field{16, u32(0xa1)},
		field{20, u32(0xa2)}, field{24, u32(0xa3)}, field{28, u32(0xa4)}, field{32, u32(0xa5)})

	(&LogoutReq{Immediate: true, Reason: LogoutConnection, ITT: 0xa1, CID: 0xc1c2, CmdSN: 0xa3, ExpStatSN: 0xa4}).Marshal(&h)
	checkLayout(t, &h, field{0, []byte{0x46, 0x81}}, field{16, u32(0xa1)}, field{20, u16(0xc1c2)},
		field{24, u32(0xa3)}, field{28, u32(0xa4)})

	(&LogoutResp{Response: 2, ITT: 0xa1, StatSN: 0xa2, ExpCmdSN: 0xa3, MaxCmdSN: 0xa4, Time2Wait: 0xb1b2,
		Time2Retain: 0xc1c2}).Marshal(&h)
	checkLayout(t, &h, field{0, []byte{0x26, 0x80, 2}}, field{16, u32(0xa1)}, field{24, u32(0xa2)},
		field{28, u32(0xa3)}, field{32, u32(0xa4)}, field{40, u16(0xb1b2)}, field{42, u16(0xc1c2)})

	(&Reject{Reason: RejectInvalidPDUField, DataLen: 48, StatSN: 0xa2, ExpCmdSN: 0xa3, MaxCmdSN: 0xa4, DataSN: 0xa5}).Marshal(&h)
	checkLayout(t, &h, field{0, []byte{0x3f, 0x80, 9}}, field{7, []byte{48}}, field{16, u32(ReservedTag)},
		field{24, u32(0xa2)}, field{28, u32(0xa3)}, field{32, u32(0xa4)}, field{36, u32(0xa5)})

	(&AsyncMsg{DataLen: 0x123456, LUN: lun, StatSN: 0xa2, ExpCmdSN: 0xa3, MaxCmdSN: 0xa4, Event: AsyncLogoutRequest,
		VCode: 7, Parameter1: 0xb1b2, Parameter2: 0xc1c2, Parameter3: 0xd1d2}).Marshal(&h)
	checkLayout(t, &h, field{0, []byte{0x32, 0x80}}, field{5, dl}, field{8, lun[:]}, field{16, u32(ReservedTag)},
		field{24, u32(0xa2)}, field{28, u32(0xa3)}, field{32, u32(0xa4)}, field{36, []byte{1, 7}},
		field{38, u16(0xb1b2)}, field{40, u16(0xc1c2)}, field{42, u16(0xd1d2)})
}

// SNACKReq only has an Unmarshal (targets never send one), so it is checked
// against a hand-built header.
func TestSNACKUnmarshal(t *testing.T) {
	var h Header
	h[0] = byte(OpSNACKReq)
	h[1] = 0x80 | 0x01 // F bit, type 1 (Status SNACK)
	copy(h[8:], lun[:])
	copy(h[16:], u32(0xa1))
	copy(h[20:], u32(0xa2))
	copy(h[28:], u32(0xa3))
	copy(h[40:], u32(0xa4))
	copy(h[44:], u32(0xa5))
	var s SNACKReq
	s.Unmarshal(&h)
	want := SNACKReq{Type: 1, LUN: lun, ITT: 0xa1, TTT: 0xa2, ExpStatSN: 0xa3, BegRun: 0xa4, RunLength: 0xa5}
	if s != want {
		t.Fatalf("got %+v, want %+v", s, want)
	}
}

func TestHeaderAccessors(t *testing.T) {
	var h Header
	h[0] = 0x40 | byte(OpTextReq)
	h[1] = 0x80
	h[4] = 3
	h.SetDataSegmentLength(0xabcdef)
	copy(h[16:], u32(0x01020304))
	if h.Opcode() != OpTextReq || !h.Immediate() || !h.Final() {
		t.Fatalf("opcode/immediate/final wrong: %v %v %v", h.Opcode(), h.Immediate(), h.Final())
	}
	if h.AHSLength() != 12 || h.DataSegmentLength() != 0xabcdef || h.ITT() != 0x01020304 {
		t.Fatalf("lengths/ITT wrong: %d %#x %#x", h.AHSLength(), h.DataSegmentLength(), h.ITT())
	}
	if s := Opcode(0x3e).String(); s != "opcode 0x3e" {
		t.Errorf("unknown opcode string %q", s)
	}
	if s := OpR2T.String(); s != "R2T" {
		t.Errorf("R2T string %q", s)
	}
}

func TestPadLen(t *testing.T) {
	for n, want := range []int{0, 3, 2, 1, 0, 3, 2, 1} {
		if got := PadLen(n); got != want {
			t.Errorf("PadLen(%d) = %d, want %d", n, got, want)
		}
	}
}

// RFC 3720 appendix B.4 gives CRC32C vectors with the bytes in wire order.
func TestCRC32CVectors(t *testing.T) {
	inc := make([]byte, 32)
	dec := make([]byte, 32)
	ones := bytes.Repeat([]byte{0xff}, 32)
	for i := range inc {
		inc[i] = byte(i)
		dec[i] = byte(31 - i)
	}
	readCmd := []byte{
		0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
		0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18,
		0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	}
	for _, tc := range []struct {
		name string
		in   []byte
		wire [4]byte
	}{
		{"zeros", make([]byte, 32), [4]byte{0xaa, 0x36, 0x91, 0x8a}},
		{"ones", ones, [4]byte{0x43, 0xab, 0xa8, 0x62}},
		{"incrementing", inc, [4]byte{0x4e, 0x79, 0xdd, 0x46}},
		{"decrementing", dec, [4]byte{0x5c, 0xdb, 0x3f, 0x11}},
		{"iSCSI read", readCmd, [4]byte{0x56, 0x3a, 0x96, 0xd9}},
	} {
		if got := DigestBytes(CRC32C(tc.in)); got != tc.wire {
			t.Errorf("%s: digest % x, want % x", tc.name, got, tc.wire)
		}
		if DigestValue(tc.wire[:]) != CRC32C(tc.in) {
			t.Errorf("%s: DigestValue does not invert DigestBytes", tc.name)
		}
		// Digests computed in pieces must equal the one-shot value, since
		// the framing code chains header+AHS and data+padding.
		if UpdateCRC32C(CRC32C(tc.in[:7]), tc.in[7:]) != CRC32C(tc.in) {
			t.Errorf("%s: chained CRC differs", tc.name)
		}
	}
}
