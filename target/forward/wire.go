package forward

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hatarget/hatarget/target/nodeconn"
	"github.com/hatarget/hatarget/target/scsi"
)

// Wire format, all integers big-endian.
//
// A connection starts with a hello each way: the client sends Magic and the
// highest version it speaks, the server answers Magic and the version the
// connection will use, or version 0 to refuse (and closes).
//
//	hello:  magic[4] "HTFW" | version u16 | reserved u16
//
// Then both sides send frames, each a fixed header and a payload:
//
//	header: type u8 | flags u8 | reserved u16 | tag u32 | length u32
//
// The tag is chosen by the client and names one command (a request or a
// task management function) until its answer (a Response or an Error
// frame) arrives; Abort names the command it aborts; Ping and Pong carry an
// arbitrary tag and no payload. Flags and
// reserved fields are zero in version 1 and decoders refuse anything else,
// so a later version can give them meaning.
//
//	request payload (client -> server):
//	  epoch u64 | lun u64 | task tag u32 | data-in length u32 | data-out length u32 |
//	  CDB length u16 | device length u8 | reserved u8 |
//	  initiator name length u8 | initiator port length u8 | target name length u8 |
//	  target port length u8 | relative port u16 | port group u16 |
//	  initiator name | initiator port | target name | target port | device | CDB | data-out
//
//	task management payload (client -> server):
//	  epoch u64 | function u8 | device length u8 | reserved u16 |
//	  initiator name length u8 | initiator port length u8 | target name length u8 |
//	  target port length u8 | relative port u16 | port group u16 |
//	  initiator name | initiator port | target name | target port | device
//
//	response payload (server -> client):
//	  status u8 | sense length u8 | reserved u16 | data-in length u32 | transfer u64 |
//	  sense | data-in
//
//	error payload (server -> client, instead of a response):
//	  code u16 | reserved u16 | server's epoch u64
//
// The nexus fields and their lengths are contiguous (from byte 32 of the
// request payload, byte 12 of the task management payload, to the end of
// the target port) and laid out alike in both, so the server can find the
// Nexus of a frame by that byte string without allocating. The portal
// group tag needs no field of its own: it is part of the target port,
// "<iqn>,t,0x<tpgt>".
//
// A task management frame asks the owner to perform a function for the
// nexus it names on the device's LU, after the same owner and epoch check
// as a request: a logical unit reset requested through that nexus, or the
// loss of that nexus. The server answers it with a response frame (GOOD,
// or TASK ABORTED if an Abort reached it before it ran; never sense or
// data) or an error frame.
//
// Version 1 has had task management frames from its first release: no
// peer speaks version 1 without them, so the hello needs no new version.

// Magic opens both hellos.
const Magic = "HTFW"

// Version is the protocol version this package speaks.
const Version = 1

// Sizes and limits. A frame longer than MaxFrameLen, or with a field beyond
// its limit, is a protocol error that ends the connection: the limits bound
// what a peer can make us buffer.
const (
	HelloLen         = 8
	HeaderLen        = nodeconn.HeaderLen
	MaxNameLen       = 255
	MaxCDBLen        = 260
	MaxSenseLen      = scsi.SenseBufLen
	MaxDataLen       = scsi.MaxTransferBytes
	requestFixedLen  = 40
	responseFixedLen = 16
	errorPayloadLen  = 12
	taskMgmtFixedLen = 20
	// maxTaskMgmtLen is the longest task management payload.
	maxTaskMgmtLen = taskMgmtFixedLen + 5*MaxNameLen
	// maxRequestMeta is the longest request payload without its data-out.
	maxRequestMeta = requestFixedLen + 5*MaxNameLen + MaxCDBLen
	// MaxFrameLen bounds a frame's payload; a request is the longest frame.
	MaxFrameLen = maxRequestMeta + MaxDataLen
	// maxTransfer bounds the response's transfer field: a CDB can ask for at
	// most 2^32 blocks of 4 KiB.
	maxTransfer = 1 << 48
	// nexusOffset is where the nexus fields start in a request payload,
	// tmNexusOffset in a task management payload.
	nexusOffset   = 32
	tmNexusOffset = 12
)

// FrameType is the first byte of a frame header.
type FrameType uint8

const (
	FrameRequest FrameType = 1 + iota
	FrameResponse
	FrameAbort
	FrameError
	// FramePing asks the server for a FramePong with the same tag, so a
	// client with commands in flight can tell a slow owner from a stopped
	// one.
	FramePing
	FramePong
	// FrameTaskMgmt asks the owner to perform a task management function
	// (TMFunction) on a device; it is answered like a request.
	FrameTaskMgmt
)

func (t FrameType) String() string {
	switch t {
	case FrameRequest:
		return "request"
	case FrameResponse:
		return "response"
	case FrameAbort:
		return "abort"
	case FrameError:
		return "error"
	case FramePing:
		return "ping"
	case FramePong:
		return "pong"
	case FrameTaskMgmt:
		return "task management"
	}
	return fmt.Sprintf("frame type %d", uint8(t))
}

// TMFunction is the function a task management frame asks for.
type TMFunction uint8

const (
	// TMLogicalUnitReset: a LOGICAL UNIT RESET (or a target reset, applied
	// to the LU) requested through the frame's nexus: scsi.LU.ResetLULocal.
	TMLogicalUnitReset TMFunction = 1 + iota
	// TMNexusLoss: the frame's nexus went away (session closed or dropped,
	// I_T NEXUS RESET): scsi.LU.NexusLossLocal.
	TMNexusLoss
)

func (f TMFunction) String() string {
	switch f {
	case TMLogicalUnitReset:
		return "logical unit reset"
	case TMNexusLoss:
		return "I_T nexus loss"
	}
	return fmt.Sprintf("task management function %d", uint8(f))
}

// ErrorCode says why the server answered a request with an Error frame.
type ErrorCode uint16

const (
	// ErrNotOwner: this node does not own the device, or owns it in another
	// epoch than the request names.
	ErrNotOwner ErrorCode = 1 + iota
	// ErrUnknownDevice: this node has no device of that name (yet: a new LU
	// reaches nodes one after the other).
	ErrUnknownDevice
	// ErrShuttingDown: the server is closing and runs no new command.
	ErrShuttingDown
)

func (c ErrorCode) String() string {
	switch c {
	case ErrNotOwner:
		return "not owner"
	case ErrUnknownDevice:
		return "unknown device"
	case ErrShuttingDown:
		return "shutting down"
	}
	return fmt.Sprintf("error code %d", uint16(c))
}

// ErrProtocol wraps every decoding error: the peer broke the protocol and
// the connection cannot continue.
var ErrProtocol = errors.New("forward: protocol error")

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

var be = binary.BigEndian

// AppendHello appends a hello announcing version.
func AppendHello(b []byte, version uint16) []byte {
	b = append(b, Magic...)
	b = be.AppendUint16(b, version)
	return be.AppendUint16(b, 0)
}

// DecodeHello returns the version a hello announces.
func DecodeHello(b []byte) (uint16, error) {
	if len(b) != HelloLen {
		return 0, protoErr("hello of %d bytes", len(b))
	}
	if string(b[:4]) != Magic {
		return 0, protoErr("bad magic %q", b[:4])
	}
	if be.Uint16(b[6:]) != 0 {
		return 0, protoErr("reserved hello bytes set")
	}
	return be.Uint16(b[4:]), nil
}

// Header is a frame header (nodeconn.HeaderLen bytes).
type Header = nodeconn.Header[FrameType]

// AppendHeader appends h.
func AppendHeader(b []byte, h Header) []byte { return nodeconn.AppendHeader(b, h) }

// DecodeHeader decodes a frame header and checks its length against what
// its type allows, so the reader knows what it may buffer before reading
// the payload.
func DecodeHeader(b []byte) (Header, error) {
	return nodeconn.DecodeHeader(b, payloadBounds, ErrProtocol)
}

// payloadBounds is the range of payload lengths frames of type t may have.
func payloadBounds(t FrameType) (lo, hi uint32, ok bool) {
	switch t {
	case FrameRequest:
		return requestFixedLen, MaxFrameLen, true
	case FrameResponse:
		return responseFixedLen, responseFixedLen + MaxSenseLen + MaxDataLen, true
	case FrameError:
		return errorPayloadLen, errorPayloadLen, true
	case FrameTaskMgmt:
		return taskMgmtFixedLen, maxTaskMgmtLen, true
	case FrameAbort, FramePing, FramePong:
		return 0, 0, true
	}
	return 0, 0, false
}

// Nexus is the I_T nexus of a forwarded command, as it travels. Decoded
// values alias the frame.
type Nexus struct {
	InitiatorName []byte
	InitiatorPort []byte
	TargetName    []byte
	TargetPort    []byte
	RelativePort  uint16
	PortGroup     uint16
}

// Request is a decoded request frame; its slices alias the payload.
type Request struct {
	Tag       uint32
	Epoch     uint64
	LUN       uint64
	TaskTag   uint32
	DataInLen uint32
	Device    []byte
	Nexus     Nexus
	CDB       []byte
	DataOut   []byte
	// nexusRaw is the nexus part of the payload: it identifies the Nexus.
	nexusRaw []byte
}

// requestFixed is what the first requestFixedLen bytes of a request say
// about the rest.
type requestFixed struct {
	dataOutLen uint32
	varLen     int // names, device and CDB
}

// AppendRequest appends the header and payload of a request for cmd, all
// but the data-out, which the caller sends right after (as its own writev
// segment, not copied). cmd.View does not travel: EXTENDED COPY at the
// owner reaches the addressed LU only.
func AppendRequest(b []byte, tag uint32, device string, epoch uint64, cmd *scsi.Command) ([]byte, error) {
	var n scsi.Nexus
	if cmd.Nexus != nil {
		n = *cmd.Nexus
	}
	if err := checkRequest(device, cmd, &n); err != nil {
		return b, err
	}
	names := len(n.InitiatorName) + len(n.InitiatorPort) + len(n.TargetName) + len(n.TargetPort)
	length := requestFixedLen + names + len(device) + len(cmd.CDB) + len(cmd.DataOut)
	b = AppendHeader(b, Header{Type: FrameRequest, Tag: tag, Length: uint32(length)})
	b = be.AppendUint64(b, epoch)
	b = be.AppendUint64(b, cmd.LUN)
	b = be.AppendUint32(b, cmd.TaskTag)
	b = be.AppendUint32(b, uint32(len(cmd.DataIn)))
	b = be.AppendUint32(b, uint32(len(cmd.DataOut)))
	b = be.AppendUint16(b, uint16(len(cmd.CDB)))
	b = append(b, byte(len(device)), 0,
		byte(len(n.InitiatorName)), byte(len(n.InitiatorPort)), byte(len(n.TargetName)), byte(len(n.TargetPort)))
	b = be.AppendUint16(b, n.RelativePort)
	b = be.AppendUint16(b, n.PortGroup)
	b = append(b, n.InitiatorName...)
	b = append(b, n.InitiatorPort...)
	b = append(b, n.TargetName...)
	b = append(b, n.TargetPort...)
	b = append(b, device...)
	return append(b, cmd.CDB...), nil
}

func checkRequest(device string, cmd *scsi.Command, n *scsi.Nexus) error {
	switch {
	case len(cmd.CDB) > MaxCDBLen:
		return fmt.Errorf("forward: %d-byte CDB", len(cmd.CDB))
	case len(cmd.DataIn) > MaxDataLen || len(cmd.DataOut) > MaxDataLen:
		return fmt.Errorf("forward: %d bytes in, %d out: beyond the maximum transfer", len(cmd.DataIn), len(cmd.DataOut))
	}
	return checkNames(device, n)
}

// checkNames checks the device name and the names of the nexus n against
// what their one-byte length fields can say.
func checkNames(device string, n *scsi.Nexus) error {
	if len(device) == 0 || len(device) > MaxNameLen {
		return fmt.Errorf("forward: device name of %d bytes", len(device))
	}
	for _, s := range [...]string{n.InitiatorName, n.InitiatorPort, n.TargetName, n.TargetPort} {
		if len(s) > MaxNameLen {
			return fmt.Errorf("forward: nexus name of %d bytes", len(s))
		}
	}
	return nil
}

// DecodeRequest decodes the payload of the request frame h.
func DecodeRequest(h Header, payload []byte) (Request, error) {
	if h.Type != FrameRequest || int(h.Length) != len(payload) || len(payload) < requestFixedLen {
		return Request{}, protoErr("request payload of %d bytes", len(payload))
	}
	var r Request
	f, err := r.decodeFixed(h, payload[:requestFixedLen])
	if err != nil {
		return Request{}, err
	}
	meta := requestFixedLen + f.varLen
	if err := r.decodeVar(payload[:meta]); err != nil {
		return Request{}, err
	}
	r.DataOut = payload[meta:]
	return r, nil
}

// decodeFixed reads the fixed part b of a request and checks that the
// lengths it announces add up to h.Length.
func (r *Request) decodeFixed(h Header, b []byte) (requestFixed, error) {
	r.Tag = h.Tag
	r.Epoch = be.Uint64(b[0:])
	r.LUN = be.Uint64(b[8:])
	r.TaskTag = be.Uint32(b[16:])
	r.DataInLen = be.Uint32(b[20:])
	f := requestFixed{dataOutLen: be.Uint32(b[24:])}
	cdbLen, devLen := int(be.Uint16(b[28:])), int(b[30])
	switch {
	case r.DataInLen > MaxDataLen || f.dataOutLen > MaxDataLen:
		return f, protoErr("request for %d bytes in, %d out", r.DataInLen, f.dataOutLen)
	case cdbLen > MaxCDBLen:
		return f, protoErr("%d-byte CDB", cdbLen)
	case devLen == 0:
		return f, protoErr("request without a device name")
	case b[31] != 0:
		return f, protoErr("reserved request byte set")
	}
	f.varLen = int(b[32]) + int(b[33]) + int(b[34]) + int(b[35]) + devLen + cdbLen
	if uint64(requestFixedLen)+uint64(f.varLen)+uint64(f.dataOutLen) != uint64(h.Length) {
		return f, protoErr("request fields add up to %d bytes, frame has %d",
			requestFixedLen+f.varLen+int(f.dataOutLen), h.Length)
	}
	return f, nil
}

// decodeVar reads the names, device and CDB; meta is the payload up to the
// data-out, whose fixed part decodeFixed has checked.
func (r *Request) decodeVar(meta []byte) error {
	off := requestFixedLen
	next := func(n int) []byte {
		s := meta[off : off+n : off+n]
		off += n
		return s
	}
	r.Nexus.RelativePort = be.Uint16(meta[36:])
	r.Nexus.PortGroup = be.Uint16(meta[38:])
	r.Nexus.InitiatorName = next(int(meta[32]))
	r.Nexus.InitiatorPort = next(int(meta[33]))
	r.Nexus.TargetName = next(int(meta[34]))
	r.Nexus.TargetPort = next(int(meta[35]))
	r.nexusRaw = meta[nexusOffset:off]
	r.Device = next(int(meta[30]))
	r.CDB = next(int(be.Uint16(meta[28:])))
	if off != len(meta) {
		return protoErr("request metadata of %d bytes, fields take %d", len(meta), off)
	}
	return nil
}

// TaskMgmt is a decoded task management frame; its slices alias the
// payload.
type TaskMgmt struct {
	Tag      uint32
	Function TMFunction
	Epoch    uint64
	Device   []byte
	Nexus    Nexus
	// nexusRaw is the nexus part of the payload: it identifies the Nexus.
	nexusRaw []byte
}

// AppendTaskMgmt appends a whole task management frame asking the owner of
// device to perform fn for the nexus n (nil: no nexus).
func AppendTaskMgmt(b []byte, tag uint32, fn TMFunction, device string, epoch uint64, n *scsi.Nexus) ([]byte, error) {
	var nx scsi.Nexus
	if n != nil {
		nx = *n
	}
	if fn != TMLogicalUnitReset && fn != TMNexusLoss {
		return b, fmt.Errorf("forward: unknown %s", fn)
	}
	if err := checkNames(device, &nx); err != nil {
		return b, err
	}
	names := len(nx.InitiatorName) + len(nx.InitiatorPort) + len(nx.TargetName) + len(nx.TargetPort)
	length := taskMgmtFixedLen + names + len(device)
	b = AppendHeader(b, Header{Type: FrameTaskMgmt, Tag: tag, Length: uint32(length)})
	b = be.AppendUint64(b, epoch)
	b = append(b, byte(fn), byte(len(device)), 0, 0,
		byte(len(nx.InitiatorName)), byte(len(nx.InitiatorPort)), byte(len(nx.TargetName)), byte(len(nx.TargetPort)))
	b = be.AppendUint16(b, nx.RelativePort)
	b = be.AppendUint16(b, nx.PortGroup)
	b = append(b, nx.InitiatorName...)
	b = append(b, nx.InitiatorPort...)
	b = append(b, nx.TargetName...)
	b = append(b, nx.TargetPort...)
	return append(b, device...), nil
}

// DecodeTaskMgmt decodes the payload of the task management frame h.
func DecodeTaskMgmt(h Header, payload []byte) (TaskMgmt, error) {
	if h.Type != FrameTaskMgmt || int(h.Length) != len(payload) ||
		len(payload) < taskMgmtFixedLen || len(payload) > maxTaskMgmtLen {
		return TaskMgmt{}, protoErr("task management payload of %d bytes", len(payload))
	}
	m := TaskMgmt{Tag: h.Tag, Epoch: be.Uint64(payload), Function: TMFunction(payload[8])}
	devLen := int(payload[9])
	switch {
	case m.Function != TMLogicalUnitReset && m.Function != TMNexusLoss:
		return TaskMgmt{}, protoErr("unknown %s", m.Function)
	case devLen == 0:
		return TaskMgmt{}, protoErr("task management without a device name")
	case be.Uint16(payload[10:]) != 0:
		return TaskMgmt{}, protoErr("reserved task management bytes set")
	}
	l := payload[tmNexusOffset:]
	if want := taskMgmtFixedLen + int(l[0]) + int(l[1]) + int(l[2]) + int(l[3]) + devLen; want != len(payload) {
		return TaskMgmt{}, protoErr("task management fields add up to %d bytes, frame has %d", want, len(payload))
	}
	off := taskMgmtFixedLen
	next := func(n int) []byte {
		s := payload[off : off+n : off+n]
		off += n
		return s
	}
	m.Nexus.RelativePort = be.Uint16(l[4:])
	m.Nexus.PortGroup = be.Uint16(l[6:])
	m.Nexus.InitiatorName = next(int(l[0]))
	m.Nexus.InitiatorPort = next(int(l[1]))
	m.Nexus.TargetName = next(int(l[2]))
	m.Nexus.TargetPort = next(int(l[3]))
	m.nexusRaw = payload[tmNexusOffset:off]
	m.Device = next(devLen)
	return m, nil
}

// Response is a decoded response frame; its slices alias the payload.
type Response struct {
	Tag      uint32
	Status   scsi.Status
	Sense    []byte
	DataIn   []byte
	Transfer int
}

// responseFixed is the fixed part of a response.
type responseFixed struct {
	status   scsi.Status
	senseLen int
	dataLen  int
	transfer int
}

// AppendResponse appends the header and payload of the response to tag,
// all but the data-in (res.DataInLen bytes), which the caller sends right
// after. res must come from scsi: its sense fits MaxSenseLen.
func AppendResponse(b []byte, tag uint32, res *scsi.Result) []byte {
	sense := res.Sense[:min(len(res.Sense), MaxSenseLen)]
	length := responseFixedLen + len(sense) + res.DataInLen
	b = AppendHeader(b, Header{Type: FrameResponse, Tag: tag, Length: uint32(length)})
	b = append(b, byte(res.Status), byte(len(sense)), 0, 0)
	b = be.AppendUint32(b, uint32(res.DataInLen))
	b = be.AppendUint64(b, uint64(res.Transfer))
	return append(b, sense...)
}

// DecodeResponse decodes the payload of the response frame h.
func DecodeResponse(h Header, payload []byte) (Response, error) {
	if h.Type != FrameResponse || int(h.Length) != len(payload) || len(payload) < responseFixedLen {
		return Response{}, protoErr("response payload of %d bytes", len(payload))
	}
	f, err := decodeResponseFixed(h, payload[:responseFixedLen])
	if err != nil {
		return Response{}, err
	}
	p := payload[responseFixedLen:]
	return Response{
		Tag: h.Tag, Status: f.status, Transfer: f.transfer,
		Sense:  p[:f.senseLen:f.senseLen],
		DataIn: p[f.senseLen:],
	}, nil
}

// decodeResponseFixed reads the fixed part b of a response and checks the
// lengths it announces against h.Length.
func decodeResponseFixed(h Header, b []byte) (responseFixed, error) {
	f := responseFixed{status: scsi.Status(b[0]), senseLen: int(b[1]), dataLen: int(be.Uint32(b[4:]))}
	transfer := be.Uint64(b[8:])
	switch {
	case be.Uint16(b[2:]) != 0:
		return f, protoErr("reserved response bytes set")
	case f.senseLen > MaxSenseLen:
		return f, protoErr("%d bytes of sense", f.senseLen)
	case f.dataLen > MaxDataLen:
		return f, protoErr("%d bytes of data-in", f.dataLen)
	case transfer > maxTransfer:
		return f, protoErr("transfer of %d bytes", transfer)
	case responseFixedLen+f.senseLen+f.dataLen != int(h.Length):
		return f, protoErr("response fields add up to %d bytes, frame has %d",
			responseFixedLen+f.senseLen+f.dataLen, h.Length)
	}
	f.transfer = int(transfer)
	return f, nil
}

// ErrorFrame is a decoded error frame.
type ErrorFrame struct {
	Tag  uint32
	Code ErrorCode
	// Epoch is the epoch the server is in for the device, for diagnosis.
	Epoch uint64
}

// AppendError appends an error frame answering tag.
func AppendError(b []byte, e ErrorFrame) []byte {
	b = AppendHeader(b, Header{Type: FrameError, Tag: e.Tag, Length: errorPayloadLen})
	b = be.AppendUint16(b, uint16(e.Code))
	b = be.AppendUint16(b, 0)
	return be.AppendUint64(b, e.Epoch)
}

// DecodeError decodes the payload of the error frame h.
func DecodeError(h Header, payload []byte) (ErrorFrame, error) {
	if h.Type != FrameError || len(payload) != errorPayloadLen || int(h.Length) != len(payload) {
		return ErrorFrame{}, protoErr("error payload of %d bytes", len(payload))
	}
	e := ErrorFrame{Tag: h.Tag, Code: ErrorCode(be.Uint16(payload)), Epoch: be.Uint64(payload[4:])}
	if e.Code == 0 || be.Uint16(payload[2:]) != 0 {
		return ErrorFrame{}, protoErr("error code 0 or reserved bytes set")
	}
	return e, nil
}
