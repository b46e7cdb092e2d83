package iscsi

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/pdu"
	"github.com/hatarget/hatarget/target/scsi"
)

// Login bounds: RFC 7143 fixes MaxRecvDataSegmentLength at 8192 during
// login; we take a little more from lenient initiators in one PDU, and
// Options.MaxTextBytes caps the text accumulated over continuation PDUs so
// a peer cannot make us buffer without limit before authenticating.
const (
	// reinstateWait bounds how long a reinstating login waits for the old
	// session's running commands (their backend I/O) to finish.
	reinstateWait   = 10 * time.Second
	maxLoginSegment = 64 * 1024
	maxNameLen      = 223 // RFC 7143 4.2.7.1
)

// loginError is a login failure with the status to report.
type loginError struct {
	class, detail byte
	msg           string
}

func (e *loginError) Error() string {
	return fmt.Sprintf("login status 0x%02x%02x: %s", e.class, e.detail, e.msg)
}

func initiatorError(detail byte, format string, args ...any) *loginError {
	return &loginError{pdu.LoginInitiatorErr, detail, fmt.Sprintf(format, args...)}
}

// loginState is the progress of one connection's login.
type loginState struct {
	c     *conn
	first pdu.LoginReq
	req   pdu.LoginReq
	text  []byte

	// stage is the stage the target agreed to be in: the initiator's CSG
	// must match it, or a peer could claim to be past the security stage
	// without ever having left it.
	stage byte

	initiator  string
	discovery  bool
	targetName string
	target     *Target

	authRequired bool
	authDone     bool
	authMethod   string
	chap         *chapExchange
	users        []CHAPUser
	mutual       *CHAPUser

	neg           *negotiator
	declaredLimit bool // our MaxRecvDataSegmentLength was sent
	cmdSN         uint32
}

// login runs the login phase on c until the full feature phase or failure.
func (c *conn) login() error {
	ls := &loginState{c: c}
	var h pdu.Header
	for n := 0; ; n++ {
		if _, err := pdu.ReadHeader(c.br, &h, c.ahsBuf[:], false); err != nil {
			return fmt.Errorf("reading login PDU: %w", err)
		}
		if h.Opcode() != pdu.OpLoginReq {
			return fmt.Errorf("%s during login", h.Opcode())
		}
		ls.req.Unmarshal(&h)
		if n == 0 {
			ls.first = ls.req
			c.statSN = ls.req.ExpStatSN
		}
		done, err := ls.step(&h, n == 0)
		if err != nil {
			var le *loginError
			if errors.As(err, &le) {
				ls.fail(le)
			}
			return err
		}
		if done {
			return nil
		}
	}
}

// step handles one Login Request; done reports the move to full feature phase.
func (ls *loginState) step(h *pdu.Header, first bool) (bool, error) {
	r := &ls.req
	if err := ls.checkHeader(first); err != nil {
		return false, err
	}
	if limit := ls.c.srv.opts.MaxTextBytes; r.DataLen > maxLoginSegment || len(ls.text)+r.DataLen > limit {
		return false, initiatorError(pdu.LoginDetailInitiatorError, "login text longer than %d bytes", limit)
	}
	seg := make([]byte, r.DataLen)
	if err := pdu.ReadData(ls.c.br, seg, false); err != nil {
		return false, err
	}
	ls.text = append(ls.text, seg...)
	if r.Continue {
		if r.Transit {
			return false, initiatorError(pdu.LoginDetailInitiatorError, "login PDU with both C and T bits")
		}
		return false, ls.respond(nil, false, r.CSG, 0) // ask for the rest of the text
	}
	kvs, err := pdu.ParseText(ls.text)
	ls.text = ls.text[:0]
	if err != nil {
		return false, initiatorError(pdu.LoginDetailInitiatorError, "%v", err)
	}
	answer, err := ls.processKeys(kvs)
	if err != nil {
		return false, err
	}
	transit, nsg, err := ls.transition()
	if err != nil {
		return false, err
	}
	if transit && nsg == pdu.StageFullFeature {
		return true, ls.enterFullFeature(answer)
	}
	if transit {
		ls.stage = nsg
	}
	return false, ls.respond(answer, transit, r.CSG, nsg)
}

// checkHeader validates the fields that must not change during a login.
func (ls *loginState) checkHeader(first bool) error {
	r, f := &ls.req, &ls.first
	if first {
		if r.VersionMin > 0 {
			return initiatorError(pdu.LoginDetailUnsupportedVer, "iSCSI version %d-%d not supported", r.VersionMin, r.VersionMax)
		}
		ls.cmdSN = r.CmdSN
		ls.stage = r.CSG
	} else if r.ISID != f.ISID || r.TSIH != f.TSIH || r.CID != f.CID || r.ITT != f.ITT {
		return initiatorError(pdu.LoginDetailInitiatorError, "ISID, TSIH, CID or ITT changed during login")
	}
	switch {
	case r.CSG == 2 || r.CSG == pdu.StageFullFeature:
		return initiatorError(pdu.LoginDetailInitiatorError, "invalid current stage %d", r.CSG)
	case r.CSG != ls.stage:
		return initiatorError(pdu.LoginDetailInitiatorError, "current stage %d, but the target is in stage %d", r.CSG, ls.stage)
	case r.Transit && (r.NSG == 2 || r.NSG <= r.CSG):
		return initiatorError(pdu.LoginDetailInitiatorError, "invalid next stage %d from stage %d", r.NSG, r.CSG)
	}
	return nil
}

// processKeys answers every key of one login request. The identity keys go
// first whatever their order, because the target they name decides how the
// operational keys of the same PDU are negotiated. The first request is
// the first complete text, which continuation may spread over several
// PDUs: it decides admission, without which nothing else may be answered.
func (ls *loginState) processKeys(kvs []pdu.KV) ([]pdu.KV, error) {
	first := !ls.admitted()
	if err := noRepeatedKey(kvs); err != nil {
		return nil, initiatorError(pdu.LoginDetailInitiatorError, "%v", err)
	}
	for _, kv := range kvs {
		if err := ls.identityKey(kv, first); err != nil {
			return nil, err
		}
	}
	var answer []pdu.KV
	if first {
		if err := ls.admit(); err != nil {
			return nil, err
		}
		if ls.req.CSG == pdu.StageOperational && ls.authRequired {
			return nil, &loginError{pdu.LoginInitiatorErr, pdu.LoginDetailAuthFailed, "authentication required but security stage skipped"}
		}
		answer = ls.firstDeclarations(answer)
	}
	for _, kv := range kvs {
		out, err := ls.key(kv)
		if err != nil {
			return nil, err
		}
		answer = append(answer, out...)
	}
	if ls.authMethod == "CHAP" {
		more, err := ls.chapStep(kvs)
		if err != nil {
			return nil, err
		}
		answer = append(answer, more...)
	}
	if ls.req.CSG == pdu.StageOperational {
		answer = ls.declareLimits(answer)
	}
	return answer, nil
}

// identityKey records InitiatorName, SessionType and TargetName; other keys
// are left for key(). admit decides on the first request's identity, so
// none of it may change afterwards: a login admitted to an open target
// must not turn into a discovery session that requires CHAP.
func (ls *loginState) identityKey(kv pdu.KV, first bool) error {
	switch kv.Key {
	case "InitiatorName":
		if kv.Value == "" || len(kv.Value) > maxNameLen {
			return initiatorError(pdu.LoginDetailInitiatorError, "invalid InitiatorName")
		}
		if ls.initiator != "" && ls.initiator != kv.Value {
			return initiatorError(pdu.LoginDetailInitiatorError, "InitiatorName changed during login")
		}
		ls.initiator = kv.Value
	case "SessionType":
		var discovery bool
		switch kv.Value {
		case "Discovery":
			discovery = true
		case "Normal":
		default:
			return initiatorError(pdu.LoginDetailInitiatorError, "invalid SessionType %q", kv.Value)
		}
		if !first && discovery != ls.discovery {
			return initiatorError(pdu.LoginDetailInitiatorError, "SessionType changed during login")
		}
		ls.discovery = discovery
	case "TargetName":
		if ls.targetName != "" && ls.targetName != kv.Value {
			return initiatorError(pdu.LoginDetailInitiatorError, "TargetName changed during login")
		}
		ls.targetName = kv.Value
	}
	return nil
}

// key answers one non-identity key; CHAP keys are handled together in
// chapStep.
func (ls *loginState) key(kv pdu.KV) ([]pdu.KV, error) {
	switch kv.Key {
	case "InitiatorName", "SessionType", "TargetName", "InitiatorAlias":
	case "AuthMethod":
		return []pdu.KV{{Key: "AuthMethod", Value: ls.chooseAuth(kv.Value)}}, nil
	case "CHAP_A", "CHAP_N", "CHAP_R", "CHAP_I", "CHAP_C":
		if ls.authMethod != "CHAP" {
			return nil, &loginError{pdu.LoginInitiatorErr, pdu.LoginDetailAuthFailed, kv.Key + " without AuthMethod=CHAP"}
		}
	default:
		v, err := ls.neg.answer(kv.Key, kv.Value)
		if err != nil {
			return nil, initiatorError(pdu.LoginDetailInitiatorError, "%v", err)
		}
		if v != "" {
			return []pdu.KV{{Key: kv.Key, Value: v}}, nil
		}
	}
	return nil, nil
}

// admitted reports whether admit has accepted the login.
func (ls *loginState) admitted() bool { return ls.neg != nil }

// admit decides, after the first request, whether this initiator may log in to
// the requested target, and what authentication it needs.
func (ls *loginState) admit() error {
	if ls.initiator == "" {
		return initiatorError(pdu.LoginDetailMissingParam, "InitiatorName missing")
	}
	ts := ls.c.srv.targets.Load()
	if ls.discovery {
		ls.users = ts.discoveryUsers
		ls.authRequired = len(ls.users) > 0
		ls.neg = newNegotiator(DefaultLimits(), true)
		return nil
	}
	if ls.targetName == "" {
		return initiatorError(pdu.LoginDetailMissingParam, "TargetName missing")
	}
	t := ts.lookup(ls.targetName)
	if t == nil {
		return initiatorError(pdu.LoginDetailNotFound, "target %q not found", ls.targetName)
	}
	if !t.allows(ls.initiator) {
		return initiatorError(pdu.LoginDetailForbidden, "initiator %q not allowed by the ACL of %s", ls.initiator, t.Name)
	}
	ls.target = t
	ls.users = t.IncomingUsers
	ls.mutual = t.OutgoingUser
	ls.authRequired = len(ls.users) > 0
	ls.neg = newNegotiator(t.Limits, false)
	return nil
}

func (ls *loginState) chooseAuth(offer string) string {
	var offersNone, offersCHAP bool
	for _, m := range strings.Split(offer, ",") {
		switch strings.TrimSpace(m) {
		case "None":
			offersNone = true
		case "CHAP":
			offersCHAP = true
		}
	}
	switch {
	case !ls.authRequired && offersNone:
		ls.authMethod = "None"
	case ls.authRequired && offersCHAP:
		ls.authMethod = "CHAP"
	default:
		ls.authMethod = ""
		return "Reject"
	}
	return ls.authMethod
}

// chapStep runs the CHAP exchange: CHAP_A from the initiator gets our
// challenge; CHAP_N/CHAP_R gets verified (and, for mutual CHAP, answered).
func (ls *loginState) chapStep(kvs []pdu.KV) ([]pdu.KV, error) {
	get := func(k string) (string, bool) {
		for _, kv := range kvs {
			if kv.Key == k {
				return kv.Value, true
			}
		}
		return "", false
	}
	authFail := func(msg string) error {
		return &loginError{pdu.LoginInitiatorErr, pdu.LoginDetailAuthFailed, msg}
	}
	if a, ok := get("CHAP_A"); ok {
		if ls.chap != nil {
			return nil, authFail("CHAP_A repeated")
		}
		algo, ok := chooseCHAPAlgorithm(a)
		if !ok {
			return nil, authFail("no supported CHAP algorithm in " + a)
		}
		id, challenge, err := newChallenge(algo)
		if err != nil {
			return nil, &loginError{pdu.LoginTargetErr, pdu.LoginDetailOutOfResources, err.Error()}
		}
		ls.chap = &chapExchange{algo: algo, id: id, challenge: challenge}
		return []pdu.KV{
			{Key: "CHAP_A", Value: strconv.Itoa(algo.id)},
			{Key: "CHAP_I", Value: strconv.Itoa(int(id))},
			{Key: "CHAP_C", Value: encodeCHAPBinary(challenge)},
		}, nil
	}
	name, hasN := get("CHAP_N")
	resp, hasR := get("CHAP_R")
	if !hasN && !hasR {
		return nil, nil
	}
	if ls.chap == nil || !hasN || !hasR || ls.authDone {
		return nil, authFail("CHAP_N/CHAP_R out of sequence")
	}
	if _, err := ls.chap.verify(ls.users, name, resp); err != nil {
		return nil, authFail(err.Error())
	}
	ls.authDone = true
	mi, hasI := get("CHAP_I")
	mc, hasC := get("CHAP_C")
	if !hasI && !hasC {
		return nil, nil
	}
	if !hasI || !hasC || ls.mutual == nil {
		return nil, authFail("mutual CHAP requested but not configured")
	}
	r, err := ls.chap.mutualResponse(*ls.mutual, mi, mc)
	if err != nil {
		return nil, authFail(err.Error())
	}
	return []pdu.KV{{Key: "CHAP_N", Value: ls.mutual.User}, {Key: "CHAP_R", Value: r}}, nil
}

// firstDeclarations adds what the target declares in its first response.
func (ls *loginState) firstDeclarations(answer []pdu.KV) []pdu.KV {
	if ls.discovery || ls.target == nil {
		return answer
	}
	answer = append(answer, pdu.KV{Key: "TargetPortalGroupTag", Value: strconv.Itoa(int(ls.target.tag(ls.c.srv.opts.PortalGroupTag)))})
	if ls.target.Alias != "" {
		answer = append(answer, pdu.KV{Key: "TargetAlias", Value: ls.target.Alias})
	}
	return answer
}

// declareLimits sends our MaxRecvDataSegmentLength once, in the
// operational stage.
func (ls *loginState) declareLimits(answer []pdu.KV) []pdu.KV {
	if ls.declaredLimit || ls.neg == nil {
		return answer
	}
	ls.declaredLimit = true
	return append(answer, pdu.KV{Key: "MaxRecvDataSegmentLength", Value: strconv.Itoa(int(ls.neg.params.MaxRecvDataSegmentLength))})
}

// transition decides whether we follow the initiator's request to move on.
func (ls *loginState) transition() (bool, byte, error) {
	r := &ls.req
	if !r.Transit {
		return false, r.CSG, nil
	}
	if r.CSG == pdu.StageSecurity {
		switch {
		case ls.authMethod == "":
			return false, 0, &loginError{pdu.LoginInitiatorErr, pdu.LoginDetailAuthFailed, "no acceptable AuthMethod"}
		case ls.authMethod == "CHAP" && !ls.authDone:
			// The initiator may ask to leave the security stage in its
			// first request (libiscsi and QEMU do, offering CHAP,None);
			// the target keeps it there with T=0 until CHAP is done
			// (RFC 7143 section 6.2). The login timeout bounds a peer
			// that never completes it.
			return false, r.CSG, nil
		}
	}
	return true, r.NSG, nil
}

// respond sends a Login Response that keeps the login going.
func (ls *loginState) respond(answer []pdu.KV, transit bool, csg, nsg byte) error {
	c := ls.c
	var data []byte
	for _, kv := range answer {
		data = pdu.AppendText(data, kv.Key, kv.Value)
	}
	o := &outPDU{data: data}
	resp := pdu.LoginResp{
		Transit: transit, CSG: csg, NSG: nsg, DataLen: len(data),
		ISID: ls.first.ISID, TSIH: ls.req.TSIH, ITT: ls.first.ITT,
	}
	if transit && nsg == pdu.StageFullFeature {
		resp.TSIH = c.sess.tsih
	}
	ls.fillSNs(&resp)
	resp.Marshal(&o.hdr)
	return c.writeDirect(o)
}

func (ls *loginState) fillSNs(resp *pdu.LoginResp) {
	c := ls.c
	resp.StatSN = c.statSN
	c.statSN++
	qd := uint32(1)
	if ls.neg != nil {
		qd = ls.neg.params.QueueDepth
	}
	resp.ExpCmdSN = ls.cmdSN
	resp.MaxCmdSN = ls.cmdSN + qd - 1
}

// fail sends a login failure; the connection closes after it.
func (ls *loginState) fail(le *loginError) {
	c := ls.c
	o := &outPDU{}
	resp := pdu.LoginResp{
		CSG: ls.req.CSG, ISID: ls.first.ISID, TSIH: ls.req.TSIH, ITT: ls.first.ITT,
		StatusClass: le.class, StatusDetail: le.detail,
	}
	ls.fillSNs(&resp)
	resp.Marshal(&o.hdr)
	c.writeDirect(o)
}

// enterFullFeature creates (or reinstates) the session and answers the
// final login request.
func (ls *loginState) enterFullFeature(answer []pdu.KV) error {
	c := ls.c
	ls.neg.finish()
	sess, err := c.srv.attachSession(ls)
	if err != nil {
		return err
	}
	c.sess = sess
	c.cid = ls.first.CID
	if err := ls.respond(answer, true, ls.req.CSG, pdu.StageFullFeature); err != nil {
		sess.connectionLost(c, err)
		return err
	}
	c.params = ls.neg.params // digests start after the final Login Response
	c.log = c.log.With("initiator", ls.initiator, "target", ls.targetName, "tsih", sess.tsih)
	c.log.Info("login complete", "discovery", ls.discovery,
		"header_digest", c.params.HeaderDigest, "data_digest", c.params.DataDigest,
		"max_xmit", c.params.MaxXmitDataSegmentLength, "immediate_data", c.params.ImmediateData,
		"initial_r2t", c.params.InitialR2T)
	return nil
}

// attachSession registers the session of a completed login, reinstating
// (closing) an older session of the same initiator port.
func (s *Server) attachSession(ls *loginState) (*session, error) {
	key := sessionKey{initiator: ls.initiator, isid: ls.first.ISID, target: ls.targetName}
	if ls.discovery {
		key.target = ""
	}
	s.mu.Lock()
	old := s.sessions[key]
	if ls.first.TSIH != 0 && (old == nil || old.tsih != ls.first.TSIH) {
		s.mu.Unlock()
		return nil, initiatorError(pdu.LoginDetailNoSession, "session with TSIH %d does not exist", ls.first.TSIH)
	}
	if s.closing {
		s.mu.Unlock()
		return nil, &loginError{pdu.LoginTargetErr, 0x01, "target shutting down"} // service unavailable
	}
	if reason := s.sessionLimit(ls, old); reason != "" {
		s.mu.Unlock()
		return nil, &loginError{pdu.LoginTargetErr, pdu.LoginDetailOutOfResources, reason}
	}
	tsih := ls.first.TSIH
	if tsih == 0 {
		tsih = s.allocTSIH()
	}
	var nexus *scsi.Nexus
	if ls.target != nil {
		nexus = scsi.NewNexus(ls.initiator, ls.first.ISID, ls.targetName, ls.target.tag(s.opts.PortalGroupTag), ls.target.RelativePort, ls.target.PortGroup)
		nexus.Established = time.Now()
	}
	sess := newSession(s, key, ls.initiator, ls.discovery, ls.target, nexus, ls.neg.params.QueueDepth, ls.cmdSN)
	sess.tsih = tsih
	sess.conn = ls.c
	var peers []*session // the initiator's other sessions
	if !ls.discovery {
		for _, p := range s.sessions {
			if p != old && !p.discovery && p.initiator == ls.initiator {
				peers = append(peers, p)
			}
		}
	}
	s.sessions[key] = sess
	s.mu.Unlock()
	s.awaitFailed(peers)
	if old != nil {
		s.log.Info("session reinstatement", "initiator", ls.initiator, "target", ls.targetName, "old_tsih", old.tsih)
		old.close(errors.New("session reinstated"))
		// RFC 7143 6.3.5: the old session's tasks end before the new one
		// starts, so none of its writes can land after the new session's.
		select {
		case <-old.done:
		case <-time.After(reinstateWait):
			s.log.Warn("old session still ending after reinstatement", "initiator", ls.initiator, "old_tsih", old.tsih)
		}
	}
	return sess, nil
}

// awaitFailed waits, within reinstateWait, for the end of those of peers
// whose connection has failed, before a new session of their initiator
// starts. An initiator that drops its connection and logs in again with
// another ISID (libiscsi does) has lost the old I_T nexus, and SAM-5 says
// the loss releases the nexus's PREVENT MEDIUM REMOVAL and SPC-2
// reservation: the new session must find them released, though our reader
// of the old connection may not have seen the close yet, or may still be
// aborting its tasks. Healthy sessions of the same initiator (multipath)
// are not waited for.
func (s *Server) awaitFailed(peers []*session) {
	var timeout <-chan time.Time
	for _, p := range peers {
		failed, peerClosed := p.failed()
		if !failed {
			continue
		}
		if peerClosed {
			// Nothing still unread on it can be answered any more.
			p.close(errPeerClosed)
		}
		if timeout == nil {
			t := time.NewTimer(reinstateWait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-p.done:
		case <-timeout:
			s.log.Warn("failed session of the initiator still ending at login", "initiator", p.initiator, "target", p.targetName, "tsih", p.tsih)
			return
		}
	}
}

var errPeerClosed = errors.New("connection closed by the initiator")

// sessionLimit says why the session ls is about to create would exceed
// Options.MaxSessionsPerInitiator or MaxSessionsPerTarget, or "" (called
// with s.mu held). The session it reinstates, replaced, does not count: it
// is going.
func (s *Server) sessionLimit(ls *loginState, replaced *session) string {
	perInitiator, perTarget := 0, 0
	for _, sess := range s.sessions {
		if sess == replaced {
			continue
		}
		if sess.initiator == ls.initiator {
			perInitiator++
		}
		if !ls.discovery && !sess.discovery && sess.targetName == ls.targetName {
			perTarget++
		}
	}
	switch {
	case perInitiator >= s.opts.MaxSessionsPerInitiator:
		return fmt.Sprintf("initiator has %d sessions, the limit", perInitiator)
	case perTarget >= s.opts.MaxSessionsPerTarget:
		return fmt.Sprintf("target has %d sessions, the limit", perTarget)
	}
	return ""
}

// allocTSIH picks an unused, nonzero TSIH (called with s.mu held).
func (s *Server) allocTSIH() uint16 {
	used := make(map[uint16]bool, len(s.sessions))
	for _, sess := range s.sessions {
		used[sess.tsih] = true
	}
	for {
		s.nextTSIH++
		if s.nextTSIH != 0 && !used[s.nextTSIH] {
			return s.nextTSIH
		}
	}
}
