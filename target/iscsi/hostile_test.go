package iscsi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/iscsi/pdu"
	"github.com/hatarget/hatarget/target/iscsi/pdu/pdutest"
	"github.com/hatarget/hatarget/target/scsi"
)

// The cases of docs/security.md, "Hostile initiators", against an
// in-process server; test/hostile runs them against the real binary.

const (
	openIQN   = "iqn.2024-01.io.hatarget.test:open"
	chapIQN   = "iqn.2024-01.io.hatarget.test:chap"
	mutualIQN = "iqn.2024-01.io.hatarget.test:mutual"

	alice = "iqn.2024-01.io.hatarget.test:alice"
	bob   = "iqn.2024-01.io.hatarget.test:bob"

	sec, op, ffp = pdu.StageSecurity, pdu.StageOperational, pdu.StageFullFeature

	chapUserName   = "joe"
	chapUserSecret = "12charsecret"
	discUserName   = "disco"
	discUserSecret = "discosecret1"

	// heldLBA: READs of it wait on the LU until the test releases them, so
	// a test can hold a task running.
	heldLBA = 1000
)

// heldReads runs commands on its LU, except READs of heldLBA, which wait
// until release is closed.
type heldReads struct {
	lu      *scsi.LU
	holding chan struct{}
	release chan struct{}
}

func (f *heldReads) Forward(cmd *scsi.Command, res *scsi.Result) bool {
	if len(cmd.CDB) >= 10 && cmd.CDB[0] == 0x28 && binary.BigEndian.Uint32(cmd.CDB[2:]) == heldLBA {
		f.holding <- struct{}{}
		<-f.release
	}
	f.lu.ExecuteLocal(cmd, res)
	return false
}

type hostileFixture struct {
	srv  *Server
	addr string
	held *heldReads
}

// startHostile serves an open target (queue depth 4, one LU), a CHAP
// target, a mutual CHAP target and discovery with CHAP, with opts.
func startHostile(t *testing.T, opts Options) *hostileFixture {
	t.Helper()
	dev, err := backend.Open(backend.Options{Handler: backend.NullIO, Size: 1 << 20, BlockSize: 512})
	if err != nil {
		t.Fatal(err)
	}
	lu, err := scsi.NewLU(scsi.LUConfig{Device: dev, Serial: "hostile"})
	if err != nil {
		t.Fatal(err)
	}
	held := &heldReads{lu: lu, holding: make(chan struct{}, 64), release: make(chan struct{})}
	lu.SetForwarder(held)
	opts.Logger = slog.New(slog.DiscardHandler)
	srv := NewServer(opts)
	small := DefaultLimits()
	small.QueueDepth = 4
	views := func(string) scsi.View { return oneLU{lu} }
	users := []CHAPUser{{User: "other", Secret: "othersecret1"}, {User: chapUserName, Secret: chapUserSecret}}
	srv.SetTargets([]*Target{
		{Name: openIQN, Limits: small, Views: views, RelativePort: 1, PortGroup: 1},
		{Name: chapIQN, Limits: DefaultLimits(), Views: views, RelativePort: 1, PortGroup: 1, IncomingUsers: users},
		{Name: mutualIQN, Limits: DefaultLimits(), Views: views, RelativePort: 1, PortGroup: 1, IncomingUsers: users,
			OutgoingUser: &CHAPUser{User: "tgt", Secret: "targetsecret"}},
	}, []CHAPUser{{User: discUserName, Secret: discUserSecret}})
	a := listenLoopback(t, srv)
	t.Cleanup(func() { // before the shutdown, which waits for held commands
		select {
		case <-held.release:
		default:
			close(held.release)
		}
	})
	return &hostileFixture{srv: srv, addr: a.String(), held: held}
}

var (
	kv       = pdutest.KV
	identity = pdutest.Identity
	keys     = pdutest.Keys
)

// TestHostileLogins checks every login a hostile initiator may try is
// refused with the status docs/security.md gives.
func TestHostileLogins(t *testing.T) {
	t.Parallel()
	f := startHostile(t, Options{MaxTextBytes: 16 << 10})
	chapStart := []pdutest.Step{
		pdutest.Stay(sec, keys(append(identity(alice, chapIQN), kv("AuthMethod", "CHAP"))...)),
		pdutest.Stay(sec, keys(kv("CHAP_A", "5"))),
	}
	for _, tc := range []struct {
		name  string
		steps []pdutest.Step
		want  string
	}{
		{"open target, no authentication", []pdutest.Step{pdutest.Next(op, ffp, keys(identity(alice, openIQN)...))}, "0x0000"},
		{"CHAP, right secret", append(chapStart, pdutest.Next(sec, op, pdutest.CHAPReply(chapUserName, chapUserSecret))), "0x0000"},
		{"CHAP required, security stage skipped", []pdutest.Step{pdutest.Next(op, ffp, keys(identity(alice, chapIQN)...))}, "0x0201"},
		{"CHAP required, AuthMethod=None", []pdutest.Step{pdutest.Next(sec, op, keys(append(identity(alice, chapIQN), kv("AuthMethod", "None"))...))}, "0x0201"},
		{"CHAP required, no AuthMethod", []pdutest.Step{pdutest.Next(sec, op, keys(identity(alice, chapIQN)...))}, "0x0201"},
		{"CHAP required, claims the operational stage the target never agreed to", []pdutest.Step{
			pdutest.Stay(sec, keys(append(identity(alice, chapIQN), kv("AuthMethod", "CHAP,None"))...)),
			pdutest.Next(op, ffp, keys()),
		}, "0x0200"},
		{"CHAP required, claims the operational stage during CHAP", append(chapStart, pdutest.Next(op, ffp, keys())), "0x0200"},
		{"CHAP, wrong secret", append(chapStart, pdutest.Next(sec, op, pdutest.CHAPReply(chapUserName, "wrongsecret1"))), "0x0201"},
		{"CHAP, another user's name", append(chapStart, pdutest.Next(sec, op, pdutest.CHAPReply("other", chapUserSecret))), "0x0201"},
		{"CHAP, unknown user", append(chapStart, pdutest.Next(sec, op, pdutest.CHAPReply("mallory", chapUserSecret))), "0x0201"},
		{"CHAP_A repeated for a second challenge", append(chapStart, pdutest.Stay(sec, keys(kv("CHAP_A", "5")))), "0x0201"},
		{"CHAP_R without a challenge", []pdutest.Step{
			pdutest.Stay(sec, keys(append(identity(alice, chapIQN), kv("AuthMethod", "CHAP"))...)),
			pdutest.Next(sec, op, keys(kv("CHAP_N", chapUserName), kv("CHAP_R", "0x00112233445566778899aabbccddeeff"))),
		}, "0x0201"},
		{"mutual CHAP, the target's challenge reflected", append([]pdutest.Step{
			pdutest.Stay(sec, keys(append(identity(alice, mutualIQN), kv("AuthMethod", "CHAP"))...)),
			pdutest.Stay(sec, keys(kv("CHAP_A", "5"))),
		}, pdutest.Next(sec, op, pdutest.CHAPReflect(chapUserName, chapUserSecret))), "0x0201"},
		{"discovery with CHAP required, security stage skipped", []pdutest.Step{pdutest.Next(op, ffp, keys(identity(alice, "")...))}, "0x0201"},
		{"discovery with CHAP required, AuthMethod=None", []pdutest.Step{pdutest.Next(sec, op, keys(append(identity(alice, ""), kv("AuthMethod", "None"))...))}, "0x0201"},
		{"normal login to an open target turned into discovery", []pdutest.Step{
			pdutest.Stay(op, keys(identity(alice, openIQN)...)),
			pdutest.Next(op, ffp, keys(kv("SessionType", "Discovery"))),
		}, "0x0200"},
		{"first request continued over two PDUs", pdutest.Split(op, ffp, pdutest.Text(identity(alice, openIQN)...)), "0x0000"},
		{"TSIH of a session that is not the initiator's", nil, "0x020a"}, // see below
		{"login text beyond MaxTextBytes over continuations", nil, "0x0200"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c *pdutest.Conn
			var got string
			switch {
			case strings.HasPrefix(tc.name, "TSIH"):
				got = stolenTSIH(t, f)
			case strings.HasPrefix(tc.name, "login text"):
				c = pdutest.Dial(t, f.addr)
				got = longLoginText(t, c, 16<<10)
			default:
				c = pdutest.Dial(t, f.addr)
				var err error
				if got, err = c.Script(tc.steps...); err != nil {
					t.Fatal(err)
				}
			}
			if got != tc.want {
				t.Fatalf("status %s, want %s", got, tc.want)
			}
			if got != "0x0000" && c != nil {
				if ops := pdutest.Opcodes(c.ExpectClosed(2 * time.Second)); len(ops) > 0 {
					t.Errorf("after the refusal the target sent %v", ops)
				}
			}
		})
	}
}

// stolenTSIH logs alice in, then has bob log in with alice's ISID and TSIH
// (a connection added to, or reinstating, her session) and returns bob's
// status; alice's session must not notice.
func stolenTSIH(t *testing.T, f *hostileFixture) string {
	a := pdutest.Dial(t, f.addr)
	resp := a.Login(pdutest.LoginConfig{Initiator: alice, Target: openIQN})
	b := pdutest.Dial(t, f.addr)
	b.ISID = a.ISID
	req := pdu.LoginReq{Transit: true, CSG: pdu.StageOperational, NSG: pdu.StageFullFeature, ISID: a.ISID, TSIH: resp.TSIH, CID: 1, CmdSN: 1}
	data := pdutest.Text(identity(bob, openIQN)...)
	req.DataLen = len(data)
	var h pdu.Header
	req.Marshal(&h)
	if err := b.Write(&h, data); err != nil {
		t.Fatal(err)
	}
	r, _, err := b.LoginResp()
	if err != nil {
		t.Fatal(err)
	}
	b.ExpectClosed(2 * time.Second)
	if _, err := a.NOP(0x77); err != nil {
		t.Errorf("alice's session after bob's attempt: %v", err)
	}
	return pdutest.Status(r)
}

// longLoginText sends limit+8 KiB of text in continued Login Requests and
// returns the status of the refusal.
func longLoginText(t *testing.T, c *pdutest.Conn, limit int) string {
	text := pdutest.Text(identity(alice, openIQN)...)
	for i := 0; len(text) < limit+8192; i++ {
		text = pdu.AppendText(text, "X-io.hatarget.pad"+strings.Repeat("p", i%7), strings.Repeat("p", 200))
	}
	const chunk = 4096
	for off := 0; off < len(text); off += chunk {
		if err := c.LoginData(false, true, pdu.StageOperational, 0, text[off:min(off+chunk, len(text))]); err != nil {
			t.Fatal(err)
		}
		resp, _, err := c.LoginResp()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusClass != pdu.LoginSuccess {
			if off+chunk <= limit {
				t.Errorf("refused after only %d bytes", off+chunk)
			}
			return pdutest.Status(resp)
		}
	}
	return "0x0000"
}

// TestFreshCHAPChallenge checks that two CHAP exchanges never see the same
// challenge, so a response recorded once cannot be replayed.
func TestFreshCHAPChallenge(t *testing.T) {
	t.Parallel()
	f := startHostile(t, Options{})
	seen := map[string]bool{}
	for range 8 {
		c := pdutest.Dial(t, f.addr)
		if _, _, err := c.Exchange(false, pdu.StageSecurity, 0, append(identity(alice, chapIQN), kv("AuthMethod", "CHAP"))...); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.Exchange(false, pdu.StageSecurity, 0, kv("CHAP_A", "5"))
		if err != nil {
			t.Fatal(err)
		}
		ch := pdutest.Value(got, "CHAP_C")
		if len(ch) < 2+2*16 || seen[ch] {
			t.Fatalf("challenge %q: short or seen before", ch)
		}
		seen[ch] = true
	}
}

// TestCHAPVerifyPicksTheNamedUser checks that verify, which hashes for
// every user to take the same time whatever the name, still accepts only
// the named user's response.
func TestCHAPVerifyPicksTheNamedUser(t *testing.T) {
	a, _ := findCHAPAlgorithm(5)
	x := &chapExchange{algo: a, id: 9, challenge: []byte("0123456789abcdef")}
	users := []CHAPUser{{"ann", "annsecret123"}, {"joe", "joesecret123"}, {"max", "maxsecret123"}}
	for _, tc := range []struct {
		name, secret string
		ok           bool
	}{
		{"joe", "joesecret123", true},
		{"max", "maxsecret123", true},
		{"joe", "annsecret123", false}, // another user's secret
		{"bob", "joesecret123", false},
	} {
		resp := encodeCHAPBinary(chapResponse(a, 9, tc.secret, x.challenge))
		u, err := x.verify(users, tc.name, resp)
		if (err == nil) != tc.ok || (tc.ok && u.User != tc.name) {
			t.Errorf("%s with %s's secret: user %q, err %v; want ok=%v", tc.name, tc.secret, u.User, err, tc.ok)
		}
	}
}

// TestConnectionLimits checks the caps on connections from one address and
// in total: a connection beyond them is closed before anything is read.
func TestConnectionLimits(t *testing.T) {
	t.Parallel()
	f := startHostile(t, Options{MaxConnections: 5, MaxConnectionsPerSource: 3})
	dial := func(src string) *pdutest.Conn {
		c, err := pdutest.DialFrom(t, src, f.addr)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var open []*pdutest.Conn
	for range 3 {
		open = append(open, dial("127.0.0.1"))
	}
	waitConns(t, f.srv, 3)
	expectRefused(t, dial("127.0.0.1"), "4th from one address")
	open = append(open, dial("127.0.0.2"), dial("127.0.0.3"))
	waitConns(t, f.srv, 5)
	expectRefused(t, dial("127.0.0.4"), "6th in total")
	open[0].Close()
	waitConns(t, f.srv, 4)
	c := dial("127.0.0.1")
	c.Login(pdutest.LoginConfig{Initiator: alice, Target: openIQN})
}

func waitConns(t *testing.T, srv *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for srv.ConnectionCount() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections, want %d", srv.ConnectionCount(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// expectRefused checks that the target closes c without answering a login.
func expectRefused(t *testing.T, c *pdutest.Conn, what string) {
	t.Helper()
	_ = c.LoginPDU(true, false, pdu.StageOperational, pdu.StageFullFeature, identity(alice, openIQN)...)
	if ops := pdutest.Opcodes(c.ExpectClosed(2 * time.Second)); len(ops) > 0 {
		t.Errorf("%s: answered with %v", what, ops)
	}
}

// TestLoginTimeout checks that a connection that never completes its login
// is closed after LoginTimeout.
func TestLoginTimeout(t *testing.T) {
	t.Parallel()
	f := startHostile(t, Options{LoginTimeout: 200 * time.Millisecond})
	silent := pdutest.Dial(t, f.addr)
	slow := pdutest.Dial(t, f.addr)
	if _, _, err := slow.Exchange(false, pdu.StageSecurity, 0, append(identity(alice, chapIQN), kv("AuthMethod", "CHAP"))...); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	silent.ExpectClosed(2 * time.Second)
	slow.ExpectClosed(2 * time.Second)
	if d := time.Since(start); d > time.Second {
		t.Errorf("closed after %v", d)
	}
}

// TestSessionLimits checks the caps on sessions per initiator and per
// target: the login past them is refused with 0x0302 (out of resources),
// and reinstating one's own session is not refused.
func TestSessionLimits(t *testing.T) {
	t.Parallel()
	f := startHostile(t, Options{MaxSessionsPerInitiator: 2, MaxSessionsPerTarget: 3})
	login := func(initiator string) (*pdutest.Conn, string) {
		c := pdutest.Dial(t, f.addr)
		_, err := c.LoginErr(pdutest.LoginConfig{Initiator: initiator, Target: openIQN})
		var le *pdutest.LoginError
		switch {
		case errors.As(err, &le):
			return c, pdutest.Status(le.Resp)
		case err != nil:
			t.Fatal(err)
		}
		return c, "0x0000"
	}
	first, _ := login(alice)
	login(alice)
	if _, got := login(alice); got != "0x0302" {
		t.Errorf("alice's third session: %s, want 0x0302", got)
	}
	again := pdutest.Dial(t, f.addr)
	again.ISID = first.ISID // reinstatement replaces a session, it adds none
	again.Login(pdutest.LoginConfig{Initiator: alice, Target: openIQN})
	login(bob)
	if _, got := login(bob); got != "0x0302" {
		t.Errorf("the target's fourth session: %s, want 0x0302", got)
	}
}

// TestForeignTasks checks that a session cannot reach another session's
// tasks by their ITT and TTT: Data-Out is dropped, ABORT TASK answers "task
// does not exist", and the owner's commands complete untouched.
func TestForeignTasks(t *testing.T) {
	t.Parallel()
	f := startHostile(t, Options{})
	a, b := pdutest.DialLoggedIn(t, f.addr, alice, openIQN), pdutest.DialLoggedIn(t, f.addr, bob, openIQN)
	pdutest.ForeignTask(t, a, b, 0x10, 8, bytes.Repeat([]byte("A"), 4096))
}

// TestDataOutForRunningRead checks that a Data-Out naming a READ that is
// executing is dropped without touching it: the READ answers normally.
func TestDataOutForRunningRead(t *testing.T) {
	t.Parallel()
	f := startHostile(t, Options{})
	c := pdutest.DialLoggedIn(t, f.addr, alice, openIQN)
	const itt = 0x30
	if err := c.Command(pdutest.RW10(false, itt, heldLBA, 1), nil); err != nil {
		t.Fatal(err)
	}
	<-f.held.holding
	if err := c.DataOut(itt, pdu.ReservedTag, make([]byte, 512)); err != nil {
		t.Fatal(err)
	}
	if err := c.DataOut(itt, 1, make([]byte, 512)); err != nil {
		t.Fatal(err)
	}
	c.ExpectQuiet(t, "Data-Out naming a running READ")
	close(f.held.release)
	h, data, _, err := c.ReadITT(itt, pdutest.Timeout)
	if err != nil || h.Opcode() != pdu.OpDataIn && h.Opcode() != pdu.OpSCSIResponse {
		t.Fatalf("READ answered with %v, %v (%d bytes)", h.Opcode(), err, len(data))
	}
}

// TestSNACKRejected checks that a SNACK, which needs ErrorRecoveryLevel > 0,
// is rejected with reason "SNACK reject" and the connection goes on.
func TestSNACKRejected(t *testing.T) {
	t.Parallel()
	f := startHostile(t, Options{})
	c := pdutest.DialLoggedIn(t, f.addr, alice, openIQN)
	for _, snackType := range []byte{0, 1, 2, 3} {
		if err := c.SNACK(snackType, 0x40, pdu.ReservedTag, 0, 0); err != nil {
			t.Fatal(err)
		}
		h, data, err := c.ReadNonPing(pdutest.Timeout)
		if err != nil || h.Opcode() != pdu.OpReject || h[2] != pdu.RejectSNACK || pdutest.RejectedITT(data) != 0x40 {
			t.Fatalf("SNACK type %d: %v reason %#x, err %v; want Reject reason 0x03", snackType, h.Opcode(), h[2], err)
		}
	}
	c.ExpectQuiet(t, "SNACKs")
}

// TestImmediateCommandCap checks that immediate commands, which bypass the
// CmdSN window, are rejected past twice the queue depth with reason 0x06.
func TestImmediateCommandCap(t *testing.T) {
	t.Parallel()
	f := startHostile(t, Options{})
	c := pdutest.DialLoggedIn(t, f.addr, alice, openIQN)
	const qd = 4 // the open target's queue depth
	for i := range 3 * qd {
		cmd := pdutest.RW10(false, uint32(0x100+i), heldLBA, 1)
		cmd.Immediate = true
		if err := c.Command(cmd, nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := range qd { // one per worker; the others wait in its queue
		select {
		case <-f.held.holding:
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d commands running", i)
		}
	}
	var reasons []byte
	for range qd {
		h, _, err := c.ReadNonPing(pdutest.Timeout)
		if err != nil {
			t.Fatal(err)
		}
		if h.Opcode() != pdu.OpReject {
			t.Fatalf("got %v while the commands are held", h.Opcode())
		}
		reasons = append(reasons, h[2])
	}
	if want := slices.Repeat([]byte{pdu.RejectImmediateCmd}, qd); !slices.Equal(reasons, want) {
		t.Errorf("reject reasons %v, want %v", reasons, want)
	}
	close(f.held.release)
	for range 2 * qd {
		if _, _, err := c.ReadNonPing(pdutest.Timeout); err != nil {
			t.Fatal(err)
		}
	}
}

// TestUnreadAnswers checks that an initiator that sends requests without
// reading their answers is dropped once the answers pile up, instead of
// making the target buffer them without end.
func TestUnreadAnswers(t *testing.T) {
	t.Parallel()
	f := startHostile(t, Options{})
	c := pdutest.DialLoggedIn(t, f.addr, alice, openIQN)
	data := make([]byte, 64<<10)
	var h pdu.Header
	for i := 0; ; i++ {
		(&pdu.NOPOut{Immediate: true, DataLen: len(data), ITT: uint32(i), TTT: pdu.ReservedTag, CmdSN: c.CmdSN}).Marshal(&h)
		err := c.Write(&h, data)
		if err == nil && i < 64<<10 {
			continue
		}
		var ne net.Error
		if err == nil || errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("after %d MiB of pings unread, the target still reads (err %v)", i*len(data)>>20, err)
		}
		return
	}
}

// TestTextRequestLimits checks a discovery session's Text Requests: a
// repeated key is rejected (protocol error), text beyond MaxTextBytes over
// continuations too (out of resources), and the session goes on.
func TestTextRequestLimits(t *testing.T) {
	t.Parallel()
	f := startHostile(t, Options{MaxTextBytes: 8 << 10})
	c := pdutest.Dial(t, f.addr)
	c.Login(pdutest.LoginConfig{Initiator: alice, Target: "", CHAPUser: discUserName, CHAPSecret: discUserSecret})
	text := func(itt uint32, cont bool, data []byte) (pdu.Header, error) {
		var h pdu.Header
		(&pdu.TextReq{Immediate: true, Final: !cont, Continue: cont, DataLen: len(data), ITT: itt, TTT: pdu.ReservedTag,
			CmdSN: c.CmdSN, ExpStatSN: c.ExpStatSN}).Marshal(&h)
		if err := c.Write(&h, data); err != nil {
			return h, err
		}
		h, _, _, err := c.ReadITT(itt, pdutest.Timeout)
		return h, err
	}
	h, err := text(1, false, pdutest.Text(kv("SendTargets", "All"), kv("SendTargets", "All")))
	if err != nil || h.Opcode() != pdu.OpReject || h[2] != pdu.RejectProtocolError {
		t.Errorf("repeated SendTargets: %v reason %#x, err %v; want Reject 0x04", h.Opcode(), h[2], err)
	}
	chunk := bytes.Repeat([]byte("X-pad=ppppppp\x00"), 200)
	for i := 0; ; i++ {
		h, err := text(2, true, chunk)
		if err != nil {
			t.Fatal(err)
		}
		if h.Opcode() == pdu.OpReject {
			if h[2] != pdu.RejectOutOfResources || (i+1)*len(chunk) <= 8<<10 {
				t.Errorf("long text rejected with reason %#x after %d bytes", h[2], (i+1)*len(chunk))
			}
			break
		}
	}
	if h, err := text(3, false, pdutest.Text(kv("SendTargets", "All"))); err != nil || h.Opcode() != pdu.OpTextResp {
		t.Errorf("SendTargets after the rejects: %v, %v", h.Opcode(), err)
	}
}

// TestPDUsPipelinedAfterLogin checks that what an initiator sends right
// behind its final Login Request, before the answer, is read in the full
// feature phase: the connection's small login read buffer may already hold
// it when the large one takes over.
func TestPDUsPipelinedAfterLogin(t *testing.T) {
	t.Parallel()
	f := startHostile(t, Options{})
	c := pdutest.Dial(t, f.addr)
	var login, nop pdu.Header
	text := pdutest.Text(identity(alice, openIQN)...)
	(&pdu.LoginReq{Transit: true, CSG: op, NSG: ffp, ISID: c.ISID, CmdSN: 1, DataLen: len(text)}).Marshal(&login)
	ping := []byte("pipelined")
	(&pdu.NOPOut{Immediate: true, ITT: 0x55, TTT: pdu.ReservedTag, CmdSN: 1, DataLen: len(ping)}).Marshal(&nop)
	var tr [8]byte
	stream := slices.Concat(login[:], text, pdu.Trailer(&tr, text, false), nop[:], ping, pdu.Trailer(&tr, ping, false))
	if _, err := c.NC.Write(stream); err != nil {
		t.Fatal(err)
	}
	if resp, _, err := c.LoginResp(); err != nil || resp.StatusClass != pdu.LoginSuccess || !resp.Transit {
		t.Fatalf("login: %s, %v", pdutest.Status(resp), err)
	}
	h, data, _, err := c.ReadITT(0x55, pdutest.Timeout)
	if err != nil || h.Opcode() != pdu.OpNOPIn || string(data) != string(ping) {
		t.Fatalf("the pipelined ping: %v %q, %v", h.Opcode(), data, err)
	}
}

// TestRefusalLog checks that a flood of refusals logs one line a second,
// the next one counting those it left out.
func TestRefusalLog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var r refusalLog
	for range 5 {
		r.warn(log, "refusing connection", "remote", "192.0.2.1:4000")
	}
	if n := strings.Count(buf.String(), "refusing connection"); n != 1 {
		t.Fatalf("%d lines for a burst of 5:\n%s", n, buf.String())
	}
	r.last.Add(-int64(time.Second)) // as if a second had passed
	r.warn(log, "refusing connection", "remote", "192.0.2.1:4001")
	if !strings.Contains(buf.String(), "suppressed=4") || !strings.Contains(buf.String(), "remote=192.0.2.1:4001") {
		t.Fatalf("the next line does not count the 4 left out:\n%s", buf.String())
	}
}
