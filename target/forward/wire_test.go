package forward

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/hatarget/hatarget/target/scsi"
)

func testNexus() *scsi.Nexus {
	return scsi.NewNexus("iqn.1994-05.com.example:host1", [6]byte{0x80, 0, 0, 0, 0, 1},
		"iqn.2024-01.org.hatarget:t1", 2, 9, 2)
}

// requestFrame encodes cmd as a full request frame, data-out included.
func requestFrame(t testing.TB, tag uint32, device string, epoch uint64, cmd *scsi.Command) []byte {
	t.Helper()
	b, err := AppendRequest(nil, tag, device, epoch, cmd)
	if err != nil {
		t.Fatal(err)
	}
	return append(b, cmd.DataOut...)
}

func taskMgmtFrame(t testing.TB, tag uint32, fn TMFunction, device string, epoch uint64, n *scsi.Nexus) []byte {
	t.Helper()
	b, err := AppendTaskMgmt(nil, tag, fn, device, epoch, n)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// splitFrame decodes the header of frame and returns it with the payload.
func splitFrame(t testing.TB, frame []byte) (Header, []byte) {
	t.Helper()
	h, err := DecodeHeader(frame[:HeaderLen])
	if err != nil {
		t.Fatal(err)
	}
	if int(h.Length) != len(frame)-HeaderLen {
		t.Fatalf("header says %d payload bytes, frame has %d", h.Length, len(frame)-HeaderLen)
	}
	return h, frame[HeaderLen:]
}

func TestRequestRoundTrip(t *testing.T) {
	long := strings.Repeat("x", MaxNameLen)
	for _, tc := range []struct {
		name   string
		device string
		cmd    scsi.Command
	}{
		{"read", "disk1", scsi.Command{Nexus: testNexus(), LUN: 3, TaskTag: 0x1234,
			CDB: []byte{0x28, 0, 0, 0, 0, 8, 0, 0, 8, 0}, DataIn: make([]byte, 4096)}},
		{"write", "disk1", scsi.Command{Nexus: testNexus(), CDB: []byte{0x2a, 0, 0, 0, 0, 8, 0, 0, 1, 0},
			DataOut: bytes.Repeat([]byte{0xab}, 512)}},
		{"no nexus", "d", scsi.Command{CDB: []byte{0, 0, 0, 0, 0, 0}}},
		{"longest fields", long, scsi.Command{
			Nexus: &scsi.Nexus{InitiatorName: long, InitiatorPort: long, TargetName: long, TargetPort: long,
				RelativePort: 0xffff, PortGroup: 0xfffe},
			LUN: ^uint64(0), TaskTag: ^uint32(0), CDB: bytes.Repeat([]byte{0x7f}, MaxCDBLen),
			DataIn: make([]byte, MaxDataLen), DataOut: make([]byte, MaxDataLen)}},
		{"empty CDB", "d", scsi.Command{Nexus: testNexus()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frame := requestFrame(t, 0xa0001, tc.device, 42, &tc.cmd)
			h, payload := splitFrame(t, frame)
			r, err := DecodeRequest(h, payload)
			if err != nil {
				t.Fatal(err)
			}
			checkDecoded(t, r, tc.device, &tc.cmd)
		})
	}
}

func checkDecoded(t *testing.T, r Request, device string, cmd *scsi.Command) {
	t.Helper()
	var n scsi.Nexus
	if cmd.Nexus != nil {
		n = *cmd.Nexus
	}
	got := []any{r.Tag, r.Epoch, r.LUN, r.TaskTag, r.DataInLen, string(r.Device),
		string(r.Nexus.InitiatorName), string(r.Nexus.InitiatorPort), string(r.Nexus.TargetName),
		string(r.Nexus.TargetPort), r.Nexus.RelativePort, r.Nexus.PortGroup}
	want := []any{uint32(0xa0001), uint64(42), cmd.LUN, cmd.TaskTag, uint32(len(cmd.DataIn)), device,
		n.InitiatorName, n.InitiatorPort, n.TargetName, n.TargetPort, n.RelativePort, n.PortGroup}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("field %d: got %v, want %v", i, got[i], want[i])
		}
	}
	if !bytes.Equal(r.CDB, cmd.CDB) || !bytes.Equal(r.DataOut, cmd.DataOut) {
		t.Errorf("CDB or data-out differ")
	}
}

func TestAppendRequestRefusesOversizeFields(t *testing.T) {
	long := strings.Repeat("x", MaxNameLen+1)
	for _, tc := range []struct {
		name   string
		device string
		cmd    scsi.Command
	}{
		{"no device", "", scsi.Command{}},
		{"long device", long, scsi.Command{}},
		{"long name", "d", scsi.Command{Nexus: &scsi.Nexus{TargetPort: long}}},
		{"long CDB", "d", scsi.Command{CDB: make([]byte, MaxCDBLen+1)}},
		{"long data-in", "d", scsi.Command{DataIn: make([]byte, MaxDataLen+1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := AppendRequest(nil, 1, tc.device, 1, &tc.cmd); err == nil {
				t.Fatal("encoded")
			}
		})
	}
}

func TestTaskMgmtRoundTrip(t *testing.T) {
	long := strings.Repeat("y", MaxNameLen)
	for _, tc := range []struct {
		name   string
		fn     TMFunction
		device string
		nexus  *scsi.Nexus
	}{
		{"reset", TMLogicalUnitReset, "disk1", testNexus()},
		{"nexus loss", TMNexusLoss, "disk1", testNexus()},
		{"no nexus", TMLogicalUnitReset, "d", nil},
		{"longest fields", TMNexusLoss, long, &scsi.Nexus{InitiatorName: long, InitiatorPort: long,
			TargetName: long, TargetPort: long, RelativePort: 0xffff, PortGroup: 0xfffe}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, payload := splitFrame(t, taskMgmtFrame(t, 0xb0002, tc.fn, tc.device, 1<<50, tc.nexus))
			m, err := DecodeTaskMgmt(h, payload)
			if err != nil {
				t.Fatal(err)
			}
			if m.Tag != 0xb0002 || m.Function != tc.fn || m.Epoch != 1<<50 || string(m.Device) != tc.device {
				t.Fatalf("decoded %+v", m)
			}
			var want scsi.Nexus
			if tc.nexus != nil {
				want = *tc.nexus
			}
			got := m.Nexus
			if string(got.InitiatorName) != want.InitiatorName || string(got.InitiatorPort) != want.InitiatorPort ||
				string(got.TargetName) != want.TargetName || string(got.TargetPort) != want.TargetPort ||
				got.RelativePort != want.RelativePort || got.PortGroup != want.PortGroup {
				t.Fatalf("nexus %+v, want %+v", got, want)
			}
		})
	}
	// The nexus bytes are those of a request of the same nexus, so the
	// server's nexus cache serves both.
	n := testNexus()
	h, payload := splitFrame(t, taskMgmtFrame(t, 1, TMLogicalUnitReset, "disk", 1, n))
	m, err := DecodeTaskMgmt(h, payload)
	if err != nil {
		t.Fatal(err)
	}
	h, payload = splitFrame(t, requestFrame(t, 1, "disk", 1, &scsi.Command{Nexus: n}))
	r, err := DecodeRequest(h, payload)
	if err != nil || !bytes.Equal(m.nexusRaw, r.nexusRaw) {
		t.Fatalf("nexus bytes: task management %x, request %x (%v)", m.nexusRaw, r.nexusRaw, err)
	}
}

func TestAppendTaskMgmtRefusesBadFields(t *testing.T) {
	long := strings.Repeat("x", MaxNameLen+1)
	for _, tc := range []struct {
		name   string
		fn     TMFunction
		device string
		nexus  *scsi.Nexus
	}{
		{"no device", TMLogicalUnitReset, "", nil},
		{"long device", TMLogicalUnitReset, long, nil},
		{"long name", TMNexusLoss, "d", &scsi.Nexus{InitiatorPort: long}},
		{"function 0", 0, "d", nil},
		{"unknown function", TMNexusLoss + 1, "d", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := AppendTaskMgmt(nil, 1, tc.fn, tc.device, 1, tc.nexus); err == nil {
				t.Fatal("encoded")
			}
		})
	}
}

func TestResponseRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		res  scsi.Result
		data []byte
	}{
		{"good with data", scsi.Result{Status: scsi.StatusGood, DataInLen: 4, Transfer: 4096}, []byte{1, 2, 3, 4}},
		{"check condition", scsi.Result{Status: scsi.StatusCheckCondition, Transfer: 512,
			Sense: []byte{0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0, 0, 0, 0, 0}}, nil},
		{"longest sense", scsi.Result{Status: scsi.StatusCheckCondition, Sense: bytes.Repeat([]byte{9}, MaxSenseLen)}, nil},
		{"huge transfer", scsi.Result{Status: scsi.StatusGood, Transfer: maxTransfer}, nil},
		{"task aborted", scsi.Result{Status: scsi.StatusTaskAborted}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frame := append(AppendResponse(nil, 77, &tc.res), tc.data...)
			h, payload := splitFrame(t, frame)
			r, err := DecodeResponse(h, payload)
			if err != nil {
				t.Fatal(err)
			}
			if r.Tag != 77 || r.Status != tc.res.Status || r.Transfer != tc.res.Transfer ||
				!bytes.Equal(r.Sense, tc.res.Sense) || !bytes.Equal(r.DataIn, tc.data) {
				t.Fatalf("got %+v", r)
			}
		})
	}
}

func TestErrorAndControlRoundTrip(t *testing.T) {
	e := ErrorFrame{Tag: 5, Code: ErrNotOwner, Epoch: 1 << 40}
	h, payload := splitFrame(t, AppendError(nil, e))
	got, err := DecodeError(h, payload)
	if err != nil || got != e {
		t.Fatalf("error frame: %+v, %v", got, err)
	}
	for _, typ := range []FrameType{FrameAbort, FramePing, FramePong} {
		h, payload := splitFrame(t, AppendHeader(nil, Header{Type: typ, Tag: 9}))
		if h.Type != typ || h.Tag != 9 || len(payload) != 0 {
			t.Fatalf("%s: %+v", typ, h)
		}
	}
	v, err := DecodeHello(AppendHello(nil, Version))
	if err != nil || v != Version {
		t.Fatalf("hello: %d, %v", v, err)
	}
}

func TestDecodeRefusesMalformedFrames(t *testing.T) {
	req := requestFrame(t, 1, "disk", 1, &scsi.Command{Nexus: testNexus(), CDB: []byte{0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0}, DataOut: make([]byte, 512)})
	resp := AppendResponse(nil, 1, &scsi.Result{Sense: []byte{0x70}})
	tmf := taskMgmtFrame(t, 1, TMLogicalUnitReset, "disk", 1, testNexus())
	patch := func(b []byte, off int, v ...byte) []byte {
		b = bytes.Clone(b)
		copy(b[off:], v)
		return b
	}
	for _, tc := range []struct {
		name  string
		frame []byte
	}{
		{"unknown type", patch(req, 0, 9)},
		{"flags set", patch(req, 1, 1)},
		{"reserved header bytes", patch(req, 3, 1)},
		{"request too short", AppendHeader(nil, Header{Type: FrameRequest, Length: requestFixedLen - 1})},
		{"request beyond the limit", AppendHeader(nil, Header{Type: FrameRequest, Length: MaxFrameLen + 1})},
		{"data-out length disagrees", patch(req, HeaderLen+27, 0xff)},
		{"data-in beyond the limit", patch(req, HeaderLen+20, 0x10)},
		{"CDB length beyond the limit", patch(req, HeaderLen+28, 0x02, 0x00)},
		{"no device name", patch(req, HeaderLen+30, 0)},
		{"reserved request byte", patch(req, HeaderLen+31, 1)},
		{"name lengths disagree", patch(req, HeaderLen+32, 0xff)},
		{"abort with payload", AppendHeader(nil, Header{Type: FrameAbort, Length: 1})},
		{"sense beyond the limit", patch(resp, HeaderLen+1, MaxSenseLen+1)},
		{"sense length disagrees", patch(resp, HeaderLen+1, 2)},
		{"reserved response bytes", patch(resp, HeaderLen+2, 1)},
		{"transfer beyond the limit", patch(resp, HeaderLen+8, 0xff)},
		{"error code 0", AppendError(nil, ErrorFrame{Tag: 1})},
		{"task management too short", AppendHeader(nil, Header{Type: FrameTaskMgmt, Length: taskMgmtFixedLen - 1})},
		{"task management beyond the limit", AppendHeader(nil, Header{Type: FrameTaskMgmt, Length: maxTaskMgmtLen + 1})},
		{"task management function 0", patch(tmf, HeaderLen+8, 0)},
		{"unknown task management function", patch(tmf, HeaderLen+8, 3)},
		{"task management without a device", patch(tmf, HeaderLen+9, 0)},
		{"reserved task management bytes", patch(tmf, HeaderLen+11, 1)},
		{"task management lengths disagree", patch(tmf, HeaderLen+12, 0xff)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := decodeFrame(tc.frame); !errors.Is(err, ErrProtocol) {
				t.Fatalf("got %v, want a protocol error", err)
			}
		})
	}
	for _, hello := range [][]byte{[]byte("HTFX\x00\x01\x00\x00"), []byte("HTFW\x00\x01\x00\x01"), []byte("HTFW")} {
		if _, err := DecodeHello(hello); !errors.Is(err, ErrProtocol) {
			t.Errorf("hello %q: %v", hello, err)
		}
	}
}

// decodeFrame decodes one whole frame with the decoder of its type.
func decodeFrame(frame []byte) error {
	if len(frame) < HeaderLen {
		return protoErr("short frame")
	}
	h, err := DecodeHeader(frame[:HeaderLen])
	if err != nil {
		return err
	}
	payload := frame[HeaderLen:]
	switch h.Type {
	case FrameRequest:
		_, err = DecodeRequest(h, payload)
	case FrameResponse:
		_, err = DecodeResponse(h, payload)
	case FrameError:
		_, err = DecodeError(h, payload)
	case FrameTaskMgmt:
		_, err = DecodeTaskMgmt(h, payload)
	default:
		if len(payload) != 0 {
			err = protoErr("payload after a %s", h.Type)
		}
	}
	return err
}
