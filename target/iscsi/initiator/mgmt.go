package initiator

import (
	"bytes"
	"context"
	"fmt"

	"github.com/hatarget/hatarget/target/iscsi/pdu"
)

// TaskMgmt sends a task management function (pdu.TMFAbortTask, ...,
// pdu.TMFLUNReset) and returns the target's response code
// (pdu.TMFRespComplete, ...). refITT names the task for ABORT TASK and is
// ignored otherwise. Commands the function ends without a response of
// their own fail with ErrTaskAborted.
func (s *Session) TaskMgmt(ctx context.Context, function byte, lun uint64, refITT uint32) (byte, error) {
	resp, err := s.taskMgmt(ctx, function, EncodeLUN(lun), refITT)
	if err != nil {
		return 0, fmt.Errorf("task management function %d: %w", function, err)
	}
	return resp, nil
}

func (s *Session) taskMgmt(ctx context.Context, fn byte, lun [8]byte, ref uint32) (byte, error) {
	refCmdSN, known := s.cmdSNOf(ref)
	t, err := s.acquire(ctx, kindTMF, lun, nil, false)
	if err != nil {
		return 0, err
	}
	t.mu.Lock()
	t.tmfFunc, t.tmfRef = fn, ref
	t.mu.Unlock()
	rtt := uint32(pdu.ReservedTag)
	if fn == pdu.TMFAbortTask || fn == pdu.TMFTaskReassign {
		rtt = ref
	}
	h, err := s.exchange(ctx, t, pdu.OpTaskMgmtResp, func(h *pdu.Header, sn, exp uint32) {
		req := pdu.TaskMgmtReq{Immediate: true, Function: fn, LUN: lun, ITT: t.itt, RTT: rtt,
			CmdSN: sn, ExpStatSN: exp, RefCmdSN: sn}
		if known {
			req.RefCmdSN = refCmdSN
		}
		req.Marshal(h)
	})
	if err != nil {
		return 0, err
	}
	var r pdu.TaskMgmtResp
	r.Unmarshal(&h)
	return r.Response, nil
}

// cmdSNOf finds the CmdSN of a task in flight, for RefCmdSN.
func (s *Session) cmdSNOf(itt uint32) (uint32, bool) {
	t := s.lookup(itt)
	if t == nil {
		return 0, false
	}
	defer t.mu.Unlock()
	return t.cmdSN, t.seq != 0
}

// pingData is echoed by the target, proving the NOP path carries data.
var pingData = []byte("hatarget-ping")

// NOP pings the target with a NOP-Out and waits for its NOP-In, which
// must echo the ping data.
func (s *Session) NOP(ctx context.Context) error {
	if err := s.nop(ctx); err != nil {
		return fmt.Errorf("NOP to %s: %w", s.addr, err)
	}
	return nil
}

func (s *Session) nop(ctx context.Context) error {
	t, err := s.acquire(ctx, kindNOP, [8]byte{}, nil, false)
	if err != nil {
		return err
	}
	data := pingData[:min(len(pingData), s.maxSeg)]
	err = s.send(ctx, true, func(h *pdu.Header, sn, exp uint32) {
		(&pdu.NOPOut{Immediate: true, DataLen: len(data), ITT: t.itt, TTT: pdu.ReservedTag,
			CmdSN: sn, ExpStatSN: exp}).Marshal(h)
		s.stamp(t, sn)
	}, nil, data)
	if err != nil {
		s.release(t)
		return err
	}
	h, echo, owned, err := s.await(ctx, t)
	if owned {
		s.release(t)
	}
	if err != nil {
		return err
	}
	if h.Opcode() != pdu.OpNOPIn {
		return protocolErr("NOP-Out answered with %v", h.Opcode())
	}
	if !bytes.Equal(echo, data) {
		return protocolErr("NOP-In echoed %q, sent %q", echo, data)
	}
	return nil
}

// Logout closes the session gracefully (reason "close the session") and
// then the connection. Commands still in flight fail with ErrClosed.
func (s *Session) Logout(ctx context.Context) error {
	resp, err := s.logout(ctx)
	_ = s.Close()
	if err != nil {
		return fmt.Errorf("logout from %s: %w", s.addr, err)
	}
	if resp != pdu.LogoutRespSuccess {
		return fmt.Errorf("logout from %s: target answered response %d", s.addr, resp)
	}
	return nil
}

func (s *Session) logout(ctx context.Context) (byte, error) {
	t, err := s.acquire(ctx, kindLogout, [8]byte{}, nil, false)
	if err != nil {
		return 0, err
	}
	h, err := s.exchange(ctx, t, pdu.OpLogoutResp, func(h *pdu.Header, sn, exp uint32) {
		(&pdu.LogoutReq{Immediate: true, Reason: pdu.LogoutSession, ITT: t.itt, CmdSN: sn, ExpStatSN: exp}).Marshal(h)
	})
	if err != nil {
		return 0, err
	}
	var r pdu.LogoutResp
	r.Unmarshal(&h)
	return r.Response, nil
}

// exchange sends the immediate request build makes for task t, waits for
// its answer and checks that it is a want PDU; t is released either way.
func (s *Session) exchange(ctx context.Context, t *task, want pdu.Opcode, build func(h *pdu.Header, sn, exp uint32)) (pdu.Header, error) {
	err := s.send(ctx, true, func(h *pdu.Header, sn, exp uint32) {
		build(h, sn, exp)
		s.stamp(t, sn)
	}, nil, nil)
	if err != nil {
		s.release(t)
		return pdu.Header{}, err
	}
	h, _, owned, err := s.await(ctx, t)
	if owned {
		s.release(t)
	}
	if err != nil {
		return pdu.Header{}, err
	}
	if h.Opcode() != want {
		return pdu.Header{}, protocolErr("%v expected, answered with %v", want, h.Opcode())
	}
	return h, nil
}
