package pdu

import (
	"errors"
	"fmt"
	"io"
)

// Digest errors are distinct so the receiver can tell a corrupted header
// (the connection can no longer be trusted) from corrupted data (RFC 7143
// lets the target Reject the PDU and keep going, or drop the connection).
var (
	ErrHeaderDigest = errors.New("header digest mismatch")
	ErrDataDigest   = errors.New("data digest mismatch")
)

// MaxAHSLen bounds the additional header segments: the AHS length field is
// one byte of 4-byte words.
const MaxAHSLen = 4 * 255

// AHSBufLen is the scratch space ReadHeader needs: the largest AHS plus the
// header digest, which is read there to avoid an allocation per PDU.
const AHSBufLen = MaxAHSLen + 4

// ReadHeader reads a basic header segment, its additional header segments
// into ahsBuf (which must hold AHSBufLen bytes) and, when headerDigest is
// set, checks the header digest. It returns the AHS bytes.
func ReadHeader(r io.Reader, h *Header, ahsBuf []byte, headerDigest bool) ([]byte, error) {
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	ahs := ahsBuf[:h.AHSLength()]
	if len(ahs) > 0 {
		if _, err := io.ReadFull(r, ahs); err != nil {
			return nil, fmt.Errorf("reading %d bytes of AHS: %w", len(ahs), err)
		}
	}
	if !headerDigest {
		return ahs, nil
	}
	d := ahsBuf[len(ahs) : len(ahs)+4]
	if _, err := io.ReadFull(r, d); err != nil {
		return nil, fmt.Errorf("reading header digest: %w", err)
	}
	crc := UpdateCRC32C(CRC32C(h[:]), ahs)
	if crc != DigestValue(d) {
		return nil, ErrHeaderDigest
	}
	return ahs, nil
}

// ReadData reads a data segment of len(buf) bytes, its padding and, when
// dataDigest is set, checks its digest. The whole segment is consumed even
// when the digest fails, so the stream stays in step.
func ReadData(r io.Reader, buf []byte, dataDigest bool) error {
	if len(buf) == 0 {
		return nil // no segment, so no padding and no digest either
	}
	if _, err := io.ReadFull(r, buf); err != nil {
		return fmt.Errorf("reading %d-byte data segment: %w", len(buf), err)
	}
	pad := PadLen(len(buf))
	n := pad
	if dataDigest {
		n += 4
	}
	if n == 0 {
		return nil
	}
	// Declared only here: it escapes through io.ReadFull, and the common
	// aligned, digest-less segment must not pay an allocation for it.
	var trailer [8]byte
	if _, err := io.ReadFull(r, trailer[:n]); err != nil {
		return fmt.Errorf("reading data padding/digest: %w", err)
	}
	if dataDigest {
		crc := UpdateCRC32C(CRC32C(buf), trailer[:pad])
		if crc != DigestValue(trailer[pad:n]) {
			return ErrDataDigest
		}
	}
	return nil
}

// Discard skips a data segment of n bytes with its padding and digest.
func Discard(r io.Reader, n int, dataDigest bool) error {
	total := int64(n + PadLen(n))
	if dataDigest && n > 0 {
		total += 4
	}
	_, err := io.CopyN(io.Discard, r, total)
	return err
}

// HeaderDigest computes the digest that follows h and its AHS on the wire.
func HeaderDigest(h *Header, ahs []byte) [4]byte {
	return DigestBytes(UpdateCRC32C(CRC32C(h[:]), ahs))
}

// Trailer fills buf with what follows a data segment on the wire (padding,
// then the data digest if enabled) and returns the used part.
func Trailer(buf *[8]byte, data []byte, dataDigest bool) []byte {
	pad := PadLen(len(data))
	clear(buf[:pad])
	if !dataDigest || len(data) == 0 {
		return buf[:pad]
	}
	d := DigestBytes(UpdateCRC32C(CRC32C(data), buf[:pad]))
	copy(buf[pad:], d[:])
	return buf[:pad+4]
}
