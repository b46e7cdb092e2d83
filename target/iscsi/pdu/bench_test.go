package pdu

import (
	"bytes"
	"testing"
)

// The framing functions sit on every PDU of both the target and the
// initiator; these benchmarks report their allocations.

func benchFrame(b *testing.B, dataLen int, hd, dd bool) {
	h := sampleHeader()
	wire := encode(&h, nil, make([]byte, dataLen), hd, dd)
	r := bytes.NewReader(wire)
	ahsBuf := make([]byte, AHSBufLen)
	data := make([]byte, dataLen)
	var got Header // outside the loop: only the framing's own allocations count
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(wire)
		if _, err := ReadHeader(r, &got, ahsBuf, hd); err != nil {
			b.Fatal(err)
		}
		if err := ReadData(r, data, dd); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRead4K(b *testing.B)        { benchFrame(b, 4096, false, false) }
func BenchmarkRead4KDigests(b *testing.B) { benchFrame(b, 4096, true, true) }
func BenchmarkReadOdd(b *testing.B)       { benchFrame(b, 4093, false, false) }

func BenchmarkMarshalSCSICommand(b *testing.B) {
	c := SCSICommand{Final: true, Read: true, Attr: 1, ITT: 1, EDTL: 4096, CmdSN: 2, ExpStatSN: 3}
	var h Header
	b.ReportAllocs()
	for b.Loop() {
		c.Marshal(&h)
		c.Unmarshal(&h)
	}
}
