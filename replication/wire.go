package replication

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hatarget/hatarget/target/nodeconn"
)

// Wire format, all integers big-endian.
//
// A connection starts with a four-message handshake, client (the owner)
// first:
//
//	client hello:  magic[4] "HTRP" | version u16 | flags u16 | client nonce[32] | name length u8 | name
//	server hello:  magic[4] "HTRP" | version u16 | flags u16 | server nonce[32]
//	client proof:  proof[32]
//	server verdict: status u8 | reserved[3] | proof[32]
//
// The client announces the highest version it speaks and its node name;
// the server answers the version the connection uses, or 0 to refuse. Flag
// bit 0 (FlagAuth) says "I have a cluster secret": both sides must agree,
// and a side that sees a mismatch says so and closes. With a secret the
// client proves it knows it with HMAC-SHA256(secret, server nonce || name)
// and the server answers with HMAC-SHA256(secret, "HTRP replica" || client
// nonce || server nonce || name), so neither side can be impersonated
// without the secret. Without one both proofs are zeros. The verdict's
// status is VerdictOK or why the server refuses; it then closes.
//
// Then both sides send frames, a fixed header and a payload:
//
//	header: type u8 | flags u8 | reserved u16 | tag u32 | length u32
//
// The client picks the tag of each request; the server answers every
// request with one Response carrying the same tag, in any order. Ping and
// Pong carry an arbitrary tag and no payload. Flags and reserved fields
// are zero unless a frame gives them a meaning, and decoders refuse
// anything else, so that a later version can.
//
// Every request payload starts with the same 12 bytes:
//
//	prefix: epoch u64 | device length u8 | flags u8 | reserved u16
//
// followed by its own fixed fields, then the device name, then data:
//
//	write:    prefix | seq u64 | offset u64 | device | data       (flags bit 0: durable, FUA)
//	unmap:    prefix | seq u64 | offset u64 | length u64 | device
//	flush:    prefix | seq u64 | device
//	seal:     prefix | device
//	read:     prefix | offset u64 | length u32 | reserved u32 | device
//	checksum: prefix | offset u64 | length u64 | chunk u32 | reserved u32 | device
//	activity: prefix | device
//
//	response: status u8 | reserved[3] | epoch u64 | payload
//
// A response's payload is, for StatusOK, the data of a read, the SHA-256
// sums of a checksum request (32 bytes per chunk) or the extents of an
// activity request (offset u64 | length u64 each), and empty otherwise; for
// a refusal, an optional human-readable message. Its epoch is the highest
// epoch the replica has seen for the device (for StatusStaleEpoch: the
// epoch that made it refuse).

// Magic opens both hellos.
const Magic = "HTRP"

// Version is the protocol version this package speaks.
const Version = 1

// Sizes and limits. A frame longer than its type allows, or with a field
// beyond its limit, is a protocol error that ends the connection: the
// limits bound what a peer can make us buffer.
const (
	NonceLen       = 32
	ProofLen       = sha256.Size
	ClientHelloLen = 4 + 2 + 2 + NonceLen + 1 // without the name
	ServerHelloLen = 4 + 2 + 2 + NonceLen
	VerdictLen     = 4 + ProofLen
	HeaderLen      = nodeconn.HeaderLen
	MaxNameLen     = 255
	MaxDataLen     = 8 << 20
	MaxMessageLen  = 1024
	MinChunk       = 512
	MaxChecksums   = 1 << 16
	// MaxChecksumLen bounds the bytes one checksum request makes the
	// replica read, and so the time it takes.
	MaxChecksumLen  = 1 << 30
	MaxExtents      = 1 << 13
	ExtentLen       = 16
	ChecksumLen     = sha256.Size
	prefixLen       = 12
	writeFixedLen   = prefixLen + 16
	unmapFixedLen   = prefixLen + 24
	flushFixedLen   = prefixLen + 8
	sealFixedLen    = prefixLen
	readFixedLen    = prefixLen + 16
	checksumFixed   = prefixLen + 24
	activityFixed   = prefixLen
	responseFixed   = 12
	maxRequestMeta  = checksumFixed + MaxNameLen // the longest request without data
	maxResponseData = MaxDataLen
	// MaxOffset bounds offsets and offset+length: no device is that
	// large, and it keeps every sum in an int64.
	MaxOffset = 1 << 62
)

// FlagAuth in a hello says the sender has a cluster secret.
const FlagAuth = 1

// flagDurable in a write's prefix asks for the data on stable storage
// before the answer (FUA).
const flagDurable = 1

// Verdict is the server's answer to the client's proof.
type Verdict uint8

const (
	VerdictOK Verdict = iota
	// VerdictBadProof: the client's proof does not match the secret.
	VerdictBadProof
	// VerdictBadName: the client's node name is empty or not acceptable.
	VerdictBadName
)

func (v Verdict) String() string {
	switch v {
	case VerdictOK:
		return "accepted"
	case VerdictBadProof:
		return "authentication failed (wrong cluster secret)"
	case VerdictBadName:
		return "node name refused"
	}
	return fmt.Sprintf("verdict %d", uint8(v))
}

// FrameType is the first byte of a frame header.
type FrameType uint8

const (
	FrameWrite FrameType = 1 + iota
	FrameUnmap
	FrameFlush
	FrameSeal
	FrameRead
	FrameChecksum
	FrameActivity
	FrameResponse
	FramePing
	FramePong
)

func (t FrameType) String() string {
	switch t {
	case FrameWrite:
		return "write"
	case FrameUnmap:
		return "unmap"
	case FrameFlush:
		return "flush"
	case FrameSeal:
		return "seal"
	case FrameRead:
		return "read"
	case FrameChecksum:
		return "checksum"
	case FrameActivity:
		return "activity"
	case FrameResponse:
		return "response"
	case FramePing:
		return "ping"
	case FramePong:
		return "pong"
	}
	return fmt.Sprintf("frame type %d", uint8(t))
}

// isRequest reports whether t is a request a client sends.
func (t FrameType) isRequest() bool { return t >= FrameWrite && t <= FrameActivity }

// Status is a response's verdict on its request.
type Status uint8

const (
	StatusOK Status = iota
	// StatusStaleEpoch: the request's epoch is older than the highest the
	// replica has seen for the device; the response carries that epoch.
	StatusStaleEpoch
	// StatusNotOwner: the connection's node is not the device's owner.
	StatusNotOwner
	// StatusUnknownDevice: the replica holds no device of that name.
	StatusUnknownDevice
	// StatusIOError: the replica's storage failed the request.
	StatusIOError
	// StatusBadRequest: the request is well-formed but cannot apply (a
	// range beyond the device, say).
	StatusBadRequest
	statusLimit
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusStaleEpoch:
		return "stale epoch"
	case StatusNotOwner:
		return "not owner"
	case StatusUnknownDevice:
		return "unknown device"
	case StatusIOError:
		return "I/O error"
	case StatusBadRequest:
		return "bad request"
	}
	return fmt.Sprintf("status %d", uint8(s))
}

// ErrProtocol wraps every decoding error: the peer broke the protocol and
// the connection cannot continue.
var ErrProtocol = errors.New("replication: protocol error")

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

var be = binary.BigEndian

// ClientHello is the first message of a connection.
type ClientHello struct {
	Version uint16
	Flags   uint16
	Nonce   [NonceLen]byte
	Name    []byte
}

// AppendClientHello appends h; the name must be 1..MaxNameLen bytes.
func AppendClientHello(b []byte, h ClientHello) ([]byte, error) {
	if err := checkName("node", len(h.Name)); err != nil {
		return b, err
	}
	b = append(b, Magic...)
	b = be.AppendUint16(b, h.Version)
	b = be.AppendUint16(b, h.Flags)
	b = append(b, h.Nonce[:]...)
	b = append(b, byte(len(h.Name)))
	return append(b, h.Name...), nil
}

// DecodeClientHello decodes a whole client hello; its name aliases b. The
// length of the name is byte ClientHelloLen-1, so a reader reads
// ClientHelloLen bytes, then the name.
func DecodeClientHello(b []byte) (ClientHello, error) {
	if len(b) < ClientHelloLen {
		return ClientHello{}, protoErr("client hello of %d bytes", len(b))
	}
	if string(b[:4]) != Magic {
		return ClientHello{}, protoErr("bad magic %q", b[:4])
	}
	h := ClientHello{Version: be.Uint16(b[4:]), Flags: be.Uint16(b[6:])}
	copy(h.Nonce[:], b[8:])
	n := int(b[ClientHelloLen-1])
	switch {
	case h.Flags&^FlagAuth != 0:
		return ClientHello{}, protoErr("unknown hello flags %#x", h.Flags)
	case n == 0:
		return ClientHello{}, protoErr("client hello without a node name")
	case len(b) != ClientHelloLen+n:
		return ClientHello{}, protoErr("client hello of %d bytes, its name says %d", len(b), ClientHelloLen+n)
	}
	h.Name = b[ClientHelloLen:len(b):len(b)]
	return h, nil
}

// ServerHello answers a client hello.
type ServerHello struct {
	// Version is the version the connection uses, 0 when refused.
	Version uint16
	Flags   uint16
	Nonce   [NonceLen]byte
}

// AppendServerHello appends h.
func AppendServerHello(b []byte, h ServerHello) []byte {
	b = append(b, Magic...)
	b = be.AppendUint16(b, h.Version)
	b = be.AppendUint16(b, h.Flags)
	return append(b, h.Nonce[:]...)
}

// DecodeServerHello decodes a server hello.
func DecodeServerHello(b []byte) (ServerHello, error) {
	if len(b) != ServerHelloLen {
		return ServerHello{}, protoErr("server hello of %d bytes", len(b))
	}
	if string(b[:4]) != Magic {
		return ServerHello{}, protoErr("bad magic %q", b[:4])
	}
	h := ServerHello{Version: be.Uint16(b[4:]), Flags: be.Uint16(b[6:])}
	if h.Flags&^FlagAuth != 0 {
		return ServerHello{}, protoErr("unknown hello flags %#x", h.Flags)
	}
	copy(h.Nonce[:], b[8:])
	return h, nil
}

// ServerVerdict ends the handshake.
type ServerVerdict struct {
	Status Verdict
	// Proof is the server's proof of the secret, zeros without one or
	// when refusing.
	Proof [ProofLen]byte
}

// AppendVerdict appends v.
func AppendVerdict(b []byte, v ServerVerdict) []byte {
	b = append(b, byte(v.Status), 0, 0, 0)
	return append(b, v.Proof[:]...)
}

// DecodeVerdict decodes a server verdict.
func DecodeVerdict(b []byte) (ServerVerdict, error) {
	if len(b) != VerdictLen {
		return ServerVerdict{}, protoErr("verdict of %d bytes", len(b))
	}
	v := ServerVerdict{Status: Verdict(b[0])}
	if b[1] != 0 || b[2] != 0 || b[3] != 0 {
		return ServerVerdict{}, protoErr("reserved verdict bytes set")
	}
	if v.Status > VerdictBadName {
		return ServerVerdict{}, protoErr("unknown %s", v.Status)
	}
	copy(v.Proof[:], b[4:])
	return v, nil
}

// ClientProof is what a client with secret sends for the server nonce
// and its name: HMAC-SHA256(secret, nonce || name).
func ClientProof(secret string, nonce [NonceLen]byte, name []byte) [ProofLen]byte {
	var p [ProofLen]byte
	if secret == "" {
		return p
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(nonce[:])
	m.Write(name)
	m.Sum(p[:0])
	return p
}

// serverProofLabel separates the server's proof from a client's: a client
// proof starts with a random nonce, a server proof with this.
const serverProofLabel = "HTRP replica"

// ServerProof is what a server with secret answers a client that proved
// itself: HMAC-SHA256(secret, "HTRP replica" || client nonce || server
// nonce || name).
func ServerProof(secret string, client, server [NonceLen]byte, name []byte) [ProofLen]byte {
	var p [ProofLen]byte
	if secret == "" {
		return p
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(serverProofLabel))
	m.Write(client[:])
	m.Write(server[:])
	m.Write(name)
	m.Sum(p[:0])
	return p
}

// Header is a frame header (nodeconn.HeaderLen bytes).
type Header = nodeconn.Header[FrameType]

// AppendHeader appends h.
func AppendHeader(b []byte, h Header) []byte { return nodeconn.AppendHeader(b, h) }

// DecodeHeader decodes a frame header and checks its length against what
// its type allows, so that the reader knows what it may buffer before
// reading the payload.
func DecodeHeader(b []byte) (Header, error) {
	return nodeconn.DecodeHeader(b, payloadBounds, ErrProtocol)
}

// payloadBounds is the range of payload lengths frames of type t may have.
func payloadBounds(t FrameType) (lo, hi uint32, ok bool) {
	switch t {
	case FrameWrite:
		return writeFixedLen + 1, writeFixedLen + MaxNameLen + MaxDataLen, true
	case FrameUnmap:
		return unmapFixedLen + 1, unmapFixedLen + MaxNameLen, true
	case FrameFlush:
		return flushFixedLen + 1, flushFixedLen + MaxNameLen, true
	case FrameSeal:
		return sealFixedLen + 1, sealFixedLen + MaxNameLen, true
	case FrameRead:
		return readFixedLen + 1, readFixedLen + MaxNameLen, true
	case FrameChecksum:
		return checksumFixed + 1, checksumFixed + MaxNameLen, true
	case FrameActivity:
		return activityFixed + 1, activityFixed + MaxNameLen, true
	case FrameResponse:
		return responseFixed, responseFixed + maxResponseData, true
	case FramePing, FramePong:
		return 0, 0, true
	}
	return 0, 0, false
}

// AppendPing appends a ping (pong when pong is set) with tag.
func AppendPing(b []byte, tag uint32, pong bool) []byte {
	t := FramePing
	if pong {
		t = FramePong
	}
	return AppendHeader(b, Header{Type: t, Tag: tag})
}

// Write is a decoded write request; its slices alias the payload.
type Write struct {
	Tag     uint32
	Device  []byte
	Epoch   uint64
	Seq     uint64
	Offset  int64
	Durable bool
	Data    []byte
}

// Unmap is a decoded unmap request.
type Unmap struct {
	Tag    uint32
	Device []byte
	Epoch  uint64
	Seq    uint64
	Offset int64
	Length int64
}

// Flush is a decoded flush request.
type Flush struct {
	Tag    uint32
	Device []byte
	Epoch  uint64
	Seq    uint64
}

// Seal is a decoded seal request: from now on the replica refuses every
// request of an older epoch for the device.
type Seal struct {
	Tag    uint32
	Device []byte
	Epoch  uint64
}

// Read is a decoded read request.
type Read struct {
	Tag    uint32
	Device []byte
	Epoch  uint64
	Offset int64
	Length int
}

// Checksum is a decoded checksum request: the SHA-256 of each chunk of
// [Offset, Offset+Length), the last one possibly shorter.
type Checksum struct {
	Tag    uint32
	Device []byte
	Epoch  uint64
	Offset int64
	Length int64
	Chunk  int
}

// Chunks is how many sums the request asks for.
func (c Checksum) Chunks() int { return chunks(c.Length, c.Chunk) }

func chunks(length int64, chunk int) int {
	return int((length + int64(chunk) - 1) / int64(chunk))
}

// Activity is a decoded request for the replica's activity log.
type Activity struct {
	Tag    uint32
	Device []byte
	Epoch  uint64
}

// Response is a decoded response; Payload aliases the frame.
type Response struct {
	Tag     uint32
	Status  Status
	Epoch   uint64
	Payload []byte
}

func checkName(what string, n int) error {
	if n == 0 || n > MaxNameLen {
		return fmt.Errorf("replication: %s name of %d bytes: want 1 to %d", what, n, MaxNameLen)
	}
	return nil
}

func checkRange(off, length int64) error {
	if off < 0 || length < 0 || off > MaxOffset || length > MaxOffset-off {
		return fmt.Errorf("replication: range of %d bytes at %d", length, off)
	}
	return nil
}

// appendPrefix appends the header of a request whose payload is fixed
// bytes of fixed fields plus the device name plus extra bytes of data, and
// the common prefix.
func appendPrefix(b []byte, t FrameType, tag uint32, device string, epoch uint64, flags byte, fixed, extra int) ([]byte, error) {
	if err := checkName("device", len(device)); err != nil {
		return b, err
	}
	b = AppendHeader(b, Header{Type: t, Tag: tag, Length: uint32(fixed + len(device) + extra)})
	b = be.AppendUint64(b, epoch)
	return append(b, byte(len(device)), flags, 0, 0), nil
}

// AppendWrite appends the header and fixed part of a write, and the device
// name: everything but the data (len(w.Data) bytes), which the caller
// sends right after, as its own writev segment. w.Device is ignored.
func AppendWrite(b []byte, w Write, device string) ([]byte, error) {
	if len(w.Data) > MaxDataLen {
		return b, fmt.Errorf("replication: write of %d bytes: at most %d", len(w.Data), MaxDataLen)
	}
	if err := checkRange(w.Offset, int64(len(w.Data))); err != nil {
		return b, err
	}
	var flags byte
	if w.Durable {
		flags = flagDurable
	}
	b, err := appendPrefix(b, FrameWrite, w.Tag, device, w.Epoch, flags, writeFixedLen, len(w.Data))
	if err != nil {
		return b, err
	}
	b = be.AppendUint64(b, w.Seq)
	b = be.AppendUint64(b, uint64(w.Offset))
	return append(b, device...), nil
}

// AppendUnmap appends a whole unmap frame.
func AppendUnmap(b []byte, u Unmap, device string) ([]byte, error) {
	if err := checkRange(u.Offset, u.Length); err != nil {
		return b, err
	}
	b, err := appendPrefix(b, FrameUnmap, u.Tag, device, u.Epoch, 0, unmapFixedLen, 0)
	if err != nil {
		return b, err
	}
	b = be.AppendUint64(b, u.Seq)
	b = be.AppendUint64(b, uint64(u.Offset))
	b = be.AppendUint64(b, uint64(u.Length))
	return append(b, device...), nil
}

// AppendFlush appends a whole flush frame.
func AppendFlush(b []byte, f Flush, device string) ([]byte, error) {
	b, err := appendPrefix(b, FrameFlush, f.Tag, device, f.Epoch, 0, flushFixedLen, 0)
	if err != nil {
		return b, err
	}
	b = be.AppendUint64(b, f.Seq)
	return append(b, device...), nil
}

// AppendSeal appends a whole seal frame.
func AppendSeal(b []byte, s Seal, device string) ([]byte, error) {
	b, err := appendPrefix(b, FrameSeal, s.Tag, device, s.Epoch, 0, sealFixedLen, 0)
	if err != nil {
		return b, err
	}
	return append(b, device...), nil
}

// AppendRead appends a whole read frame.
func AppendRead(b []byte, r Read, device string) ([]byte, error) {
	if r.Length <= 0 || r.Length > MaxDataLen {
		return b, fmt.Errorf("replication: read of %d bytes: want 1 to %d", r.Length, MaxDataLen)
	}
	if err := checkRange(r.Offset, int64(r.Length)); err != nil {
		return b, err
	}
	b, err := appendPrefix(b, FrameRead, r.Tag, device, r.Epoch, 0, readFixedLen, 0)
	if err != nil {
		return b, err
	}
	b = be.AppendUint64(b, uint64(r.Offset))
	b = be.AppendUint32(b, uint32(r.Length))
	b = be.AppendUint32(b, 0)
	return append(b, device...), nil
}

// checkChecksum checks a checksum request's geometry.
func checkChecksum(off, length int64, chunk int) error {
	if chunk < MinChunk || chunk > MaxDataLen {
		return fmt.Errorf("replication: checksum chunk of %d bytes: want %d to %d", chunk, MinChunk, MaxDataLen)
	}
	if length <= 0 || length > MaxChecksumLen {
		return fmt.Errorf("replication: checksum of %d bytes: want 1 to %d", length, MaxChecksumLen)
	}
	if err := checkRange(off, length); err != nil {
		return err
	}
	if n := chunks(length, chunk); n > MaxChecksums {
		return fmt.Errorf("replication: %d checksums in one request: at most %d", n, MaxChecksums)
	}
	return nil
}

// AppendChecksum appends a whole checksum frame.
func AppendChecksum(b []byte, c Checksum, device string) ([]byte, error) {
	if err := checkChecksum(c.Offset, c.Length, c.Chunk); err != nil {
		return b, err
	}
	b, err := appendPrefix(b, FrameChecksum, c.Tag, device, c.Epoch, 0, checksumFixed, 0)
	if err != nil {
		return b, err
	}
	b = be.AppendUint64(b, uint64(c.Offset))
	b = be.AppendUint64(b, uint64(c.Length))
	b = be.AppendUint32(b, uint32(c.Chunk))
	b = be.AppendUint32(b, 0)
	return append(b, device...), nil
}

// AppendActivity appends a whole activity frame.
func AppendActivity(b []byte, a Activity, device string) ([]byte, error) {
	b, err := appendPrefix(b, FrameActivity, a.Tag, device, a.Epoch, 0, activityFixed, 0)
	if err != nil {
		return b, err
	}
	return append(b, device...), nil
}

// AppendResponse appends the header and fixed part of a response whose
// payload (n bytes) the caller sends right after.
func AppendResponse(b []byte, tag uint32, status Status, epoch uint64, n int) []byte {
	b = AppendHeader(b, Header{Type: FrameResponse, Tag: tag, Length: uint32(responseFixed + n)})
	b = append(b, byte(status), 0, 0, 0)
	return be.AppendUint64(b, epoch)
}

// prefix is the decoded common start of a request.
type prefix struct {
	epoch  uint64
	devLen int
	flags  byte
}

// decodePrefix checks the start b of a request payload of type t (at
// least fixed bytes) against its fixed length and the device name length
// it announces. exact says the payload (h.Length bytes) holds nothing
// after the device name. b holds the device name too when it is at least
// fixed plus the name's length.
func decodePrefix(h Header, t FrameType, b []byte, fixed int, exact bool) (prefix, error) {
	if h.Type != t || len(b) < fixed {
		return prefix{}, protoErr("%s payload of %d bytes", t, len(b))
	}
	p := prefix{epoch: be.Uint64(b), devLen: int(b[8]), flags: b[9]}
	total := int(h.Length)
	switch {
	case p.devLen == 0:
		return p, protoErr("%s without a device name", t)
	case be.Uint16(b[10:]) != 0:
		return p, protoErr("%s: reserved bytes set", t)
	case exact && total != fixed+p.devLen:
		return p, protoErr("%s of %d bytes, its fields say %d", t, total, fixed+p.devLen)
	case !exact && total < fixed+p.devLen:
		return p, protoErr("%s of %d bytes, shorter than its device name", t, total)
	}
	if t == FrameWrite {
		if p.flags&^flagDurable != 0 {
			return p, protoErr("%s: unknown flags %#x", t, p.flags)
		}
	} else if p.flags != 0 {
		return p, protoErr("%s: flags set", t)
	}
	return p, nil
}

// deviceName returns the device name of a request payload b whose prefix
// is p, or an error when b does not hold it.
func deviceName(t FrameType, b []byte, fixed int, p prefix) ([]byte, error) {
	end := fixed + p.devLen
	if len(b) < end {
		return nil, protoErr("%s: %d bytes, the device name ends at %d", t, len(b), end)
	}
	return b[fixed:end:end], nil
}

// payloadOf checks that payload is the whole payload of h.
func payloadOf(h Header, t FrameType, payload []byte) error {
	if h.Type != t || int(h.Length) != len(payload) {
		return protoErr("%s payload of %d bytes, header says %d", t, len(payload), h.Length)
	}
	return nil
}

// DecodeWrite decodes the payload of the write frame h.
func DecodeWrite(h Header, payload []byte) (Write, error) {
	if err := payloadOf(h, FrameWrite, payload); err != nil {
		return Write{}, err
	}
	w, err := decodeWriteMeta(h, payload)
	if err != nil {
		return Write{}, err
	}
	w.Data = payload[writeFixedLen+len(w.Device):]
	return w, nil
}

// writeDataLen is the length of the data of the write frame h whose
// metadata w decoded.
func writeDataLen(h Header, w *Write) int { return int(h.Length) - writeFixedLen - len(w.Device) }

// decodeWriteMeta decodes a write's fixed part and device name, the start
// of meta, leaving Data nil: a reader reads them first and the data
// (writeDataLen bytes) straight into a pooled buffer.
func decodeWriteMeta(h Header, meta []byte) (Write, error) {
	p, err := decodePrefix(h, FrameWrite, meta, writeFixedLen, false)
	if err != nil {
		return Write{}, err
	}
	w := Write{Tag: h.Tag, Epoch: p.epoch, Seq: be.Uint64(meta[12:]), Durable: p.flags&flagDurable != 0}
	if w.Offset, err = decodeOffset(FrameWrite, be.Uint64(meta[20:])); err != nil {
		return Write{}, err
	}
	if w.Device, err = deviceName(FrameWrite, meta, writeFixedLen, p); err != nil {
		return Write{}, err
	}
	n := writeDataLen(h, &w)
	if n > MaxDataLen || checkRange(w.Offset, int64(n)) != nil {
		return Write{}, protoErr("write of %d bytes at %d", n, w.Offset)
	}
	return w, nil
}

func decodeOffset(t FrameType, v uint64) (int64, error) {
	if v > MaxOffset {
		return 0, protoErr("%s at offset %d", t, v)
	}
	return int64(v), nil
}

// DecodeUnmap decodes the payload of the unmap frame h.
func DecodeUnmap(h Header, payload []byte) (Unmap, error) {
	if err := payloadOf(h, FrameUnmap, payload); err != nil {
		return Unmap{}, err
	}
	p, err := decodePrefix(h, FrameUnmap, payload, unmapFixedLen, true)
	if err != nil {
		return Unmap{}, err
	}
	u := Unmap{Tag: h.Tag, Epoch: p.epoch, Seq: be.Uint64(payload[12:])}
	off, n := be.Uint64(payload[20:]), be.Uint64(payload[28:])
	if off > MaxOffset || n > MaxOffset-off {
		return Unmap{}, protoErr("unmap of %d bytes at %d", n, off)
	}
	u.Offset, u.Length = int64(off), int64(n)
	u.Device, err = deviceName(FrameUnmap, payload, unmapFixedLen, p)
	return u, err
}

// DecodeFlush decodes the payload of the flush frame h.
func DecodeFlush(h Header, payload []byte) (Flush, error) {
	if err := payloadOf(h, FrameFlush, payload); err != nil {
		return Flush{}, err
	}
	p, err := decodePrefix(h, FrameFlush, payload, flushFixedLen, true)
	if err != nil {
		return Flush{}, err
	}
	dev, err := deviceName(FrameFlush, payload, flushFixedLen, p)
	return Flush{Tag: h.Tag, Epoch: p.epoch, Seq: be.Uint64(payload[12:]), Device: dev}, err
}

// DecodeSeal decodes the payload of the seal frame h.
func DecodeSeal(h Header, payload []byte) (Seal, error) {
	if err := payloadOf(h, FrameSeal, payload); err != nil {
		return Seal{}, err
	}
	p, err := decodePrefix(h, FrameSeal, payload, sealFixedLen, true)
	if err != nil {
		return Seal{}, err
	}
	dev, err := deviceName(FrameSeal, payload, sealFixedLen, p)
	return Seal{Tag: h.Tag, Epoch: p.epoch, Device: dev}, err
}

// DecodeRead decodes the payload of the read frame h.
func DecodeRead(h Header, payload []byte) (Read, error) {
	if err := payloadOf(h, FrameRead, payload); err != nil {
		return Read{}, err
	}
	p, err := decodePrefix(h, FrameRead, payload, readFixedLen, true)
	if err != nil {
		return Read{}, err
	}
	r := Read{Tag: h.Tag, Epoch: p.epoch, Length: int(be.Uint32(payload[20:]))}
	off := be.Uint64(payload[12:])
	switch {
	case be.Uint32(payload[24:]) != 0:
		return Read{}, protoErr("read: reserved bytes set")
	case r.Length == 0 || r.Length > MaxDataLen:
		return Read{}, protoErr("read of %d bytes", r.Length)
	case off > MaxOffset-uint64(r.Length):
		return Read{}, protoErr("read at offset %d", off)
	}
	r.Offset = int64(off)
	r.Device, err = deviceName(FrameRead, payload, readFixedLen, p)
	return r, err
}

// DecodeChecksum decodes the payload of the checksum frame h.
func DecodeChecksum(h Header, payload []byte) (Checksum, error) {
	if err := payloadOf(h, FrameChecksum, payload); err != nil {
		return Checksum{}, err
	}
	p, err := decodePrefix(h, FrameChecksum, payload, checksumFixed, true)
	if err != nil {
		return Checksum{}, err
	}
	off, n, chunk := be.Uint64(payload[12:]), be.Uint64(payload[20:]), be.Uint32(payload[28:])
	if be.Uint32(payload[32:]) != 0 {
		return Checksum{}, protoErr("checksum: reserved bytes set")
	}
	if off > MaxOffset || n > MaxOffset || chunk > MaxDataLen ||
		checkChecksum(int64(off), int64(n), int(chunk)) != nil {
		return Checksum{}, protoErr("checksum of %d bytes at %d in chunks of %d", n, off, chunk)
	}
	dev, err := deviceName(FrameChecksum, payload, checksumFixed, p)
	return Checksum{Tag: h.Tag, Epoch: p.epoch, Offset: int64(off), Length: int64(n), Chunk: int(chunk),
		Device: dev}, err
}

// DecodeActivity decodes the payload of the activity frame h.
func DecodeActivity(h Header, payload []byte) (Activity, error) {
	if err := payloadOf(h, FrameActivity, payload); err != nil {
		return Activity{}, err
	}
	p, err := decodePrefix(h, FrameActivity, payload, activityFixed, true)
	if err != nil {
		return Activity{}, err
	}
	dev, err := deviceName(FrameActivity, payload, activityFixed, p)
	return Activity{Tag: h.Tag, Epoch: p.epoch, Device: dev}, err
}

// decodeResponseFixed decodes the fixed part b of the response h and
// checks the payload length its status allows.
func decodeResponseFixed(h Header, b []byte) (Response, error) {
	if h.Type != FrameResponse || len(b) != responseFixed || h.Length < responseFixed {
		return Response{}, protoErr("response of %d bytes", h.Length)
	}
	r := Response{Tag: h.Tag, Status: Status(b[0]), Epoch: be.Uint64(b[4:])}
	n := int(h.Length) - responseFixed
	switch {
	case b[1] != 0 || b[2] != 0 || b[3] != 0:
		return Response{}, protoErr("response: reserved bytes set")
	case r.Status >= statusLimit:
		return Response{}, protoErr("response with unknown %s", r.Status)
	case r.Status != StatusOK && n > MaxMessageLen:
		return Response{}, protoErr("%s response with %d bytes of message", r.Status, n)
	case n > maxResponseData:
		return Response{}, protoErr("response with %d bytes", n)
	}
	return r, nil
}

// DecodeResponse decodes the payload of the response frame h.
func DecodeResponse(h Header, payload []byte) (Response, error) {
	if int(h.Length) != len(payload) || len(payload) < responseFixed {
		return Response{}, protoErr("response payload of %d bytes", len(payload))
	}
	r, err := decodeResponseFixed(h, payload[:responseFixed])
	if err != nil {
		return Response{}, err
	}
	r.Payload = payload[responseFixed:]
	return r, nil
}

// Extent is a byte range of a device.
type Extent struct {
	Off, Len int64
}

// End is the offset just past e.
func (e Extent) End() int64 { return e.Off + e.Len }

// AppendExtents appends the payload of an activity response.
func AppendExtents(b []byte, ext []Extent) []byte {
	for _, e := range ext {
		b = be.AppendUint64(b, uint64(e.Off))
		b = be.AppendUint64(b, uint64(e.Len))
	}
	return b
}

// DecodeExtents decodes the payload of an activity response into ext
// (reused), refusing more than MaxExtents, empty or overflowing extents.
func DecodeExtents(ext []Extent, b []byte) ([]Extent, error) {
	if len(b)%ExtentLen != 0 || len(b)/ExtentLen > MaxExtents {
		return ext, protoErr("activity payload of %d bytes", len(b))
	}
	ext = ext[:0]
	for ; len(b) > 0; b = b[ExtentLen:] {
		off, n := be.Uint64(b), be.Uint64(b[8:])
		if n == 0 || off > MaxOffset || n > MaxOffset-off {
			return ext, protoErr("extent of %d bytes at %d", n, off)
		}
		ext = append(ext, Extent{Off: int64(off), Len: int64(n)})
	}
	return ext, nil
}

// DecodeChecksums decodes the payload of a checksum response that answers
// a request for want chunks.
func DecodeChecksums(sums [][ChecksumLen]byte, b []byte, want int) ([][ChecksumLen]byte, error) {
	if want < 0 || want > MaxChecksums || len(b) != want*ChecksumLen {
		return sums, protoErr("%d bytes of checksums, want %d sums", len(b), want)
	}
	sums = sums[:0]
	for ; len(b) > 0; b = b[ChecksumLen:] {
		sums = append(sums, [ChecksumLen]byte(b[:ChecksumLen]))
	}
	return sums, nil
}
