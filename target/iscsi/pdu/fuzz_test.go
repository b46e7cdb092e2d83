package pdu

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// fuzzMaxData bounds the data segments the fuzzer reads, as a receiver
// bounds them by its MaxRecvDataSegmentLength before allocating.
const fuzzMaxData = 1 << 16

func FuzzReadPDU(f *testing.F) {
	for _, hd := range []bool{false, true} {
		for _, dd := range []bool{false, true} {
			h := sampleHeader()
			f.Add(encode(&h, nil, []byte("abc"), hd, dd))
			var lr Header
			(&LoginReq{Transit: true, CSG: 1, NSG: 3}).Marshal(&lr)
			f.Add(encode(&lr, nil, []byte("InitiatorName=iqn.x\x00SessionType=Normal\x00"), hd, dd))
			var cmd Header
			(&SCSICommand{Final: true, Read: true}).Marshal(&cmd)
			f.Add(encode(&cmd, []byte{0, 17, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, nil, hd, dd))
		}
	}
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, 200))

	f.Fuzz(func(t *testing.T, in []byte) {
		for _, hd := range []bool{false, true} {
			for _, dd := range []bool{false, true} {
				readAll(t, in, hd, dd)
			}
		}
	})
}

// readAll decodes PDUs from in until it runs out or the framing breaks,
// exercising every decoder the receiver would apply to what it read.
func readAll(t *testing.T, in []byte, hd, dd bool) {
	r := bytes.NewReader(in)
	ahsBuf := make([]byte, AHSBufLen)
	for {
		var h Header
		ahs, err := ReadHeader(r, &h, ahsBuf, hd)
		if err != nil {
			return
		}
		if len(ahs) != h.AHSLength() {
			t.Fatalf("AHS of %d bytes, header says %d", len(ahs), h.AHSLength())
		}
		_, _ = ExtendedCDB(ahs)
		decode(t, &h)
		n := h.DataSegmentLength()
		if n > fuzzMaxData {
			if Discard(r, n, dd) != nil {
				return
			}
			continue
		}
		data := make([]byte, n)
		if err := ReadData(r, data, dd); err != nil {
			if errors.Is(err, ErrDataDigest) {
				continue // the segment was consumed; the stream is in step
			}
			return
		}
		if op := h.Opcode(); op == OpLoginReq || op == OpLoginResp || op == OpTextReq || op == OpTextResp {
			_, _ = ParseText(data)
		}
	}
}

func decode(t *testing.T, h *Header) {
	var v codec
	switch h.Opcode() {
	case OpSCSICommand:
		v = &SCSICommand{}
	case OpSCSIResponse:
		v = &SCSIResponse{}
	case OpDataOut:
		v = &DataOut{}
	case OpDataIn:
		v = &DataIn{}
	case OpR2T:
		v = &R2T{}
	case OpNOPOut:
		v = &NOPOut{}
	case OpNOPIn:
		v = &NOPIn{}
	case OpTaskMgmtReq:
		v = &TaskMgmtReq{}
	case OpTaskMgmtResp:
		v = &TaskMgmtResp{}
	case OpLoginReq:
		v = &LoginReq{}
	case OpLoginResp:
		v = &LoginResp{}
	case OpTextReq:
		v = &TextReq{}
	case OpTextResp:
		v = &TextResp{}
	case OpLogoutReq:
		v = &LogoutReq{}
	case OpLogoutResp:
		v = &LogoutResp{}
	case OpReject:
		v = &Reject{}
	case OpSNACKReq:
		var s SNACKReq
		s.Unmarshal(h)
		return
	default:
		_ = h.Opcode().String()
		return
	}
	v.Unmarshal(h)
	// Re-encoding what was decoded must decode to the same values: the
	// codec may drop reserved bits but never misplace a field.
	var again Header
	v.Marshal(&again)
	w := reflect.New(reflect.TypeOf(v).Elem()).Interface().(codec)
	w.Unmarshal(&again)
	if !reflect.DeepEqual(normalize(v), normalize(w)) {
		t.Fatalf("%v re-encoded decodes differently:\n%+v\n%+v", h.Opcode(), v, w)
	}
}

// normalize clears fields whose encoding depends on other fields, so that
// a decode-encode-decode cycle is comparable.
func normalize(v codec) codec {
	switch p := v.(type) {
	case *DataIn:
		c := *p
		if !c.HasStatus {
			c.Status, c.StatSN = 0, 0
		}
		return &c
	}
	return v
}

func FuzzParseText(f *testing.F) {
	f.Add([]byte("InitiatorName=iqn.2024-01.io:x\x00SessionType=Normal\x00"))
	f.Add([]byte("A=b\x00\x00\x00"))
	f.Add([]byte("=\x00"))
	f.Add([]byte("CHAP_C=0x0102\x00CHAP_I=1"))
	f.Add([]byte{0, 0, '=', 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		kvs, err := ParseText(in)
		if err != nil {
			if !errors.Is(err, ErrText) {
				t.Fatalf("error %v is not ErrText", err)
			}
			return
		}
		var enc []byte
		for _, kv := range kvs {
			enc = AppendText(enc, kv.Key, kv.Value)
		}
		again, err := ParseText(enc)
		if err != nil {
			t.Fatalf("re-parse of %q: %v", enc, err)
		}
		if !reflect.DeepEqual(kvs, again) {
			t.Fatalf("round trip: %q != %q", kvs, again)
		}
	})
}
