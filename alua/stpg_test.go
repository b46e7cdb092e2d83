package alua

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"
)

func TestParseSetTargetPortGroups(t *testing.T) {
	tests := []struct {
		name  string
		param string
		want  []GroupRequest
	}{
		{"empty list asks for nothing", "", nil},
		{"header only", "00000000", []GroupRequest{}},
		{"one group, as scsi_dh_alua sends it", "00000000 00000007", []GroupRequest{{ActiveOptimized, 7}}},
		{"every requestable state", "00000000 00000001 01000002 02000003 0300ffff",
			[]GroupRequest{{ActiveOptimized, 1}, {ActiveNonOptimized, 2}, {Standby, 3}, {Unavailable, 0xffff}}},
		{"reserved fields ignored", "ffffffff f1ff0102", []GroupRequest{{ActiveNonOptimized, 0x0102}}},
	}
	for _, tt := range tests {
		got, err := ParseSetTargetPortGroups(unhex(t, tt.param))
		if err != nil || !slices.Equal(got, tt.want) || (got == nil) != (tt.want == nil) {
			t.Errorf("%s: got %+v, %v; want %+v", tt.name, got, err, tt.want)
		}
	}
}

func TestParseSetTargetPortGroupsErrors(t *testing.T) {
	tests := []struct {
		name   string
		param  string
		length bool // ErrParamLength rather than a FieldError
		offset int
		bit    int
	}{
		{"header cut short", "000000", true, 0, 0},
		{"descriptor cut short", "00000000 000000", true, 0, 0},
		{"second descriptor cut short", "00000000 00000001 01", true, 0, 0},
		{"transitioning", "00000000 0f000001", false, 4, 3},
		{"offline", "00000000 00000001 0e000002", false, 8, 3},
		{"LBA dependent", "00000000 04000001", false, 4, 3},
		{"undefined state", "00000000 00000001 01000002 07000003", false, 12, 3},
		{"group named twice", "00000000 00000001 01000002 02000001", false, 14, -1},
	}
	for _, tt := range tests {
		reqs, err := ParseSetTargetPortGroups(unhex(t, tt.param))
		if reqs != nil {
			t.Errorf("%s: returned %+v with the error", tt.name, reqs)
		}
		if tt.length {
			if !errors.Is(err, ErrParamLength) {
				t.Errorf("%s: err = %v, want ErrParamLength", tt.name, err)
			}
			continue
		}
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Offset != tt.offset || fe.Bit != tt.bit {
			t.Errorf("%s: err = %#v, want a FieldError at byte %d bit %d", tt.name, err, tt.offset, tt.bit)
		}
	}
}

// encodeSTPG builds the parameter list ParseSetTargetPortGroups reads.
func encodeSTPG(reqs []GroupRequest) []byte {
	b := make([]byte, 4, 4+4*len(reqs))
	for _, r := range reqs {
		b = append(b, byte(r.State), 0)
		b = binary.BigEndian.AppendUint16(b, r.Group)
	}
	return b
}

func FuzzSetTargetPortGroups(f *testing.F) {
	for _, seed := range [][]byte{
		nil,
		{0, 0, 0, 0},
		encodeSTPG([]GroupRequest{{ActiveOptimized, 1}}),
		encodeSTPG([]GroupRequest{{Standby, 1}, {Unavailable, 2}, {ActiveNonOptimized, 3}}),
		encodeSTPG([]GroupRequest{{Transitioning, 1}}),
		encodeSTPG([]GroupRequest{{Standby, 5}, {Standby, 5}}),
		{0, 0, 0, 0, 0xf1, 0xff, 0, 1},
		{0, 0, 0, 0, 0, 0},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, param []byte) {
		reqs, err := ParseSetTargetPortGroups(param)
		if err != nil {
			checkParseError(t, param, reqs, err)
			return
		}
		if len(param) == 0 {
			if reqs != nil {
				t.Fatalf("empty list gave %+v", reqs)
			}
			return
		}
		// What was accepted is exactly what the bytes say, and encoding it
		// gives the same list up to reserved fields.
		enc := encodeSTPG(reqs)
		if len(enc) != len(param) {
			t.Fatalf("%d bytes parsed to %d requests", len(param), len(reqs))
		}
		seen := map[uint16]bool{}
		for i, r := range reqs {
			d := param[4+4*i:]
			if !requestable(r.State) || byte(r.State) != d[0]&0x0f || r.Group != binary.BigEndian.Uint16(d[2:]) || seen[r.Group] {
				t.Fatalf("request %d = %+v from % x", i, r, d[:4])
			}
			seen[r.Group] = true
		}
		again, err := ParseSetTargetPortGroups(enc)
		if err != nil || !slices.Equal(again, reqs) {
			t.Fatalf("re-encoded %+v parsed as %+v, %v", reqs, again, err)
		}
	})
}

func checkParseError(t *testing.T, param []byte, reqs []GroupRequest, err error) {
	t.Helper()
	if reqs != nil {
		t.Fatalf("requests %+v returned with error %v", reqs, err)
	}
	if errors.Is(err, ErrParamLength) {
		if len(param) >= 4 && len(param)%4 == 0 {
			t.Fatalf("length error for %d bytes", len(param))
		}
		return
	}
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v is neither ErrParamLength nor a FieldError", err)
	}
	if fe.Offset < 4 || fe.Offset >= len(param) || fe.Bit < -1 || fe.Bit > 7 || fe.Reason == "" {
		t.Fatalf("bad FieldError %+v for % x", fe, param)
	}
}
