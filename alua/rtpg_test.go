package alua

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	oneGroup  = []Group{{ID: 1, State: ActiveOptimized, Ports: []uint16{1}, Preferred: true}}
	twoGroups = []Group{
		{ID: 1, State: ActiveOptimized, Ports: []uint16{1}, Preferred: true, Status: StatusImplicit},
		{ID: 2, State: ActiveNonOptimized, Ports: []uint16{2, 3}},
	}
	threeGroups = []Group{
		{ID: 0x0102, State: Standby, Ports: []uint16{0x0a0b}, Status: StatusExplicit},
		{ID: 0x0200, State: Offline},
		{ID: 0xffff, State: Transitioning, Ports: []uint16{1, 2, 0xffff}, Status: StatusImplicit},
	}
)

// The golden bytes are written out by hand from the SPC-4 tables: header,
// then per group PREF|state, supported bits, group id, reserved, status
// code, vendor specific, port count, and per port two obsolete bytes and
// the relative port id.
func TestReportTargetPortGroupsGolden(t *testing.T) {
	tests := []struct {
		name      string
		groups    []Group
		extended  bool
		itt       uint8
		supported SupportedStates
		want      string
	}{
		{"no groups", nil, false, 0, Implemented, "00000000"},
		{"no groups, extended", nil, true, 7, Implemented, "00000004 10070000"},
		{"one group", oneGroup, false, 5, Implemented, `
			0000000c
			80cf0001 00000001  00000001`},
		{"one group, extended", oneGroup, true, 5, Implemented, `
			00000010 10050000
			80cf0001 00000001  00000001`},
		{"two groups", twoGroups, false, 0, AOSup | ANSup | TSup, `
			0000001c
			80830001 00020001  00000001
			01830002 00000002  00000002 00000003`},
		{"two groups, extended", twoGroups, true, 0, AOSup | ANSup | TSup, `
			00000020 10000000
			80830001 00020001  00000001
			01830002 00000002  00000002 00000003`},
		{"three groups", threeGroups, false, 60, Implemented, `
			00000028
			02cf0102 00010001  00000a0b
			0ecf0200 00000000
			0fcfffff 00020003  00000001 00000002 0000ffff`},
		{"three groups, extended", threeGroups, true, 60, Implemented, `
			0000002c 103c0000
			02cf0102 00010001  00000a0b
			0ecf0200 00000000
			0fcfffff 00020003  00000001 00000002 0000ffff`},
	}
	for _, tt := range tests {
		got := ReportTargetPortGroups(tt.groups, tt.extended, tt.itt, tt.supported)
		if want := unhex(t, tt.want); !bytes.Equal(got, want) {
			t.Errorf("%s:\n got % x\nwant % x", tt.name, got, want)
		}
	}
}

func TestSupportedStates(t *testing.T) {
	if Implemented != 0xCF {
		t.Errorf("Implemented = %#x, want 0xcf", uint8(Implemented))
	}
	bits := map[State]SupportedStates{
		ActiveOptimized: 0x01, ActiveNonOptimized: 0x02, Standby: 0x04,
		Unavailable: 0x08, Offline: 0x40, Transitioning: 0x80,
	}
	for st, bit := range bits {
		if !bit.Has(st) || !Implemented.Has(st) {
			t.Errorf("%v: bit %#x", st, uint8(bit))
		}
		if (Implemented &^ bit).Has(st) {
			t.Errorf("%v found without its bit", st)
		}
	}
	if SupportedStates(0xff).Has(State(0x4)) {
		t.Error("Has reports an unimplemented state")
	}
	if LBDSup != 0x10 {
		t.Errorf("LBDSup = %#x", uint8(LBDSup))
	}
	b := ReportTargetPortGroups(oneGroup, false, 0, 0xff)
	if b[5] != 0xdf {
		t.Errorf("supported byte %#x, want the reserved bit 5 clear", b[5])
	}
}

func TestReportTargetPortGroupsPortLimit(t *testing.T) {
	ports := make([]uint16, 300)
	for i := range ports {
		ports[i] = uint16(i)
	}
	b := ReportTargetPortGroups([]Group{{ID: 1, Ports: ports}}, false, 0, Implemented)
	got, err := decodeRTPG(b)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(got.groups[0].Ports); n != 255 {
		t.Fatalf("encoded %d ports, want 255", n)
	}
}

// TestReportTargetPortGroupsRoundTrip encodes random groups and reads them
// back with decodeRTPG, a reader written the way initiators parse the data.
func TestReportTargetPortGroupsRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	states := []State{ActiveOptimized, ActiveNonOptimized, Standby, Unavailable, Offline, Transitioning}
	for range 500 {
		groups := make([]Group, r.IntN(6))
		for i := range groups {
			ports := make([]uint16, r.IntN(5))
			for j := range ports {
				ports[j] = uint16(r.Uint32())
			}
			groups[i] = Group{
				ID: uint16(r.Uint32()), State: states[r.IntN(len(states))], Ports: ports,
				Preferred: r.IntN(2) == 0, Status: Status(r.IntN(3)),
			}
		}
		ext, itt, sup := r.IntN(2) == 0, uint8(r.Uint32()), SupportedStates(r.Uint32())
		got, err := decodeRTPG(ReportTargetPortGroups(groups, ext, itt, sup))
		if err != nil {
			t.Fatal(err)
		}
		if got.extended != ext || (ext && got.itt != itt) || !equalGroups(got.groups, groups) {
			t.Fatalf("round trip of %+v (ext %v itt %d) gave %+v", groups, ext, itt, got)
		}
		for _, s := range got.supported {
			if s != sup&^0x20 {
				t.Fatalf("supported %#x read back as %#x", uint8(sup), uint8(s))
			}
		}
	}
}

// TestGroupsReport checks the path target/scsi will take: Groups, then the
// encoding, then what an initiator reads.
func TestGroupsReport(t *testing.T) {
	nodes := []Node{
		{Name: "n2", Group: 2, Ports: []uint16{2}, Alive: true},
		{Name: "n1", Group: 1, Ports: []uint16{1}, Alive: true, Lease: true},
		{Name: "n3", Group: 3, Ports: []uint16{3}, Alive: true},
	}
	for _, policy := range []Policy{NonOwnerActive, NonOwnerStandby} {
		got, err := decodeRTPG(ReportTargetPortGroups(Groups(LUN{Owner: "n1", Policy: policy}, nodes), true, 10, Implemented))
		if err != nil {
			t.Fatal(err)
		}
		other := ActiveNonOptimized
		if policy == NonOwnerStandby {
			other = Standby
		}
		want := []Group{
			{ID: 1, State: ActiveOptimized, Ports: []uint16{1}, Preferred: true},
			{ID: 2, State: other, Ports: []uint16{2}},
			{ID: 3, State: other, Ports: []uint16{3}},
		}
		if !equalGroups(got.groups, want) || got.itt != 10 {
			t.Errorf("policy %v: read back %+v", policy, got)
		}
	}
}

type rtpgData struct {
	extended  bool
	itt       uint8
	groups    []Group
	supported []SupportedStates
}

// decodeRTPG reads REPORT TARGET PORT GROUPS parameter data as sg_rtpg and
// the Linux initiator do, and checks that RETURN DATA LENGTH covers exactly
// the descriptors.
func decodeRTPG(b []byte) (rtpgData, error) {
	var d rtpgData
	if len(b) < 4 {
		return d, errors.New("short header")
	}
	if n := int(binary.BigEndian.Uint32(b)) + 4; n != len(b) {
		return d, fmt.Errorf("RETURN DATA LENGTH says %d bytes, have %d", n, len(b))
	}
	off := 4
	if len(b) >= 8 && b[4]&0x70 == 0x10 {
		d.extended, d.itt, off = true, b[5], 8
		if b[4]&^0x70 != 0 || b[6] != 0 || b[7] != 0 {
			return d, errors.New("reserved header bits set")
		}
	}
	for off < len(b) {
		if off+8 > len(b) {
			return d, fmt.Errorf("descriptor at %d cut short", off)
		}
		desc := b[off:]
		if desc[0]&0x70 != 0 || desc[4] != 0 || desc[6] != 0 {
			return d, fmt.Errorf("reserved bits set in descriptor at %d", off)
		}
		g := Group{
			ID: binary.BigEndian.Uint16(desc[2:]), State: State(desc[0] & 0x0f),
			Preferred: desc[0]&0x80 != 0, Status: Status(desc[5]),
		}
		end := off + 8 + 4*int(desc[7])
		if end > len(b) {
			return d, fmt.Errorf("ports of descriptor at %d cut short", off)
		}
		for p := off + 8; p < end; p += 4 {
			if b[p] != 0 || b[p+1] != 0 {
				return d, fmt.Errorf("obsolete bytes set at %d", p)
			}
			g.Ports = append(g.Ports, binary.BigEndian.Uint16(b[p+2:]))
		}
		d.groups = append(d.groups, g)
		d.supported = append(d.supported, SupportedStates(desc[1]))
		off = end
	}
	return d, nil
}
