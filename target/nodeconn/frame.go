package nodeconn

import (
	"encoding/binary"
	"fmt"
)

// HeaderLen is the size of the header every frame of a node channel
// starts with:
//
//	type u8 | flags u8 | reserved u16 | tag u32 | length u32
//
// all big-endian. Flags and reserved bytes are zero; each protocol names
// its own frame types and bounds their payloads.
const HeaderLen = 12

// FrameType is a protocol's frame type: one byte, named in errors.
type FrameType interface {
	~uint8
	String() string
}

// Header is a frame header.
type Header[T FrameType] struct {
	Type T
	Tag  uint32
	// Length is the payload length, after the header.
	Length uint32
}

// AppendHeader appends h.
func AppendHeader[T FrameType](b []byte, h Header[T]) []byte {
	b = append(b, byte(h.Type), 0, 0, 0)
	b = binary.BigEndian.AppendUint32(b, h.Tag)
	return binary.BigEndian.AppendUint32(b, h.Length)
}

// DecodeHeader decodes a frame header and checks its length against the
// bounds its type allows (ok false: the type is unknown), so that the
// reader knows what it may buffer before reading the payload. Its errors
// wrap protoErr, the protocol's own.
func DecodeHeader[T FrameType](b []byte, bounds func(T) (lo, hi uint32, ok bool), protoErr error) (Header[T], error) {
	if len(b) != HeaderLen {
		return Header[T]{}, fmt.Errorf("%w: header of %d bytes", protoErr, len(b))
	}
	be := binary.BigEndian
	h := Header[T]{Type: T(b[0]), Tag: be.Uint32(b[4:]), Length: be.Uint32(b[8:])}
	if b[1] != 0 || be.Uint16(b[2:]) != 0 {
		return Header[T]{}, fmt.Errorf("%w: %s: flags or reserved bytes set", protoErr, h.Type)
	}
	lo, hi, ok := bounds(h.Type)
	if !ok {
		return Header[T]{}, fmt.Errorf("%w: unknown %s", protoErr, h.Type)
	}
	if h.Length < lo || h.Length > hi {
		return Header[T]{}, fmt.Errorf("%w: %s with a %d-byte payload", protoErr, h.Type, h.Length)
	}
	return h, nil
}
