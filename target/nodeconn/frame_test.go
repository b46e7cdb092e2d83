package nodeconn

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

type testType uint8

func (t testType) String() string { return fmt.Sprintf("type %d", uint8(t)) }

var errTestProto = errors.New("test protocol error")

// testBounds knows type 1, with payloads of 2 to 4 bytes.
func testBounds(t testType) (lo, hi uint32, ok bool) { return 2, 4, t == 1 }

func TestHeader(t *testing.T) {
	h := Header[testType]{Type: 1, Tag: 0x01020304, Length: 3}
	b := AppendHeader(nil, h)
	if want := []byte{1, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 3}; !bytes.Equal(b, want) {
		t.Fatalf("encoded % x, want % x", b, want)
	}
	got, err := DecodeHeader(b, testBounds, errTestProto)
	if err != nil || got != h {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	set := func(i int, v byte) []byte {
		c := bytes.Clone(b)
		c[i] = v
		return c
	}
	for name, bad := range map[string][]byte{
		"short":         b[:HeaderLen-1],
		"flags":         set(1, 1),
		"reserved":      set(3, 1),
		"unknown type":  set(0, 2),
		"payload short": set(11, 1),
		"payload long":  set(11, 5),
		"payload huge":  set(8, 1),
		"long":          append(bytes.Clone(b), 0),
	} {
		if _, err := DecodeHeader(bad, testBounds, errTestProto); !errors.Is(err, errTestProto) {
			t.Errorf("%s: %v, want a protocol error", name, err)
		}
	}
}
