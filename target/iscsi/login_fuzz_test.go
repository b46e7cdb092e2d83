package iscsi

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/pdu"
	"github.com/hatarget/hatarget/target/scsi"
)

// FuzzLogin drives the login state machine with arbitrary sequences of
// Login Requests (stages, T and C bits, text) at a node where every way in
// needs CHAP: a target with IncomingUsers, and discovery with CHAP. The
// fuzzer cannot answer a random challenge, so no sequence may ever reach
// the full feature phase, and none may panic or hang the login.
//
// A script is a series of PDUs separated by 0xff: each one's first byte is
// T (0x80), C (0x40), CSG (bits 2-3) and NSG (bits 0-1), the rest its text.
func FuzzLogin(f *testing.F) {
	for _, seed := range [][]byte{
		// The stage jump: stay in security offering CHAP, then claim the
		// operational stage and ask for the full feature phase.
		loginScript(0x00, "InitiatorName=iqn.x:a\x00TargetName="+chapIQN+"\x00AuthMethod=CHAP,None\x00", 0x87, ""),
		loginScript(0x87, "InitiatorName=iqn.x:a\x00SessionType=Discovery\x00"),
		loginScript(0x01, "InitiatorName=iqn.x:a\x00TargetName="+chapIQN+"\x00AuthMethod=None\x00"),
		loginScript(0x00, "InitiatorName=iqn.x:a\x00TargetName="+chapIQN+"\x00AuthMethod=CHAP\x00", 0x00, "CHAP_A=5\x00",
			0x81, "CHAP_N=joe\x00CHAP_R=0x00\x00"),
		loginScript(0x40, "InitiatorName=iqn.x:a\x00", 0x40, "TargetName=", 0x00, chapIQN+"\x00"),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, script []byte) {
		srv := NewServer(Options{Logger: slog.New(slog.DiscardHandler), LoginTimeout: 5 * time.Second})
		users := []CHAPUser{{User: "joe", Secret: "12charsecret"}}
		srv.SetTargets([]*Target{{Name: chapIQN, Limits: DefaultLimits(), IncomingUsers: users,
			Views: func(string) scsi.View { return noLUNs{} }, RelativePort: 1, PortGroup: 1}}, users)
		client, server := net.Pipe()
		srv.startConn(server)
		defer func() {
			client.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Fatalf("login still running after the client left: %v", err)
			}
		}()
		var answered atomic.Int32
		verdict := make(chan error, 1)
		go func() { verdict <- readLoginAnswers(client, &answered) }()
		sent := int32(0)
		for _, p := range bytes.Split(script, []byte{0xff}) {
			if len(p) == 0 || writeLoginPDU(client, p[0], p[1:]) != nil {
				break // the target closed after a refusal
			}
			sent++
		}
		deadline := time.Now().Add(5 * time.Second)
		for answered.Load() < sent && len(verdict) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%d Login Requests answered of %d", answered.Load(), sent)
			}
			time.Sleep(time.Millisecond)
		}
		client.Close()
		if err := <-verdict; err != nil {
			t.Fatal(err)
		}
	})
}

// loginScript builds a FuzzLogin script from flag/text pairs.
func loginScript(parts ...any) []byte {
	var out []byte
	for i := 0; i < len(parts); i += 2 {
		if i > 0 {
			out = append(out, 0xff)
		}
		out = append(out, byte(parts[i].(int)))
		out = append(out, parts[i+1].(string)...)
	}
	return out
}

func writeLoginPDU(c net.Conn, flags byte, text []byte) error {
	req := pdu.LoginReq{Transit: flags&0x80 != 0, Continue: flags&0x40 != 0, CSG: flags >> 2 & 3, NSG: flags & 3,
		ISID: [6]byte{0x80, 1, 2, 3, 4, 5}, CmdSN: 1, DataLen: len(text)}
	var h pdu.Header
	req.Marshal(&h)
	var tr [8]byte
	bufs := net.Buffers{h[:], text, pdu.Trailer(&tr, text, false)}
	c.SetWriteDeadline(time.Now().Add(time.Second))
	_, err := bufs.WriteTo(c)
	return err
}

// readLoginAnswers reads Login Responses until the connection closes,
// counting them, and fails on one that moves to the full feature phase.
func readLoginAnswers(c net.Conn, answered *atomic.Int32) error {
	br := bufio.NewReader(c)
	var h pdu.Header
	var ahs [pdu.AHSBufLen]byte
	for {
		if _, err := pdu.ReadHeader(br, &h, ahs[:], false); err != nil {
			return nil // closed: after a refusal, or by us
		}
		if err := pdu.Discard(br, h.DataSegmentLength(), false); err != nil {
			return nil
		}
		var r pdu.LoginResp
		r.Unmarshal(&h)
		if h.Opcode() == pdu.OpLoginResp && r.StatusClass == pdu.LoginSuccess && r.Transit && r.NSG == pdu.StageFullFeature {
			return errFullFeatureWithoutAuth
		}
		answered.Add(1)
	}
}

var errFullFeatureWithoutAuth = &loginError{msg: "a login reached the full feature phase without authenticating"}
