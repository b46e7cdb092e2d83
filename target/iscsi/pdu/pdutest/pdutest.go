// Package pdutest is a raw iSCSI client for tests: it sends PDUs one by one,
// exactly as built, so a test can play an initiator that breaks the rules
// (a login that skips a stage, Data-Out for another session's task, a flood
// of requests whose answers it never reads) and check the target's answer
// PDU by PDU. A well-behaved session is better served by package initiator.
package pdutest

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/pdu"
)

// Timeout is how long a read waits unless told otherwise.
const Timeout = 5 * time.Second

// maxSegment bounds a data segment Read accepts: a test must not allocate
// what a broken target announces.
const maxSegment = 16 << 20

// Conn is one TCP connection to a target, driven PDU by PDU.
type Conn struct {
	t   testing.TB
	NC  net.Conn
	br  *bufio.Reader
	ahs [pdu.AHSBufLen]byte
	// ISID is random per connection, with the "random" qualifier type.
	ISID [6]byte
	// HeaderDigest and DataDigest are the digests in force; Login sets
	// them once the full feature phase begins.
	HeaderDigest, DataDigest bool
	// CmdSN is the next command's; ExpStatSN follows the target's StatSN.
	CmdSN, ExpStatSN uint32
}

// Dial connects to addr and closes the connection when the test ends.
func Dial(t testing.TB, addr string) *Conn {
	t.Helper()
	c, err := DialErr(t, addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// DialErr is Dial for tests that expect the dial itself may fail.
func DialErr(t testing.TB, addr string) (*Conn, error) {
	return DialFrom(t, "", addr)
}

// DialFrom connects from the local IP address src ("" for any), so that a
// test can play several hosts over loopback (127.0.0.0/8).
func DialFrom(t testing.TB, src, addr string) (*Conn, error) {
	d := net.Dialer{Timeout: Timeout}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &Conn{t: t, NC: nc, br: bufio.NewReader(nc), CmdSN: 1}
	if _, err := rand.Read(c.ISID[1:]); err != nil {
		return nil, err
	}
	c.ISID[0] = 0x80
	return c, nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.NC.Close() }

// Write sends one PDU framed with the digests in force.
func (c *Conn) Write(h *pdu.Header, data []byte) error {
	bufs := net.Buffers{h[:]}
	if c.HeaderDigest {
		d := pdu.HeaderDigest(h, nil)
		bufs = append(bufs, d[:])
	}
	if len(data) > 0 {
		var tr [8]byte
		bufs = append(bufs, data, pdu.Trailer(&tr, data, c.DataDigest))
	}
	_ = c.NC.SetWriteDeadline(time.Now().Add(Timeout))
	_, err := bufs.WriteTo(c.NC)
	return err
}

// Read receives one PDU within timeout.
func (c *Conn) Read(timeout time.Duration) (pdu.Header, []byte, error) {
	var h pdu.Header
	_ = c.NC.SetReadDeadline(time.Now().Add(timeout))
	if _, err := pdu.ReadHeader(c.br, &h, c.ahs[:], c.HeaderDigest); err != nil {
		return h, nil, err
	}
	n := h.DataSegmentLength()
	if n > maxSegment {
		return h, nil, fmt.Errorf("%v announces a %d-byte data segment", h.Opcode(), n)
	}
	data := make([]byte, n)
	err := pdu.ReadData(c.br, data, c.DataDigest)
	return h, data, err
}

// ReadNonPing reads the next PDU that is not the target's own NOP-In ping.
func (c *Conn) ReadNonPing(timeout time.Duration) (pdu.Header, []byte, error) {
	deadline := time.Now().Add(timeout)
	for {
		h, data, err := c.Read(time.Until(deadline))
		if err != nil || h.Opcode() != pdu.OpNOPIn || h.ITT() != pdu.ReservedTag {
			return h, data, err
		}
	}
}

// ReadITT reads until the final answer for itt arrives (a Data-In only if
// it carries the status) and returns it with the headers of every PDU for
// other tasks before it.
func (c *Conn) ReadITT(itt uint32, timeout time.Duration) (pdu.Header, []byte, []pdu.Header, error) {
	deadline := time.Now().Add(timeout)
	var before []pdu.Header
	for {
		h, data, err := c.ReadNonPing(time.Until(deadline))
		if err != nil {
			return h, nil, before, err
		}
		if h.ITT() == itt && (h.Opcode() != pdu.OpDataIn || HasStatus(&h)) {
			return h, data, before, nil
		}
		if h.Opcode() == pdu.OpReject && RejectedITT(data) == itt {
			return h, data, before, nil
		}
		if h.ITT() != itt {
			before = append(before, h)
		}
	}
}

// HasStatus reports whether a Data-In carries the command's status (S bit).
func HasStatus(h *pdu.Header) bool { return h.Opcode() == pdu.OpDataIn && h[1]&0x01 != 0 }

// RejectedITT is the ITT of the header a Reject carries, or the reserved
// tag when it carries none.
func RejectedITT(data []byte) uint32 {
	if len(data) < pdu.HeaderLen {
		return pdu.ReservedTag
	}
	h := pdu.Header(data[:pdu.HeaderLen])
	return h.ITT()
}

// ClosedByPeer reports whether err means the target ended the connection,
// as opposed to a deadline expiring.
func ClosedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// ExpectClosed reads until the target closes the connection and returns
// the headers it sent before; the test fails if it is still open after
// timeout.
func (c *Conn) ExpectClosed(timeout time.Duration) []pdu.Header {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var got []pdu.Header
	for {
		h, _, err := c.Read(time.Until(deadline))
		switch {
		case err == nil:
			got = append(got, h)
			continue
		case errors.Is(err, os.ErrDeadlineExceeded):
			c.t.Fatalf("connection still open %v later (received %v)", timeout, Opcodes(got))
		case !ClosedByPeer(err):
			c.t.Logf("reading: %v (treated as closed)", err)
		}
		return got
	}
}

// Opcodes lists the opcodes of hs.
func Opcodes(hs []pdu.Header) []pdu.Opcode {
	ops := make([]pdu.Opcode, len(hs))
	for i := range hs {
		ops[i] = hs[i].Opcode()
	}
	return ops
}

// LoginPDU sends one Login Request with kvs as its text.
func (c *Conn) LoginPDU(transit, cont bool, csg, nsg byte, kvs ...pdu.KV) error {
	return c.LoginData(transit, cont, csg, nsg, Text(kvs...))
}

// LoginData sends one Login Request carrying data as its text.
func (c *Conn) LoginData(transit, cont bool, csg, nsg byte, data []byte) error {
	req := pdu.LoginReq{Transit: transit, Continue: cont, CSG: csg, DataLen: len(data),
		ISID: c.ISID, CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN}
	if transit {
		req.NSG = nsg
	}
	var h pdu.Header
	req.Marshal(&h)
	return c.Write(&h, data)
}

// Text encodes kvs as iSCSI text.
func Text(kvs ...pdu.KV) []byte {
	var data []byte
	for _, kv := range kvs {
		data = pdu.AppendText(data, kv.Key, kv.Value)
	}
	return data
}

// LoginResp reads a Login Response and parses its text.
func (c *Conn) LoginResp() (pdu.LoginResp, []pdu.KV, error) {
	var resp pdu.LoginResp
	h, data, err := c.Read(Timeout)
	if err != nil {
		return resp, nil, err
	}
	if h.Opcode() != pdu.OpLoginResp {
		return resp, nil, fmt.Errorf("got %v during login", h.Opcode())
	}
	resp.Unmarshal(&h)
	c.ExpStatSN = resp.StatSN + 1
	kvs, err := pdu.ParseText(data)
	if err != nil {
		return resp, nil, fmt.Errorf("Login Response text %q: %w", data, err)
	}
	return resp, kvs, nil
}

// Exchange sends one Login Request and reads its answer.
func (c *Conn) Exchange(transit bool, csg, nsg byte, kvs ...pdu.KV) (pdu.LoginResp, []pdu.KV, error) {
	if err := c.LoginPDU(transit, false, csg, nsg, kvs...); err != nil {
		return pdu.LoginResp{}, nil, err
	}
	return c.LoginResp()
}

// Value returns the value of key in kvs, or "".
func Value(kvs []pdu.KV, key string) string {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value
		}
	}
	return ""
}

// Status formats a Login Response's status as RFC 7143 writes it (0x0201).
func Status(r pdu.LoginResp) string { return fmt.Sprintf("0x%02x%02x", r.StatusClass, r.StatusDetail) }

// LoginConfig is what Login logs in with.
type LoginConfig struct {
	Initiator string
	// Target empty makes a discovery session.
	Target string
	// CHAPUser and CHAPSecret, when set, authenticate with CHAP (MD5).
	CHAPUser, CHAPSecret string
	// Digests negotiates CRC32C header and data digests.
	Digests bool
	// Keys are extra operational keys, sent with the defaults.
	Keys []pdu.KV
}

// Login takes the connection to the full feature phase and fails the test
// if the target refuses; LoginErr returns the refusal instead.
func (c *Conn) Login(cfg LoginConfig) pdu.LoginResp {
	c.t.Helper()
	resp, err := c.LoginErr(cfg)
	if err != nil {
		c.t.Fatalf("raw login as %s to %q: %v", cfg.Initiator, cfg.Target, err)
	}
	return resp
}

// LoginError is a login the target refused, with the response saying why.
type LoginError struct{ Resp pdu.LoginResp }

func (e *LoginError) Error() string { return "login refused with status " + Status(e.Resp) }

// LoginErr logs in like Login and returns an error instead of failing.
func (c *Conn) LoginErr(cfg LoginConfig) (pdu.LoginResp, error) {
	ident := []pdu.KV{{Key: "InitiatorName", Value: cfg.Initiator}}
	if cfg.Target == "" {
		ident = append(ident, pdu.KV{Key: "SessionType", Value: "Discovery"})
	} else {
		ident = append(ident, pdu.KV{Key: "SessionType", Value: "Normal"}, pdu.KV{Key: "TargetName", Value: cfg.Target})
	}
	if cfg.CHAPUser != "" {
		if err := c.chap(ident, cfg.CHAPUser, cfg.CHAPSecret); err != nil {
			return pdu.LoginResp{}, err
		}
		ident = nil
	}
	digest := "None"
	if cfg.Digests {
		digest = "CRC32C"
	}
	op := append(ident, pdu.KV{Key: "HeaderDigest", Value: digest}, pdu.KV{Key: "DataDigest", Value: digest},
		pdu.KV{Key: "MaxRecvDataSegmentLength", Value: "262144"}, pdu.KV{Key: "ErrorRecoveryLevel", Value: "0"})
	if cfg.Target != "" {
		op = append(op, pdu.KV{Key: "InitialR2T", Value: "Yes"}, pdu.KV{Key: "ImmediateData", Value: "Yes"})
	}
	op = append(op, cfg.Keys...)
	for range 8 {
		resp, _, err := c.Exchange(true, pdu.StageOperational, pdu.StageFullFeature, op...)
		if err != nil {
			return resp, err
		}
		if resp.StatusClass != pdu.LoginSuccess {
			return resp, &LoginError{resp}
		}
		if resp.Transit && resp.NSG == pdu.StageFullFeature {
			// Digests start with the first PDU after the final response.
			c.HeaderDigest, c.DataDigest = cfg.Digests, cfg.Digests
			return resp, nil
		}
		op = nil
	}
	return pdu.LoginResp{}, errors.New("no full feature phase after 8 rounds")
}

// chap runs the security stage with CHAP MD5 and leaves the connection in
// the operational stage.
func (c *Conn) chap(ident []pdu.KV, user, secret string) error {
	steps := []func([]pdu.KV) (bool, []pdu.KV, error){
		func([]pdu.KV) (bool, []pdu.KV, error) {
			return false, append(ident, pdu.KV{Key: "AuthMethod", Value: "CHAP"}), nil
		},
		func([]pdu.KV) (bool, []pdu.KV, error) {
			return false, []pdu.KV{{Key: "CHAP_A", Value: "5"}}, nil
		},
		func(got []pdu.KV) (bool, []pdu.KV, error) {
			r, err := CHAPAnswer(got, secret)
			return true, []pdu.KV{{Key: "CHAP_N", Value: user}, {Key: "CHAP_R", Value: r}}, err
		},
	}
	var got []pdu.KV
	for _, step := range steps {
		transit, kvs, err := step(got)
		if err != nil {
			return err
		}
		resp, answer, err := c.Exchange(transit, pdu.StageSecurity, pdu.StageOperational, kvs...)
		if err != nil {
			return err
		}
		if resp.StatusClass != pdu.LoginSuccess {
			return &LoginError{resp}
		}
		got = answer
	}
	return nil
}

// CHAPAnswer computes CHAP_R (MD5) for the CHAP_I and CHAP_C in kvs.
func CHAPAnswer(kvs []pdu.KV, secret string) (string, error) {
	id, err := strconv.ParseUint(Value(kvs, "CHAP_I"), 0, 8)
	if err != nil {
		return "", fmt.Errorf("CHAP_I %q: %w", Value(kvs, "CHAP_I"), err)
	}
	challenge, err := hex.DecodeString(strings.TrimPrefix(Value(kvs, "CHAP_C"), "0x"))
	if err != nil {
		return "", fmt.Errorf("CHAP_C %q: %w", Value(kvs, "CHAP_C"), err)
	}
	h := md5.New()
	h.Write([]byte{byte(id)})
	h.Write([]byte(secret))
	h.Write(challenge)
	return "0x" + hex.EncodeToString(h.Sum(nil)), nil
}

// NOP pings with an immediate NOP-Out and waits for its echo, which proves
// the connection is still in step; it returns what the target sent first.
func (c *Conn) NOP(itt uint32) ([]pdu.Header, error) {
	data := []byte("pdutest-ping")
	var h pdu.Header
	(&pdu.NOPOut{Immediate: true, DataLen: len(data), ITT: itt, TTT: pdu.ReservedTag,
		CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN}).Marshal(&h)
	if err := c.Write(&h, data); err != nil {
		return nil, err
	}
	h, echo, before, err := c.ReadITT(itt, Timeout)
	if err != nil {
		return before, fmt.Errorf("waiting for the NOP-In: %w", err)
	}
	if h.Opcode() != pdu.OpNOPIn || string(echo) != string(data) {
		return before, fmt.Errorf("ping answered with %v carrying %q", h.Opcode(), echo)
	}
	var n pdu.NOPIn
	n.Unmarshal(&h)
	c.ExpStatSN = n.StatSN + 1
	return before, nil
}

// Command sends a SCSI Command with its immediate data, filling CmdSN and
// ExpStatSN; a non-immediate command takes the next CmdSN.
func (c *Conn) Command(cmd pdu.SCSICommand, data []byte) error {
	cmd.CmdSN, cmd.ExpStatSN, cmd.DataLen = c.CmdSN, c.ExpStatSN, len(data)
	if !cmd.Immediate {
		c.CmdSN++
	}
	var h pdu.Header
	cmd.Marshal(&h)
	return c.Write(&h, data)
}

// TaskMgmt sends an immediate task management request.
func (c *Conn) TaskMgmt(req pdu.TaskMgmtReq) error {
	req.Immediate, req.CmdSN, req.ExpStatSN = true, c.CmdSN, c.ExpStatSN
	var h pdu.Header
	req.Marshal(&h)
	return c.Write(&h, nil)
}

// SNACK sends a SNACK Request (RFC 7143 11.16) of the given type for itt.
func (c *Conn) SNACK(snackType byte, itt, ttt, begRun, runLength uint32) error {
	var h pdu.Header
	h[0] = byte(pdu.OpSNACKReq)
	h[1] = 0x80 | snackType&0x0f
	binary.BigEndian.PutUint32(h[16:], itt)
	binary.BigEndian.PutUint32(h[20:], ttt)
	binary.BigEndian.PutUint32(h[28:], c.ExpStatSN)
	binary.BigEndian.PutUint32(h[40:], begRun)
	binary.BigEndian.PutUint32(h[44:], runLength)
	return c.Write(&h, nil)
}

// KV is a key=value pair.
func KV(key, value string) pdu.KV { return pdu.KV{Key: key, Value: value} }

// Identity is the first Login Request's identity keys; an empty target
// makes a discovery session.
func Identity(initiator, target string) []pdu.KV {
	if target == "" {
		return []pdu.KV{KV("InitiatorName", initiator), KV("SessionType", "Discovery")}
	}
	return []pdu.KV{KV("InitiatorName", initiator), KV("SessionType", "Normal"), KV("TargetName", target)}
}

// Step is one Login Request of a scripted login: its stages, and its keys
// computed from those of the previous answer (to answer a CHAP challenge).
type Step struct {
	Transit  bool
	CSG, NSG byte
	Keys     func(prev []pdu.KV) ([]pdu.KV, error)
	// Continue sets the C bit; Raw, when set, is sent as the text instead
	// of Keys, to split a request anywhere over continued PDUs.
	Continue bool
	Raw      []byte
}

// Split sends text over two Login Requests, the first continued, cut at
// half its length; the last asks to move from csg to nsg.
func Split(csg, nsg byte, text []byte) []Step {
	half := len(text) / 2
	return []Step{
		{CSG: csg, Continue: true, Raw: text[:half]},
		{Transit: true, CSG: csg, NSG: nsg, Raw: text[half:]},
	}
}

// Keys is a Step's Keys when they are fixed.
func Keys(kvs ...pdu.KV) func([]pdu.KV) ([]pdu.KV, error) {
	return func([]pdu.KV) ([]pdu.KV, error) { return kvs, nil }
}

// CHAPReply is a Step's Keys answering the previous answer's challenge as
// user with secret, followed by extra keys.
func CHAPReply(user, secret string, extra ...pdu.KV) func([]pdu.KV) ([]pdu.KV, error) {
	return func(prev []pdu.KV) ([]pdu.KV, error) {
		r, err := CHAPAnswer(prev, secret)
		return append([]pdu.KV{KV("CHAP_N", user), KV("CHAP_R", r)}, extra...), err
	}
}

// CHAPReflect is CHAPReply that also asks for mutual CHAP with the
// target's own challenge: the reflection attack.
func CHAPReflect(user, secret string) func([]pdu.KV) ([]pdu.KV, error) {
	return func(prev []pdu.KV) ([]pdu.KV, error) {
		return CHAPReply(user, secret, KV("CHAP_I", Value(prev, "CHAP_I")), KV("CHAP_C", Value(prev, "CHAP_C")))(prev)
	}
}

// Success is the status Script returns when every step succeeded.
const Success = "0x0000"

// Script plays steps and returns the status of the first refusal (as
// Status writes it), or Success.
func (c *Conn) Script(steps ...Step) (string, error) {
	var prev []pdu.KV
	for i, s := range steps {
		text := s.Raw
		if text == nil {
			kvs, err := s.Keys(prev)
			if err != nil {
				return "", fmt.Errorf("step %d: %w", i, err)
			}
			text = Text(kvs...)
		}
		if err := c.LoginData(s.Transit, s.Continue, s.CSG, s.NSG, text); err != nil {
			return "", fmt.Errorf("step %d: %w", i, err)
		}
		resp, answer, err := c.LoginResp()
		if err != nil {
			return "", fmt.Errorf("step %d: %w", i, err)
		}
		if resp.StatusClass != pdu.LoginSuccess {
			return Status(resp), nil
		}
		prev = answer
	}
	return Success, nil
}

// Stay is a Step that stays in stage csg.
func Stay(csg byte, keys func([]pdu.KV) ([]pdu.KV, error)) Step {
	return Step{CSG: csg, Keys: keys}
}

// Next is a Step that asks to move from stage csg to nsg.
func Next(csg, nsg byte, keys func([]pdu.KV) ([]pdu.KV, error)) Step {
	return Step{Transit: true, CSG: csg, NSG: nsg, Keys: keys}
}

// RW10 is a READ(10) or WRITE(10) of blocks 512-byte blocks at lba.
func RW10(write bool, itt, lba uint32, blocks uint16) pdu.SCSICommand {
	cmd := pdu.SCSICommand{Final: true, Read: !write, Write: write, ITT: itt, EDTL: uint32(blocks) * 512}
	cmd.CDB[0] = 0x28
	if write {
		cmd.CDB[0] = 0x2a
	}
	binary.BigEndian.PutUint32(cmd.CDB[2:], lba)
	binary.BigEndian.PutUint16(cmd.CDB[7:], blocks)
	return cmd
}

// DataOut sends one final Data-Out at offset 0.
func (c *Conn) DataOut(itt, ttt uint32, data []byte) error {
	var h pdu.Header
	(&pdu.DataOut{Final: true, DataLen: len(data), ITT: itt, TTT: ttt, ExpStatSN: c.ExpStatSN}).Marshal(&h)
	return c.Write(&h, data)
}

// Status reads the final answer of itt and returns its SCSI status.
func (c *Conn) Status(itt uint32) (byte, error) {
	h, _, _, err := c.ReadITT(itt, Timeout)
	switch {
	case err != nil:
		return 0, fmt.Errorf("waiting for the status of %#x: %w", itt, err)
	case h.Opcode() != pdu.OpSCSIResponse && !HasStatus(&h):
		return 0, fmt.Errorf("%#x answered with %v", itt, h.Opcode())
	}
	return h[3], nil
}

// ClearUnitAttention takes the unit attention a new nexus meets first with
// TEST UNIT READY, so that the next commands answer GOOD.
func (c *Conn) ClearUnitAttention() error {
	for i := range 3 {
		itt := uint32(0x7ffe0000 + i)
		if err := c.Command(pdu.SCSICommand{Final: true, ITT: itt}, nil); err != nil { // CDB 0: TEST UNIT READY
			return err
		}
		status, err := c.Status(itt)
		if err != nil || status == 0 {
			return err
		}
	}
	return errors.New("TEST UNIT READY never answered GOOD")
}

// ExpectR2T reads the R2T for itt.
func (c *Conn) ExpectR2T(itt uint32) (pdu.R2T, error) {
	var r pdu.R2T
	h, _, _, err := c.ReadITT(itt, Timeout)
	if err != nil || h.Opcode() != pdu.OpR2T {
		return r, fmt.Errorf("waiting for the R2T of %#x: got %v, %v", itt, h.Opcode(), err)
	}
	r.Unmarshal(&h)
	return r, nil
}

// DialLoggedIn logs a raw connection in to target as initiator and clears
// the new nexus's unit attention.
func DialLoggedIn(t testing.TB, addr, initiator, target string) *Conn {
	t.Helper()
	c := Dial(t, addr)
	c.Login(LoginConfig{Initiator: initiator, Target: target})
	if err := c.ClearUnitAttention(); err != nil {
		t.Fatal(err)
	}
	return c
}

// ExpectQuiet checks that c answers a ping and sent nothing else since the
// last read: what it was sent before (named by what) was dropped.
func (c *Conn) ExpectQuiet(t testing.TB, what string) {
	t.Helper()
	before, err := c.NOP(0x7fff0000)
	if err != nil {
		t.Fatalf("after %s: %v", what, err)
	}
	if len(before) > 0 {
		t.Errorf("%s answered with %v", what, Opcodes(before))
	}
}

// ForeignTask plays session b against a write of data at lba that
// session a starts with itt: b's Data-Out naming a's ITT and TTT must be
// dropped and its ABORT TASK answered "task does not exist", and a's write
// must then complete GOOD with a's own data.
func ForeignTask(t testing.TB, a, b *Conn, itt, lba uint32, data []byte) {
	t.Helper()
	if err := a.Command(RW10(true, itt, lba, uint16(len(data)/512)), nil); err != nil {
		t.Fatal(err)
	}
	r2t, err := a.ExpectR2T(itt)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.DataOut(itt, r2t.TTT, bytes.Repeat([]byte("B"), len(data))); err != nil {
		t.Fatal(err)
	}
	b.ExpectQuiet(t, "Data-Out naming another session's ITT and TTT")
	const abortITT = 0x7fff0001
	if err := b.TaskMgmt(pdu.TaskMgmtReq{Function: pdu.TMFAbortTask, ITT: abortITT, RTT: itt, RefCmdSN: b.CmdSN}); err != nil {
		t.Fatal(err)
	}
	h, _, _, err := b.ReadITT(abortITT, Timeout)
	if err != nil || h.Opcode() != pdu.OpTaskMgmtResp || h[2] != pdu.TMFRespNoTask {
		t.Fatalf("ABORT TASK of another session's task: %v response %d, err %v; want task does not exist (1)", h.Opcode(), h[2], err)
	}
	if err := a.DataOut(itt, r2t.TTT, data); err != nil {
		t.Fatal(err)
	}
	if status, err := a.Status(itt); err != nil || status != 0 {
		t.Fatalf("the owner's write: status %#x, %v; want GOOD", status, err)
	}
}
