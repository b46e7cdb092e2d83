package integration

import (
	"bufio"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/pdu"
)

// rawConn speaks iSCSI PDU by PDU, for sending what no well-behaved
// initiator would.
type rawConn struct {
	t      testing.TB
	c      net.Conn
	br     *bufio.Reader
	ahs    [pdu.AHSBufLen]byte
	isid   [6]byte
	hd, dd bool // digests in force (full feature phase only)

	cmdSN, expStatSN uint32
}

func rawDial(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &rawConn{t: t, c: c, br: bufio.NewReader(c), cmdSN: 1}
	_, _ = rand.Read(r.isid[1:])
	r.isid[0] = 0x80
	return r
}

// write sends one PDU, framed with the digests in force.
func (r *rawConn) write(h *pdu.Header, data []byte) error {
	bufs := net.Buffers{h[:]}
	if r.hd {
		d := pdu.HeaderDigest(h, nil)
		bufs = append(bufs, d[:])
	}
	if len(data) > 0 {
		var tr [8]byte
		bufs = append(bufs, data, pdu.Trailer(&tr, data, r.dd))
	}
	_ = r.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := bufs.WriteTo(r.c)
	return err
}

// read receives one PDU within timeout.
func (r *rawConn) read(timeout time.Duration) (pdu.Header, []byte, error) {
	var h pdu.Header
	_ = r.c.SetReadDeadline(time.Now().Add(timeout))
	if _, err := pdu.ReadHeader(r.br, &h, r.ahs[:], r.hd); err != nil {
		return h, nil, err
	}
	n := h.DataSegmentLength()
	if n > 16<<20 {
		return h, nil, fmt.Errorf("%v announces a %d-byte data segment", h.Opcode(), n)
	}
	data := make([]byte, n)
	err := pdu.ReadData(r.br, data, r.dd)
	return h, data, err
}

// readNonPing reads the next PDU that is not an unsolicited NOP-In.
func (r *rawConn) readNonPing(timeout time.Duration) (pdu.Header, []byte, error) {
	deadline := time.Now().Add(timeout)
	for {
		h, data, err := r.read(time.Until(deadline))
		if err != nil || h.Opcode() != pdu.OpNOPIn || h.ITT() != pdu.ReservedTag {
			return h, data, err
		}
	}
}

// closedByPeer reports whether err means the target ended the connection,
// as opposed to our deadline expiring.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// expectClosed reads until the target closes the connection and returns
// the headers of the PDUs it sent before doing so. It fails the test if the
// connection is still open after timeout.
func (r *rawConn) expectClosed(timeout time.Duration) []pdu.Header {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	var got []pdu.Header
	for {
		h, _, err := r.read(time.Until(deadline))
		if err == nil {
			got = append(got, h)
			continue
		}
		if closedByPeer(err) {
			return got
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			r.t.Fatalf("connection still open %v later (received %v)", timeout, opcodes(got))
		}
		// A framing error on our side still means nothing more is usable.
		r.t.Logf("reading: %v (treated as closed)", err)
		return got
	}
}

func opcodes(hs []pdu.Header) []pdu.Opcode {
	ops := make([]pdu.Opcode, len(hs))
	for i := range hs {
		ops[i] = hs[i].Opcode()
	}
	return ops
}

// answers reports whether one of hs is a response to the task itt.
func answers(hs []pdu.Header, itt uint32) bool {
	for i := range hs {
		if hs[i].ITT() == itt {
			return true
		}
	}
	return false
}

// loginReq sends one Login Request with kvs as its text.
func (r *rawConn) loginReq(transit, cont bool, csg, nsg byte, kvs []pdu.KV) error {
	var data []byte
	for _, kv := range kvs {
		data = pdu.AppendText(data, kv.Key, kv.Value)
	}
	return r.loginData(transit, cont, csg, nsg, data)
}

func (r *rawConn) loginData(transit, cont bool, csg, nsg byte, data []byte) error {
	req := pdu.LoginReq{Transit: transit, Continue: cont, CSG: csg, DataLen: len(data),
		ISID: r.isid, CmdSN: r.cmdSN, ExpStatSN: r.expStatSN}
	if transit {
		req.NSG = nsg
	}
	var h pdu.Header
	req.Marshal(&h)
	return r.write(&h, data)
}

// loginResp reads a Login Response; its keys are returned parsed.
func (r *rawConn) loginResp() (pdu.LoginResp, []pdu.KV, error) {
	h, data, err := r.read(5 * time.Second)
	var resp pdu.LoginResp
	if err != nil {
		return resp, nil, err
	}
	if h.Opcode() != pdu.OpLoginResp {
		return resp, nil, fmt.Errorf("got %v during login", h.Opcode())
	}
	resp.Unmarshal(&h)
	r.expStatSN = resp.StatSN + 1
	if d := pdu.HeaderDigest(&h, nil); len(data) >= 4 && [4]byte(data[:4]) == d {
		return resp, nil, errors.New("the Login Response carries a header digest; digests start only after the login phase (RFC 7143 13.1)")
	}
	kvs, err := pdu.ParseText(data)
	if err != nil {
		return resp, nil, fmt.Errorf("Login Response text %q: %w", data, err)
	}
	return resp, kvs, nil
}

// login takes the connection to the full feature phase through the
// operational stage only (no authentication), offering the given digests;
// an empty target makes it a discovery session. It returns the final Login
// Response.
func (r *rawConn) login(target string, headerDigest, dataDigest bool) pdu.LoginResp {
	r.t.Helper()
	digest := func(on bool) string {
		if on {
			return "CRC32C"
		}
		return "None"
	}
	kvs := []pdu.KV{
		{Key: "InitiatorName", Value: "iqn.2024-01.io.hatarget:raw"},
		{Key: "SessionType", Value: "Normal"},
		{Key: "TargetName", Value: target},
	}
	if target == "" {
		kvs = append(kvs[:1], pdu.KV{Key: "SessionType", Value: "Discovery"})
	}
	kvs = append(kvs, []pdu.KV{
		{Key: "HeaderDigest", Value: digest(headerDigest)},
		{Key: "DataDigest", Value: digest(dataDigest)},
		{Key: "MaxRecvDataSegmentLength", Value: "262144"},
		{Key: "ErrorRecoveryLevel", Value: "0"},
	}...)
	if target != "" {
		kvs = append(kvs, pdu.KV{Key: "InitialR2T", Value: "Yes"}, pdu.KV{Key: "ImmediateData", Value: "Yes"})
	}
	var resp pdu.LoginResp
	for round := 0; ; round++ {
		if round == 8 {
			r.t.Fatal("raw login: target did not enter the full feature phase in 8 rounds")
		}
		if err := r.loginReq(true, false, pdu.StageOperational, pdu.StageFullFeature, kvs); err != nil {
			r.t.Fatalf("raw login: %v", err)
		}
		var answer []pdu.KV
		var err error
		resp, answer, err = r.loginResp()
		if err != nil {
			r.t.Fatalf("raw login: %v", err)
		}
		if resp.StatusClass != pdu.LoginSuccess {
			r.t.Fatalf("raw login: status %#02x%02x", resp.StatusClass, resp.StatusDetail)
		}
		for _, kv := range answer {
			switch kv.Key {
			case "HeaderDigest":
				if kv.Value != digest(headerDigest) {
					r.t.Fatalf("raw login: target answered HeaderDigest=%s", kv.Value)
				}
			case "DataDigest":
				if kv.Value != digest(dataDigest) {
					r.t.Fatalf("raw login: target answered DataDigest=%s", kv.Value)
				}
			}
		}
		if resp.Transit && resp.NSG == pdu.StageFullFeature {
			break
		}
		kvs = nil
	}
	// Digests start with the first PDU after the final Login Response.
	r.hd, r.dd = headerDigest, dataDigest
	return resp
}

// nop pings with an immediate NOP-Out and waits for the echo, proving the
// connection is still in step. It returns the opcodes of whatever else the
// target sent first (a Reject of an earlier PDU, say).
func (r *rawConn) nop(itt uint32) ([]pdu.Opcode, error) {
	data := []byte("raw-ping")
	var h pdu.Header
	(&pdu.NOPOut{Immediate: true, DataLen: len(data), ITT: itt, TTT: pdu.ReservedTag,
		CmdSN: r.cmdSN, ExpStatSN: r.expStatSN}).Marshal(&h)
	if err := r.write(&h, data); err != nil {
		return nil, err
	}
	var before []pdu.Opcode
	for {
		h, echo, err := r.readNonPing(5 * time.Second)
		if err != nil {
			return before, fmt.Errorf("waiting for NOP-In: %w", err)
		}
		if h.Opcode() != pdu.OpNOPIn || h.ITT() != itt {
			before = append(before, h.Opcode())
			continue
		}
		if string(echo) != string(data) {
			return before, fmt.Errorf("NOP-In echoed %q", echo)
		}
		var n pdu.NOPIn
		n.Unmarshal(&h)
		r.expStatSN = n.StatSN + 1
		return before, nil
	}
}
