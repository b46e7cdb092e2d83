package pdu

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseText(t *testing.T) {
	long := strings.Repeat("v", MaxValueLen)
	for _, tc := range []struct {
		name    string
		in      string
		want    []KV
		wantErr bool
	}{
		{"empty", "", nil, false},
		{"one", "A=b\x00", []KV{{"A", "b"}}, false},
		{"order kept", "B=1\x00A=2\x00B=3\x00", []KV{{"B", "1"}, {"A", "2"}, {"B", "3"}}, false},
		{"no final NUL", "A=b\x00C=d", []KV{{"A", "b"}, {"C", "d"}}, false},
		{"padding NULs", "A=b\x00\x00\x00\x00", []KV{{"A", "b"}}, false},
		{"empty value", "A=\x00", []KV{{"A", ""}}, false},
		{"equals in value", "CHAP_C=0b+/=\x00", []KV{{"CHAP_C", "0b+/="}}, false},
		{"list value", "HeaderDigest=CRC32C,None\x00", []KV{{"HeaderDigest", "CRC32C,None"}}, false},
		{"max key", strings.Repeat("k", MaxKeyLen) + "=1\x00", []KV{{strings.Repeat("k", MaxKeyLen), "1"}}, false},
		{"max value", "A=" + long + "\x00", []KV{{"A", long}}, false},
		{"no equals", "Abc\x00", nil, true},
		{"empty key", "=x\x00", nil, true},
		{"key too long", strings.Repeat("k", MaxKeyLen+1) + "=1\x00", nil, true},
		{"value too long", "A=" + long + "v\x00", nil, true},
		{"bad after good", "A=b\x00junk\x00", nil, true},
	} {
		got, err := ParseText([]byte(tc.in))
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: err %v, wantErr %v", tc.name, err, tc.wantErr)
			continue
		}
		if tc.wantErr && !errors.Is(err, ErrText) {
			t.Errorf("%s: err %v is not ErrText", tc.name, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestParseTextErrorTruncatesItem(t *testing.T) {
	_, err := ParseText([]byte(strings.Repeat("x", 500)))
	if err == nil || len(err.Error()) > 100 {
		t.Fatalf("error should quote a truncated item: %v", err)
	}
}

func TestAppendText(t *testing.T) {
	b := AppendText(nil, "InitiatorName", "iqn.x")
	b = AppendText(b, "SessionType", "Normal")
	if string(b) != "InitiatorName=iqn.x\x00SessionType=Normal\x00" {
		t.Fatalf("got %q", b)
	}
	kvs, err := ParseText(b)
	if err != nil || len(kvs) != 2 || kvs[1] != (KV{"SessionType", "Normal"}) {
		t.Fatalf("parse back: %v %q", err, kvs)
	}
}
