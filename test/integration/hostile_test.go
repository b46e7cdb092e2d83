package integration

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/target/iscsi/pdu"
)

// TestHostileInput throws malformed and out-of-place PDUs at a running
// node while another session writes and verifies data. Each must end in a
// failed login, a Reject or a closed connection; the node must keep
// serving, and the well-behaved session must not notice anything.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	n, disks := startGuideNode(t)
	ctx := testCtx(t, 90*time.Second)
	good := dial(t, ctx, initiator.Config{Addr: n.Addr(), TargetName: guideIQN, InitiatorName: "iqn.2024-01.io.hatarget:good"})
	bg := startBackgroundIO(t, ctx, good, 0, disks["disk01"], 0)
	bg.progress(t, 1)

	cases := []struct {
		name string
		run  func(t *testing.T, addr string)
	}{
		{"raw TCP garbage", func(t *testing.T, addr string) {
			r := rawDial(t, addr)
			junk := append([]byte("GET / HTTP/1.1\r\nHost: target\r\n\r\n"), randomBytes(t, 4096)...)
			_, _ = r.c.Write(junk) // the target may close before reading it all
			onlyLoginResponses(t, opcodes(r.expectClosed(5*time.Second)))
		}},
		{"login PDU announcing a 16 MiB data segment", func(t *testing.T, addr string) {
			r := rawDial(t, addr)
			var h pdu.Header
			(&pdu.LoginReq{CSG: pdu.StageSecurity, DataLen: 1<<24 - 1, ISID: r.isid, CmdSN: 1}).Marshal(&h)
			if _, err := r.c.Write(append(h[:], bytes.Repeat([]byte("A"), 1024)...)); err != nil {
				t.Fatal(err)
			}
			expectLoginRefused(t, r)
		}},
		{"SCSI command before login", func(t *testing.T, addr string) {
			r := rawDial(t, addr)
			var h pdu.Header
			cmd := pdu.SCSICommand{Final: true, Read: true, ITT: 1, EDTL: 4096, CmdSN: 1}
			cmd.CDB[0], cmd.CDB[8] = 0x28, 8 // READ(10) of 8 blocks at LBA 0
			cmd.Marshal(&h)
			if err := r.write(&h, nil); err != nil {
				t.Fatal(err)
			}
			ops := opcodes(r.expectClosed(5 * time.Second))
			if slices.Contains(ops, pdu.OpDataIn) || slices.Contains(ops, pdu.OpSCSIResponse) {
				t.Fatalf("the target executed a command before login: %v", ops)
			}
			onlyLoginResponses(t, ops)
		}},
		{"login text over 64 KiB through continuations", func(t *testing.T, addr string) {
			r := rawDial(t, addr)
			var text []byte
			for i := 0; len(text) < 128<<10; i++ {
				text = pdu.AppendText(text, fmt.Sprintf("X-io.hatarget.pad%d", i), strings.Repeat("p", 200))
			}
			const chunk = 8192
			for off := 0; off < len(text); off += chunk {
				if err := r.loginData(false, true, pdu.StageSecurity, 0, text[off:off+chunk]); err != nil {
					t.Fatalf("after %d bytes: %v", off, err)
				}
				resp, _, err := r.loginResp()
				if err != nil {
					t.Fatalf("after %d bytes: %v", off+chunk, err)
				}
				if resp.StatusClass != pdu.LoginSuccess {
					if resp.StatusClass != pdu.LoginInitiatorErr {
						t.Errorf("refused with status %#02x%02x, want class 02 (initiator error)", resp.StatusClass, resp.StatusDetail)
					}
					if off+chunk <= 64<<10 {
						t.Errorf("refused after only %d bytes", off+chunk)
					}
					r.expectClosed(5 * time.Second)
					return
				}
			}
			t.Fatalf("the target accepted %d bytes of login text", len(text))
		}},
		{"Data-Out for an unknown ITT", func(t *testing.T, addr string) {
			r := rawDial(t, addr)
			r.login(guideIQN, false, false)
			var h pdu.Header
			(&pdu.DataOut{Final: true, DataLen: 512, ITT: 0xdead, TTT: pdu.ReservedTag, ExpStatSN: r.expStatSN}).Marshal(&h)
			if err := r.write(&h, randomBytes(t, 512)); err != nil {
				t.Fatal(err)
			}
			// A stray but well-framed Data-Out is dropped or rejected; the
			// connection stays in step.
			before, err := r.nop(0x100)
			if err != nil {
				t.Fatal(err)
			}
			for _, op := range before {
				if op != pdu.OpReject {
					t.Errorf("stray Data-Out answered with %v", op)
				}
			}
		}},
		{"PDU announcing a 16 MiB data segment after login", func(t *testing.T, addr string) {
			r := rawDial(t, addr)
			r.login(guideIQN, false, false)
			var h pdu.Header
			(&pdu.NOPOut{Immediate: true, DataLen: 1<<24 - 1, ITT: 0x200, TTT: pdu.ReservedTag, CmdSN: r.cmdSN}).Marshal(&h)
			if _, err := r.c.Write(append(h[:], make([]byte, 4096)...)); err != nil {
				t.Fatal(err)
			}
			if got := r.expectClosed(5 * time.Second); answers(got, 0x200) {
				t.Errorf("the target answered the oversized NOP-Out: %v", opcodes(got))
			}
		}},
		{"bad header digest", func(t *testing.T, addr string) {
			r := rawDial(t, addr)
			r.login(guideIQN, true, true)
			if _, err := r.nop(0x300); err != nil {
				t.Fatalf("with digests: %v", err)
			}
			var h pdu.Header
			(&pdu.NOPOut{Immediate: true, ITT: 0x301, TTT: pdu.ReservedTag, CmdSN: r.cmdSN, ExpStatSN: r.expStatSN}).Marshal(&h)
			d := pdu.HeaderDigest(&h, nil)
			d[0] ^= 0xff
			if _, err := r.c.Write(append(h[:], d[:]...)); err != nil {
				t.Fatal(err)
			}
			// At ErrorRecoveryLevel 0 the PDU boundaries can no longer be
			// trusted: the connection must go, without answering the PDU.
			if got := r.expectClosed(5 * time.Second); answers(got, 0x301) {
				t.Errorf("the target answered a PDU whose header digest is wrong: %v", opcodes(got))
			}
		}},
		{"bad data digest on immediate data", func(t *testing.T, addr string) {
			r := rawDial(t, addr)
			r.login(guideIQN, true, true)
			data := randomBytes(t, 4096)
			var h pdu.Header
			cmd := pdu.SCSICommand{Final: true, Write: true, DataLen: len(data), ITT: 0x400, EDTL: 4096, CmdSN: r.cmdSN, ExpStatSN: r.expStatSN}
			cmd.CDB[0], cmd.CDB[8] = opWrite10, 8
			binary.BigEndian.PutUint32(cmd.CDB[2:], 60<<20/blockSize) // away from the good session's extents
			cmd.Marshal(&h)
			hd := pdu.HeaderDigest(&h, nil)
			dd := pdu.DigestBytes(pdu.CRC32C(data) ^ 1)
			if _, err := r.c.Write(slices.Concat(h[:], hd[:], data, dd[:])); err != nil {
				t.Fatal(err)
			}
			r.cmdSN++
			// The data cannot be trusted, so the write must not complete
			// with GOOD; RFC 7143 allows a Reject or a dropped connection.
			for {
				h, data, err := r.read(5 * time.Second)
				if err != nil {
					if !closedByPeer(err) {
						t.Fatal(err)
					}
					return
				}
				if h.Opcode() == pdu.OpSCSIResponse && h.ITT() == 0x400 && h[3] == initiator.StatusGood {
					t.Fatalf("a write with a corrupt data digest completed with GOOD")
				}
				if h.Opcode() == pdu.OpReject && len(data) >= pdu.HeaderLen {
					if rejected := pdu.Header(data[:pdu.HeaderLen]); rejected.ITT() == 0x400 {
						return
					}
				}
			}
		}},
		{"unknown opcode, SNACK and Login in the full feature phase", func(t *testing.T, addr string) {
			r := rawDial(t, addr)
			r.login(guideIQN, false, false)
			var odd, snack, login pdu.Header
			odd[0], odd[1] = 0x1c|0x40, 0x80
			binary.BigEndian.PutUint32(odd[16:], 0x500)
			snack[0], snack[1] = byte(pdu.OpSNACKReq), 0x80
			binary.BigEndian.PutUint32(snack[16:], 0x501)
			(&pdu.LoginReq{Transit: true, CSG: pdu.StageOperational, NSG: pdu.StageFullFeature, ISID: r.isid, ITT: 0x502, CmdSN: r.cmdSN}).Marshal(&login)
			for _, h := range []*pdu.Header{&odd, &snack, &login} {
				if err := r.write(h, nil); err != nil {
					t.Fatal(err)
				}
			}
			before, err := r.nop(0x503)
			if err != nil {
				t.Fatal(err)
			}
			if want := []pdu.Opcode{pdu.OpReject, pdu.OpReject, pdu.OpReject}; !slices.Equal(before, want) {
				t.Errorf("answered with %v, want %v", before, want)
			}
		}},
		{"expected data transfer length of 4 GiB", func(t *testing.T, addr string) {
			r := rawDial(t, addr)
			r.login(guideIQN, false, false)
			var h pdu.Header
			cmd := pdu.SCSICommand{Final: true, Read: true, ITT: 0x600, EDTL: 0xffffffff, CmdSN: r.cmdSN, ExpStatSN: r.expStatSN}
			cmd.CDB[0] = 0x28 // READ(10) of 0 blocks: the EDTL alone is absurd
			cmd.Marshal(&h)
			if err := r.write(&h, nil); err != nil {
				t.Fatal(err)
			}
			r.cmdSN++
			h, _, err := r.readNonPing(5 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if h.Opcode() != pdu.OpSCSIResponse || h.ITT() != 0x600 || h[3] != initiator.StatusCheckCondition {
				t.Fatalf("answered with %v ITT %#x status %#x; want a SCSI Response with CHECK CONDITION", h.Opcode(), h.ITT(), h[3])
			}
			if _, err := r.nop(0x601); err != nil {
				t.Fatal(err)
			}
		}},
		{"abrupt close in the middle of a login PDU", func(t *testing.T, addr string) {
			r := rawDial(t, addr)
			var h pdu.Header
			(&pdu.LoginReq{CSG: pdu.StageSecurity, DataLen: 100, ISID: r.isid, CmdSN: 1}).Marshal(&h)
			_, _ = r.c.Write(h[:20])
			r.c.Close()
		}},
		{"abrupt close in the middle of immediate data", func(t *testing.T, addr string) {
			r := rawDial(t, addr)
			r.login(guideIQN, false, false)
			var h pdu.Header
			cmd := pdu.SCSICommand{Final: true, Write: true, DataLen: 4096, ITT: 0x700, EDTL: 4096, CmdSN: r.cmdSN}
			cmd.CDB[0], cmd.CDB[8] = opWrite10, 8
			cmd.Marshal(&h)
			_, _ = r.c.Write(append(h[:], make([]byte, 1000)...))
			r.c.Close()
		}},
		{"abrupt close in the middle of solicited Data-Out", func(t *testing.T, addr string) {
			r := rawDial(t, addr)
			r.login(guideIQN, false, false) // InitialR2T=Yes: the data waits for an R2T
			var h pdu.Header
			cmd := pdu.SCSICommand{Final: true, Write: true, ITT: 0x800, EDTL: 8192, CmdSN: r.cmdSN}
			cmd.CDB[0], cmd.CDB[8] = opWrite10, 16
			binary.BigEndian.PutUint32(cmd.CDB[2:], 61<<20/blockSize)
			cmd.Marshal(&h)
			if err := r.write(&h, nil); err != nil {
				t.Fatal(err)
			}
			h, _, err := r.readNonPing(5 * time.Second)
			if err != nil || h.Opcode() != pdu.OpR2T {
				t.Fatalf("expected an R2T, got %v, %v", h.Opcode(), err)
			}
			var r2t pdu.R2T
			r2t.Unmarshal(&h)
			(&pdu.DataOut{Final: true, DataLen: 8192, ITT: 0x800, TTT: r2t.TTT}).Marshal(&h)
			_, _ = r.c.Write(append(h[:], make([]byte, 100)...))
			r.c.Close()
		}},
	}
	t.Run("attacks", func(t *testing.T) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				tc.run(t, n.Addr())
				alive(t, n)
				acceptsLogins(t, ctx, n.Addr(), guideIQN)
			})
		}
	})

	bg.progress(t, 2)
	bg.finish(t)
	alive(t, n)
	if logs := n.Logs(); strings.Contains(logs, "panic") || strings.Contains(logs, "goroutine ") {
		t.Fatalf("the node logged a panic:\n%s", logs)
	}
}

// onlyLoginResponses fails the test if the target sent anything but Login
// Responses (a refusal) before closing a connection that never logged in.
func onlyLoginResponses(t *testing.T, ops []pdu.Opcode) {
	t.Helper()
	for _, op := range ops {
		if op != pdu.OpLoginResp {
			t.Errorf("before login the target sent %v", op)
		}
	}
}

// expectLoginRefused reads the Login Response to a bad login request: it
// must report an initiator error, and the connection must then close.
func expectLoginRefused(t *testing.T, r *rawConn) {
	t.Helper()
	resp, _, err := r.loginResp()
	if err != nil {
		t.Fatalf("no Login Response: %v", err)
	}
	if resp.StatusClass != pdu.LoginInitiatorErr {
		t.Errorf("Login Response status %#02x%02x, want class 02 (initiator error)", resp.StatusClass, resp.StatusDetail)
	}
	r.expectClosed(5 * time.Second)
}
