package iscsi

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/iscsi/pdu"
)

// textState carries a text exchange across PDUs: the initiator's continued
// request, or the rest of a response too long for one PDU.
type textState struct {
	itt     uint32
	request []byte
	pending []byte // response bytes not yet sent
	ttt     uint32
}

// handleText answers Text Requests: SendTargets, in discovery sessions and
// (for the session's own target) in normal ones.
func (c *conn) handleText(h *pdu.Header) error {
	var req pdu.TextReq
	req.Unmarshal(h)
	buf, data, err := c.readSegment(h)
	if err != nil {
		return err
	}
	defer backend.PutBuffer(buf)
	s := c.sess
	if !s.consumeCmdSN(req.Immediate, req.CmdSN) {
		return nil
	}
	ts := &c.text
	if req.TTT != pdu.ReservedTag {
		if req.TTT != ts.ttt || req.ITT != ts.itt || ts.pending == nil {
			c.reject(h, pdu.RejectInvalidPDUField)
			return nil
		}
		c.sendTextChunk(&req)
		return nil
	}
	if ts.itt != req.ITT {
		*ts = textState{itt: req.ITT}
	}
	if limit := c.srv.opts.MaxTextBytes; len(ts.request)+len(data) > limit {
		*ts = textState{}
		c.log.Debug("text request too long", "limit", limit)
		c.reject(h, pdu.RejectOutOfResources)
		return nil
	}
	ts.request = append(ts.request, data...)
	if req.Continue {
		c.sendTextResponse(&req, nil, false, false) // ask for the rest
		return nil
	}
	kvs, err := pdu.ParseText(ts.request)
	if err == nil {
		err = noRepeatedKey(kvs)
	}
	if err != nil {
		*ts = textState{}
		c.log.Debug("bad text request", "err", err)
		c.reject(h, pdu.RejectProtocolError)
		return nil
	}
	ts.request = nil
	ts.pending = c.textAnswer(kvs)
	c.sendTextChunk(&req)
	return nil
}

// noRepeatedKey refuses a request naming a key twice (RFC 7143 6.1). Each
// SendTargets=All is answered with the whole target list, so without it 64
// KiB of repeated keys would make us build an answer thousands of times
// larger.
func noRepeatedKey(kvs []pdu.KV) error {
	seen := make(map[string]bool, len(kvs))
	for _, kv := range kvs {
		if seen[kv.Key] {
			return fmt.Errorf("key %s repeated", kv.Key)
		}
		seen[kv.Key] = true
	}
	return nil
}

// textAnswer computes the response text for the request's keys.
func (c *conn) textAnswer(kvs []pdu.KV) []byte {
	var out []byte
	for _, kv := range kvs {
		switch kv.Key {
		case "SendTargets":
			out = c.sendTargets(out, kv.Value)
		default:
			out = pdu.AppendText(out, kv.Key, "NotUnderstood")
		}
	}
	if out == nil {
		out = []byte{} // an empty, final answer
	}
	return out
}

// sendTargets lists targets and their portals (RFC 7143 appendix C).
func (c *conn) sendTargets(out []byte, which string) []byte {
	s := c.sess
	ts := c.srv.targets.Load()
	for _, name := range ts.names {
		t := ts.byName[name]
		switch {
		case !s.discovery && name != s.targetName:
			continue
		case s.discovery && which != "All" && which != name:
			continue
		case !t.allows(s.initiator):
			continue
		}
		out = pdu.AppendText(out, "TargetName", name)
		out = c.appendAddresses(out, t)
	}
	return out
}

// appendAddresses lists the TargetAddress keys of t: the portals configured
// for it, or else our own.
func (c *conn) appendAddresses(out []byte, t *Target) []byte {
	if len(t.Portals) > 0 {
		for _, p := range t.Portals {
			out = appendAddress(out, p.Addr, p.Tag)
		}
		return out
	}
	for _, addr := range c.portalAddresses() {
		out = appendAddress(out, addr, c.srv.opts.PortalGroupTag)
	}
	return out
}

func appendAddress(out []byte, addr string, tag uint16) []byte {
	return pdu.AppendText(out, "TargetAddress", addr+","+strconv.Itoa(int(tag)))
}

// portalAddresses lists our portals as host:port. A wildcard listener is
// reported with the address this connection reached, which is one the
// initiator can route to.
func (c *conn) portalAddresses() []string {
	local, _ := c.nc.LocalAddr().(*net.TCPAddr)
	var out []string
	seen := map[string]bool{}
	for _, a := range c.srv.Portals() {
		ta, ok := a.(*net.TCPAddr)
		if !ok {
			continue
		}
		ip := ta.IP
		if ip.IsUnspecified() && local != nil {
			ip = local.IP
		}
		addr := net.JoinHostPort(ip.String(), strconv.Itoa(ta.Port))
		if !seen[addr] {
			seen[addr] = true
			out = append(out, addr)
		}
	}
	return out
}

// sendTextChunk sends as much pending text as fits in one PDU; the rest
// waits for the initiator's next (empty) request with our TTT.
func (c *conn) sendTextChunk(req *pdu.TextReq) {
	ts := &c.text
	n := min(len(ts.pending), int(c.params.MaxXmitDataSegmentLength))
	chunk := ts.pending[:n]
	ts.pending = ts.pending[n:]
	final := len(ts.pending) == 0
	if final {
		ts.pending = nil
	}
	c.sendTextResponse(req, chunk, final, !final)
}

func (c *conn) sendTextResponse(req *pdu.TextReq, data []byte, final, more bool) {
	ts := &c.text
	ttt := uint32(pdu.ReservedTag)
	if more || !final && data == nil {
		ts.ttt = (ts.ttt + 1) & 0x7fffffff
		if ts.ttt == 0 {
			ts.ttt = 1
		}
		ttt = ts.ttt
	}
	o := &outPDU{stat: statAssign, data: data}
	(&pdu.TextResp{Final: final, Continue: more, DataLen: len(data), LUN: req.LUN, ITT: req.ITT, TTT: ttt}).Marshal(&o.hdr)
	c.send(o)
}

var errLogout = errors.New("logged out")

// handleLogout answers a Logout Request once the session's running commands
// are done, then ends the connection.
func (c *conn) handleLogout(h *pdu.Header) error {
	var req pdu.LogoutReq
	req.Unmarshal(h)
	if err := c.skipSegment(h); err != nil {
		return err
	}
	s := c.sess
	if !s.consumeCmdSN(req.Immediate, req.CmdSN) {
		return nil
	}
	resp := pdu.LogoutResp{ITT: req.ITT, Time2Wait: uint16(c.params.DefaultTime2Wait), Time2Retain: uint16(c.params.DefaultTime2Retain)}
	switch {
	case req.Reason == pdu.LogoutRecovery:
		resp.Response = pdu.LogoutRespNoRecovery
	case req.Reason == pdu.LogoutConnection && req.CID != c.cid:
		resp.Response = pdu.LogoutRespCIDNotFound
	}
	if resp.Response != pdu.LogoutRespSuccess {
		o := &outPDU{stat: statAssign}
		resp.Marshal(&o.hdr)
		c.send(o)
		return nil
	}
	s.waitIdle(c)
	c.stopping.Store(true) // before the initiator can learn of the logout
	o := &outPDU{stat: statAssign, closeAfter: true}
	resp.Marshal(&o.hdr)
	c.send(o)
	return errLogout
}
