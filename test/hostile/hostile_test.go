package hostile

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi"
	"github.com/hatarget/hatarget/target/iscsi/pdu"
	"github.com/hatarget/hatarget/target/iscsi/pdu/pdutest"
)

const sec, op, ffp = pdu.StageSecurity, pdu.StageOperational, pdu.StageFullFeature

var (
	kv       = pdutest.KV
	keys     = pdutest.Keys
	identity = pdutest.Identity
)

// hostileCase is one case of docs/security.md, "Hostile initiators"; its
// name is the case's as the document words it.
type hostileCase struct {
	name string
	run  func(t *testing.T, addr string)
	// files is how many descriptors the case needs open at once, in the
	// node and in the test.
	files int
}

// TestHostileInitiators runs every case against one node while a good
// session writes and verifies, then checks the node is back to what it
// held before.
func TestHostileInitiators(t *testing.T) {
	n := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := startWriter(t, ctx, n.Addr())
	w.progress(t, 20)
	base := n.usage(t)

	// The login timeout case runs alongside all the others.
	silent := pdutest.Dial(t, n.Addr())
	silentSince := time.Now()

	for _, tc := range cases() {
		t.Run(tc.name, func(t *testing.T) {
			n.needFiles(t, tc.files)
			tc.run(t, n.Addr())
		})
		if err := w.failed(); err != nil {
			t.Fatalf("the good session failed during %q: %v", tc.name, err)
		}
	}
	t.Run("silent connection: closed after the login timeout", func(t *testing.T) {
		remaining := iscsi.DefaultLoginTimeout - time.Since(silentSince)
		if ops := silent.ExpectClosed(remaining + 3*time.Second); len(ops) > 0 {
			t.Errorf("answered with %v", pdutest.Opcodes(ops))
		}
		if d := time.Since(silentSince); d < iscsi.DefaultLoginTimeout-time.Second {
			t.Errorf("closed after %v, before the login timeout", d)
		}
	})

	w.progress(t, 5)
	n.waitBaseline(t, base)
	w.finish()
	if err := w.failed(); err != nil {
		t.Fatalf("the good session: %v", err)
	}
	t.Logf("the good session verified %d writes of 64 KiB", w.rounds.Load())
	if logs := n.Logs(); strings.Contains(logs, "panic") || strings.Contains(logs, "DATA RACE") {
		t.Fatalf("the node logged a panic or a race:\n%s", logs)
	}
}

func cases() []hostileCase {
	var out []hostileCase
	out = append(out, connectionCases()...)
	out = append(out, loginCases()...)
	out = append(out, sessionCases()...)
	return append(out, fullFeatureCases()...)
}

// loginStatus runs a scripted login and checks the status it ends with;
// a refused login must also be followed by the connection's close.
func loginStatus(want string, steps ...pdutest.Step) func(*testing.T, string) {
	return func(t *testing.T, addr string) {
		c := pdutest.Dial(t, addr)
		got, err := c.Script(steps...)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("login status %s, want %s", got, want)
		}
		if got != pdutest.Success {
			if ops := c.ExpectClosed(5 * time.Second); len(ops) > 0 {
				t.Errorf("after the refusal the target sent %v", pdutest.Opcodes(ops))
			}
		}
	}
}

// expectRefusedAtAccept checks that the target closes c without reading a
// login or answering it.
func expectRefusedAtAccept(t *testing.T, c *pdutest.Conn) {
	t.Helper()
	_ = c.LoginPDU(true, false, op, ffp, identity(alice, openIQN)...)
	if ops := c.ExpectClosed(5 * time.Second); len(ops) > 0 {
		t.Fatalf("a connection beyond the limit was answered with %v", pdutest.Opcodes(ops))
	}
}

// openConns opens n connections from src without logging in.
func openConns(t *testing.T, src, addr string, n int) []*pdutest.Conn {
	t.Helper()
	out := make([]*pdutest.Conn, 0, n)
	for range n {
		c, err := pdutest.DialFrom(t, src, addr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// stillOpen checks that the first of cs is still served (it answers a
// login), so the limit refused only what it should.
func stillOpen(t *testing.T, c *pdutest.Conn) {
	t.Helper()
	if _, err := c.LoginErr(pdutest.LoginConfig{Initiator: alice, Target: openIQN}); err != nil {
		t.Fatalf("a connection within the limits: %v", err)
	}
}

func connectionCases() []hostileCase {
	return []hostileCase{
		{name: "connections from one address beyond 256: closed at accept", run: func(t *testing.T, addr string) {
			cs := openConns(t, "127.0.0.2", addr, iscsi.DefaultMaxConnectionsPerSource)
			c, err := pdutest.DialFrom(t, "127.0.0.2", addr)
			if err != nil {
				t.Fatal(err)
			}
			expectRefusedAtAccept(t, c)
			other, err := pdutest.DialFrom(t, "127.0.0.3", addr)
			if err != nil {
				t.Fatal(err)
			}
			stillOpen(t, other)
			stillOpen(t, cs[0])
		}},
		{name: "connections beyond 4096 in total: closed at accept", run: func(t *testing.T, addr string) {
			// 16 addresses of 256 fill the node, the good session on top.
			var first *pdutest.Conn
			for i := range iscsi.DefaultMaxConnections / iscsi.DefaultMaxConnectionsPerSource {
				cs := openConns(t, fmt.Sprintf("127.0.1.%d", i+1), addr, iscsi.DefaultMaxConnectionsPerSource)
				if first == nil {
					first = cs[0]
				}
			}
			c, err := pdutest.DialFrom(t, "127.0.2.1", addr)
			if err != nil {
				t.Fatal(err)
			}
			expectRefusedAtAccept(t, c)
			stillOpen(t, first)
		}, files: iscsi.DefaultMaxConnections + 256},
	}
}

func loginCases() []hostileCase {
	chapStart := func(target string) []pdutest.Step {
		return []pdutest.Step{
			pdutest.Stay(sec, keys(append(identity(alice, target), kv("AuthMethod", "CHAP"))...)),
			pdutest.Stay(sec, keys(kv("CHAP_A", "5"))),
		}
	}
	withStep := func(steps []pdutest.Step, s pdutest.Step) []pdutest.Step { return append(steps, s) }
	return []hostileCase{
		{name: "login text beyond 64 KiB over continuations: 0x0200", run: func(t *testing.T, addr string) {
			c := pdutest.Dial(t, addr)
			text := pdutest.Text(identity(alice, openIQN)...)
			for i := 0; len(text) < iscsi.DefaultMaxTextBytes+8192; i++ {
				text = pdu.AppendText(text, fmt.Sprintf("X-io.hatarget.pad%d", i), strings.Repeat("p", 200))
			}
			const chunk = 8192
			for off := 0; off < len(text); off += chunk {
				if err := c.LoginData(false, true, op, 0, text[off:min(off+chunk, len(text))]); err != nil {
					t.Fatal(err)
				}
				resp, _, err := c.LoginResp()
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusClass == pdu.LoginSuccess {
					continue
				}
				if got := pdutest.Status(resp); got != "0x0200" || off+chunk <= iscsi.DefaultMaxTextBytes {
					t.Fatalf("refused with %s after %d bytes", got, off+chunk)
				}
				c.ExpectClosed(5 * time.Second)
				return
			}
			t.Fatalf("%d bytes of login text accepted", len(text))
		}},
		{name: "login PDU announcing a 16 MiB data segment: 0x0200 before reading it", run: func(t *testing.T, addr string) {
			c := pdutest.Dial(t, addr)
			var h pdu.Header
			(&pdu.LoginReq{CSG: sec, DataLen: 1<<24 - 1, ISID: c.ISID, CmdSN: 1}).Marshal(&h)
			if err := c.Write(&h, nil); err != nil {
				t.Fatal(err)
			}
			resp, _, err := c.LoginResp()
			if err != nil || pdutest.Status(resp) != "0x0200" {
				t.Fatalf("status %s, %v; want 0x0200", pdutest.Status(resp), err)
			}
		}},
		{name: "CHAP required, security stage skipped: 0x0201", run: loginStatus("0x0201", pdutest.Next(op, ffp, keys(identity(alice, chapIQN)...)))},
		{name: "CHAP required, AuthMethod=None: 0x0201", run: loginStatus("0x0201", pdutest.Next(sec, op, keys(append(identity(alice, chapIQN), kv("AuthMethod", "None"))...)))},
		{name: "CHAP required, a stage the target never agreed to claimed: 0x0200", run: loginStatus("0x0200", withStep(chapStart(chapIQN), pdutest.Next(op, ffp, keys()))...)},
		{name: "discovery with CHAP required, security stage skipped: 0x0201", run: loginStatus("0x0201", pdutest.Next(op, ffp, keys(identity(alice, "")...)))},
		{name: "discovery with CHAP required, AuthMethod=None: 0x0201", run: loginStatus("0x0201", pdutest.Next(sec, op, keys(append(identity(alice, ""), kv("AuthMethod", "None"))...)))},
		{name: "a login admitted to an open target turned into discovery: 0x0200", run: loginStatus("0x0200",
			pdutest.Stay(op, keys(identity(alice, openIQN)...)),
			pdutest.Next(op, ffp, keys(kv("SessionType", "Discovery"))))},
		{name: "CHAP, wrong secret: 0x0201", run: loginStatus("0x0201", withStep(chapStart(chapIQN), pdutest.Next(sec, op, pdutest.CHAPReply(chapUser, "wrongsecret1")))...)},
		{name: "CHAP, unknown user: 0x0201", run: loginStatus("0x0201", withStep(chapStart(chapIQN), pdutest.Next(sec, op, pdutest.CHAPReply("mallory", chapSecret)))...)},
		{name: "CHAP_A repeated for a second challenge: 0x0201", run: loginStatus("0x0201", withStep(chapStart(chapIQN), pdutest.Stay(sec, keys(kv("CHAP_A", "5"))))...)},
		{name: "mutual CHAP, the target's challenge reflected: 0x0201", run: loginStatus("0x0201", withStep(chapStart(mutualIQN), pdutest.Next(sec, op, pdutest.CHAPReflect(chapUser, chapSecret)))...)},
		{name: "first login request continued over two PDUs: logged in", run: loginStatus(pdutest.Success, pdutest.Split(op, ffp, pdutest.Text(identity(alice, openIQN)...))...)},
		{name: "a key repeated in one login: 0x0200", run: loginStatus("0x0200",
			pdutest.Next(op, ffp, keys(append(identity(alice, openIQN), kv("InitiatorName", alice))...)))},
		{name: "unknown target: 0x0203", run: loginStatus("0x0203",
			pdutest.Next(op, ffp, keys(identity(alice, "iqn.2024-01.io.hatarget.hostile:nowhere")...)))},
		{name: "CHAP_N/CHAP_R without a challenge: 0x0201", run: loginStatus("0x0201",
			pdutest.Stay(sec, keys(append(identity(alice, chapIQN), kv("AuthMethod", "CHAP"))...)),
			pdutest.Next(sec, op, keys(kv("CHAP_N", chapUser), kv("CHAP_R", "0x00112233445566778899aabbccddeeff"))))},
		{name: "mutual CHAP asked of a target without OutgoingUser: 0x0201", run: loginStatus("0x0201",
			withStep(chapStart(chapIQN), pdutest.Next(sec, op, pdutest.CHAPReply(chapUser, chapSecret,
				kv("CHAP_I", "7"), kv("CHAP_C", "0x0102030405060708090a0b0c0d0e0f10"))))...)},
		{name: "CHAP, right secret: logged in", run: func(t *testing.T, addr string) {
			c := pdutest.Dial(t, addr)
			c.Login(pdutest.LoginConfig{Initiator: alice, Target: chapIQN, CHAPUser: chapUser, CHAPSecret: chapSecret})
		}},
		{name: "every CHAP exchange gets a fresh challenge", run: func(t *testing.T, addr string) {
			seen := map[string]bool{}
			for range 4 {
				c := pdutest.Dial(t, addr)
				if _, err := c.Script(chapStart(chapIQN)[:1]...); err != nil {
					t.Fatal(err)
				}
				_, got, err := c.Exchange(false, sec, 0, kv("CHAP_A", "5"))
				if err != nil {
					t.Fatal(err)
				}
				ch := pdutest.Value(got, "CHAP_C")
				if len(ch) < 2+32 || seen[ch] {
					t.Fatalf("challenge %q: short or seen before", ch)
				}
				seen[ch] = true
			}
		}},
	}
}

// loginFrom logs in from the address src and returns the status.
func loginFrom(t *testing.T, src, addr, initiator, target string) (*pdutest.Conn, string) {
	t.Helper()
	c, err := pdutest.DialFrom(t, src, addr)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.LoginErr(pdutest.LoginConfig{Initiator: initiator, Target: target})
	var le *pdutest.LoginError
	switch {
	case errors.As(err, &le):
		return c, pdutest.Status(le.Resp)
	case err != nil:
		t.Fatal(err)
	}
	return c, pdutest.Success
}

func sessionCases() []hostileCase {
	return []hostileCase{
		{name: "sessions of one initiator beyond 256: 0x0302", run: func(t *testing.T, addr string) {
			const greedy = "iqn.2024-01.io.hatarget.hostile:greedy"
			for i := range iscsi.DefaultMaxSessionsPerInitiator {
				if _, got := loginFrom(t, "127.0.3.1", addr, greedy, openIQN); got != pdutest.Success {
					t.Fatalf("session %d: %s", i+1, got)
				}
			}
			if _, got := loginFrom(t, "127.0.3.2", addr, greedy, openIQN); got != "0x0302" {
				t.Fatalf("one session more: %s, want 0x0302", got)
			}
		}},
		{name: "sessions of one target beyond 1024: 0x0302", run: func(t *testing.T, addr string) {
			perSource := iscsi.DefaultMaxConnectionsPerSource
			for i := range iscsi.DefaultMaxSessionsPerTarget {
				src := fmt.Sprintf("127.0.4.%d", 1+i/perSource)
				initiator := fmt.Sprintf("iqn.2024-01.io.hatarget.hostile:many%d", i/perSource)
				if _, got := loginFrom(t, src, addr, initiator, capsIQN); got != pdutest.Success {
					t.Fatalf("session %d: %s", i+1, got)
				}
			}
			if _, got := loginFrom(t, "127.0.4.100", addr, "iqn.2024-01.io.hatarget.hostile:one-more", capsIQN); got != "0x0302" {
				t.Fatalf("one session more: %s, want 0x0302", got)
			}
		}, files: iscsi.DefaultMaxSessionsPerTarget + 256},
		{name: "another initiator reusing an ISID: a session of its own, the first untouched", run: func(t *testing.T, addr string) {
			a := pdutest.DialLoggedIn(t, addr, alice, openIQN)
			b := pdutest.Dial(t, addr)
			b.ISID = a.ISID
			b.Login(pdutest.LoginConfig{Initiator: bob, Target: openIQN})
			for i, c := range []*pdutest.Conn{a, b} {
				if _, err := c.NOP(0x100); err != nil {
					t.Fatalf("session %d: %v", i, err)
				}
			}
		}},
		{name: "another initiator naming a session's TSIH: 0x020a, the session untouched", run: func(t *testing.T, addr string) {
			a := pdutest.Dial(t, addr)
			resp := a.Login(pdutest.LoginConfig{Initiator: alice, Target: openIQN})
			b := pdutest.Dial(t, addr)
			data := pdutest.Text(identity(bob, openIQN)...)
			var h pdu.Header
			(&pdu.LoginReq{Transit: true, CSG: op, NSG: ffp, ISID: a.ISID, TSIH: resp.TSIH, CID: 1, CmdSN: 1, DataLen: len(data)}).Marshal(&h)
			if err := b.Write(&h, data); err != nil {
				t.Fatal(err)
			}
			r, _, err := b.LoginResp()
			if err != nil || pdutest.Status(r) != "0x020a" {
				t.Fatalf("status %s, %v; want 0x020a", pdutest.Status(r), err)
			}
			if _, err := a.NOP(0x101); err != nil {
				t.Fatalf("the session named: %v", err)
			}
		}},
	}
}

// expectReject reads the Reject of the PDU with itt and checks its reason.
func expectReject(t *testing.T, c *pdutest.Conn, itt uint32, reason byte) {
	t.Helper()
	h, data, _, err := c.ReadITT(itt, pdutest.Timeout)
	if err != nil || h.Opcode() != pdu.OpReject || pdutest.RejectedITT(data) != itt || h[2] != reason {
		t.Fatalf("%#x answered with %v reason %#x, %v; want Reject reason %#x", itt, h.Opcode(), h[2], err, reason)
	}
}

func fullFeatureCases() []hostileCase {
	return []hostileCase{
		{name: "Data-Out and ABORT TASK naming another session's task: dropped, task does not exist", run: func(t *testing.T, addr string) {
			a, b := pdutest.DialLoggedIn(t, addr, alice, openIQN), pdutest.DialLoggedIn(t, addr, bob, openIQN)
			want := bytes.Repeat([]byte("A"), 4096)
			pdutest.ForeignTask(t, a, b, 0x10, hostileLBA, want)
			if got := readHostile(t, a); !bytes.Equal(got, want) {
				t.Fatalf("the block holds %.16q..., not what its session wrote", got)
			}
		}},
		{name: "Data-Out for its own write with a wrong TTT: CHECK CONDITION; naming a completed command: discarded", run: func(t *testing.T, addr string) {
			c := pdutest.DialLoggedIn(t, addr, alice, openIQN)
			const itt = 0x61
			if err := c.Command(pdutest.RW10(true, itt, hostileLBA, 8), nil); err != nil {
				t.Fatal(err)
			}
			r2t, err := c.ExpectR2T(itt)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.DataOut(itt, r2t.TTT+1, make([]byte, 4096)); err != nil {
				t.Fatal(err)
			}
			if status, err := c.Status(itt); err != nil || status != 0x02 {
				t.Fatalf("status %#x, %v; want CHECK CONDITION", status, err)
			}
			if err := c.DataOut(itt, r2t.TTT, make([]byte, 4096)); err != nil {
				t.Fatal(err)
			}
			c.ExpectQuiet(t, "Data-Out naming a completed command")
		}},
		{name: "an ITT already in use: Reject 0x07", run: func(t *testing.T, addr string) {
			c := pdutest.DialLoggedIn(t, addr, alice, openIQN)
			const itt = 0x62
			if err := c.Command(pdutest.RW10(true, itt, hostileLBA, 8), nil); err != nil {
				t.Fatal(err)
			}
			if _, err := c.ExpectR2T(itt); err != nil {
				t.Fatal(err)
			}
			if err := c.Command(pdutest.RW10(false, itt, hostileLBA, 8), nil); err != nil {
				t.Fatal(err)
			}
			expectReject(t, c, itt, pdu.RejectTaskInProgress)
		}},
		{name: "a command outside the CmdSN window: ignored", run: func(t *testing.T, addr string) {
			c := pdutest.DialLoggedIn(t, addr, alice, openIQN)
			cmd := pdutest.RW10(false, 0x63, hostileLBA, 8)
			cmd.CmdSN, cmd.ExpStatSN = c.CmdSN+1000, c.ExpStatSN
			var h pdu.Header
			cmd.Marshal(&h)
			if err := c.Write(&h, nil); err != nil {
				t.Fatal(err)
			}
			c.ExpectQuiet(t, "a command beyond MaxCmdSN")
		}},
		{name: "data on a READ: Reject 0x04", run: func(t *testing.T, addr string) {
			c := pdutest.DialLoggedIn(t, addr, alice, openIQN)
			if err := c.Command(pdutest.RW10(false, 0x64, hostileLBA, 8), make([]byte, 512)); err != nil {
				t.Fatal(err)
			}
			expectReject(t, c, 0x64, pdu.RejectProtocolError)
			c.ExpectQuiet(t, "the rejected READ")
		}},
		{name: "a Login Request in the full feature phase: Reject 0x04; an unknown opcode: Reject 0x05", run: func(t *testing.T, addr string) {
			c := pdutest.DialLoggedIn(t, addr, alice, openIQN)
			var login, odd pdu.Header
			(&pdu.LoginReq{Transit: true, CSG: op, NSG: ffp, ISID: c.ISID, ITT: 0x65, CmdSN: c.CmdSN}).Marshal(&login)
			odd[0], odd[1] = 0x1c|0x40, 0x80
			binary.BigEndian.PutUint32(odd[16:], 0x66)
			for _, h := range []*pdu.Header{&login, &odd} {
				if err := c.Write(h, nil); err != nil {
					t.Fatal(err)
				}
			}
			expectReject(t, c, 0x65, pdu.RejectProtocolError)
			expectReject(t, c, 0x66, pdu.RejectNotSupported)
		}},
		{name: "a discovery session sending a SCSI command: Reject 0x04", run: func(t *testing.T, addr string) {
			c := pdutest.Dial(t, addr)
			c.Login(pdutest.LoginConfig{Initiator: alice, CHAPUser: discUser, CHAPSecret: discSecret})
			if err := c.Command(pdutest.RW10(false, 0x67, 0, 8), nil); err != nil {
				t.Fatal(err)
			}
			expectReject(t, c, 0x67, pdu.RejectProtocolError)
		}},
		{name: "a header digest error: connection dropped, the PDU unanswered", run: func(t *testing.T, addr string) {
			c := pdutest.Dial(t, addr)
			c.Login(pdutest.LoginConfig{Initiator: alice, Target: openIQN, Digests: true})
			var h pdu.Header
			(&pdu.NOPOut{Immediate: true, ITT: 0x68, TTT: pdu.ReservedTag, CmdSN: c.CmdSN}).Marshal(&h)
			d := pdu.HeaderDigest(&h, nil)
			d[0] ^= 0xff
			if _, err := c.NC.Write(append(h[:], d[:]...)); err != nil {
				t.Fatal(err)
			}
			for _, got := range c.ExpectClosed(5 * time.Second) {
				if got.ITT() == 0x68 {
					t.Fatalf("the PDU with a bad header digest was answered with %v", got.Opcode())
				}
			}
		}},
		{name: "a data digest error on immediate data: Reject 0x02, the write not done", run: func(t *testing.T, addr string) {
			c := pdutest.Dial(t, addr)
			c.Login(pdutest.LoginConfig{Initiator: alice, Target: openIQN, Digests: true})
			if err := c.ClearUnitAttention(); err != nil {
				t.Fatal(err)
			}
			data := bytes.Repeat([]byte("D"), 4096)
			cmd := pdutest.RW10(true, 0x69, hostileLBA, 8)
			cmd.CmdSN, cmd.ExpStatSN, cmd.DataLen = c.CmdSN, c.ExpStatSN, len(data)
			c.CmdSN++
			var h pdu.Header
			cmd.Marshal(&h)
			hd, dd := pdu.HeaderDigest(&h, nil), pdu.DigestBytes(pdu.CRC32C(data)^1)
			if _, err := c.NC.Write(slices.Concat(h[:], hd[:], data, dd[:])); err != nil {
				t.Fatal(err)
			}
			expectReject(t, c, 0x69, pdu.RejectDataDigest)
			c.ExpectQuiet(t, "the rejected write")
			if bytes.Equal(readHostile(t, c), data) {
				t.Fatal("the write whose data digest failed reached the disk")
			}
		}},
		{name: "SNACK: Reject 0x03, the connection goes on", run: func(t *testing.T, addr string) {
			c := pdutest.DialLoggedIn(t, addr, alice, openIQN)
			for i, typ := range []byte{0, 1, 2, 3} {
				itt := uint32(0x30 + i)
				if err := c.SNACK(typ, itt, pdu.ReservedTag, 0, 0); err != nil {
					t.Fatal(err)
				}
				expectReject(t, c, itt, pdu.RejectSNACK)
			}
			c.ExpectQuiet(t, "the SNACKs")
		}},
		{name: "immediate commands beyond twice the queue depth: Reject 0x06", run: func(t *testing.T, addr string) {
			c := pdutest.DialLoggedIn(t, addr, alice, openIQN)
			// Writes without their data stay outstanding, waiting for it.
			const qd = 64
			for i := range 2*qd + 4 {
				cmd := pdutest.RW10(true, uint32(0x1000+i), hostileLBA, 8)
				cmd.Immediate = true
				if err := c.Command(cmd, nil); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 4 {
				expectReject(t, c, uint32(0x1000+2*qd+i), pdu.RejectImmediateCmd)
			}
		}},
		{name: "answers left unread: the connection dropped", run: func(t *testing.T, addr string) {
			c := pdutest.DialLoggedIn(t, addr, alice, openIQN)
			data := make([]byte, 64<<10)
			var h pdu.Header
			for i := range 64 << 10 {
				(&pdu.NOPOut{Immediate: true, DataLen: len(data), ITT: uint32(i), TTT: pdu.ReservedTag, CmdSN: c.CmdSN}).Marshal(&h)
				if err := c.Write(&h, data); err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						t.Fatalf("after %d MiB the target neither reads nor drops the connection", i>>4)
					}
					return
				}
			}
			t.Fatal("4 GiB of pings left unanswered, the connection is still up")
		}},
		{name: "text request beyond 64 KiB: Reject 0x0a; repeated key: Reject 0x04", run: func(t *testing.T, addr string) {
			c := pdutest.Dial(t, addr)
			c.Login(pdutest.LoginConfig{Initiator: alice, CHAPUser: discUser, CHAPSecret: discSecret})
			text := func(itt uint32, cont bool, data []byte) {
				var h pdu.Header
				(&pdu.TextReq{Immediate: true, Final: !cont, Continue: cont, DataLen: len(data), ITT: itt, TTT: pdu.ReservedTag,
					CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN}).Marshal(&h)
				if err := c.Write(&h, data); err != nil {
					t.Fatal(err)
				}
			}
			text(1, false, pdutest.Text(kv("SendTargets", "All"), kv("SendTargets", "All")))
			expectReject(t, c, 1, pdu.RejectProtocolError)
			chunk := bytes.Repeat([]byte("X-pad=ppppppp\x00"), 500)
			for sent := 0; ; sent += len(chunk) {
				text(2, true, chunk)
				h, data, _, err := c.ReadITT(2, pdutest.Timeout)
				if err != nil {
					t.Fatal(err)
				}
				if h.Opcode() == pdu.OpReject {
					if h[2] != pdu.RejectOutOfResources || pdutest.RejectedITT(data) != 2 || sent+len(chunk) <= iscsi.DefaultMaxTextBytes {
						t.Fatalf("rejected with reason %#x after %d bytes", h[2], sent+len(chunk))
					}
					break
				}
			}
			text(3, false, pdutest.Text(kv("SendTargets", "All")))
			if h, _, _, err := c.ReadITT(3, pdutest.Timeout); err != nil || h.Opcode() != pdu.OpTextResp {
				t.Fatalf("SendTargets after the rejects: %v, %v", h.Opcode(), err)
			}
		}},
		{name: "expected data transfer length of 4 GiB: CHECK CONDITION, nothing allocated", run: func(t *testing.T, addr string) {
			c := pdutest.DialLoggedIn(t, addr, alice, openIQN)
			cmd := pdutest.RW10(false, 0x40, 0, 0)
			cmd.EDTL = 0xffffffff
			if err := c.Command(cmd, nil); err != nil {
				t.Fatal(err)
			}
			if status, err := c.Status(0x40); err != nil || status != 0x02 {
				t.Fatalf("status %#x, %v; want CHECK CONDITION", status, err)
			}
		}},
		{name: "PDU announcing more than MaxRecvDataSegmentLength: Reject 0x04, connection dropped", run: func(t *testing.T, addr string) {
			c := pdutest.DialLoggedIn(t, addr, alice, openIQN)
			var h pdu.Header
			(&pdu.NOPOut{Immediate: true, DataLen: 1<<24 - 1, ITT: 0x50, TTT: pdu.ReservedTag, CmdSN: c.CmdSN}).Marshal(&h)
			if err := c.Write(&h, nil); err != nil {
				t.Fatal(err)
			}
			// The closing NOP-In (reserved ITT) only tells our final StatSN.
			got := slices.DeleteFunc(c.ExpectClosed(5*time.Second), func(h pdu.Header) bool {
				return h.Opcode() == pdu.OpNOPIn && h.ITT() == pdu.ReservedTag
			})
			if len(got) != 1 || got[0].Opcode() != pdu.OpReject || got[0][2] != pdu.RejectProtocolError {
				t.Fatalf("answered with %v, want one Reject 0x04", pdutest.Opcodes(got))
			}
		}},
	}
}

// readHostile reads the hostile area's first 4 KiB through c.
func readHostile(t *testing.T, c *pdutest.Conn) []byte {
	t.Helper()
	const itt = 0x11
	if err := c.Command(pdutest.RW10(false, itt, hostileLBA, 8), nil); err != nil {
		t.Fatal(err)
	}
	var got []byte
	for {
		h, data, err := c.ReadNonPing(pdutest.Timeout)
		if err != nil {
			t.Fatal(err)
		}
		if h.ITT() != itt {
			continue
		}
		got = append(got, data...)
		if h.Opcode() == pdu.OpSCSIResponse || pdutest.HasStatus(&h) {
			return got
		}
	}
}
