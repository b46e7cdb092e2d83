package pdu

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// encode builds a PDU as it appears on the wire, the way a sender would:
// header, AHS, header digest, data, padding and data digest.
func encode(h *Header, ahs, data []byte, hd, dd bool) []byte {
	h[4] = byte(len(ahs) / 4)
	h.SetDataSegmentLength(len(data))
	out := append([]byte(nil), h[:]...)
	out = append(out, ahs...)
	if hd {
		d := HeaderDigest(h, ahs)
		out = append(out, d[:]...)
	}
	out = append(out, data...)
	var tb [8]byte
	return append(out, Trailer(&tb, data, dd)...)
}

func sampleHeader() Header {
	var h Header
	(&DataIn{Final: true, ITT: 7, DataSN: 1}).Marshal(&h)
	return h
}

func TestFramingRoundTrip(t *testing.T) {
	for _, hd := range []bool{false, true} {
		for _, dd := range []bool{false, true} {
			for n := 0; n <= 9; n++ {
				h := sampleHeader()
				data := bytes.Repeat([]byte{0x5a}, n)
				ahs := []byte{0, 5, 2, 0, 0, 0, 0x10, 0}
				wire := encode(&h, ahs, data, hd, dd)
				wantLen := HeaderLen + len(ahs) + n + PadLen(n)
				if hd {
					wantLen += 4
				}
				if dd && n > 0 {
					wantLen += 4
				}
				if len(wire) != wantLen {
					t.Fatalf("hd=%v dd=%v n=%d: wire length %d, want %d", hd, dd, n, len(wire), wantLen)
				}
				// A second PDU after the first proves the reader consumed
				// exactly the first one's bytes, padding and digests included.
				h2 := sampleHeader()
				wire = append(wire, encode(&h2, nil, []byte("x"), hd, dd)...)

				r := bytes.NewReader(wire)
				var got Header
				ahsBuf := make([]byte, AHSBufLen)
				gotAHS, err := ReadHeader(r, &got, ahsBuf, hd)
				if err != nil {
					t.Fatalf("hd=%v dd=%v n=%d: ReadHeader: %v", hd, dd, n, err)
				}
				if got != h || !bytes.Equal(gotAHS, ahs) {
					t.Fatalf("header/AHS mismatch")
				}
				buf := make([]byte, got.DataSegmentLength())
				if err := ReadData(r, buf, dd); err != nil {
					t.Fatalf("hd=%v dd=%v n=%d: ReadData: %v", hd, dd, n, err)
				}
				if !bytes.Equal(buf, data) {
					t.Fatalf("data mismatch")
				}
				if _, err := ReadHeader(r, &got, ahsBuf, hd); err != nil || got != h2 {
					t.Fatalf("hd=%v dd=%v n=%d: second PDU out of step: %v", hd, dd, n, err)
				}
				if err := Discard(r, 1, dd); err != nil || r.Len() != 0 {
					t.Fatalf("Discard left %d bytes (err %v)", r.Len(), err)
				}
			}
		}
	}
}

func TestHeaderDigestCorrupted(t *testing.T) {
	h := sampleHeader()
	ahs := []byte{0, 1, 9, 0}
	wire := encode(&h, ahs, nil, true, false)
	// Flip a bit in the BHS, in the AHS and in the digest itself: the
	// digest covers the header and its AHS.
	for _, pos := range []int{3, HeaderLen + 2, HeaderLen + len(ahs) + 1} {
		bad := append([]byte(nil), wire...)
		bad[pos] ^= 0x10
		var got Header
		_, err := ReadHeader(bytes.NewReader(bad), &got, make([]byte, AHSBufLen), true)
		if !errors.Is(err, ErrHeaderDigest) {
			t.Errorf("corrupt byte %d: err %v, want ErrHeaderDigest", pos, err)
		}
	}
}

func TestDataDigestCorrupted(t *testing.T) {
	h := sampleHeader()
	data := []byte("hello") // 5 bytes: 3 bytes of padding
	wire := encode(&h, nil, data, false, true)
	next := sampleHeader()
	tail := encode(&next, nil, nil, false, true)
	for _, pos := range []int{HeaderLen, HeaderLen + 4, HeaderLen + 6, HeaderLen + 9} { // data, data, pad, digest
		bad := append(append([]byte(nil), wire...), tail...)
		bad[pos] ^= 0x01
		r := bytes.NewReader(bad)
		var got Header
		if _, err := ReadHeader(r, &got, make([]byte, AHSBufLen), false); err != nil {
			t.Fatal(err)
		}
		err := ReadData(r, make([]byte, got.DataSegmentLength()), true)
		if !errors.Is(err, ErrDataDigest) {
			t.Errorf("corrupt byte %d: err %v, want ErrDataDigest", pos, err)
		}
		// The segment is consumed even on a digest error: the next
		// header must still be readable.
		if _, err := ReadHeader(r, &got, make([]byte, AHSBufLen), false); err != nil || got != next {
			t.Errorf("corrupt byte %d: stream out of step after digest error: %v", pos, err)
		}
	}
}

func TestZeroLengthData(t *testing.T) {
	// No data segment means no padding and no data digest, even with
	// DataDigest=CRC32C (RFC 7143 11.2.3).
	h := sampleHeader()
	wire := encode(&h, nil, nil, true, true)
	if len(wire) != HeaderLen+4 {
		t.Fatalf("wire length %d, want %d", len(wire), HeaderLen+4)
	}
	var tb [8]byte
	if got := Trailer(&tb, nil, true); len(got) != 0 {
		t.Fatalf("trailer for empty data: % x", got)
	}
	if err := ReadData(bytes.NewReader(nil), nil, true); err != nil {
		t.Fatalf("ReadData of nothing: %v", err)
	}
	if err := Discard(bytes.NewReader(nil), 0, true); err != nil {
		t.Fatalf("Discard of nothing: %v", err)
	}
}

func TestTrailerPaddingIsZeroed(t *testing.T) {
	tb := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	got := Trailer(&tb, []byte{9}, false)
	if !bytes.Equal(got, []byte{0, 0, 0}) {
		t.Fatalf("padding % x, want three zeros", got)
	}
	got = Trailer(&tb, []byte{9}, true)
	want := DigestBytes(CRC32C([]byte{9, 0, 0, 0}))
	if !bytes.Equal(got[:3], []byte{0, 0, 0}) || !bytes.Equal(got[3:], want[:]) {
		t.Fatalf("trailer % x, want padding then % x", got, want)
	}
}

func TestTruncatedStreams(t *testing.T) {
	h := sampleHeader()
	wire := encode(&h, []byte{0, 1, 9, 0}, []byte("abcdef"), true, true)
	for cut := 0; cut < len(wire); cut++ {
		r := bytes.NewReader(wire[:cut])
		var got Header
		_, err := ReadHeader(r, &got, make([]byte, AHSBufLen), true)
		if err == nil {
			err = ReadData(r, make([]byte, got.DataSegmentLength()), true)
		}
		if err == nil {
			t.Fatalf("cut at %d: no error", cut)
		}
		if cut == 0 && err != io.EOF {
			t.Errorf("clean EOF before a header should be io.EOF, got %v", err)
		}
		if cut > 0 && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			t.Errorf("cut at %d: err %v", cut, err)
		}
	}
}

func TestExtendedCDB(t *testing.T) {
	ext := bytes.Repeat([]byte{0xcd}, 16) // a 32-byte CDB: 16 in the BHS, 16 here
	// AHSLength 17 counts the reserved byte after the type: 3+17 = 20
	// bytes, already a multiple of four.
	extAHS := append([]byte{0, 17, 1, 0}, ext...)
	odd := append([]byte{0, 2, 1, 0}, 0xab, 0, 0, 0) // one extra CDB byte (17-byte CDB), padded to 8
	bidi := []byte{0, 5, 2, 0, 0, 0, 0x10, 0}        // bidirectional read length, padded to 8

	for _, tc := range []struct {
		name    string
		ahs     []byte
		want    []byte
		wantErr bool
	}{
		{"none", nil, nil, false},
		{"ext only", extAHS, ext, false},
		{"odd length", odd, []byte{0xab}, false},
		{"after bidi", append(append([]byte(nil), bidi...), extAHS...), ext, false},
		{"bidi only", bidi, nil, false},
		{"short", []byte{0, 1, 1}, nil, true},
		{"length past end", []byte{0, 40, 1, 0, 1, 2, 3, 4}, nil, true},
		{"zero length ext", []byte{0, 0, 1, 0}, nil, true},
		{"bidi then garbage", append(append([]byte(nil), bidi...), 0, 9), nil, true},
	} {
		got, err := ExtendedCDB(tc.ahs)
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: err %v, wantErr %v", tc.name, err, tc.wantErr)
			continue
		}
		if tc.wantErr && !errors.Is(err, ErrAHS) {
			t.Errorf("%s: err %v is not ErrAHS", tc.name, err)
		}
		if !bytes.Equal(got, tc.want) {
			t.Errorf("%s: got % x, want % x", tc.name, got, tc.want)
		}
	}
}
