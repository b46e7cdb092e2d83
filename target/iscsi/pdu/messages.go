package pdu

// Every type below is one opcode's header fields. Unmarshal reads them from a
// Header whose opcode the caller has checked; Marshal overwrites the whole
// Header (the data segment length included, from the value passed in DataLen
// where the PDU carries data).

// SCSICommand is a SCSI Command PDU (RFC 7143 11.3).
type SCSICommand struct {
	Immediate bool
	Final     bool
	Read      bool
	Write     bool
	Attr      byte // task attribute
	DataLen   int
	LUN       [8]byte
	ITT       uint32
	EDTL      uint32 // expected data transfer length
	CmdSN     uint32
	ExpStatSN uint32
	CDB       [16]byte
}

func (c *SCSICommand) Unmarshal(h *Header) {
	c.Immediate = h.Immediate()
	c.Final = h.Final()
	c.Read = bit(h[1], 0x40)
	c.Write = bit(h[1], 0x20)
	c.Attr = h[1] & 0x07
	c.DataLen = h.DataSegmentLength()
	c.LUN = h.LUN()
	c.ITT = be32(h, 16)
	c.EDTL = be32(h, 20)
	c.CmdSN = be32(h, 24)
	c.ExpStatSN = be32(h, 28)
	c.CDB = [16]byte(h[32:48])
}

func (c *SCSICommand) Marshal(h *Header) {
	*h = Header{}
	h.setOpcode(OpSCSICommand, c.Immediate)
	h[1] = flag(c.Final, 0x80) | flag(c.Read, 0x40) | flag(c.Write, 0x20) | c.Attr&0x07
	h.SetDataSegmentLength(c.DataLen)
	copy(h[8:16], c.LUN[:])
	put32(h, 16, c.ITT)
	put32(h, 20, c.EDTL)
	put32(h, 24, c.CmdSN)
	put32(h, 28, c.ExpStatSN)
	copy(h[32:48], c.CDB[:])
}

// SCSIResponse is a SCSI Response PDU (RFC 7143 11.4). Sense data travels in
// the data segment, preceded by its two-byte length.
type SCSIResponse struct {
	BidiOverflow, BidiUnderflow bool
	Overflow, Underflow         bool
	Response                    byte
	Status                      byte
	DataLen                     int
	ITT                         uint32
	StatSN, ExpCmdSN, MaxCmdSN  uint32
	ExpDataSN                   uint32
	BidiResidual, Residual      uint32
}

func (r *SCSIResponse) Marshal(h *Header) {
	*h = Header{}
	h.setOpcode(OpSCSIResponse, false)
	h[1] = 0x80 | flag(r.BidiOverflow, 0x10) | flag(r.BidiUnderflow, 0x08) | flag(r.Overflow, 0x04) | flag(r.Underflow, 0x02)
	h[2] = r.Response
	h[3] = r.Status
	h.SetDataSegmentLength(r.DataLen)
	put32(h, 16, r.ITT)
	put32(h, 24, r.StatSN)
	put32(h, 28, r.ExpCmdSN)
	put32(h, 32, r.MaxCmdSN)
	put32(h, 36, r.ExpDataSN)
	put32(h, 40, r.BidiResidual)
	put32(h, 44, r.Residual)
}

func (r *SCSIResponse) Unmarshal(h *Header) {
	r.BidiOverflow = bit(h[1], 0x10)
	r.BidiUnderflow = bit(h[1], 0x08)
	r.Overflow = bit(h[1], 0x04)
	r.Underflow = bit(h[1], 0x02)
	r.Response = h[2]
	r.Status = h[3]
	r.DataLen = h.DataSegmentLength()
	r.ITT = be32(h, 16)
	r.StatSN = be32(h, 24)
	r.ExpCmdSN = be32(h, 28)
	r.MaxCmdSN = be32(h, 32)
	r.ExpDataSN = be32(h, 36)
	r.BidiResidual = be32(h, 40)
	r.Residual = be32(h, 44)
}

// DataOut is a SCSI Data-Out PDU (RFC 7143 11.7).
type DataOut struct {
	Final        bool
	DataLen      int
	LUN          [8]byte
	ITT, TTT     uint32
	ExpStatSN    uint32
	DataSN       uint32
	BufferOffset uint32
}

func (d *DataOut) Unmarshal(h *Header) {
	d.Final = h.Final()
	d.DataLen = h.DataSegmentLength()
	d.LUN = h.LUN()
	d.ITT = be32(h, 16)
	d.TTT = be32(h, 20)
	d.ExpStatSN = be32(h, 28)
	d.DataSN = be32(h, 36)
	d.BufferOffset = be32(h, 40)
}

func (d *DataOut) Marshal(h *Header) {
	*h = Header{}
	h.setOpcode(OpDataOut, false)
	h[1] = flag(d.Final, 0x80)
	h.SetDataSegmentLength(d.DataLen)
	copy(h[8:16], d.LUN[:])
	put32(h, 16, d.ITT)
	put32(h, 20, d.TTT)
	put32(h, 28, d.ExpStatSN)
	put32(h, 36, d.DataSN)
	put32(h, 40, d.BufferOffset)
}

// DataIn is a SCSI Data-In PDU (RFC 7143 11.7). With HasStatus the PDU also
// carries the command's status (phase collapse) and residual.
type DataIn struct {
	Final, Ack          bool
	Overflow, Underflow bool
	HasStatus           bool
	Status              byte
	DataLen             int
	LUN                 [8]byte
	ITT, TTT            uint32
	StatSN              uint32
	ExpCmdSN, MaxCmdSN  uint32
	DataSN              uint32
	BufferOffset        uint32
	Residual            uint32
}

func (d *DataIn) Marshal(h *Header) {
	*h = Header{}
	h.setOpcode(OpDataIn, false)
	h[1] = flag(d.Final, 0x80) | flag(d.Ack, 0x40) | flag(d.Overflow, 0x04) | flag(d.Underflow, 0x02) | flag(d.HasStatus, 0x01)
	if d.HasStatus {
		h[3] = d.Status
		put32(h, 24, d.StatSN)
	}
	h.SetDataSegmentLength(d.DataLen)
	copy(h[8:16], d.LUN[:])
	put32(h, 16, d.ITT)
	put32(h, 20, d.TTT)
	put32(h, 28, d.ExpCmdSN)
	put32(h, 32, d.MaxCmdSN)
	put32(h, 36, d.DataSN)
	put32(h, 40, d.BufferOffset)
	put32(h, 44, d.Residual)
}

func (d *DataIn) Unmarshal(h *Header) {
	d.Final = h.Final()
	d.Ack = bit(h[1], 0x40)
	d.Overflow = bit(h[1], 0x04)
	d.Underflow = bit(h[1], 0x02)
	d.HasStatus = bit(h[1], 0x01)
	d.Status = h[3]
	d.DataLen = h.DataSegmentLength()
	d.LUN = h.LUN()
	d.ITT = be32(h, 16)
	d.TTT = be32(h, 20)
	d.StatSN = be32(h, 24)
	d.ExpCmdSN = be32(h, 28)
	d.MaxCmdSN = be32(h, 32)
	d.DataSN = be32(h, 36)
	d.BufferOffset = be32(h, 40)
	d.Residual = be32(h, 44)
}

// R2T is a Ready To Transfer PDU (RFC 7143 11.8).
type R2T struct {
	LUN                        [8]byte
	ITT, TTT                   uint32
	StatSN, ExpCmdSN, MaxCmdSN uint32
	R2TSN                      uint32
	BufferOffset               uint32
	DesiredLength              uint32
}

func (r *R2T) Marshal(h *Header) {
	*h = Header{}
	h.setOpcode(OpR2T, false)
	h[1] = 0x80
	copy(h[8:16], r.LUN[:])
	put32(h, 16, r.ITT)
	put32(h, 20, r.TTT)
	put32(h, 24, r.StatSN)
	put32(h, 28, r.ExpCmdSN)
	put32(h, 32, r.MaxCmdSN)
	put32(h, 36, r.R2TSN)
	put32(h, 40, r.BufferOffset)
	put32(h, 44, r.DesiredLength)
}

func (r *R2T) Unmarshal(h *Header) {
	r.LUN = h.LUN()
	r.ITT = be32(h, 16)
	r.TTT = be32(h, 20)
	r.StatSN = be32(h, 24)
	r.ExpCmdSN = be32(h, 28)
	r.MaxCmdSN = be32(h, 32)
	r.R2TSN = be32(h, 36)
	r.BufferOffset = be32(h, 40)
	r.DesiredLength = be32(h, 44)
}

// NOPOut is a NOP-Out PDU (RFC 7143 11.18): a ping from the initiator, or its
// answer to our NOP-In when TTT is not reserved.
type NOPOut struct {
	Immediate bool
	DataLen   int
	LUN       [8]byte
	ITT, TTT  uint32
	CmdSN     uint32
	ExpStatSN uint32
}

func (n *NOPOut) Unmarshal(h *Header) {
	n.Immediate = h.Immediate()
	n.DataLen = h.DataSegmentLength()
	n.LUN = h.LUN()
	n.ITT = be32(h, 16)
	n.TTT = be32(h, 20)
	n.CmdSN = be32(h, 24)
	n.ExpStatSN = be32(h, 28)
}

func (n *NOPOut) Marshal(h *Header) {
	*h = Header{}
	h.setOpcode(OpNOPOut, n.Immediate)
	h[1] = 0x80
	h.SetDataSegmentLength(n.DataLen)
	copy(h[8:16], n.LUN[:])
	put32(h, 16, n.ITT)
	put32(h, 20, n.TTT)
	put32(h, 24, n.CmdSN)
	put32(h, 28, n.ExpStatSN)
}

// NOPIn is a NOP-In PDU (RFC 7143 11.19).
type NOPIn struct {
	DataLen                    int
	LUN                        [8]byte
	ITT, TTT                   uint32
	StatSN, ExpCmdSN, MaxCmdSN uint32
}

func (n *NOPIn) Marshal(h *Header) {
	*h = Header{}
	h.setOpcode(OpNOPIn, false)
	h[1] = 0x80
	h.SetDataSegmentLength(n.DataLen)
	copy(h[8:16], n.LUN[:])
	put32(h, 16, n.ITT)
	put32(h, 20, n.TTT)
	put32(h, 24, n.StatSN)
	put32(h, 28, n.ExpCmdSN)
	put32(h, 32, n.MaxCmdSN)
}

func (n *NOPIn) Unmarshal(h *Header) {
	n.DataLen = h.DataSegmentLength()
	n.LUN = h.LUN()
	n.ITT = be32(h, 16)
	n.TTT = be32(h, 20)
	n.StatSN = be32(h, 24)
	n.ExpCmdSN = be32(h, 28)
	n.MaxCmdSN = be32(h, 32)
}

// TMF function codes (RFC 7143 11.5.1).
const (
	TMFAbortTask       byte = 1
	TMFAbortTaskSet    byte = 2
	TMFClearACA        byte = 3
	TMFClearTaskSet    byte = 4
	TMFLUNReset        byte = 5
	TMFTargetWarmReset byte = 6
	TMFTargetColdReset byte = 7
	TMFTaskReassign    byte = 8
	TMFQueryTask       byte = 9
	TMFQueryTaskSet    byte = 10
	TMFITNexusReset    byte = 11
	TMFQueryAsyncEvent byte = 12
)

// TMF responses (RFC 7143 11.6.1).
const (
	TMFRespComplete      byte = 0
	TMFRespNoTask        byte = 1
	TMFRespNoLUN         byte = 2
	TMFRespTaskAllegiant byte = 3
	TMFRespNoReassign    byte = 4
	TMFRespNotSupported  byte = 5
	TMFRespAuthFailed    byte = 6
	TMFRespRejected      byte = 255
)

// TaskMgmtReq is a Task Management Function Request (RFC 7143 11.5).
type TaskMgmtReq struct {
	Immediate bool
	Function  byte
	LUN       [8]byte
	ITT, RTT  uint32
	CmdSN     uint32
	ExpStatSN uint32
	RefCmdSN  uint32
	ExpDataSN uint32
}

func (t *TaskMgmtReq) Unmarshal(h *Header) {
	t.Immediate = h.Immediate()
	t.Function = h[1] & 0x7f
	t.LUN = h.LUN()
	t.ITT = be32(h, 16)
	t.RTT = be32(h, 20)
	t.CmdSN = be32(h, 24)
	t.ExpStatSN = be32(h, 28)
	t.RefCmdSN = be32(h, 32)
	t.ExpDataSN = be32(h, 36)
}

func (t *TaskMgmtReq) Marshal(h *Header) {
	*h = Header{}
	h.setOpcode(OpTaskMgmtReq, t.Immediate)
	h[1] = 0x80 | t.Function&0x7f
	copy(h[8:16], t.LUN[:])
	put32(h, 16, t.ITT)
	put32(h, 20, t.RTT)
	put32(h, 24, t.CmdSN)
	put32(h, 28, t.ExpStatSN)
	put32(h, 32, t.RefCmdSN)
	put32(h, 36, t.ExpDataSN)
}

// TaskMgmtResp is a Task Management Function Response (RFC 7143 11.6).
type TaskMgmtResp struct {
	Response                   byte
	ITT                        uint32
	StatSN, ExpCmdSN, MaxCmdSN uint32
}

func (t *TaskMgmtResp) Marshal(h *Header) {
	*h = Header{}
	h.setOpcode(OpTaskMgmtResp, false)
	h[1] = 0x80
	h[2] = t.Response
	put32(h, 16, t.ITT)
	put32(h, 24, t.StatSN)
	put32(h, 28, t.ExpCmdSN)
	put32(h, 32, t.MaxCmdSN)
}

func (t *TaskMgmtResp) Unmarshal(h *Header) {
	t.Response = h[2]
	t.ITT = be32(h, 16)
	t.StatSN = be32(h, 24)
	t.ExpCmdSN = be32(h, 28)
	t.MaxCmdSN = be32(h, 32)
}

// Login stages (RFC 7143 11.12.3).
const (
	StageSecurity    = 0
	StageOperational = 1
	StageFullFeature = 3
)

// LoginReq is a Login Request (RFC 7143 11.12).
type LoginReq struct {
	Transit, Continue      bool
	CSG, NSG               byte
	VersionMax, VersionMin byte
	DataLen                int
	ISID                   [6]byte
	TSIH                   uint16
	ITT                    uint32
	CID                    uint16
	CmdSN                  uint32
	ExpStatSN              uint32
}

func (l *LoginReq) Unmarshal(h *Header) {
	l.Transit = bit(h[1], 0x80)
	l.Continue = bit(h[1], 0x40)
	l.CSG = (h[1] >> 2) & 3
	l.NSG = h[1] & 3
	l.VersionMax = h[2]
	l.VersionMin = h[3]
	l.DataLen = h.DataSegmentLength()
	l.ISID = [6]byte(h[8:14])
	l.TSIH = be16(h, 14)
	l.ITT = be32(h, 16)
	l.CID = be16(h, 20)
	l.CmdSN = be32(h, 24)
	l.ExpStatSN = be32(h, 28)
}

func (l *LoginReq) Marshal(h *Header) {
	*h = Header{}
	h.setOpcode(OpLoginReq, true) // login requests are always immediate
	h[1] = flag(l.Transit, 0x80) | flag(l.Continue, 0x40) | (l.CSG&3)<<2 | l.NSG&3
	h[2] = l.VersionMax
	h[3] = l.VersionMin
	h.SetDataSegmentLength(l.DataLen)
	copy(h[8:14], l.ISID[:])
	put16(h, 14, l.TSIH)
	put32(h, 16, l.ITT)
	put16(h, 20, l.CID)
	put32(h, 24, l.CmdSN)
	put32(h, 28, l.ExpStatSN)
}

// Login status classes (RFC 7143 11.13.5).
const (
	LoginSuccess      = 0x00
	LoginRedirect     = 0x01
	LoginInitiatorErr = 0x02
	LoginTargetErr    = 0x03
)

// Login status details used by the target.
const (
	LoginDetailInitiatorError    = 0x00
	LoginDetailAuthFailed        = 0x01
	LoginDetailForbidden         = 0x02
	LoginDetailNotFound          = 0x03
	LoginDetailTargetRemoved     = 0x04
	LoginDetailUnsupportedVer    = 0x05
	LoginDetailTooManyConns      = 0x06
	LoginDetailMissingParam      = 0x07
	LoginDetailNoSessionSpanning = 0x08
	LoginDetailNoSession         = 0x0a
	LoginDetailInvalidRequest    = 0x0b
	LoginDetailTargetError       = 0x00
	LoginDetailOutOfResources    = 0x02
)

// LoginResp is a Login Response (RFC 7143 11.13).
type LoginResp struct {
	Transit, Continue          bool
	CSG, NSG                   byte
	VersionMax, VersionActive  byte
	DataLen                    int
	ISID                       [6]byte
	TSIH                       uint16
	ITT                        uint32
	StatSN, ExpCmdSN, MaxCmdSN uint32
	StatusClass, StatusDetail  byte
}

func (l *LoginResp) Marshal(h *Header) {
	*h = Header{}
	h.setOpcode(OpLoginResp, false)
	h[1] = flag(l.Transit, 0x80) | flag(l.Continue, 0x40) | (l.CSG&3)<<2 | l.NSG&3
	h[2] = l.VersionMax
	h[3] = l.VersionActive
	h.SetDataSegmentLength(l.DataLen)
	copy(h[8:14], l.ISID[:])
	put16(h, 14, l.TSIH)
	put32(h, 16, l.ITT)
	put32(h, 24, l.StatSN)
	put32(h, 28, l.ExpCmdSN)
	put32(h, 32, l.MaxCmdSN)
	h[36] = l.StatusClass
	h[37] = l.StatusDetail
}

func (l *LoginResp) Unmarshal(h *Header) {
	l.Transit = bit(h[1], 0x80)
	l.Continue = bit(h[1], 0x40)
	l.CSG = (h[1] >> 2) & 3
	l.NSG = h[1] & 3
	l.VersionMax = h[2]
	l.VersionActive = h[3]
	l.DataLen = h.DataSegmentLength()
	l.ISID = [6]byte(h[8:14])
	l.TSIH = be16(h, 14)
	l.ITT = be32(h, 16)
	l.StatSN = be32(h, 24)
	l.ExpCmdSN = be32(h, 28)
	l.MaxCmdSN = be32(h, 32)
	l.StatusClass = h[36]
	l.StatusDetail = h[37]
}

// TextReq is a Text Request (RFC 7143 11.10).
type TextReq struct {
	Immediate       bool
	Final, Continue bool
	DataLen         int
	LUN             [8]byte
	ITT, TTT        uint32
	CmdSN           uint32
	ExpStatSN       uint32
}

func (t *TextReq) Unmarshal(h *Header) {
	t.Immediate = h.Immediate()
	t.Final = h.Final()
	t.Continue = bit(h[1], 0x40)
	t.DataLen = h.DataSegmentLength()
	t.LUN = h.LUN()
	t.ITT = be32(h, 16)
	t.TTT = be32(h, 20)
	t.CmdSN = be32(h, 24)
	t.ExpStatSN = be32(h, 28)
}

func (t *TextReq) Marshal(h *Header) {
	*h = Header{}
	h.setOpcode(OpTextReq, t.Immediate)
	h[1] = flag(t.Final, 0x80) | flag(t.Continue, 0x40)
	h.SetDataSegmentLength(t.DataLen)
	copy(h[8:16], t.LUN[:])
	put32(h, 16, t.ITT)
	put32(h, 20, t.TTT)
	put32(h, 24, t.CmdSN)
	put32(h, 28, t.ExpStatSN)
}

// TextResp is a Text Response (RFC 7143 11.11).
type TextResp struct {
	Final, Continue            bool
	DataLen                    int
	LUN                        [8]byte
	ITT, TTT                   uint32
	StatSN, ExpCmdSN, MaxCmdSN uint32
}

func (t *TextResp) Marshal(h *Header) {
	*h = Header{}
	h.setOpcode(OpTextResp, false)
	h[1] = flag(t.Final, 0x80) | flag(t.Continue, 0x40)
	h.SetDataSegmentLength(t.DataLen)
	copy(h[8:16], t.LUN[:])
	put32(h, 16, t.ITT)
	put32(h, 20, t.TTT)
	put32(h, 24, t.StatSN)
	put32(h, 28, t.ExpCmdSN)
	put32(h, 32, t.MaxCmdSN)
}

func (t *TextResp) Unmarshal(h *Header) {
	t.Final = h.Final()
	t.Continue = bit(h[1], 0x40)
	t.DataLen = h.DataSegmentLength()
	t.LUN = h.LUN()
	t.ITT = be32(h, 16)
	t.TTT = be32(h, 20)
	t.StatSN = be32(h, 24)
	t.ExpCmdSN = be32(h, 28)
	t.MaxCmdSN = be32(h, 32)
}

// Logout reason codes (RFC 7143 11.14.1).
const (
	LogoutSession    = 0
	LogoutConnection = 1
	LogoutRecovery   = 2
)

// LogoutReq is a Logout Request (RFC 7143 11.14).
type LogoutReq struct {
	Immediate bool
	Reason    byte
	ITT       uint32
	CID       uint16
	CmdSN     uint32
	ExpStatSN uint32
}

func (l *LogoutReq) Unmarshal(h *Header) {
	l.Immediate = h.Immediate()
	l.Reason = h[1] & 0x7f
	l.ITT = be32(h, 16)
	l.CID = be16(h, 20)
	l.CmdSN = be32(h, 24)
	l.ExpStatSN = be32(h, 28)
}

func (l *LogoutReq) Marshal(h *Header) {
	*h = Header{}
	h.setOpcode(OpLogoutReq, l.Immediate)
	h[1] = 0x80 | l.Reason&0x7f
	put32(h, 16, l.ITT)
	put16(h, 20, l.CID)
	put32(h, 24, l.CmdSN)
	put32(h, 28, l.ExpStatSN)
}

// Logout responses (RFC 7143 11.15.1).
const (
	LogoutRespSuccess       = 0
	LogoutRespCIDNotFound   = 1
	LogoutRespNoRecovery    = 2
	LogoutRespCleanupFailed = 3
)

// LogoutResp is a Logout Response (RFC 7143 11.15).
type LogoutResp struct {
	Response                   byte
	ITT                        uint32
	StatSN, ExpCmdSN, MaxCmdSN uint32
	Time2Wait, Time2Retain     uint16
}

func (l *LogoutResp) Marshal(h *Header) {
	*h = Header{}
	h.setOpcode(OpLogoutResp, false)
	h[1] = 0x80
	h[2] = l.Response
	put32(h, 16, l.ITT)
	put32(h, 24, l.StatSN)
	put32(h, 28, l.ExpCmdSN)
	put32(h, 32, l.MaxCmdSN)
	put16(h, 40, l.Time2Wait)
	put16(h, 42, l.Time2Retain)
}

func (l *LogoutResp) Unmarshal(h *Header) {
	l.Response = h[2]
	l.ITT = be32(h, 16)
	l.StatSN = be32(h, 24)
	l.ExpCmdSN = be32(h, 28)
	l.MaxCmdSN = be32(h, 32)
	l.Time2Wait = be16(h, 40)
	l.Time2Retain = be16(h, 42)
}

// SNACKReq is a SNACK Request (RFC 7143 11.16). With ErrorRecoveryLevel=0
// the target answers it with a Reject.
type SNACKReq struct {
	Type      byte
	LUN       [8]byte
	ITT, TTT  uint32
	ExpStatSN uint32
	BegRun    uint32
	RunLength uint32
}

func (s *SNACKReq) Unmarshal(h *Header) {
	s.Type = h[1] & 0x0f
	s.LUN = h.LUN()
	s.ITT = be32(h, 16)
	s.TTT = be32(h, 20)
	s.ExpStatSN = be32(h, 28)
	s.BegRun = be32(h, 40)
	s.RunLength = be32(h, 44)
}

// Reject reasons (RFC 7143 11.17.1).
const (
	RejectDataDigest       = 0x02
	RejectSNACK            = 0x03
	RejectProtocolError    = 0x04
	RejectNotSupported     = 0x05
	RejectImmediateCmd     = 0x06
	RejectTaskInProgress   = 0x07
	RejectInvalidDataAck   = 0x08
	RejectInvalidPDUField  = 0x09
	RejectOutOfResources   = 0x0a
	RejectNegotiationReset = 0x0b
	RejectWaitingForLogout = 0x0c
)

// Reject is a Reject PDU (RFC 7143 11.17); its data segment is the rejected
// PDU's header.
type Reject struct {
	Reason                     byte
	DataLen                    int
	StatSN, ExpCmdSN, MaxCmdSN uint32
	DataSN                     uint32
}

func (r *Reject) Marshal(h *Header) {
	*h = Header{}
	h.setOpcode(OpReject, false)
	h[1] = 0x80
	h[2] = r.Reason
	h.SetDataSegmentLength(r.DataLen)
	put32(h, 16, ReservedTag)
	put32(h, 24, r.StatSN)
	put32(h, 28, r.ExpCmdSN)
	put32(h, 32, r.MaxCmdSN)
	put32(h, 36, r.DataSN)
}

func (r *Reject) Unmarshal(h *Header) {
	r.Reason = h[2]
	r.DataLen = h.DataSegmentLength()
	r.StatSN = be32(h, 24)
	r.ExpCmdSN = be32(h, 28)
	r.MaxCmdSN = be32(h, 32)
	r.DataSN = be32(h, 36)
}

// Asynchronous events (RFC 7143 11.9.1).
const (
	AsyncSCSIEvent      = 0
	AsyncLogoutRequest  = 1
	AsyncDropConnection = 2
	AsyncDropAllConns   = 3
	AsyncRenegotiate    = 4
)

// AsyncMsg is an Asynchronous Message (RFC 7143 11.9).
type AsyncMsg struct {
	DataLen                            int
	LUN                                [8]byte
	StatSN, ExpCmdSN, MaxCmdSN         uint32
	Event, VCode                       byte
	Parameter1, Parameter2, Parameter3 uint16
}

func (a *AsyncMsg) Marshal(h *Header) {
	*h = Header{}
	h.setOpcode(OpAsyncMsg, false)
	h[1] = 0x80
	h.SetDataSegmentLength(a.DataLen)
	copy(h[8:16], a.LUN[:])
	put32(h, 16, ReservedTag)
	put32(h, 24, a.StatSN)
	put32(h, 28, a.ExpCmdSN)
	put32(h, 32, a.MaxCmdSN)
	h[36] = a.Event
	h[37] = a.VCode
	put16(h, 38, a.Parameter1)
	put16(h, 40, a.Parameter2)
	put16(h, 42, a.Parameter3)
}

func (a *AsyncMsg) Unmarshal(h *Header) {
	a.DataLen = h.DataSegmentLength()
	a.LUN = h.LUN()
	a.StatSN = be32(h, 24)
	a.ExpCmdSN = be32(h, 28)
	a.MaxCmdSN = be32(h, 32)
	a.Event, a.VCode = h[36], h[37]
	a.Parameter1 = be16(h, 38)
	a.Parameter2 = be16(h, 40)
	a.Parameter3 = be16(h, 42)
}
