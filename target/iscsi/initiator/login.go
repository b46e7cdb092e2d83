package initiator

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/hatarget/hatarget/target/iscsi/pdu"
)

// loginMaxData is the data segment limit of every Login PDU, whatever
// MaxRecvDataSegmentLength is being negotiated (RFC 7143 13.12).
const loginMaxData = 8192

// maxLoginRounds bounds exchanges within one stage, so a target that never
// sets the T bit cannot keep us in login forever.
const maxLoginRounds = 16

// LoginError is a Login Response with a non-zero status class.
type LoginError struct {
	Addr          string
	Class, Detail byte
	// TargetAddress is where a redirection (class 1) points.
	TargetAddress string
}

func (e *LoginError) Error() string {
	msg := fmt.Sprintf("login to %s: %s (status class %#02x, detail %#02x)", e.Addr, loginStatusText(e.Class, e.Detail), e.Class, e.Detail)
	if e.TargetAddress != "" {
		msg += ", redirected to " + e.TargetAddress
	}
	return msg
}

// loginStatusText names the status codes of RFC 7143 11.13.5.
func loginStatusText(class, detail byte) string {
	names := map[uint16]string{
		0x0101: "target moved temporarily",
		0x0102: "target moved permanently",
		0x0200: "initiator error",
		0x0201: "authentication failure",
		0x0202: "authorization failure",
		0x0203: "target not found",
		0x0204: "target removed",
		0x0205: "unsupported version",
		0x0206: "too many connections",
		0x0207: "missing parameter",
		0x0208: "can't include in session",
		0x0209: "session type not supported",
		0x020a: "session does not exist",
		0x020b: "invalid request during login",
		0x0300: "target error",
		0x0301: "service unavailable",
		0x0302: "out of resources",
	}
	if s, ok := names[uint16(class)<<8|uint16(detail)]; ok {
		return s
	}
	switch class {
	case pdu.LoginRedirect:
		return "redirection"
	case pdu.LoginInitiatorErr:
		return "initiator error"
	case pdu.LoginTargetErr:
		return "target error"
	}
	return "unknown login status"
}

// loginConn runs the login phase on a fresh connection, one request and
// one response at a time.
type loginConn struct {
	conn net.Conn
	br   *bufio.Reader
	cfg  *Config
	addr string

	tsih               uint16
	cmdSN, expStatSN   uint32
	expCmdSN, maxCmdSN uint32
	params             Params
	ahs                [pdu.AHSBufLen]byte
}

func newLoginConn(conn net.Conn, cfg *Config, addr string) *loginConn {
	p := defaultParams()
	p.ISID = cfg.ISID
	return &loginConn{
		conn:   conn,
		br:     bufio.NewReaderSize(conn, 64<<10),
		cfg:    cfg,
		addr:   addr,
		cmdSN:  cfg.InitialCmdSN,
		params: p,
	}
}

func (l *loginConn) run() error {
	first := []pdu.KV{
		{Key: "InitiatorName", Value: l.cfg.InitiatorName},
		{Key: "SessionType", Value: l.cfg.sessionType()},
	}
	if !l.cfg.Discovery {
		first = append(first, pdu.KV{Key: "TargetName", Value: l.cfg.TargetName})
	}
	if !l.cfg.SkipSecurity {
		ff, err := l.security(first)
		if err != nil {
			return err
		}
		if ff { // straight to full feature: every key keeps its default
			l.params.TSIH = l.tsih
			return nil
		}
		first = nil
	}
	if err := l.operational(first); err != nil {
		return err
	}
	l.params.TSIH = l.tsih
	return nil
}

// security runs the security stage and reports whether the target went
// straight to the full feature phase.
func (l *loginConn) security(first []pdu.KV) (bool, error) {
	offer := "None"
	switch {
	case l.cfg.mutual():
		offer = "CHAP" // None would let the target skip proving itself
	case l.cfg.chap():
		offer = "CHAP,None"
	}
	kvs := append(first, pdu.KV{Key: "AuthMethod", Value: offer})
	resp, rk, err := l.exchange(pdu.StageSecurity, pdu.StageOperational, !l.cfg.chap(), kvs)
	if err != nil {
		return false, err
	}
	method, _ := lookup(rk, "AuthMethod")
	switch method {
	case "CHAP":
		if !l.cfg.chap() {
			return false, fmt.Errorf("login to %s: target requires CHAP but no CHAP credentials are configured", l.addr)
		}
		return l.chap()
	case "None":
		if l.cfg.mutual() {
			return false, fmt.Errorf("login to %s: target chose AuthMethod=None but mutual CHAP is configured", l.addr)
		}
		return l.leaveStage(resp, pdu.StageSecurity, pdu.StageOperational)
	case "":
		return false, fmt.Errorf("login to %s: target did not answer AuthMethod=%s", l.addr, offer)
	}
	return false, fmt.Errorf("login to %s: target answered AuthMethod=%s to our %s", l.addr, method, offer)
}

// chap runs CHAP_A, then CHAP_N/CHAP_R (plus our challenge for mutual
// CHAP), checking the target's answer when mutual.
func (l *loginConn) chap() (bool, error) {
	algs := make([]string, len(l.cfg.CHAPAlgorithms))
	for i, a := range l.cfg.CHAPAlgorithms {
		algs[i] = strconv.Itoa(a)
	}
	_, rk, err := l.exchange(pdu.StageSecurity, pdu.StageOperational, false,
		[]pdu.KV{{Key: "CHAP_A", Value: strings.Join(algs, ",")}})
	if err != nil {
		return false, err
	}
	kvs, mc, alg, err := l.chapAnswer(rk)
	if err != nil {
		return false, fmt.Errorf("login to %s: CHAP: %w", l.addr, err)
	}
	resp, rk, err := l.exchange(pdu.StageSecurity, pdu.StageOperational, true, kvs)
	if err != nil {
		return false, err
	}
	if l.cfg.mutual() {
		if err := l.checkTarget(rk, mc, alg); err != nil {
			return false, fmt.Errorf("login to %s: %w", l.addr, err)
		}
	}
	l.params.CHAPAlgorithm = alg
	return l.leaveStage(resp, pdu.StageSecurity, pdu.StageOperational)
}

// chapAnswer computes our CHAP_N/CHAP_R from the target's challenge.
func (l *loginConn) chapAnswer(rk []pdu.KV) ([]pdu.KV, mutualChallenge, int, error) {
	var mc mutualChallenge
	a, _ := lookup(rk, "CHAP_A")
	alg, err := parseCHAPAlg(a, l.cfg.CHAPAlgorithms)
	if err != nil {
		return nil, mc, 0, err
	}
	i, _ := lookup(rk, "CHAP_I")
	id, err := parseCHAPID(i)
	if err != nil {
		return nil, mc, 0, err
	}
	c, _ := lookup(rk, "CHAP_C")
	challenge, err := decodeCHAP(c)
	if err != nil {
		return nil, mc, 0, fmt.Errorf("CHAP_C: %w", err)
	}
	r, err := chapResponse(alg, id, l.cfg.CHAPSecret, challenge)
	if err != nil {
		return nil, mc, 0, err
	}
	kvs := []pdu.KV{{Key: "CHAP_N", Value: l.cfg.CHAPUser}, {Key: "CHAP_R", Value: encodeCHAP(r)}}
	if l.cfg.mutual() {
		if mc, err = newMutualChallenge(alg, challenge); err != nil {
			return nil, mc, 0, err
		}
		kvs = append(kvs, pdu.KV{Key: "CHAP_I", Value: strconv.Itoa(int(mc.id))},
			pdu.KV{Key: "CHAP_C", Value: encodeCHAP(mc.challenge)})
	}
	return kvs, mc, alg, nil
}

func (l *loginConn) checkTarget(rk []pdu.KV, mc mutualChallenge, alg int) error {
	name, ok := lookup(rk, "CHAP_N")
	if !ok {
		return errors.New("target did not answer our CHAP challenge")
	}
	if l.cfg.MutualUser != "" && name != l.cfg.MutualUser {
		return fmt.Errorf("target authenticated as CHAP_N=%q, want %q", name, l.cfg.MutualUser)
	}
	r, _ := lookup(rk, "CHAP_R")
	return mc.verify(alg, l.cfg.MutualSecret, r)
}

// leaveStage asks with T=1 until the target agrees to leave the stage, and
// reports whether it went to the full feature phase.
func (l *loginConn) leaveStage(resp pdu.LoginResp, csg, nsg byte) (bool, error) {
	for round := 0; !resp.Transit; round++ {
		if round == maxLoginRounds {
			return false, fmt.Errorf("login to %s: target did not leave stage %d after %d requests", l.addr, csg, round)
		}
		var err error
		if resp, _, err = l.exchange(csg, nsg, true, nil); err != nil {
			return false, err
		}
	}
	if resp.NSG != nsg && resp.NSG != pdu.StageFullFeature {
		return false, fmt.Errorf("login to %s: target moved to stage %d, we asked for %d", l.addr, resp.NSG, nsg)
	}
	return resp.NSG == pdu.StageFullFeature, nil
}

// operational negotiates the operational keys and enters the full feature
// phase, answering any key the target offers on its own.
func (l *loginConn) operational(first []pdu.KV) error {
	neg := newNegotiator(l.cfg)
	kvs := append(first, neg.offer(l.cfg)...)
	for round := 0; ; round++ {
		if round == maxLoginRounds {
			return fmt.Errorf("login to %s: operational negotiation did not finish in %d rounds", l.addr, round)
		}
		resp, rk, err := l.exchange(pdu.StageOperational, pdu.StageFullFeature, true, kvs)
		if err != nil {
			return err
		}
		if kvs, err = neg.receive(rk); err != nil {
			return fmt.Errorf("login to %s: %w", l.addr, err)
		}
		if resp.Transit {
			if resp.NSG != pdu.StageFullFeature {
				return fmt.Errorf("login to %s: target moved to stage %d instead of full feature", l.addr, resp.NSG)
			}
			break
		}
	}
	if err := neg.apply(&l.params); err != nil {
		return fmt.Errorf("login to %s: %w", l.addr, err)
	}
	l.params.MaxRecvDataSegmentLength = l.cfg.MaxRecvDataSegmentLength
	if v, ok := lookup(l.params.Sent, "MaxRecvDataSegmentLength"); ok {
		if n, err := parseNum(v); err == nil && n > 0 && n < 1<<24 {
			l.params.MaxRecvDataSegmentLength = uint32(n) // an ExtraKeys override is what the target obeys
		}
	}
	return nil
}

// exchange sends kvs in one or more Login Requests (C bit when they exceed
// a PDU) and collects the full response text, asking for continuations.
func (l *loginConn) exchange(csg, nsg byte, transit bool, kvs []pdu.KV) (pdu.LoginResp, []pdu.KV, error) {
	var data []byte
	for _, kv := range kvs {
		data = pdu.AppendText(data, kv.Key, kv.Value)
	}
	l.params.Sent = append(l.params.Sent, kvs...)
	for len(data) > loginMaxData {
		if err := l.send(csg, nsg, false, true, data[:loginMaxData]); err != nil {
			return pdu.LoginResp{}, nil, err
		}
		data = data[loginMaxData:]
		if _, _, err := l.recv(csg); err != nil {
			return pdu.LoginResp{}, nil, err
		}
	}
	if err := l.send(csg, nsg, transit, false, data); err != nil {
		return pdu.LoginResp{}, nil, err
	}
	var text []byte
	for {
		resp, seg, err := l.recv(csg)
		if err != nil {
			return resp, nil, err
		}
		text = append(text, seg...)
		if !resp.Continue {
			rk, err := pdu.ParseText(text)
			if err != nil {
				return resp, nil, fmt.Errorf("login to %s: %w", l.addr, err)
			}
			l.params.Received = append(l.params.Received, rk...)
			l.noteDeclarations(rk)
			return resp, rk, nil
		}
		// The target has more to say: an empty request fetches it.
		if err := l.send(csg, nsg, transit, false, nil); err != nil {
			return resp, nil, err
		}
	}
}

func (l *loginConn) noteDeclarations(rk []pdu.KV) {
	for _, kv := range rk {
		if targetDeclarations[kv.Key] {
			_ = setParam(&l.params, kv.Key, kv.Value)
		}
	}
}

func (l *loginConn) send(csg, nsg byte, transit, cont bool, data []byte) error {
	req := pdu.LoginReq{
		Transit: transit, Continue: cont, CSG: csg, DataLen: len(data),
		ISID: l.cfg.ISID, TSIH: l.tsih, CmdSN: l.cmdSN, ExpStatSN: l.expStatSN,
	}
	if transit {
		req.NSG = nsg // reserved unless T is set
	}
	var h pdu.Header
	req.Marshal(&h)
	var tr [8]byte
	bufs := net.Buffers{h[:], data, pdu.Trailer(&tr, data, false)}
	if _, err := bufs.WriteTo(l.conn); err != nil {
		return fmt.Errorf("login to %s: sending Login Request: %w", l.addr, err)
	}
	return nil
}

// recv reads one Login Response and turns a failure status into a
// *LoginError.
func (l *loginConn) recv(csg byte) (pdu.LoginResp, []byte, error) {
	var h pdu.Header
	var resp pdu.LoginResp
	if _, err := pdu.ReadHeader(l.br, &h, l.ahs[:], false); err != nil {
		return resp, nil, fmt.Errorf("login to %s: reading Login Response: %w", l.addr, eofMeaning(err))
	}
	if op := h.Opcode(); op != pdu.OpLoginResp {
		return resp, nil, fmt.Errorf("login to %s: %w", l.addr, protocolErr("got %v during login", op))
	}
	resp.Unmarshal(&h)
	if resp.DataLen > loginMaxData {
		return resp, nil, fmt.Errorf("login to %s: %w", l.addr, protocolErr("%d-byte Login Response; the limit during login is %d", resp.DataLen, loginMaxData))
	}
	data := make([]byte, resp.DataLen)
	if err := pdu.ReadData(l.br, data, false); err != nil {
		return resp, nil, fmt.Errorf("login to %s: reading Login Response data: %w", l.addr, err)
	}
	if resp.StatusClass != pdu.LoginSuccess {
		return resp, nil, l.loginError(&resp, data)
	}
	if resp.VersionActive != 0 {
		return resp, nil, fmt.Errorf("login to %s: %w", l.addr, protocolErr("target chose iSCSI version %d; we only speak 0", resp.VersionActive))
	}
	if resp.CSG != csg {
		return resp, nil, fmt.Errorf("login to %s: %w", l.addr, protocolErr("Login Response for stage %d, we are in stage %d", resp.CSG, csg))
	}
	l.tsih = resp.TSIH
	l.expStatSN = resp.StatSN + 1
	l.expCmdSN, l.maxCmdSN = resp.ExpCmdSN, resp.MaxCmdSN
	return resp, data, nil
}

func (l *loginConn) loginError(resp *pdu.LoginResp, data []byte) error {
	e := &LoginError{Addr: l.addr, Class: resp.StatusClass, Detail: resp.StatusDetail}
	if kvs, err := pdu.ParseText(data); err == nil {
		if a, ok := lookup(kvs, "TargetAddress"); ok {
			e.TargetAddress = portalAddr(a)
		}
	}
	return e
}

func lookup(kvs []pdu.KV, key string) (string, bool) {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return "", false
}

// portalAddr turns a TargetAddress value "host[:port][,tag]" into a dial
// address.
func portalAddr(v string) string {
	if i := strings.LastIndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	return withPort(v)
}

// withPort adds the well-known iSCSI port when addr has none.
func withPort(addr string) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	return net.JoinHostPort(strings.Trim(addr, "[]"), "3260")
}
