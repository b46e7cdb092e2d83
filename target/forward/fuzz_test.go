package forward

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/scsi"
)

// zeros backs the Data-In buffers of re-encoded requests, whose length the
// request only announces.
var zeros = make([]byte, MaxDataLen)

func fuzzSeeds(f *testing.F) {
	cmd := &scsi.Command{Nexus: testNexus(), CDB: []byte{0x2a, 0, 0, 0, 0, 1, 0, 0, 1, 0}, DataOut: make([]byte, 512)}
	f.Add(requestFrame(f, 0x10001, "disk1", 3, cmd))
	f.Add(requestFrame(f, 2, "d", 0, &scsi.Command{CDB: []byte{0x12, 0, 0, 0, 36, 0}, DataIn: make([]byte, 36)}))
	f.Add(append(AppendResponse(nil, 7, &scsi.Result{Status: scsi.StatusGood, DataInLen: 3, Transfer: 512}), 1, 2, 3))
	f.Add(AppendResponse(nil, 7, &scsi.Result{Status: scsi.StatusCheckCondition, Sense: senseTransitioning[:]}))
	f.Add(AppendError(nil, ErrorFrame{Tag: 1, Code: ErrNotOwner, Epoch: 9}))
	f.Add(AppendHeader(nil, Header{Type: FrameAbort, Tag: 4}))
	f.Add(AppendHello(nil, Version))
	f.Add(taskMgmtFrame(f, 0x30001, TMLogicalUnitReset, "disk", 1, testNexus()))
	f.Add(taskMgmtFrame(f, 5, TMNexusLoss, "d", 0, nil))
}

// FuzzDecode checks that every decoder refuses garbage without panicking,
// and that whatever decodes encodes back to the same bytes: decoding is
// strict, so one message has one encoding.
func FuzzDecode(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, frame []byte) {
		if v, err := DecodeHello(frame); err == nil && !bytes.Equal(AppendHello(nil, v), frame) {
			t.Fatalf("hello %x re-encodes differently", frame)
		}
		if len(frame) < HeaderLen {
			return
		}
		h, err := DecodeHeader(frame[:HeaderLen])
		if err != nil || int(h.Length) != len(frame)-HeaderLen {
			return
		}
		if again := reencode(t, h, frame[HeaderLen:]); again != nil && !bytes.Equal(again, frame) {
			t.Fatalf("frame %x re-encodes as %x", frame, again)
		}
	})
}

// reencode decodes payload as h says and encodes the result again; nil
// when it does not decode.
func reencode(t *testing.T, h Header, payload []byte) []byte {
	switch h.Type {
	case FrameRequest:
		r, err := DecodeRequest(h, payload)
		if err != nil {
			return nil
		}
		n := r.Nexus
		cmd := &scsi.Command{
			Nexus: &scsi.Nexus{InitiatorName: string(n.InitiatorName), InitiatorPort: string(n.InitiatorPort),
				TargetName: string(n.TargetName), TargetPort: string(n.TargetPort),
				RelativePort: n.RelativePort, PortGroup: n.PortGroup},
			LUN: r.LUN, TaskTag: r.TaskTag, CDB: r.CDB, DataIn: zeros[:r.DataInLen], DataOut: r.DataOut,
		}
		return requestFrame(t, r.Tag, string(r.Device), r.Epoch, cmd)
	case FrameResponse:
		r, err := DecodeResponse(h, payload)
		if err != nil {
			return nil
		}
		res := &scsi.Result{Status: r.Status, Sense: r.Sense, DataInLen: len(r.DataIn), Transfer: r.Transfer}
		return append(AppendResponse(nil, r.Tag, res), r.DataIn...)
	case FrameError:
		e, err := DecodeError(h, payload)
		if err != nil {
			return nil
		}
		return AppendError(nil, e)
	case FrameTaskMgmt:
		m, err := DecodeTaskMgmt(h, payload)
		if err != nil {
			return nil
		}
		n := m.Nexus
		return taskMgmtFrame(t, m.Tag, m.Function, string(m.Device), m.Epoch, &scsi.Nexus{
			InitiatorName: string(n.InitiatorName), InitiatorPort: string(n.InitiatorPort),
			TargetName: string(n.TargetName), TargetPort: string(n.TargetPort),
			RelativePort: n.RelativePort, PortGroup: n.PortGroup})
	}
	return AppendHeader(nil, h)
}

// FuzzServerConn feeds a byte stream after a valid hello to a server with a
// real LU: whatever arrives, the server must neither panic nor hang, and
// it must end the connection.
func FuzzServerConn(f *testing.F) {
	fuzzSeeds(f)
	read := requestFrame(f, 0x20001, "disk", 1, &scsi.Command{Nexus: testNexus(),
		CDB: []byte{0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0}, DataIn: make([]byte, 512)})
	f.Add(append(bytes.Clone(read), AppendHeader(nil, Header{Type: FrameAbort, Tag: 0x20001})...))
	f.Add(append(bytes.Clone(read), read...)) // the same tag twice
	lu := newMemLU(f, 1<<20)
	srv, err := NewServer(ServerConfig{Lookup: func(string) (*scsi.LU, uint64, bool) { return lu, 1, true }})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			srv.ServeConn(server)
			close(done)
		}()
		go io.Copy(io.Discard, client)
		client.SetWriteDeadline(time.Now().Add(time.Second))
		client.Write(append(AppendHello(nil, Version), stream...))
		client.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("server still serving a closed connection")
		}
	})
}
