package replication

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// frame returns a whole frame: head (header and fixed part) and data.
func frame(t testing.TB, head []byte, err error, data []byte) []byte {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	return append(head, data...)
}

// sampleFrames are valid frames of every type, with what they decode to.
func sampleFrames(t testing.TB, dataLen int) []struct {
	name  string
	frame []byte
	want  any
} {
	long := strings.Repeat("d", MaxNameLen)
	fr := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	data := pattern(dataLen, 3)
	w := func(w Write, dev string) []byte {
		b, err := AppendWrite(nil, w, dev)
		return frame(t, b, err, w.Data)
	}
	return []struct {
		name  string
		frame []byte
		want  any
	}{
		{"write", w(Write{Tag: 1, Epoch: 7, Seq: 9, Offset: 4096, Data: data}, "disk0"),
			Write{Tag: 1, Device: []byte("disk0"), Epoch: 7, Seq: 9, Offset: 4096, Data: data}},
		{"write durable, long name", w(Write{Tag: 2, Epoch: 1, Seq: 1, Offset: MaxOffset - int64(dataLen), Durable: true, Data: data}, long),
			Write{Tag: 2, Device: []byte(long), Epoch: 1, Seq: 1, Offset: MaxOffset - int64(dataLen), Durable: true, Data: data}},
		{"write of nothing", w(Write{Tag: 3, Epoch: 1}, "d"), Write{Tag: 3, Device: []byte("d"), Epoch: 1, Data: []byte{}}},
		{"unmap", fr(AppendUnmap(nil, Unmap{Tag: 4, Epoch: 2, Seq: 3, Offset: 512, Length: 1 << 40}, "lun")),
			Unmap{Tag: 4, Device: []byte("lun"), Epoch: 2, Seq: 3, Offset: 512, Length: 1 << 40}},
		{"flush", fr(AppendFlush(nil, Flush{Tag: 5, Epoch: 3, Seq: 4}, "lun")),
			Flush{Tag: 5, Device: []byte("lun"), Epoch: 3, Seq: 4}},
		{"seal", fr(AppendSeal(nil, Seal{Tag: 6, Epoch: 1<<64 - 1}, "lun")),
			Seal{Tag: 6, Device: []byte("lun"), Epoch: 1<<64 - 1}},
		{"read", fr(AppendRead(nil, Read{Tag: 7, Epoch: 3, Offset: 1 << 20, Length: MaxDataLen}, "lun")),
			Read{Tag: 7, Device: []byte("lun"), Epoch: 3, Offset: 1 << 20, Length: MaxDataLen}},
		{"checksum", fr(AppendChecksum(nil, Checksum{Tag: 8, Epoch: 3, Offset: 0, Length: 1<<20 + 1, Chunk: 65536}, "lun")),
			Checksum{Tag: 8, Device: []byte("lun"), Epoch: 3, Length: 1<<20 + 1, Chunk: 65536}},
		{"activity", fr(AppendActivity(nil, Activity{Tag: 9, Epoch: 3}, "lun")),
			Activity{Tag: 9, Device: []byte("lun"), Epoch: 3}},
		{"response ok with data", append(AppendResponse(nil, 10, StatusOK, 3, 3), 1, 2, 3),
			Response{Tag: 10, Status: StatusOK, Epoch: 3, Payload: []byte{1, 2, 3}}},
		{"response stale", AppendResponse(nil, 11, StatusStaleEpoch, 8, 0),
			Response{Tag: 11, Status: StatusStaleEpoch, Epoch: 8, Payload: []byte{}}},
		{"response io error", append(AppendResponse(nil, 12, StatusIOError, 8, 4), "oops"...),
			Response{Tag: 12, Status: StatusIOError, Epoch: 8, Payload: []byte("oops")}},
		{"ping", AppendPing(nil, 13, false), Header{Type: FramePing, Tag: 13}},
		{"pong", AppendPing(nil, 13, true), Header{Type: FramePong, Tag: 13}},
	}
}

// decodeFrame decodes a whole frame into its typed value.
func decodeFrame(b []byte) (any, error) {
	if len(b) < HeaderLen {
		return nil, protoErr("short")
	}
	h, err := DecodeHeader(b[:HeaderLen])
	if err != nil {
		return nil, err
	}
	p := b[HeaderLen:]
	if int(h.Length) != len(p) {
		return nil, protoErr("length")
	}
	switch h.Type {
	case FrameWrite:
		return DecodeWrite(h, p)
	case FrameUnmap:
		return DecodeUnmap(h, p)
	case FrameFlush:
		return DecodeFlush(h, p)
	case FrameSeal:
		return DecodeSeal(h, p)
	case FrameRead:
		return DecodeRead(h, p)
	case FrameChecksum:
		return DecodeChecksum(h, p)
	case FrameActivity:
		return DecodeActivity(h, p)
	case FrameResponse:
		return DecodeResponse(h, p)
	}
	return h, nil
}

// encodeFrame encodes a decoded frame again.
func encodeFrame(v any) ([]byte, error) {
	switch m := v.(type) {
	case Write:
		b, err := AppendWrite(nil, m, string(m.Device))
		return append(b, m.Data...), err
	case Unmap:
		return AppendUnmap(nil, m, string(m.Device))
	case Flush:
		return AppendFlush(nil, m, string(m.Device))
	case Seal:
		return AppendSeal(nil, m, string(m.Device))
	case Read:
		return AppendRead(nil, m, string(m.Device))
	case Checksum:
		return AppendChecksum(nil, m, string(m.Device))
	case Activity:
		return AppendActivity(nil, m, string(m.Device))
	case Response:
		return append(AppendResponse(nil, m.Tag, m.Status, m.Epoch, len(m.Payload)), m.Payload...), nil
	case Header:
		return AppendHeader(nil, m), nil
	}
	return nil, errors.New("unknown frame")
}

func TestFrameRoundTrip(t *testing.T) {
	for _, tc := range sampleFrames(t, 4096) {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeFrame(tc.frame)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("decoded %+v, want %+v", got, tc.want)
			}
			again, err := encodeFrame(got)
			if err != nil || !bytes.Equal(again, tc.frame) {
				t.Fatalf("re-encoded %x (%v), want %x", again, err, tc.frame)
			}
		})
	}
}

func TestHandshakeMessagesRoundTrip(t *testing.T) {
	ch := ClientHello{Version: Version, Flags: FlagAuth, Name: []byte("node-a")}
	ch.Nonce[3] = 9
	b, err := AppendClientHello(nil, ch)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeClientHello(b); err != nil || !reflect.DeepEqual(got, ch) {
		t.Fatalf("client hello: %+v, %v", got, err)
	}
	sh := ServerHello{Version: Version, Flags: FlagAuth}
	sh.Nonce[31] = 1
	if got, err := DecodeServerHello(AppendServerHello(nil, sh)); err != nil || got != sh {
		t.Fatalf("server hello: %+v, %v", got, err)
	}
	v := ServerVerdict{Status: VerdictBadProof}
	v.Proof[0] = 7
	if got, err := DecodeVerdict(AppendVerdict(nil, v)); err != nil || got != v {
		t.Fatalf("verdict: %+v, %v", got, err)
	}
	ext := []Extent{{0, 1 << 20}, {5 << 20, 3 << 20}}
	if got, err := DecodeExtents(nil, AppendExtents(nil, ext)); err != nil || !reflect.DeepEqual(got, ext) {
		t.Fatalf("extents: %+v, %v", got, err)
	}
}

func TestDecodeRefuses(t *testing.T) {
	good, _ := AppendSeal(nil, Seal{Tag: 1, Epoch: 2}, "lun")
	set := func(b []byte, i int, v byte) []byte {
		b = bytes.Clone(b)
		b[i] = v
		return b
	}
	read, _ := AppendRead(nil, Read{Tag: 1, Epoch: 1, Offset: 0, Length: 512}, "lun")
	write, _ := AppendWrite(nil, Write{Tag: 1, Epoch: 1, Offset: 0, Data: make([]byte, 8)}, "lun")
	write = append(write, make([]byte, 8)...)
	unmap, _ := AppendUnmap(nil, Unmap{Tag: 1, Epoch: 1, Offset: 0, Length: 512}, "lun")
	cksum, _ := AppendChecksum(nil, Checksum{Tag: 1, Epoch: 1, Length: 4096, Chunk: 4096}, "lun")
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"unknown type", set(good, 0, 99)},
		{"header flags", set(good, 1, 1)},
		{"header reserved", set(good, 3, 1)},
		{"ping with payload", append(AppendHeader(nil, Header{Type: FramePing, Length: 1}), 0)},
		{"seal flags", set(good, HeaderLen+9, 1)},
		{"seal reserved", set(good, HeaderLen+11, 1)},
		{"no device name", set(good, HeaderLen+8, 0)},
		{"device name longer than the frame", set(good, HeaderLen+8, 4)},
		{"device name shorter than the frame", set(good, HeaderLen+8, 2)},
		{"write unknown flag", set(write, HeaderLen+9, 2)},
		{"write offset beyond the limit", set(write, HeaderLen+20, 0x40)},
		{"write device beyond the payload", set(write, HeaderLen+8, 200)},
		{"read of nothing", set(set(read, HeaderLen+22, 0), HeaderLen+23, 0)},
		{"read beyond the maximum", set(read, HeaderLen+21, 0x81)},
		{"read reserved", set(read, HeaderLen+27, 1)},
		{"unmap overflowing", set(unmap, HeaderLen+20, 0x40)},
		{"checksum chunk too small", set(set(cksum, HeaderLen+34, 0), HeaderLen+35, 1)},
		{"checksum of too many bytes", set(cksum, HeaderLen+23, 1)},
		{"response unknown status", set(AppendResponse(nil, 1, StatusOK, 0, 0), HeaderLen, 77)},
		{"response reserved", set(AppendResponse(nil, 1, StatusOK, 0, 0), HeaderLen+2, 1)},
		{"response error with a long message", append(AppendResponse(nil, 1, StatusIOError, 0, MaxMessageLen+1), make([]byte, MaxMessageLen+1)...)},
		{"response data beyond the maximum", AppendHeader(nil, Header{Type: FrameResponse, Length: responseFixed + MaxDataLen + 1})},
		{"write beyond the maximum", AppendHeader(nil, Header{Type: FrameWrite, Length: writeFixedLen + MaxNameLen + MaxDataLen + 1})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if v, err := decodeFrame(tc.frame); !errors.Is(err, ErrProtocol) {
				t.Fatalf("decoded %+v, %v; want a protocol error", v, err)
			}
		})
	}
}

func TestAppendRefuses(t *testing.T) {
	long := strings.Repeat("x", MaxNameLen+1)
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"empty device", second(AppendSeal(nil, Seal{}, ""))},
		{"long device", second(AppendFlush(nil, Flush{}, long))},
		{"big write", second(AppendWrite(nil, Write{Data: make([]byte, MaxDataLen+1)}, "d"))},
		{"negative offset", second(AppendUnmap(nil, Unmap{Offset: -1, Length: 1}, "d"))},
		{"empty read", second(AppendRead(nil, Read{}, "d"))},
		{"small chunk", second(AppendChecksum(nil, Checksum{Length: 4096, Chunk: 100}, "d"))},
		{"too many chunks", second(AppendChecksum(nil, Checksum{Length: MaxChecksumLen, Chunk: MinChunk}, "d"))},
		{"long node name", second(AppendClientHello(nil, ClientHello{Name: []byte(long)}))},
		{"empty node name", second(AppendClientHello(nil, ClientHello{}))},
	} {
		if tc.err == nil {
			t.Errorf("%s: encoded", tc.name)
		}
	}
}

func second(_ []byte, err error) error { return err }

func TestHandshakeDecodeRefuses(t *testing.T) {
	ch, _ := AppendClientHello(nil, ClientHello{Version: 1, Name: []byte("n")})
	for _, b := range [][]byte{
		nil,
		[]byte("HTRX" + strings.Repeat("\x00", ClientHelloLen-3)),
		append(bytes.Clone(ch), 'x'),     // name shorter than the bytes
		bytes.Clone(ch)[:ClientHelloLen], // name missing
	} {
		if _, err := DecodeClientHello(b); !errors.Is(err, ErrProtocol) {
			t.Errorf("client hello %x decoded", b)
		}
	}
	bad := bytes.Clone(ch)
	bad[7] = 2 // unknown flag
	if _, err := DecodeClientHello(bad); !errors.Is(err, ErrProtocol) {
		t.Error("client hello with an unknown flag decoded")
	}
	v := AppendVerdict(nil, ServerVerdict{Status: 9})
	if _, err := DecodeVerdict(v); !errors.Is(err, ErrProtocol) {
		t.Error("unknown verdict decoded")
	}
}

// FuzzDecode checks that every decoder refuses garbage without panicking,
// and that whatever decodes encodes back to the same bytes: decoding is
// strict, so one message has one encoding.
func FuzzDecode(f *testing.F) {
	// Small seeds: the fuzzer minimizes every new input it finds, which
	// takes long for big ones.
	for _, tc := range sampleFrames(f, 16) {
		f.Add(tc.frame)
	}
	ch, _ := AppendClientHello(nil, ClientHello{Version: 1, Flags: FlagAuth, Name: []byte("node")})
	f.Add(ch)
	f.Add(AppendServerHello(nil, ServerHello{Version: 1}))
	f.Add(AppendVerdict(nil, ServerVerdict{}))
	f.Add(AppendExtents(nil, []Extent{{0, 1}, {4096, 1 << 20}}))
	b, _ := NewBitmap(10<<20, 65536)
	b.Set(70000, 3<<20)
	bm, _ := b.MarshalBinary()
	f.Add(bm)
	f.Fuzz(checkDecoders)
}

// checkDecoders runs every decoder on in.
func checkDecoders(t *testing.T, in []byte) {
	{
		if h, err := DecodeClientHello(in); err == nil {
			if again, err := AppendClientHello(nil, h); err != nil || !bytes.Equal(again, in) {
				t.Fatalf("client hello %x re-encodes as %x (%v)", in, again, err)
			}
		}
		if h, err := DecodeServerHello(in); err == nil && !bytes.Equal(AppendServerHello(nil, h), in) {
			t.Fatalf("server hello %x re-encodes differently", in)
		}
		if v, err := DecodeVerdict(in); err == nil && !bytes.Equal(AppendVerdict(nil, v), in) {
			t.Fatalf("verdict %x re-encodes differently", in)
		}
		if ext, err := DecodeExtents(nil, in); err == nil && !bytes.Equal(AppendExtents(nil, ext), in) {
			t.Fatalf("extents %x re-encode differently", in)
		}
		if sums, err := DecodeChecksums(nil, in, len(in)/ChecksumLen); err == nil && len(sums)*ChecksumLen != len(in) {
			t.Fatalf("%d checksums from %d bytes", len(sums), len(in))
		}
		var bm Bitmap
		if err := bm.UnmarshalBinary(in); err == nil {
			if again, _ := bm.MarshalBinary(); !bytes.Equal(again, in) {
				t.Fatalf("bitmap %x re-encodes differently", in)
			}
			for e, ok := bm.Next(0); ok; e, ok = bm.Next(e.End()) {
				if e.Len <= 0 || e.End() > bm.Size() {
					t.Fatalf("bitmap extent %+v of a %d-byte device", e, bm.Size())
				}
			}
		}
		v, err := decodeFrame(in)
		if err != nil {
			return
		}
		again, err := encodeFrame(v)
		if err != nil || !bytes.Equal(again, in) {
			t.Fatalf("frame %x (%+v) re-encodes as %x (%v)", in, v, again, err)
		}
	}
}
