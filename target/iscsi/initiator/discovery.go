package initiator

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/pdu"
)

// Target is one entry of a SendTargets answer.
type Target struct {
	Name    string
	Portals []Portal
}

// Portal is a network portal of a target and its portal group tag.
type Portal struct {
	Addr string // host:port, ready for Config.Addr
	Tag  uint16
}

// Option adjusts the Config of a discovery session.
type Option func(*Config)

// WithCHAP authenticates the discovery session with one-way CHAP.
func WithCHAP(user, secret string) Option {
	return func(c *Config) { c.CHAPUser, c.CHAPSecret = user, secret }
}

// WithMutualCHAP also makes the target authenticate itself.
func WithMutualCHAP(user, secret string) Option {
	return func(c *Config) { c.MutualUser, c.MutualSecret = user, secret }
}

// WithDigests offers CRC32C header and/or data digests.
func WithDigests(header, data bool) Option {
	return func(c *Config) { c.HeaderDigest, c.DataDigest = header, data }
}

// WithTimeout bounds the login.
func WithTimeout(d time.Duration) Option {
	return func(c *Config) { c.Timeout = d }
}

// Discover opens a discovery session to addr, asks SendTargets=All and
// logs out.
func Discover(ctx context.Context, addr, initiatorName string, opts ...Option) ([]Target, error) {
	return discover(ctx, addr, initiatorName, "All", opts)
}

// DiscoverTarget asks for one target's portals only (SendTargets=<name>).
func DiscoverTarget(ctx context.Context, addr, initiatorName, targetName string, opts ...Option) ([]Target, error) {
	return discover(ctx, addr, initiatorName, targetName, opts)
}

func discover(ctx context.Context, addr, initiatorName, which string, opts []Option) ([]Target, error) {
	cfg := Config{Addr: addr, InitiatorName: initiatorName, Discovery: true}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := Dial(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	targets, err := s.SendTargets(ctx, which)
	if lerr := s.Logout(ctx); err == nil && lerr != nil {
		return targets, fmt.Errorf("discovery: %w", lerr)
	}
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	return targets, nil
}

// maxTextRounds bounds a continued Text Response.
const maxTextRounds = 1024

// SendTargets sends a SendTargets text request ("All", a target name, or
// "" for the session's own target) and collects the answer, following
// continuations (C bit) across Text Responses.
func (s *Session) SendTargets(ctx context.Context, which string) ([]Target, error) {
	text, err := s.textRequest(ctx, pdu.AppendText(nil, "SendTargets", which))
	if err != nil {
		return nil, fmt.Errorf("SendTargets=%s to %s: %w", which, s.addr, err)
	}
	kvs, err := pdu.ParseText(text)
	if err != nil {
		return nil, fmt.Errorf("SendTargets=%s to %s: %w", which, s.addr, err)
	}
	return parseSendTargets(kvs)
}

// textRequest runs one text exchange: the request, then empty requests
// echoing the target's TTT until a response has the F bit.
func (s *Session) textRequest(ctx context.Context, data []byte) ([]byte, error) {
	t, err := s.acquire(ctx, kindText, [8]byte{}, nil, false)
	if err != nil {
		return nil, err
	}
	ttt := uint32(pdu.ReservedTag)
	var text []byte
	for round := 0; round < maxTextRounds; round++ {
		err := s.send(ctx, false, func(h *pdu.Header, sn, exp uint32) {
			(&pdu.TextReq{Final: true, ITT: t.itt, TTT: ttt, CmdSN: sn, ExpStatSN: exp}).Marshal(h)
			s.stamp(t, sn)
		}, nil, data)
		if err != nil {
			s.release(t)
			return nil, err
		}
		h, seg, owned, err := s.await(ctx, t)
		if !owned {
			return nil, err
		}
		if err == nil && h.Opcode() != pdu.OpTextResp {
			err = protocolErr("Text Request answered with %v", h.Opcode())
		}
		if err != nil {
			s.release(t)
			return nil, err
		}
		var r pdu.TextResp
		r.Unmarshal(&h)
		text = append(text, seg...)
		if r.Final {
			s.release(t)
			return text, nil
		}
		ttt, data = r.TTT, nil
		s.rearm(t)
	}
	s.release(t)
	return nil, protocolErr("text response still continued after %d PDUs", maxTextRounds)
}

// rearm readies a finished task for another response under the same ITT.
func (s *Session) rearm(t *task) {
	t.mu.Lock()
	t.finished, t.resp, t.respData, t.respErr = false, pdu.Header{}, nil, nil
	t.mu.Unlock()
}

func parseSendTargets(kvs []pdu.KV) ([]Target, error) {
	var out []Target
	for _, kv := range kvs {
		switch kv.Key {
		case "TargetName":
			out = append(out, Target{Name: kv.Value})
		case "TargetAddress":
			if len(out) == 0 {
				return nil, protocolErr("TargetAddress=%s before any TargetName", kv.Value)
			}
			p, err := parsePortal(kv.Value)
			if err != nil {
				return nil, err
			}
			out[len(out)-1].Portals = append(out[len(out)-1].Portals, p)
		}
	}
	return out, nil
}

// parsePortal reads "host:port,tag" (IPv6 hosts in brackets).
func parsePortal(v string) (Portal, error) {
	p := Portal{Addr: portalAddr(v)}
	if i := strings.LastIndexByte(v, ','); i >= 0 {
		tag, err := parseNum(v[i+1:])
		if err != nil || tag > 65535 {
			return p, protocolErr("TargetAddress=%s has a bad portal group tag", v)
		}
		p.Tag = uint16(tag)
	}
	return p, nil
}
