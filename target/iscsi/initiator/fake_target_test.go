package initiator

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/pdu"
)

// fakeTarget is a minimal iSCSI target built on pdu, just enough to drive
// the initiator through every state it has: login with and without CHAP,
// negotiation, reads with status collapse, writes with immediate,
// unsolicited and solicited data, task management, pings, text and logout.
// It checks what the initiator sends (CmdSN window, segment sizes, DataSN,
// digests) and reports violations through t.

const (
	fakeIQN   = "iqn.2024-01.io.hatarget.test:fake"
	fakeBlock = 512
)

type fakeOpts struct {
	chapUser, chapSecret     string
	mutualUser, mutualSecret string
	badMutual                bool // answer our challenge with a wrong response
	digests                  bool // accept CRC32C
	mrdsl                    int  // the target's MaxRecvDataSegmentLength, default 8192
	maxBurst, firstBurst     int  // the target's side of the min functions
	initialR2T               bool // insist on InitialR2T=Yes
	noImmediate              bool // refuse ImmediateData
	maxR2T                   int
	window                   int    // commands the target lets in flight, default 16
	redirect                 string // redirect every login here
	redirectSelf             bool   // redirect every login to this very target
	holdOp                   byte   // never answer commands with this opcode (0 = none)
	rejectOp                 byte   // answer commands with this opcode with a Reject
	ping                     bool   // ping the initiator right after login
	asyncLogout              bool   // ask for a logout right after login
	splitText                int    // send login and text answers in pieces of this size
	delay                    time.Duration
	noCollapse               bool     // separate SCSI Response after Data-In
	offerKeys                []pdu.KV // keys the target offers first
	blocks                   int
}

type fakeStats struct {
	logins                               int
	loginKeys                            []pdu.KV
	immediate, unsolicited, solicited    int
	r2ts                                 int
	maxDataOut                           int
	maxOutstanding                       int
	pingsAnswered                        int
	tmfs                                 []byte
	aborted                              []uint32
	answers                              map[string]string // the initiator's answers to offerKeys
	windowViolations, protocolViolations []string
}

type fakeTarget struct {
	t    *testing.T
	opts fakeOpts
	ln   net.Listener
	addr string

	mu    sync.Mutex
	disk  []byte
	stats fakeStats
	conns []net.Conn
	wg    sync.WaitGroup
}

func newFake(t *testing.T, o fakeOpts) *fakeTarget {
	t.Helper()
	if o.mrdsl == 0 {
		o.mrdsl = 8192
	}
	if o.maxBurst == 0 {
		o.maxBurst = 262144
	}
	if o.firstBurst == 0 {
		o.firstBurst = 65536
	}
	if o.maxR2T == 0 {
		o.maxR2T = 1
	}
	if o.window == 0 {
		o.window = 16
	}
	if o.blocks == 0 {
		o.blocks = 8192
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeTarget{t: t, opts: o, ln: ln, addr: ln.Addr().String(), disk: make([]byte, o.blocks*fakeBlock)}
	f.stats.answers = map[string]string{}
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.close)
	return f
}

func (f *fakeTarget) config() Config {
	return Config{Addr: f.addr, TargetName: fakeIQN, Timeout: 5 * time.Second}
}

func (f *fakeTarget) close() {
	_ = f.ln.Close()
	f.mu.Lock()
	for _, c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
	for _, v := range f.stats.windowViolations {
		f.t.Errorf("fake target: command window: %s", v)
	}
	for _, v := range f.stats.protocolViolations {
		f.t.Errorf("fake target: %s", v)
	}
}

func (f *fakeTarget) snapshot() fakeStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.stats
	s.tmfs = slices.Clone(s.tmfs)
	s.aborted = slices.Clone(s.aborted)
	return s
}

func (f *fakeTarget) violation(format string, args ...any) {
	f.mu.Lock()
	f.stats.protocolViolations = append(f.stats.protocolViolations, fmt.Sprintf(format, args...))
	f.mu.Unlock()
}

func (f *fakeTarget) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		f.conns = append(f.conns, c)
		f.mu.Unlock()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer c.Close()
			fc := &fakeConn{f: f, o: &f.opts, c: c, br: bufio.NewReader(c), writes: map[uint32]*fakeWrite{},
				held: map[uint32]*pdu.SCSICommand{}, initMRDSL: 8192}
			if fc.login() {
				fc.serve()
			}
		}()
	}
}

// fakeConn is one connection's state.
type fakeConn struct {
	f  *fakeTarget
	o  *fakeOpts
	c  net.Conn
	br *bufio.Reader

	wmu            sync.Mutex
	hd, dd         bool
	wantHD, wantDD bool

	mu                 sync.Mutex // sequence numbers: delayed commands answer from other goroutines
	statSN             uint32
	expCmdSN, maxCmdSN uint32
	outstanding        int

	initMRDSL                    int
	firstBurst, maxBurst, maxR2T int
	initialR2T, immediateData    bool
	isid                         [6]byte
	writes                       map[uint32]*fakeWrite
	held                         map[uint32]*pdu.SCSICommand
	nextTTT                      uint32
	textBuf                      []byte
	textTTT                      uint32
	delayed                      sync.WaitGroup
	loginITT                     uint32
	chapAlg                      int
	chapID                       byte
	chapChallenge                []byte
	authed, offered              bool
}

type fakeWrite struct {
	cmd       pdu.SCSICommand
	buf       []byte
	got       int
	unsol     int
	nextOff   int
	pending   int
	r2tSN     uint32
	ttts      map[uint32]uint32 // TTT -> next DataSN
	unsolNext uint32
}

func (fc *fakeConn) read(limit int) (pdu.Header, []byte, []byte, error) {
	var h pdu.Header
	ahs, err := pdu.ReadHeader(fc.br, &h, make([]byte, pdu.AHSBufLen), fc.hd)
	if err != nil {
		return h, nil, nil, err
	}
	n := h.DataSegmentLength()
	if n > limit {
		fc.f.violation("%v with %d bytes of data, limit %d", h.Opcode(), n, limit)
		return h, nil, nil, io.ErrUnexpectedEOF
	}
	data := make([]byte, n)
	if err := pdu.ReadData(fc.br, data, fc.dd); err != nil {
		if errors.Is(err, pdu.ErrDataDigest) {
			fc.f.violation("data digest error from the initiator")
		}
		return h, nil, nil, err
	}
	return h, slices.Clone(ahs), data, nil
}

func (fc *fakeConn) write(h *pdu.Header, data []byte) {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	h.SetDataSegmentLength(len(data))
	buf := slices.Clone(h[:])
	if fc.hd {
		d := pdu.HeaderDigest(h, nil)
		buf = append(buf, d[:]...)
	}
	buf = append(buf, data...)
	var tr [8]byte
	buf = append(buf, pdu.Trailer(&tr, data, fc.dd)...)
	_, _ = fc.c.Write(buf)
}

// sn returns the next StatSN and the current window for a status PDU.
func (fc *fakeConn) sn(status bool) (stat, exp, maxSN uint32) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	stat = fc.statSN
	if status {
		fc.statSN++
	}
	return stat, fc.expCmdSN, fc.maxCmdSN
}

// --- login ---

func (fc *fakeConn) login() bool {
	var text []byte
	for {
		h, _, data, err := fc.read(loginMaxData)
		if err != nil {
			return false
		}
		if h.Opcode() != pdu.OpLoginReq {
			fc.f.violation("%v during login", h.Opcode())
			return false
		}
		var req pdu.LoginReq
		req.Unmarshal(&h)
		fc.isid, fc.loginITT = req.ISID, req.ITT
		fc.mu.Lock()
		fc.expCmdSN, fc.maxCmdSN = req.CmdSN, req.CmdSN+uint32(fc.o.window)-1
		fc.mu.Unlock()
		text = append(text, data...)
		if req.Continue {
			fc.loginResp(&req, false, nil, 0) // acknowledge the piece
			continue
		}
		kvs, err := pdu.ParseText(text)
		text = nil
		if err != nil {
			fc.f.violation("login text: %v", err)
			return false
		}
		fc.f.mu.Lock()
		fc.f.stats.loginKeys = append(fc.f.stats.loginKeys, kvs...)
		fc.f.mu.Unlock()
		if to := fc.redirectTo(); to != "" {
			fc.loginResp(&req, false, []pdu.KV{{Key: "TargetAddress", Value: to + ",1"}}, 0x0101)
			return false
		}
		var resp []pdu.KV
		var status uint16
		var transit bool
		if req.CSG == pdu.StageSecurity {
			resp, status = fc.security(kvs)
			transit = req.Transit && fc.authed
		} else {
			if fc.o.chapUser != "" && !fc.authed {
				status = 0x0201 // skipping authentication is no way in
			}
			resp = fc.operational(kvs)
			transit = req.Transit && (len(fc.o.offerKeys) == 0 || len(fc.f.snapshot().answers) > 0)
		}
		fc.loginResp(&req, transit, resp, status)
		if status != 0 {
			return false
		}
		if transit && req.NSG == pdu.StageFullFeature {
			fc.f.mu.Lock()
			fc.f.stats.logins++
			fc.f.mu.Unlock()
			return true
		}
	}
}

func (fc *fakeConn) redirectTo() string {
	if fc.o.redirectSelf {
		return fc.f.addr
	}
	return fc.o.redirect
}

func (fc *fakeConn) loginResp(req *pdu.LoginReq, transit bool, kvs []pdu.KV, status uint16) {
	var data []byte
	for _, kv := range kvs {
		data = pdu.AppendText(data, kv.Key, kv.Value)
	}
	piece := len(data)
	if fc.o.splitText > 0 {
		piece = fc.o.splitText
	}
	for {
		n := min(piece, len(data))
		more := n < len(data)
		stat, exp, maxSN := fc.sn(true)
		r := pdu.LoginResp{
			Transit: transit && !more, Continue: more, CSG: req.CSG, DataLen: n, ISID: req.ISID,
			ITT: req.ITT, StatSN: stat, ExpCmdSN: exp, MaxCmdSN: maxSN,
			StatusClass: byte(status >> 8), StatusDetail: byte(status),
		}
		if r.Transit {
			r.NSG = req.NSG
			if req.NSG == pdu.StageFullFeature {
				r.TSIH = 0x77
			}
		}
		var h pdu.Header
		r.Marshal(&h)
		fc.write(&h, data[:n])
		data = data[n:]
		if !more {
			return
		}
		// Wait for the empty request that asks for the rest.
		h2, _, d2, err := fc.read(loginMaxData)
		var next pdu.LoginReq
		next.Unmarshal(&h2)
		if err != nil || h2.Opcode() != pdu.OpLoginReq || len(d2) != 0 || next.Continue {
			fc.f.violation("expected an empty Login Request for the continuation, got %v with %d bytes (err %v)", h2.Opcode(), len(d2), err)
			return
		}
	}
}

func (fc *fakeConn) security(kvs []pdu.KV) ([]pdu.KV, uint16) {
	var out []pdu.KV
	if _, ok := lookup(kvs, "InitiatorName"); ok {
		if tn, _ := lookup(kvs, "TargetName"); tn != fakeIQN {
			if st, _ := lookup(kvs, "SessionType"); st != "Discovery" {
				return nil, 0x0203
			}
		}
		out = append(out, pdu.KV{Key: "TargetPortalGroupTag", Value: "1"})
	}
	if m, ok := lookup(kvs, "AuthMethod"); ok {
		methods := strings.Split(m, ",")
		switch {
		case fc.o.chapUser != "" && slices.Contains(methods, "CHAP"):
			out = append(out, pdu.KV{Key: "AuthMethod", Value: "CHAP"})
		case fc.o.chapUser == "" && slices.Contains(methods, "None"):
			out = append(out, pdu.KV{Key: "AuthMethod", Value: "None"})
			fc.authed = true
		default:
			return nil, 0x0201
		}
	}
	if a, ok := lookup(kvs, "CHAP_A"); ok {
		for _, v := range strings.Split(a, ",") {
			if n, _ := strconv.Atoi(v); n == CHAPMD5 || n == CHAPSHA256 {
				fc.chapAlg = n
				break
			}
		}
		fc.chapID = 42
		fc.chapChallenge = []byte("fake-target-challenge-0123456789")
		out = append(out, pdu.KV{Key: "CHAP_A", Value: strconv.Itoa(fc.chapAlg)},
			pdu.KV{Key: "CHAP_I", Value: "42"}, pdu.KV{Key: "CHAP_C", Value: encodeCHAP(fc.chapChallenge)})
	}
	if n, ok := lookup(kvs, "CHAP_N"); ok {
		r, _ := lookup(kvs, "CHAP_R")
		got, err := decodeCHAP(r)
		want, _ := chapResponse(fc.chapAlg, fc.chapID, fc.o.chapSecret, fc.chapChallenge)
		if n != fc.o.chapUser || err != nil || string(got) != string(want) {
			return nil, 0x0201
		}
		fc.authed = true
		if ci, ok := lookup(kvs, "CHAP_I"); ok {
			id, _ := strconv.Atoi(ci)
			cc, _ := lookup(kvs, "CHAP_C")
			ch, _ := decodeCHAP(cc)
			secret := fc.o.mutualSecret
			if fc.o.badMutual {
				secret += "x"
			}
			resp, _ := chapResponse(fc.chapAlg, byte(id), secret, ch)
			out = append(out, pdu.KV{Key: "CHAP_N", Value: fc.o.mutualUser}, pdu.KV{Key: "CHAP_R", Value: encodeCHAP(resp)})
		}
	}
	return out, 0
}

func (fc *fakeConn) operational(kvs []pdu.KV) []pdu.KV {
	var out []pdu.KV
	if !fc.offered {
		fc.offered = true
		out = append(out, pdu.KV{Key: "MaxRecvDataSegmentLength", Value: strconv.Itoa(fc.o.mrdsl)},
			pdu.KV{Key: "TargetAlias", Value: "fake"})
		out = append(out, fc.o.offerKeys...)
	}
	fc.firstBurst, fc.maxBurst, fc.maxR2T = 65536, 262144, 1
	fc.initialR2T, fc.immediateData = true, true
	for _, kv := range kvs {
		if v, ok := fc.answerKey(kv); ok {
			out = append(out, pdu.KV{Key: kv.Key, Value: v})
		}
	}
	return out
}

// answerKey negotiates one key the initiator sent; ok=false for
// declarations and answers to the target's own offers.
func (fc *fakeConn) answerKey(kv pdu.KV) (string, bool) {
	num := func() int { n, _ := strconv.Atoi(kv.Value); return n }
	if _, mine := lookup(fc.o.offerKeys, kv.Key); mine {
		fc.f.mu.Lock()
		fc.f.stats.answers[kv.Key] = kv.Value
		fc.f.mu.Unlock()
		return "", false
	}
	switch kv.Key {
	case "InitiatorName", "SessionType", "TargetName":
		return "", false
	case "HeaderDigest", "DataDigest":
		v := "None"
		if fc.o.digests && strings.HasPrefix(kv.Value, "CRC32C") {
			v = "CRC32C"
		}
		// Digests start with the full feature phase, not mid-login.
		if kv.Key == "HeaderDigest" {
			fc.wantHD = v == "CRC32C"
		} else {
			fc.wantDD = v == "CRC32C"
		}
		return v, true
	case "MaxRecvDataSegmentLength":
		fc.initMRDSL = num()
		return "", false
	case "MaxBurstLength":
		fc.maxBurst = min(num(), fc.o.maxBurst)
		return strconv.Itoa(fc.maxBurst), true
	case "FirstBurstLength":
		fc.firstBurst = min(num(), fc.o.firstBurst, fc.maxBurst)
		return strconv.Itoa(fc.firstBurst), true
	case "MaxOutstandingR2T":
		fc.maxR2T = min(num(), fc.o.maxR2T)
		return strconv.Itoa(fc.maxR2T), true
	case "InitialR2T":
		fc.initialR2T = kv.Value == "Yes" || fc.o.initialR2T
		return yesNo(fc.initialR2T), true
	case "ImmediateData":
		fc.immediateData = kv.Value == "Yes" && !fc.o.noImmediate
		return yesNo(fc.immediateData), true
	case "MaxConnections":
		return "1", true
	case "ErrorRecoveryLevel":
		return "0", true
	case "DefaultTime2Wait":
		return strconv.Itoa(max(num(), 2)), true
	case "DefaultTime2Retain":
		return strconv.Itoa(min(num(), 20)), true
	case "DataPDUInOrder", "DataSequenceInOrder":
		return "Yes", true
	}
	return notUnderstood, true
}

// --- full feature phase ---

func (fc *fakeConn) serve() {
	defer fc.delayed.Wait()
	fc.wmu.Lock()
	fc.hd, fc.dd = fc.wantHD, fc.wantDD
	fc.wmu.Unlock()
	if fc.o.ping {
		stat, exp, maxSN := fc.sn(false)
		var h pdu.Header
		(&pdu.NOPIn{DataLen: 5, ITT: pdu.ReservedTag, TTT: 0x7777, StatSN: stat, ExpCmdSN: exp, MaxCmdSN: maxSN}).Marshal(&h)
		fc.write(&h, []byte("ping!"))
	}
	if fc.o.asyncLogout {
		stat, exp, maxSN := fc.sn(true)
		var h pdu.Header
		(&pdu.AsyncMsg{StatSN: stat, ExpCmdSN: exp, MaxCmdSN: maxSN, Event: pdu.AsyncLogoutRequest, Parameter3: 2}).Marshal(&h)
		fc.write(&h, nil)
	}
	for {
		h, ahs, data, err := fc.read(fc.o.mrdsl)
		if err != nil {
			return
		}
		if !fc.handle(&h, ahs, data) {
			return
		}
	}
}

func (fc *fakeConn) handle(h *pdu.Header, ahs, data []byte) bool {
	switch h.Opcode() {
	case pdu.OpSCSICommand:
		fc.onCommand(h, ahs, data)
	case pdu.OpDataOut:
		fc.onDataOut(h, data)
	case pdu.OpNOPOut:
		fc.onNOPOut(h, data)
	case pdu.OpTaskMgmtReq:
		fc.onTMF(h)
	case pdu.OpTextReq:
		fc.onText(h, data)
	case pdu.OpLogoutReq:
		var r pdu.LogoutReq
		r.Unmarshal(h)
		fc.checkCmdSN(r.CmdSN, true)
		stat, exp, maxSN := fc.sn(true)
		var rh pdu.Header
		(&pdu.LogoutResp{ITT: r.ITT, StatSN: stat, ExpCmdSN: exp, MaxCmdSN: maxSN}).Marshal(&rh)
		fc.write(&rh, nil)
		return false
	default:
		fc.f.violation("unexpected %v", h.Opcode())
		return false
	}
	return true
}

// checkCmdSN enforces the window: a non-immediate request must carry the
// next CmdSN and fit under MaxCmdSN.
func (fc *fakeConn) checkCmdSN(sn uint32, immediate bool) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if sn != fc.expCmdSN {
		fc.f.mu.Lock()
		fc.f.stats.windowViolations = append(fc.f.stats.windowViolations, fmt.Sprintf("CmdSN %d, expected %d", sn, fc.expCmdSN))
		fc.f.mu.Unlock()
	}
	if immediate {
		return
	}
	if serialLT(fc.maxCmdSN, sn) {
		fc.f.mu.Lock()
		fc.f.stats.windowViolations = append(fc.f.stats.windowViolations, fmt.Sprintf("CmdSN %d beyond MaxCmdSN %d", sn, fc.maxCmdSN))
		fc.f.mu.Unlock()
	}
	fc.expCmdSN = sn + 1
	fc.outstanding++
	fc.f.mu.Lock()
	fc.f.stats.maxOutstanding = max(fc.f.stats.maxOutstanding, fc.outstanding)
	fc.f.mu.Unlock()
}

// retire frees a command's place in the window.
func (fc *fakeConn) retire() {
	fc.mu.Lock()
	fc.outstanding--
	fc.maxCmdSN++
	fc.mu.Unlock()
}

func (fc *fakeConn) onCommand(h *pdu.Header, ahs, data []byte) {
	var cmd pdu.SCSICommand
	cmd.Unmarshal(h)
	fc.checkCmdSN(cmd.CmdSN, cmd.Immediate)
	cdb := cmd.CDB[:]
	if ext, err := pdu.ExtendedCDB(ahs); err != nil {
		fc.f.violation("bad AHS: %v", err)
	} else if ext != nil {
		cdb = append(slices.Clone(cdb), ext...)
	}
	switch {
	case fc.o.holdOp != 0 && cdb[0] == fc.o.holdOp:
		fc.held[cmd.ITT] = &cmd
	case fc.o.rejectOp != 0 && cdb[0] == fc.o.rejectOp:
		fc.retire()
		stat, exp, maxSN := fc.sn(true)
		var rh pdu.Header
		(&pdu.Reject{Reason: pdu.RejectProtocolError, DataLen: pdu.HeaderLen, StatSN: stat, ExpCmdSN: exp, MaxCmdSN: maxSN}).Marshal(&rh)
		fc.write(&rh, h[:])
	case cmd.Write:
		fc.startWrite(&cmd, data)
	case fc.o.delay > 0:
		fc.delayed.Add(1)
		go func() {
			defer fc.delayed.Done()
			time.Sleep(fc.o.delay)
			fc.execute(&cmd, cdb)
		}()
	default:
		fc.execute(&cmd, cdb)
	}
}

func (fc *fakeConn) startWrite(cmd *pdu.SCSICommand, imm []byte) {
	w := &fakeWrite{cmd: *cmd, buf: make([]byte, cmd.EDTL), ttts: map[uint32]uint32{}}
	if len(imm) > 0 && !fc.immediateData {
		fc.f.violation("immediate data with ImmediateData=No")
	}
	if len(imm) > fc.firstBurst {
		fc.f.violation("%d bytes of immediate data, FirstBurstLength %d", len(imm), fc.firstBurst)
	}
	copy(w.buf, imm)
	w.got, w.unsol, w.nextOff = len(imm), len(imm), len(imm)
	fc.f.mu.Lock()
	fc.f.stats.immediate += len(imm)
	fc.f.mu.Unlock()
	fc.writes[cmd.ITT] = w
	if !cmd.Final {
		if fc.initialR2T {
			fc.f.violation("command without F bit but InitialR2T=Yes")
		}
		return // unsolicited Data-Out follows
	}
	fc.solicit(w)
}

func (fc *fakeConn) onDataOut(h *pdu.Header, data []byte) {
	var d pdu.DataOut
	d.Unmarshal(h)
	w := fc.writes[d.ITT]
	if w == nil {
		fc.f.violation("Data-Out for unknown ITT %#x", d.ITT)
		return
	}
	end := int(d.BufferOffset) + len(data)
	if end > len(w.buf) {
		fc.f.violation("Data-Out past EDTL")
		return
	}
	copy(w.buf[d.BufferOffset:], data)
	w.got += len(data)
	fc.f.mu.Lock()
	fc.f.stats.maxDataOut = max(fc.f.stats.maxDataOut, len(data))
	if d.TTT == pdu.ReservedTag {
		fc.f.stats.unsolicited += len(data)
	} else {
		fc.f.stats.solicited += len(data)
	}
	fc.f.mu.Unlock()
	if d.TTT == pdu.ReservedTag {
		fc.unsolicitedData(w, &d, end)
		return
	}
	next, ok := w.ttts[d.TTT]
	if !ok || d.DataSN != next {
		fc.f.violation("Data-Out TTT %#x DataSN %d (known %v, expected %d)", d.TTT, d.DataSN, ok, next)
	}
	w.ttts[d.TTT] = d.DataSN + 1
	if d.Final {
		delete(w.ttts, d.TTT)
		w.pending--
		fc.solicit(w)
	}
}

func (fc *fakeConn) unsolicitedData(w *fakeWrite, d *pdu.DataOut, end int) {
	if fc.initialR2T {
		fc.f.violation("unsolicited Data-Out with InitialR2T=Yes")
	}
	if d.DataSN != w.unsolNext {
		fc.f.violation("unsolicited DataSN %d, expected %d", d.DataSN, w.unsolNext)
	}
	w.unsolNext++
	w.unsol = max(w.unsol, end)
	w.nextOff = max(w.nextOff, end)
	if w.unsol > fc.firstBurst {
		fc.f.violation("%d unsolicited bytes, FirstBurstLength %d", w.unsol, fc.firstBurst)
	}
	if d.Final {
		fc.solicit(w)
	}
}

// solicit issues R2Ts for what is missing, up to MaxOutstandingR2T at a
// time, and completes the write once everything arrived.
func (fc *fakeConn) solicit(w *fakeWrite) {
	for w.pending < fc.maxR2T && w.nextOff < len(w.buf) {
		n := min(fc.maxBurst, len(w.buf)-w.nextOff)
		fc.nextTTT++
		ttt := fc.nextTTT
		w.ttts[ttt] = 0
		stat, exp, maxSN := fc.sn(false)
		var h pdu.Header
		(&pdu.R2T{LUN: w.cmd.LUN, ITT: w.cmd.ITT, TTT: ttt, StatSN: stat, ExpCmdSN: exp, MaxCmdSN: maxSN,
			R2TSN: w.r2tSN, BufferOffset: uint32(w.nextOff), DesiredLength: uint32(n)}).Marshal(&h)
		fc.write(&h, nil)
		w.r2tSN++
		w.pending++
		w.nextOff += n
		fc.f.mu.Lock()
		fc.f.stats.r2ts++
		fc.f.mu.Unlock()
	}
	if w.pending > 0 || w.got < len(w.buf) {
		return
	}
	delete(fc.writes, w.cmd.ITT)
	lba, blocks := rwArgs(w.cmd.CDB[:])
	fc.f.mu.Lock()
	if int(lba+uint64(blocks))*fakeBlock <= len(fc.f.disk) {
		copy(fc.f.disk[lba*fakeBlock:], w.buf)
	}
	fc.f.mu.Unlock()
	fc.respond(&w.cmd, StatusGood, nil, 0, false, false)
}

func rwArgs(cdb []byte) (uint64, uint32) {
	switch cdb[0] {
	case opRead10, opWrite10:
		return uint64(binary.BigEndian.Uint32(cdb[2:])), uint32(binary.BigEndian.Uint16(cdb[7:]))
	case opRead16, opWrite16:
		return binary.BigEndian.Uint64(cdb[2:]), binary.BigEndian.Uint32(cdb[10:])
	}
	return 0, 0
}

// execute runs a command that moves no data to the target.
func (fc *fakeConn) execute(cmd *pdu.SCSICommand, cdb []byte) {
	switch cdb[0] {
	case opTestUnitReady:
		fc.respond(cmd, StatusGood, nil, 0, false, false)
	case opRead10, opRead16:
		lba, blocks := rwArgs(cdb)
		if int(lba+uint64(blocks))*fakeBlock > len(fc.f.disk) {
			fc.checkCondition(cmd, 0x05, 0x21)
			return
		}
		fc.f.mu.Lock()
		data := slices.Clone(fc.f.disk[lba*fakeBlock : (lba+uint64(blocks))*fakeBlock])
		fc.f.mu.Unlock()
		fc.dataIn(cmd, data)
	case opServiceAction16:
		var b [32]byte
		binary.BigEndian.PutUint64(b[0:], uint64(fc.o.blocks-1))
		binary.BigEndian.PutUint32(b[8:], fakeBlock)
		fc.dataIn(cmd, b[:])
	case 0x7f: // variable-length CDB: echo its length back to prove the AHS arrived
		fc.dataIn(cmd, []byte{byte(len(cdb))})
	default:
		fc.checkCondition(cmd, 0x05, 0x20)
	}
}

func (fc *fakeConn) checkCondition(cmd *pdu.SCSICommand, key, asc byte) {
	sense := make([]byte, 18)
	sense[0], sense[2], sense[7], sense[12] = 0x70, key, 10, asc
	fc.respond(cmd, StatusCheckCondition, sense, 0, false, false)
}

// dataIn sends data in segments the initiator accepts, the last one
// carrying the status unless collapse is off.
func (fc *fakeConn) dataIn(cmd *pdu.SCSICommand, data []byte) {
	edtl := int(cmd.EDTL)
	over, under := len(data) > edtl, len(data) < edtl
	residual := uint32(max(len(data)-edtl, edtl-len(data)))
	data = data[:min(len(data), edtl)]
	var dataSN uint32
	for off := 0; off < len(data) || off == 0 && len(data) == 0; {
		n := min(fc.initMRDSL, len(data)-off)
		last := off+n == len(data)
		collapse := last && !fc.o.noCollapse
		if collapse {
			fc.retire()
		}
		stat, exp, maxSN := fc.sn(collapse)
		d := pdu.DataIn{Final: last, HasStatus: collapse, DataLen: n, LUN: cmd.LUN, ITT: cmd.ITT,
			TTT: pdu.ReservedTag, StatSN: stat, ExpCmdSN: exp, MaxCmdSN: maxSN, DataSN: dataSN,
			BufferOffset: uint32(off)}
		if collapse {
			d.Overflow, d.Underflow, d.Residual = over, under, residual
		}
		var h pdu.Header
		d.Marshal(&h)
		fc.write(&h, data[off:off+n])
		dataSN++
		off += n
		if last {
			break
		}
	}
	if fc.o.noCollapse {
		fc.respond(cmd, StatusGood, nil, residual, over, under)
	}
}

func (fc *fakeConn) respond(cmd *pdu.SCSICommand, status byte, sense []byte, residual uint32, over, under bool) {
	fc.retire()
	stat, exp, maxSN := fc.sn(true)
	var data []byte
	if len(sense) > 0 {
		data = binary.BigEndian.AppendUint16(nil, uint16(len(sense)))
		data = append(data, sense...)
	}
	var h pdu.Header
	(&pdu.SCSIResponse{Status: status, DataLen: len(data), ITT: cmd.ITT, StatSN: stat, ExpCmdSN: exp,
		MaxCmdSN: maxSN, Residual: residual, Overflow: over, Underflow: under}).Marshal(&h)
	fc.write(&h, data)
}

func (fc *fakeConn) onNOPOut(h *pdu.Header, data []byte) {
	var n pdu.NOPOut
	n.Unmarshal(h)
	if n.ITT == pdu.ReservedTag {
		// The answer to our ping.
		if n.TTT != 0x7777 || string(data) != "ping!" {
			fc.f.violation("ping answer TTT %#x data %q", n.TTT, data)
		}
		fc.f.mu.Lock()
		fc.f.stats.pingsAnswered++
		fc.f.mu.Unlock()
		return
	}
	fc.checkCmdSN(n.CmdSN, n.Immediate)
	if !n.Immediate {
		fc.retire()
	}
	stat, exp, maxSN := fc.sn(true)
	var rh pdu.Header
	(&pdu.NOPIn{DataLen: len(data), ITT: n.ITT, TTT: pdu.ReservedTag, StatSN: stat, ExpCmdSN: exp, MaxCmdSN: maxSN}).Marshal(&rh)
	fc.write(&rh, data)
}

func (fc *fakeConn) onTMF(h *pdu.Header) {
	var r pdu.TaskMgmtReq
	r.Unmarshal(h)
	fc.checkCmdSN(r.CmdSN, r.Immediate)
	resp := pdu.TMFRespComplete
	switch r.Function {
	case pdu.TMFAbortTask:
		if cmd, ok := fc.held[r.RTT]; ok {
			if cmd.CmdSN != r.RefCmdSN {
				fc.f.violation("ABORT TASK RefCmdSN %d, task has CmdSN %d", r.RefCmdSN, cmd.CmdSN)
			}
			delete(fc.held, r.RTT)
			fc.retire()
			fc.f.mu.Lock()
			fc.f.stats.aborted = append(fc.f.stats.aborted, r.RTT)
			fc.f.mu.Unlock()
		} else {
			resp = pdu.TMFRespNoTask
		}
	case pdu.TMFLUNReset, pdu.TMFAbortTaskSet:
		for itt := range fc.held {
			delete(fc.held, itt)
			fc.retire()
		}
	}
	fc.f.mu.Lock()
	fc.f.stats.tmfs = append(fc.f.stats.tmfs, r.Function)
	fc.f.mu.Unlock()
	stat, exp, maxSN := fc.sn(true)
	var rh pdu.Header
	(&pdu.TaskMgmtResp{Response: resp, ITT: r.ITT, StatSN: stat, ExpCmdSN: exp, MaxCmdSN: maxSN}).Marshal(&rh)
	fc.write(&rh, nil)
}

// onText answers SendTargets, in pieces with the C bit when splitText is
// set, waiting for the initiator to ask for each next piece.
func (fc *fakeConn) onText(h *pdu.Header, data []byte) {
	var r pdu.TextReq
	r.Unmarshal(h)
	fc.checkCmdSN(r.CmdSN, r.Immediate)
	fc.retire()
	if r.TTT == pdu.ReservedTag {
		kvs, _ := pdu.ParseText(data)
		which, _ := lookup(kvs, "SendTargets")
		fc.textBuf = nil
		for i, name := range []string{fakeIQN, fakeIQN + "-2", fakeIQN + "-3"} {
			if which != "All" && which != name {
				continue
			}
			fc.textBuf = pdu.AppendText(fc.textBuf, "TargetName", name)
			fc.textBuf = pdu.AppendText(fc.textBuf, "TargetAddress", fmt.Sprintf("%s,%d", fc.f.addr, i+1))
			fc.textBuf = pdu.AppendText(fc.textBuf, "TargetAddress", fmt.Sprintf("[::1]:3260,%d", i+1))
		}
	} else if r.TTT != fc.textTTT || len(data) != 0 {
		fc.f.violation("text continuation TTT %#x (want %#x) with %d bytes", r.TTT, fc.textTTT, len(data))
	}
	n := len(fc.textBuf)
	if fc.o.splitText > 0 {
		n = min(n, fc.o.splitText)
	}
	more := n < len(fc.textBuf)
	fc.textTTT = pdu.ReservedTag
	if more {
		fc.textTTT = 0x5000 + uint32(len(fc.textBuf))
	}
	stat, exp, maxSN := fc.sn(true)
	var rh pdu.Header
	(&pdu.TextResp{Final: !more, Continue: more, DataLen: n, ITT: r.ITT, TTT: fc.textTTT, StatSN: stat,
		ExpCmdSN: exp, MaxCmdSN: maxSN}).Marshal(&rh)
	fc.write(&rh, fc.textBuf[:n])
	fc.textBuf = fc.textBuf[n:]
}
