package initiator

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/pdu"
)

// Task slots: an ITT is gen<<slotBits | slot, so the reader finds a task
// with one array index, and the generation tells a late PDU for a slot's
// previous occupant from one for its current task.
const (
	slotBits = 12
	maxTasks = 1 << slotBits
	slotMask = maxTasks - 1
)

// Session is a logged-in iSCSI session over one connection. All methods
// are safe for concurrent use.
type Session struct {
	cfg    Config
	addr   string
	params Params
	conn   net.Conn
	br     *bufio.Reader
	// maxSeg bounds the data segments we send: the target's declared
	// MaxRecvDataSegmentLength.
	maxSeg int
	evCap  int

	// w serializes writes. CmdSNs are taken under its mutex, so commands
	// reach the wire in CmdSN order, which some targets rely on.
	w *writer

	mu       sync.Mutex
	cmdSN    uint32 // next CmdSN to use
	expCmdSN uint32
	maxCmdSN uint32
	// windowWait holds the senders waiting for the window to open, oldest
	// first: a MaxCmdSN that grows by n wakes n of them, not all.
	windowWait []chan struct{}
	cause      error // first reason the session failed
	down       error // set once the reader has given up: new requests fail with it

	expStatSN atomic.Uint32 // written by the reader only
	wireSeq   atomic.Uint64 // order in which requests reached the wire

	slots  *slotPool
	tasks  [maxTasks]atomic.Pointer[task]
	nTasks atomic.Int32 // slots ever allocated: the reader scans no further

	ahsBuf [pdu.AHSBufLen]byte
	done   chan struct{} // closed after the reader exits and tasks are failed
}

type taskKind uint8

const (
	kindSCSI taskKind = iota
	kindTMF
	kindNOP
	kindText
	kindLogout
)

type taskState uint8

const (
	stateFree taskState = iota
	stateActive
	// stateAbandoned: the caller gave up waiting. The slot stays reserved
	// until the target is done with the ITT, then the reader frees it.
	stateAbandoned
)

const (
	evR2T uint8 = iota
	evDone
)

// event is what the reader hands a task's owner. Final results travel in
// the task itself, written before the evDone event is sent.
type event struct {
	kind                uint8
	ttt, offset, length uint32
}

// task is one slot of the task table, reused across commands.
type task struct {
	mu       sync.Mutex
	slot     uint16
	gen      uint32
	itt      uint32
	state    taskState
	finished bool // the reader has sent evDone
	kind     taskKind
	write    bool
	lun      [8]byte
	cmdSN    uint32
	seq      uint64 // wireSeq when sent; 0 before
	tmfFunc  byte
	tmfRef   uint32

	in     []byte // Data-In destination
	inLen  int
	dataSN uint32 // next expected Data-In DataSN
	r2tSN  uint32 // next expected R2TSN
	err    error  // a recoverable fault seen while the task ran

	resp     pdu.Header // the PDU that ended the task
	respData []byte
	respErr  error

	ev chan event
}

// slotPool hands out task slots, lowest free first, so a session touches
// only as many task structs as its peak concurrency.
type slotPool struct {
	sem  chan struct{}
	mu   sync.Mutex
	free []uint16
}

func newSlotPool(n int) *slotPool {
	p := &slotPool{sem: make(chan struct{}, n), free: make([]uint16, n)}
	for i := range p.free {
		p.free[i] = uint16(n - 1 - i)
	}
	return p
}

func (p *slotPool) get(ctx context.Context, done <-chan struct{}) (uint16, bool, error) {
	select {
	case p.sem <- struct{}{}:
	default:
		select {
		case p.sem <- struct{}{}:
		case <-ctx.Done():
			return 0, false, ctx.Err()
		case <-done:
			return 0, false, nil
		}
	}
	p.mu.Lock()
	slot := p.free[len(p.free)-1]
	p.free = p.free[:len(p.free)-1]
	p.mu.Unlock()
	return slot, true, nil
}

func (p *slotPool) put(slot uint16) {
	p.mu.Lock()
	p.free = append(p.free, slot)
	p.mu.Unlock()
	<-p.sem
}

func newSession(l *loginConn, cfg Config) *Session {
	s := &Session{
		cfg:      cfg,
		addr:     l.addr,
		params:   l.params,
		conn:     l.conn,
		br:       l.br,
		maxSeg:   int(l.params.TargetMaxRecvDataSegmentLength),
		evCap:    int(min(l.params.MaxOutstandingR2T, maxR2TQueue)) + 1,
		cmdSN:    l.cmdSN,
		expCmdSN: l.expCmdSN,
		maxCmdSN: l.maxCmdSN,
		done:     make(chan struct{}),
	}
	s.slots = newSlotPool(maxTasks)
	s.w = newWriter(l.conn, l.params.HeaderDigest, l.params.DataDigest)
	s.expStatSN.Store(l.expStatSN)
	go s.readLoop()
	return s
}

// Negotiated returns the operational parameters in force.
func (s *Session) Negotiated() Params { return s.params }

// Done is closed once the session is down, by Close, Logout or failure.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns why the session went down, or nil while it is up.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.down
}

// Close drops the connection without logging out, failing commands in
// flight with ErrClosed.
func (s *Session) Close() error {
	s.fail(ErrClosed)
	<-s.done
	return nil
}

// fail records why the session is going down and closes the connection;
// the reader then fails every task.
func (s *Session) fail(err error) {
	s.mu.Lock()
	if s.cause == nil {
		s.cause = err
	}
	s.mu.Unlock()
	_ = s.conn.Close()
}

// acquire takes a free slot and readies its task for a new request.
func (s *Session) acquire(ctx context.Context, kind taskKind, lun [8]byte, in []byte, write bool) (*task, error) {
	slot, ok, err := s.slots.get(ctx, s.done)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, s.Err()
	}
	t := s.taskAt(slot)
	t.mu.Lock()
	t.gen++
	t.itt = t.gen<<slotBits | uint32(slot)
	if t.itt == pdu.ReservedTag {
		t.gen++
		t.itt = t.gen<<slotBits | uint32(slot)
	}
	for len(t.ev) > 0 {
		<-t.ev // left over from an owner that never saw its failure
	}
	t.state, t.finished, t.kind, t.write, t.lun = stateActive, false, kind, write, lun
	t.cmdSN, t.seq, t.tmfFunc, t.tmfRef = 0, 0, 0, pdu.ReservedTag
	t.in, t.inLen, t.dataSN, t.r2tSN, t.err = in, 0, 0, 0, nil
	t.resp, t.respData, t.respErr = pdu.Header{}, nil, nil
	t.mu.Unlock()
	return t, nil
}

func (s *Session) taskAt(slot uint16) *task {
	if t := s.tasks[slot].Load(); t != nil {
		return t
	}
	// Only the slot's holder gets here, so no one races to create it.
	t := &task{slot: slot, ev: make(chan event, s.evCap)}
	s.tasks[slot].Store(t)
	for {
		n := s.nTasks.Load()
		if int32(slot) < n || s.nTasks.CompareAndSwap(n, int32(slot)+1) {
			return t
		}
	}
}

// release returns a task its owner is done with.
func (s *Session) release(t *task) {
	t.mu.Lock()
	s.freeLocked(t)
	t.mu.Unlock()
}

func (s *Session) freeLocked(t *task) {
	t.state = stateFree
	t.in, t.respData = nil, nil
	s.slots.put(t.slot)
}

// abandon hands an unfinished task to the reader, which frees it when the
// target is done with it. It reports false if the task already finished.
func (s *Session) abandon(t *task) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.finished {
		return false
	}
	t.state = stateAbandoned
	t.in = nil // the caller may reuse its buffer from now on
	if t.kind == kindSCSI && t.seq != 0 {
		go s.abortAbandoned(t.lun, t.itt)
	}
	return true
}

// abortAbandoned tells the target to drop a command nobody waits for, so
// it stops sending R2Ts and data for it.
func (s *Session) abortAbandoned(lun [8]byte, itt uint32) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timeout)
	defer cancel()
	_, _ = s.taskMgmt(ctx, pdu.TMFAbortTask, lun, itt)
}

// await waits for a non-SCSI task's response. owned reports whether the
// caller still holds the task (and must release it); after a cancellation
// the reader owns it.
func (s *Session) await(ctx context.Context, t *task) (h pdu.Header, data []byte, owned bool, err error) {
	select {
	case <-t.ev:
	case <-ctx.Done():
		if s.abandon(t) {
			return h, nil, false, ctx.Err()
		}
		<-t.ev
	}
	return t.resp, t.respData, true, t.respErr
}

// send writes one request PDU. Non-immediate requests take the next CmdSN
// and wait while the target's command window is closed.
func (s *Session) send(ctx context.Context, immediate bool, build func(h *pdu.Header, cmdSN, expStatSN uint32), ahs, data []byte) error {
	w := s.w
	w.mu.Lock()
	for {
		sn, wait, err := s.takeCmdSN(immediate)
		if err != nil {
			w.mu.Unlock()
			return err
		}
		if wait == nil {
			build(&w.hdr, sn, s.expStatSN.Load())
			break
		}
		w.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			s.leaveWindow(wait)
			return ctx.Err()
		}
		w.mu.Lock()
	}
	op := w.hdr.Opcode()
	err := w.waitLocked(w.queueLocked(ahs, data))
	w.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("writing %v to %s: %w", op, s.addr, err)
		s.fail(err)
	}
	return err
}

// takeCmdSN returns the CmdSN for the next request, or a channel to wait
// on while the window is closed.
func (s *Session) takeCmdSN(immediate bool) (uint32, chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down != nil {
		return 0, nil, s.down
	}
	if immediate {
		return s.cmdSN, nil, nil // immediate requests do not advance CmdSN
	}
	if serialLT(s.maxCmdSN, s.cmdSN) {
		wait := make(chan struct{})
		s.windowWait = append(s.windowWait, wait)
		return 0, wait, nil
	}
	sn := s.cmdSN
	s.cmdSN++
	return sn, nil, nil
}

// stamp records when and with which CmdSN a task's request went out.
func (s *Session) stamp(t *task, cmdSN uint32) {
	t.mu.Lock()
	t.cmdSN = cmdSN
	t.seq = s.wireSeq.Add(1)
	t.mu.Unlock()
}

// sendDataOut sends one sequence of Data-Out PDUs for data at offset, in
// segments the target accepts, queued together so that they share writes.
func (s *Session) sendDataOut(itt uint32, lun [8]byte, ttt uint32, data []byte, offset uint32) error {
	w := s.w
	w.mu.Lock()
	var id uint64
	for dataSN := uint32(0); len(data) > 0; dataSN++ {
		n := min(len(data), s.maxSeg)
		(&pdu.DataOut{
			Final: n == len(data), DataLen: n, LUN: lun, ITT: itt, TTT: ttt,
			ExpStatSN: s.expStatSN.Load(), DataSN: dataSN, BufferOffset: offset,
		}).Marshal(&w.hdr)
		id = w.queueLocked(nil, data[:n])
		data, offset = data[n:], offset+uint32(n)
	}
	err := w.waitLocked(id)
	w.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("writing Data-Out to %s: %w", s.addr, err)
		s.fail(err)
	}
	return err
}

// Serial number arithmetic (RFC 1982) on 32-bit sequence numbers.
func serialLT(a, b uint32) bool { return a != b && b-a < 1<<31 }
func serialGT(a, b uint32) bool { return serialLT(b, a) }

// updateCmdWindow applies ExpCmdSN/MaxCmdSN from a target PDU (RFC 7143
// 4.2.2.1) and wakes senders waiting for the window to open.
func (s *Session) updateCmdWindow(exp, maxSN uint32) {
	if serialLT(maxSN, exp-1) {
		return // an invalid window must be ignored
	}
	s.mu.Lock()
	if serialGT(exp, s.expCmdSN) {
		s.expCmdSN = exp
	}
	if serialGT(maxSN, s.maxCmdSN) {
		// Waiters exist only while the window is closed, so the slots
		// opened are what MaxCmdSN grew by.
		s.wakeWindow(int(min(maxSN-s.maxCmdSN, maxTasks)))
		s.maxCmdSN = maxSN
	}
	s.mu.Unlock()
}

// wakeWindow wakes the n oldest senders waiting for the window. A woken
// sender that finds the window closed again (a sender that did not wait
// took the slot) waits again. Called with s.mu held.
func (s *Session) wakeWindow(n int) {
	n = min(n, len(s.windowWait))
	for _, wait := range s.windowWait[:n] {
		close(wait)
	}
	rest := copy(s.windowWait, s.windowWait[n:])
	clear(s.windowWait[rest:])
	s.windowWait = s.windowWait[:rest]
}

// leaveWindow withdraws a sender that stopped waiting for the window. If
// it had been woken already, the slot it would have taken goes to the next
// waiter.
func (s *Session) leaveWindow(wait chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.Index(s.windowWait, wait); i >= 0 {
		s.windowWait = slices.Delete(s.windowWait, i, i+1)
		return
	}
	s.wakeWindow(1)
}

// acknowledge applies a status-carrying PDU's command window and StatSN.
func (s *Session) acknowledge(exp, maxSN, statSN uint32) {
	s.updateCmdWindow(exp, maxSN)
	s.advanceStatSN(statSN)
}

// finishITT finishes the task with ITT itt, if it is still waited for.
func (s *Session) finishITT(itt uint32, h *pdu.Header, data []byte, err error) {
	if t := s.lookup(itt); t != nil {
		s.finish(t, h, data, err)
		t.mu.Unlock()
	}
}

// advanceStatSN acknowledges a status-carrying PDU.
func (s *Session) advanceStatSN(sn uint32) {
	if serialGT(sn+1, s.expStatSN.Load()) {
		s.expStatSN.Store(sn + 1)
	}
}

// lookup returns the task an incoming PDU's ITT names, locked, or nil if
// no unfinished task has that ITT (a late PDU after a failure, say).
func (s *Session) lookup(itt uint32) *task {
	t := s.tasks[itt&slotMask].Load()
	if t == nil {
		return nil
	}
	t.mu.Lock()
	if t.itt != itt || t.state == stateFree || t.finished {
		t.mu.Unlock()
		return nil
	}
	return t
}

// finish ends a task with the PDU h (nil when the end comes from us).
// t.mu is held.
func (s *Session) finish(t *task, h *pdu.Header, data []byte, err error) {
	if t.state == stateAbandoned {
		s.freeLocked(t)
		return
	}
	t.finished = true
	if h != nil {
		t.resp = *h
	}
	t.respData = data
	t.respErr = err
	if t.err != nil {
		t.respErr = t.err
	}
	t.ev <- event{kind: evDone} // never blocks: R2Ts leave one slot free
}

// readLoop is the connection's only reader. It never writes: a reader
// blocked on a write could deadlock against a target blocked writing to us.
func (s *Session) readLoop() {
	s.shutdown(s.readPDUs())
}

func (s *Session) readPDUs() error {
	var h pdu.Header
	for {
		if _, err := pdu.ReadHeader(s.br, &h, s.ahsBuf[:], s.params.HeaderDigest); err != nil {
			return fmt.Errorf("reading from %s: %w", s.addr, eofMeaning(err))
		}
		if n := h.DataSegmentLength(); n > int(s.params.MaxRecvDataSegmentLength) {
			return protocolErr("%v with a %d-byte data segment; our MaxRecvDataSegmentLength is %d",
				h.Opcode(), n, s.params.MaxRecvDataSegmentLength)
		}
		if err := s.dispatch(&h); err != nil {
			return err
		}
	}
}

func eofMeaning(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("target closed the connection: %w", err)
	}
	return err
}

func (s *Session) dispatch(h *pdu.Header) error {
	switch op := h.Opcode(); op {
	case pdu.OpDataIn:
		return s.onDataIn(h)
	case pdu.OpSCSIResponse:
		return s.onSCSIResponse(h)
	case pdu.OpR2T:
		return s.onR2T(h)
	case pdu.OpNOPIn:
		return s.onNOPIn(h)
	case pdu.OpTaskMgmtResp:
		return s.onTMFResponse(h)
	case pdu.OpTextResp, pdu.OpLogoutResp:
		return s.onResponse(h)
	case pdu.OpReject:
		return s.onReject(h)
	case pdu.OpAsyncMsg:
		return s.onAsync(h)
	default:
		return protocolErr("unexpected %v in the full feature phase", op)
	}
}

// readSegment reads a PDU's data segment into a new buffer. Used for the
// rare PDUs whose data we keep (sense, text, ping data).
func (s *Session) readSegment(h *pdu.Header) ([]byte, error) {
	n := h.DataSegmentLength()
	if n == 0 {
		return nil, nil
	}
	buf := make([]byte, n)
	if err := pdu.ReadData(s.br, buf, s.params.DataDigest); err != nil {
		return nil, fmt.Errorf("reading %v data: %w", h.Opcode(), err)
	}
	return buf, nil
}

func (s *Session) discard(h *pdu.Header) error {
	return pdu.Discard(s.br, h.DataSegmentLength(), s.params.DataDigest)
}

func (s *Session) onDataIn(h *pdu.Header) error {
	var d pdu.DataIn
	d.Unmarshal(h)
	s.updateCmdWindow(d.ExpCmdSN, d.MaxCmdSN)
	if d.HasStatus {
		s.advanceStatSN(d.StatSN)
	}
	t := s.lookup(d.ITT)
	if t == nil {
		return s.discard(h)
	}
	defer t.mu.Unlock()
	if t.kind != kindSCSI {
		return protocolErr("Data-In for ITT %#x, which is not a SCSI command", d.ITT)
	}
	if err := s.readDataIn(t, &d, h); err != nil {
		return err
	}
	if d.HasStatus {
		if !d.Final {
			t.err = cmp(t.err, protocolErr("Data-In with status but without the F bit"))
		}
		s.finish(t, h, nil, nil)
	}
	return nil
}

// readDataIn places one Data-In segment into the task's buffer. Faults
// confined to the command are recorded in t.err; only stream-level
// failures are returned.
func (s *Session) readDataIn(t *task, d *pdu.DataIn, h *pdu.Header) error {
	if d.DataLen == 0 {
		return nil
	}
	if t.state != stateActive {
		return s.discard(h)
	}
	if d.DataSN != t.dataSN {
		t.err = cmp(t.err, protocolErr("Data-In DataSN %d, expected %d", d.DataSN, t.dataSN))
	}
	t.dataSN = d.DataSN + 1
	end := uint64(d.BufferOffset) + uint64(d.DataLen)
	if end > uint64(len(t.in)) {
		t.err = cmp(t.err, protocolErr("Data-In for bytes [%d, %d) of a %d-byte read", d.BufferOffset, end, len(t.in)))
		return s.discard(h)
	}
	err := pdu.ReadData(s.br, t.in[d.BufferOffset:end], s.params.DataDigest)
	if errors.Is(err, pdu.ErrDataDigest) {
		t.err = cmp(t.err, fmt.Errorf("Data-In at offset %d: %w", d.BufferOffset, err))
		return nil // the segment was consumed; the stream is intact
	}
	if err != nil {
		return fmt.Errorf("reading Data-In: %w", eofMeaning(err))
	}
	t.inLen += d.DataLen
	return nil
}

// cmp keeps the first error.
func cmp(first, next error) error {
	if first != nil {
		return first
	}
	return next
}

func (s *Session) onSCSIResponse(h *pdu.Header) error {
	var r pdu.SCSIResponse
	r.Unmarshal(h)
	data, err := s.readSegment(h)
	if err != nil {
		return err
	}
	s.acknowledge(r.ExpCmdSN, r.MaxCmdSN, r.StatSN)
	s.finishITT(r.ITT, h, data, nil)
	return nil
}

func (s *Session) onR2T(h *pdu.Header) error {
	var r pdu.R2T
	r.Unmarshal(h)
	s.updateCmdWindow(r.ExpCmdSN, r.MaxCmdSN)
	t := s.lookup(r.ITT)
	if t == nil {
		return nil
	}
	defer t.mu.Unlock()
	if t.kind != kindSCSI || !t.write {
		return protocolErr("R2T for ITT %#x, which is not a write", r.ITT)
	}
	if r.R2TSN != t.r2tSN {
		return protocolErr("R2TSN %d for ITT %#x, expected %d", r.R2TSN, r.ITT, t.r2tSN)
	}
	t.r2tSN++
	if t.state == stateAbandoned {
		return nil // the ABORT TASK on its way ends this
	}
	if len(t.ev) >= cap(t.ev)-1 {
		return protocolErr("more than the negotiated %d outstanding R2Ts", cap(t.ev)-1)
	}
	t.ev <- event{kind: evR2T, ttt: r.TTT, offset: r.BufferOffset, length: r.DesiredLength}
	return nil
}

func (s *Session) onNOPIn(h *pdu.Header) error {
	var n pdu.NOPIn
	n.Unmarshal(h)
	data, err := s.readSegment(h)
	if err != nil {
		return err
	}
	s.updateCmdWindow(n.ExpCmdSN, n.MaxCmdSN)
	if n.ITT != pdu.ReservedTag {
		s.advanceStatSN(n.StatSN)
		s.finishITT(n.ITT, h, data, nil)
		return nil
	}
	// An unsolicited NOP-In does not advance StatSN (RFC 7143 11.19).
	if n.TTT != pdu.ReservedTag {
		go s.answerPing(n.TTT, n.LUN, data)
	}
	return nil
}

// answerPing echoes a target's NOP-In ping. It runs on its own goroutine
// because the reader must not write.
func (s *Session) answerPing(ttt uint32, lun [8]byte, data []byte) {
	if len(data) > s.maxSeg {
		data = data[:s.maxSeg]
	}
	_ = s.send(context.Background(), true, func(h *pdu.Header, sn, exp uint32) {
		(&pdu.NOPOut{Immediate: true, DataLen: len(data), LUN: lun, ITT: pdu.ReservedTag, TTT: ttt,
			CmdSN: sn, ExpStatSN: exp}).Marshal(h)
	}, nil, data)
}

func (s *Session) onTMFResponse(h *pdu.Header) error {
	var r pdu.TaskMgmtResp
	r.Unmarshal(h)
	s.acknowledge(r.ExpCmdSN, r.MaxCmdSN, r.StatSN)
	t := s.lookup(r.ITT)
	if t == nil {
		return nil
	}
	fn, ref, lun, seq, isTMF := t.tmfFunc, t.tmfRef, t.lun, t.seq, t.kind == kindTMF
	s.finish(t, h, nil, nil)
	t.mu.Unlock()
	if isTMF && (r.Response == pdu.TMFRespComplete || fn == pdu.TMFAbortTask && r.Response == pdu.TMFRespNoTask) {
		s.endAborted(fn, ref, lun, seq)
	}
	return nil
}

// endAborted ends the commands a completed TMF did away with. The target
// sends their responses, if any, before the TMF response (RFC 7143 4.2.3.2),
// so whatever is still waiting now will never hear back.
func (s *Session) endAborted(fn byte, ref uint32, lun [8]byte, tmfSeq uint64) {
	for i := range int(s.nTasks.Load()) {
		t := s.tasks[i].Load()
		if t == nil {
			continue
		}
		t.mu.Lock()
		if t.state != stateFree && !t.finished && t.kind == kindSCSI && t.seq != 0 && t.seq < tmfSeq && tmfCovers(fn, ref, lun, t) {
			s.finish(t, nil, nil, ErrTaskAborted)
		}
		t.mu.Unlock()
	}
}

func tmfCovers(fn byte, ref uint32, lun [8]byte, t *task) bool {
	switch fn {
	case pdu.TMFAbortTask:
		return t.itt == ref
	case pdu.TMFAbortTaskSet, pdu.TMFClearTaskSet, pdu.TMFLUNReset:
		return t.lun == lun
	case pdu.TMFTargetWarmReset, pdu.TMFTargetColdReset:
		return true
	}
	return false
}

// onResponse completes a Text or Logout request.
func (s *Session) onResponse(h *pdu.Header) error {
	data, err := s.readSegment(h)
	if err != nil {
		return err
	}
	// Text and Logout Responses share the offsets of StatSN and the window.
	var r pdu.TextResp
	r.Unmarshal(h)
	s.acknowledge(r.ExpCmdSN, r.MaxCmdSN, r.StatSN)
	if h.Opcode() == pdu.OpLogoutResp && h[2] == pdu.LogoutRespSuccess {
		s.fail(ErrClosed) // the target closes next; that is no failure
	}
	s.finishITT(r.ITT, h, data, nil)
	return nil
}

// RejectError is a Reject PDU aimed at one of our requests.
type RejectError struct {
	Reason byte
	Opcode pdu.Opcode // of the rejected PDU
}

func (e *RejectError) Error() string {
	return fmt.Sprintf("target rejected %v: reason %#02x", e.Opcode, e.Reason)
}

func (s *Session) onReject(h *pdu.Header) error {
	var r pdu.Reject
	r.Unmarshal(h)
	data, err := s.readSegment(h)
	if err != nil {
		return err
	}
	s.acknowledge(r.ExpCmdSN, r.MaxCmdSN, r.StatSN)
	if len(data) < pdu.HeaderLen {
		return nil
	}
	rejected := pdu.Header(data[:pdu.HeaderLen])
	if itt := rejected.ITT(); itt != pdu.ReservedTag {
		s.finishITT(itt, nil, nil, &RejectError{Reason: r.Reason, Opcode: rejected.Opcode()})
	}
	return nil
}

func (s *Session) onAsync(h *pdu.Header) error {
	data, err := s.readSegment(h)
	if err != nil {
		return err
	}
	var a pdu.AsyncMsg
	a.Unmarshal(h)
	s.acknowledge(a.ExpCmdSN, a.MaxCmdSN, a.StatSN)
	ev := AsyncEvent{Event: a.Event, VCode: a.VCode, LUN: a.LUN,
		Parameters: [3]uint16{a.Parameter1, a.Parameter2, a.Parameter3}, Data: data}
	if ev.Event == pdu.AsyncLogoutRequest {
		go s.logoutOnRequest(time.Duration(ev.Parameters[2]) * time.Second)
	}
	if s.cfg.OnAsync != nil {
		go s.cfg.OnAsync(ev)
	}
	return nil
}

func (s *Session) logoutOnRequest(within time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), max(within, s.cfg.Timeout))
	defer cancel()
	_ = s.Logout(ctx)
}

// shutdown runs once the reader has stopped: it fails every unfinished
// task and refuses new requests.
func (s *Session) shutdown(readErr error) {
	_ = s.conn.Close()
	s.mu.Lock()
	if s.cause == nil {
		s.cause = readErr
	}
	if errors.Is(s.cause, ErrClosed) {
		s.down = ErrClosed
	} else {
		s.down = fmt.Errorf("initiator: session with %s is down: %w", s.addr, s.cause)
	}
	s.wakeWindow(len(s.windowWait))
	down := s.down
	s.mu.Unlock()
	for i := range int(s.nTasks.Load()) {
		t := s.tasks[i].Load()
		if t == nil {
			continue
		}
		t.mu.Lock()
		if t.state != stateFree && !t.finished {
			s.finish(t, nil, nil, down)
		}
		t.mu.Unlock()
	}
	close(s.done)
}
