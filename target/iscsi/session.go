package iscsi

import (
	"sync"
	"sync/atomic"

	"github.com/hatarget/hatarget/target/iscsi/pdu"
	"github.com/hatarget/hatarget/target/scsi"
)

// sessionKey identifies a session for reinstatement (RFC 7143 6.3.5): the
// initiator port (name + ISID) at one target.
type sessionKey struct {
	initiator string
	isid      [6]byte
	target    string
}

// session is one iSCSI session. With MaxConnections=1 it has one connection,
// but the CmdSN window and task table live here, as RFC 7143 puts them.
type session struct {
	srv        *Server
	key        sessionKey
	tsih       uint16
	initiator  string
	targetName string
	discovery  bool
	nexus      *scsi.Nexus
	queueDepth uint32

	expCmdSN atomic.Uint32
	inflight atomic.Int32

	// view caches the target's LUN view for this initiator; it is rebuilt
	// when the server's target set changes.
	viewGen atomic.Uint64
	viewMu  sync.Mutex
	view    atomic.Pointer[sessionView]

	// done is closed when the session has ended: its tasks are gone and
	// its nexus state released. Reinstatement waits for it.
	done chan struct{}

	mu       sync.Mutex
	conn     *conn
	tasks    map[uint32]*task // by ITT
	byTTT    map[uint32]*task // tasks waiting for solicited data
	nextTTT  uint32
	idle     *sync.Cond // signalled when a task finishes and someone waits
	waiters  int
	freeList []*task
	closed   bool
}

type sessionView struct {
	target *Target
	view   scsi.View
}

func newSession(srv *Server, key sessionKey, initiator string, discovery bool, t *Target, nexus *scsi.Nexus, qd uint32, cmdSN uint32) *session {
	s := &session{
		srv:        srv,
		key:        key,
		initiator:  initiator,
		targetName: key.target,
		discovery:  discovery,
		nexus:      nexus,
		queueDepth: qd,
		tasks:      make(map[uint32]*task, qd),
		byTTT:      map[uint32]*task{},
		done:       make(chan struct{}),
	}
	s.idle = sync.NewCond(&s.mu)
	s.expCmdSN.Store(cmdSN)
	if t != nil {
		s.view.Store(&sessionView{target: t, view: t.Views(initiator)})
		s.viewGen.Store(srv.targets.Load().gen)
	}
	return s
}

// window returns ExpCmdSN and MaxCmdSN. MaxCmdSN grows as commands finish,
// which is how the queue depth is enforced; it never shrinks, because
// arrivals advance ExpCmdSN by as much as they add to inflight.
func (s *session) window() (uint32, uint32) {
	exp := s.expCmdSN.Load()
	free := int32(s.queueDepth) - s.inflight.Load()
	return exp, exp + uint32(free) - 1
}

// acceptCmdSN checks a non-immediate command's CmdSN. Commands outside the
// window are ignored, as RFC 7143 3.2.2.1 requires. With one connection per
// session a command ahead of ExpCmdSN can only follow a lost PDU, so the
// window simply moves past it.
func (s *session) acceptCmdSN(sn uint32) bool {
	exp, maxSN := s.window()
	if int32(sn-exp) < 0 || int32(maxSN-sn) < 0 {
		return false
	}
	s.inflight.Add(1)
	s.expCmdSN.Store(sn + 1)
	return true
}

// consumeCmdSN moves the window past a request answered at once (NOP-Out,
// Text, TMF, Logout), which needs no slot of the queue depth. false: the
// CmdSN is outside the window and the request must be ignored.
func (s *session) consumeCmdSN(immediate bool, sn uint32) bool {
	if immediate {
		return true
	}
	if !s.acceptCmdSN(sn) {
		return false
	}
	s.commandDone()
	return true
}

// commandDone releases a command's slot in the window.
func (s *session) commandDone() { s.inflight.Add(-1) }

// currentView returns the LUN view, refreshed if the configuration changed.
func (s *session) currentView() *sessionView {
	gen := s.srv.targets.Load().gen
	if s.viewGen.Load() == gen {
		return s.view.Load()
	}
	s.viewMu.Lock()
	defer s.viewMu.Unlock()
	ts := s.srv.targets.Load()
	if t := ts.lookup(s.targetName); t != nil {
		s.view.Store(&sessionView{target: t, view: t.Views(s.initiator)})
	}
	s.viewGen.Store(ts.gen)
	return s.view.Load()
}

// newTask takes a task from the free list.
func (s *session) newTask(c *conn) *task {
	s.mu.Lock()
	var t *task
	if n := len(s.freeList); n > 0 {
		t = s.freeList[n-1]
		s.freeList = s.freeList[:n-1]
	}
	s.mu.Unlock()
	if t == nil {
		t = &task{}
	}
	t.reset(s, c)
	return t
}

// register adds a task under its ITT, or returns the reason to reject its
// command with: the ITT is in use, which the initiator must never do (RFC
// 7143 11.1.5), or the command is immediate and too many are. Immediate
// commands bypass the CmdSN window, so without a cap of their own an
// initiator could start any number of them, each with its goroutine and
// buffer; queueDepth more than the window allows is far beyond what any
// initiator sends (Linux and libiscsi send none).
func (s *session) register(t *task) (rejectReason byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.tasks[t.itt]; dup || s.closed {
		return pdu.RejectTaskInProgress
	}
	if t.immediate && len(s.tasks) >= 2*int(s.queueDepth) {
		return pdu.RejectImmediateCmd
	}
	s.tasks[t.itt] = t
	return 0
}

// unregister removes a task from the ITT and TTT tables, so its ITT may be
// reused by the initiator as soon as the response is on its way.
func (s *session) unregister(t *task) {
	s.mu.Lock()
	s.unregisterLocked(t)
	s.mu.Unlock()
}

func (s *session) unregisterLocked(t *task) {
	if s.tasks[t.itt] == t {
		delete(s.tasks, t.itt)
	}
	if t.ttt != 0 && s.byTTT[t.ttt] == t {
		delete(s.byTTT, t.ttt)
	}
	if s.waiters > 0 {
		s.idle.Broadcast()
	}
}

// recycle puts a finished task on the free list.
func (s *session) recycle(t *task) {
	s.mu.Lock()
	if len(s.freeList) < int(s.queueDepth) {
		s.freeList = append(s.freeList, t)
	}
	s.mu.Unlock()
}

// allocTTT gives a task waiting for R2T data a target transfer tag.
func (s *session) allocTTT(t *task) uint32 {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		s.nextTTT++
		if s.nextTTT == 0 || s.nextTTT == 0xffffffff {
			continue
		}
		if _, used := s.byTTT[s.nextTTT]; !used {
			s.byTTT[s.nextTTT] = t
			return s.nextTTT
		}
	}
}

// gathering returns the task itt names if it is a write still gathering
// its Data-Out, or nil. Such a task belongs to the connection's reader, the
// only caller, so its data fields may be used without the lock; once it
// runs, a worker owns it and a stray Data-Out naming its ITT must not touch
// it.
func (s *session) gathering(itt uint32) *task {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.tasks[itt]; t != nil && !t.running && t.buf != nil {
		return t
	}
	return nil
}

func (s *session) lookupITT(itt uint32) *task {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tasks[itt]
}

// waitIdle blocks until no task of the session is executing.
func (s *session) waitIdle(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.hasRunning(func(*task) bool { return true }) {
		s.waiters++
		s.idle.Wait()
		s.waiters--
	}
}

// hasRunning reports whether a task matching f is executing (called with mu held).
func (s *session) hasRunning(f func(*task) bool) bool {
	for _, t := range s.tasks {
		if t.running && f(t) {
			return true
		}
	}
	return false
}

// abortTasks marks matching tasks aborted and waits until none of them is
// executing, so that when the TMF response goes out no aborted command can
// still touch the medium; their responses are suppressed. Tasks still
// gathering Data-Out belong to their connection's reader: ownReader says the
// caller is that reader (or it has stopped), so they can be dropped here;
// otherwise the reader drops them at their next Data-Out.
func (s *session) abortTasks(match func(*task) bool, ownReader bool) int {
	s.mu.Lock()
	var dropped []*task
	n := 0
	for _, t := range s.tasks {
		if !match(t) {
			continue
		}
		if !t.aborted.Swap(true) {
			n++
		}
		// A task another session's reset already marked is still ours to
		// drop: only this connection's reader may, and it is here now.
		if !t.running && ownReader {
			dropped = append(dropped, t)
		}
	}
	s.mu.Unlock()
	for _, t := range dropped {
		t.abandon()
	}
	s.waitAborted(match)
	return n
}

// waitAborted blocks until no aborted task matching f is executing, except
// those that by definition go on (SANITIZE).
func (s *session) waitAborted(match func(*task) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.hasRunning(func(t *task) bool {
		return t.aborted.Load() && match(t) && !scsi.ContinuesAfterAbort(t.cdb)
	}) {
		s.waiters++
		s.idle.Wait()
		s.waiters--
	}
}

// connectionLost runs when the reader of c stops. At ErrorRecoveryLevel 0
// the session ends with its only connection: tasks are aborted and the
// nexus loses its state.
func (s *session) connectionLost(c *conn, err error) {
	s.mu.Lock()
	if s.conn != c {
		s.mu.Unlock()
		return // reinstated: the new connection owns the session now
	}
	s.mu.Unlock()
	s.abortTasks(func(*task) bool { return true }, true)
	s.end()
}

// close ends the session from outside (reinstatement, target removal).
func (s *session) close(reason error) {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c != nil {
		c.close(reason)
	}
}

// end unregisters the session.
func (s *session) end() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	defer close(s.done)
	s.srv.mu.Lock()
	current := s.srv.sessions[s.key] == s
	s.srv.mu.Unlock()
	if !current {
		// Reinstated: the I_T nexus lives on in the new session, which must
		// not see a nexus loss for its own predecessor.
		return
	}
	if v := s.view.Load(); v != nil && v.view != nil {
		for _, lun := range v.view.LUNs() {
			if lu := v.view.LU(lun); lu != nil {
				lu.NexusLoss(s.nexus)
			}
		}
	}
	// The session leaves the table only now, so that a login of the same
	// initiator finds it (awaitFailed) until its nexus loss is applied.
	s.srv.mu.Lock()
	if s.srv.sessions[s.key] == s {
		delete(s.srv.sessions, s.key)
	}
	s.srv.mu.Unlock()
}

// failed reports whether the session is over or going: it is ending, its
// reader stopped (logout, connection error) or the initiator closed or
// reset the connection, which the reader may not have seen yet
// (peerClosed). Only logins ask, never the command path.
func (s *session) failed() (failed, peerClosed bool) {
	s.mu.Lock()
	c, closed := s.conn, s.closed
	s.mu.Unlock()
	switch {
	case closed || c == nil:
		return closed, false
	case c.stopping.Load() || c.isClosed():
		return true, false
	case c.peerClosed():
		return true, true
	}
	return false, false
}
