package iscsi

import (
	"errors"

	"github.com/hatarget/hatarget/target/iscsi/pdu"
	"github.com/hatarget/hatarget/target/scsi"
)

// handleTaskMgmt performs a task management function on the reader, which
// owns the tasks still gathering data. Waiting for aborted tasks that are
// executing blocks the reader only as long as their backend I/O takes.
func (c *conn) handleTaskMgmt(h *pdu.Header) error {
	var req pdu.TaskMgmtReq
	req.Unmarshal(h)
	if err := c.skipSegment(h); err != nil {
		return err
	}
	s := c.sess
	if !s.consumeCmdSN(req.Immediate, req.CmdSN) {
		return nil
	}
	lun := scsi.DecodeLUN(req.LUN)
	var lu *scsi.LU
	if v := s.currentView(); v != nil && v.view != nil {
		lu = v.view.LU(lun)
	}
	resp := c.taskMgmt(&req, lun, lu)
	o := &outPDU{stat: statAssign}
	(&pdu.TaskMgmtResp{Response: resp, ITT: req.ITT}).Marshal(&o.hdr)
	if req.Function == pdu.TMFTargetColdReset && resp == pdu.TMFRespComplete {
		o.closeAfter = true // a cold reset also drops the connection (RFC 7143 11.5.1)
	}
	c.send(o)
	return nil
}

// taskMgmt runs one function and returns the TMF response code.
func (c *conn) taskMgmt(req *pdu.TaskMgmtReq, lun uint64, lu *scsi.LU) byte {
	s := c.sess
	needsLU := func() bool { return lu != nil }
	switch req.Function {
	case pdu.TMFAbortTask:
		return c.abortTask(req, lu)
	case pdu.TMFAbortTaskSet, pdu.TMFClearTaskSet:
		if !needsLU() {
			return pdu.TMFRespNoLUN
		}
		// With TST=000 (one task set per I_T nexus) both functions only
		// touch this session's tasks on the LU.
		match := func(t *task) bool { return t.lu == lu }
		s.abortForwarded(match)
		s.abortTasks(match, true)
		return pdu.TMFRespComplete
	case pdu.TMFLUNReset:
		if !needsLU() {
			return pdu.TMFRespNoLUN
		}
		match := func(t *task) bool { return t.lu == lu }
		s.abortForwarded(match)
		c.srv.abortEverywhere(s, match)
		// On a node that forwards the LU, the reset happens on the owner's
		// LU, where every nexus's unit attentions live.
		if err := lu.ResetLU(s.nexus); err != nil {
			return pdu.TMFRespRejected
		}
		return pdu.TMFRespComplete
	case pdu.TMFTargetWarmReset, pdu.TMFTargetColdReset:
		all := func(*task) bool { return true }
		s.abortForwarded(all)
		c.srv.abortEverywhere(s, all)
		failed := false
		if v := s.currentView(); v != nil {
			forEachLU(v, func(lu *scsi.LU) { failed = lu.ResetLU(s.nexus) != nil || failed })
		}
		if req.Function == pdu.TMFTargetColdReset {
			c.srv.closeTargetSessions(s)
		}
		if failed {
			return pdu.TMFRespRejected
		}
		return pdu.TMFRespComplete
	case pdu.TMFITNexusReset:
		all := func(*task) bool { return true }
		s.abortForwarded(all)
		s.abortTasks(all, true)
		failed := false
		if v := s.currentView(); v != nil {
			forEachLU(v, func(lu *scsi.LU) { failed = lu.NexusLoss(s.nexus) != nil || failed })
		}
		if failed {
			return pdu.TMFRespRejected
		}
		return pdu.TMFRespComplete
	case pdu.TMFClearACA, pdu.TMFTaskReassign, pdu.TMFQueryTask, pdu.TMFQueryTaskSet, pdu.TMFQueryAsyncEvent:
		return pdu.TMFRespNotSupported
	default:
		return pdu.TMFRespRejected
	}
}

// abortTask aborts the task named by the referenced task tag. For a task we
// do not have, RFC 7143 11.5.1 says: if its RefCmdSN is still ahead in the
// window and before the TMF's own CmdSN, consider it received (and so
// aborted) and answer "function complete"; otherwise it does not exist.
func (c *conn) abortTask(req *pdu.TaskMgmtReq, lu *scsi.LU) byte {
	s := c.sess
	t := s.lookupITT(req.RTT)
	if t == nil {
		exp, _ := s.window()
		if int32(req.RefCmdSN-exp) >= 0 && int32(req.CmdSN-req.RefCmdSN) > 0 {
			return pdu.TMFRespComplete
		}
		return pdu.TMFRespNoTask
	}
	if lu != nil && t.lu != lu {
		return pdu.TMFRespNoTask
	}
	match := func(x *task) bool { return x == t }
	s.abortForwarded(match)
	s.abortTasks(match, true)
	return pdu.TMFRespComplete
}

// abortForwarded marks the executing tasks of s that match aborted and,
// for those whose LU forwards its commands to its owner, asks the owner to
// abort them (scsi.LU.AbortForwarded): one still queued there then never
// runs, and one running is answered as soon as it ends. abortTasks, which
// the caller runs next, still waits for them. Only the session's own
// reader may call it: it reads the fields its tasks got from that reader.
// A task that starts forwarding between the mark and the abort is not
// caught; it runs at the owner and is waited for like a local one.
func (s *session) abortForwarded(match func(*task) bool) {
	type forwarded struct {
		lu  *scsi.LU
		itt uint32
	}
	var hit []forwarded
	s.mu.Lock()
	for _, t := range s.tasks {
		if t.running && t.lu != nil && match(t) {
			t.aborted.Store(true)
			hit = append(hit, forwarded{t.lu, t.itt})
		}
	}
	s.mu.Unlock()
	for _, f := range hit {
		f.lu.AbortForwarded(s.nexus, f.itt)
	}
}

// abortEverywhere aborts matching tasks in every session of the same target,
// including other initiators' (their responses are dropped; they learn of
// it from the reset unit attention).
func (s *Server) abortEverywhere(own *session, match func(*task) bool) {
	for _, sess := range s.targetSessions(own.targetName) {
		sess.abortTasks(match, sess == own)
	}
}

// closeTargetSessions drops every other session of own's target.
func (s *Server) closeTargetSessions(own *session) {
	for _, sess := range s.targetSessions(own.targetName) {
		if sess != own {
			sess.close(errTargetReset)
		}
	}
}

func (s *Server) targetSessions(target string) []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*session
	for _, sess := range s.sessions {
		if !sess.discovery && sess.targetName == target {
			out = append(out, sess)
		}
	}
	return out
}

var errTargetReset = errors.New("target cold reset")

func forEachLU(v *sessionView, f func(*scsi.LU)) {
	if v.view == nil {
		return
	}
	for _, lun := range v.view.LUNs() {
		if lu := v.view.LU(lun); lu != nil {
			f(lu)
		}
	}
}

// AbortTasks implements scsi.TaskAborter for PREEMPT AND ABORT: it aborts
// the preempted nexuses' tasks on lu in every session and returns once none
// of them is executing. Tasks still gathering Data-Out are marked and
// dropped by their own reader; except is the PREEMPT AND ABORT itself.
func (s *Server) AbortTasks(lu *scsi.LU, nexusKeys []string, except *scsi.Command) {
	keys := make(map[string]bool, len(nexusKeys))
	for _, k := range nexusKeys {
		keys[k] = true
	}
	s.mu.Lock()
	var hit []*session
	for _, sess := range s.sessions {
		if sess.nexus != nil && keys[sess.nexus.Key] {
			hit = append(hit, sess)
		}
	}
	s.mu.Unlock()
	for _, sess := range hit {
		sess.abortTasks(func(t *task) bool { return t.lu == lu && &t.scmd != except }, false)
	}
}
