package iscsi

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/iscsi/pdu"
	"github.com/hatarget/hatarget/target/scsi"
)

// MaxTransferLength bounds one command's data (EDTL): larger commands are
// refused before any buffer is allocated, so a hostile initiator cannot make
// us reserve memory by announcing huge transfers. It matches the maximum
// transfer length the Block Limits VPD page advertises.
const MaxTransferLength = scsi.MaxTransferBytes

// task is one SCSI command from arrival to the last byte of its response.
// Tasks are recycled through the session's free list.
type task struct {
	s *session
	c *conn

	itt       uint32
	immediate bool
	cmd       pdu.SCSICommand
	cdb       []byte
	cdbBuf    [260]byte
	lun       uint64
	view      *sessionView
	lu        *scsi.LU

	buf  *backend.Buffer
	edtl uint32

	// Data-Out gathering; all offsets are in bytes from the buffer start.
	received       uint32 // bytes received so far, in order
	unsolicitedEnd uint32 // end of the unsolicited burst
	inUnsolicited  bool
	nextR2T        uint32
	outstandingR2T uint32
	r2tSN          uint32
	dataSN         uint32 // DataSN expected on the next Data-Out
	ttt            uint32

	running bool // executing in scsi; guarded by session.mu
	// inlineFlush makes the goroutine that completes the command write its
	// response itself (workers, and the reader for a lone command).
	inlineFlush bool
	aborted     atomic.Bool

	scmd     scsi.Command
	res      scsi.Result
	out      []outPDU
	pending  atomic.Int32 // queued outPDUs not yet written
	senseSeg [2 + 252]byte
	// Method values made once per task, so that using them does not
	// allocate.
	doneFn, respondFn func()
}

func (t *task) reset(s *session, c *conn) {
	out := t.out[:0]
	doneFn, respondFn := t.doneFn, t.respondFn
	*t = task{s: s, c: c, out: out, doneFn: doneFn, respondFn: respondFn}
	if t.doneFn == nil {
		t.doneFn, t.respondFn = t.pduWritten, t.respond
	}
}

// handleCommand starts a task for a SCSI Command PDU.
func (c *conn) handleCommand(h *pdu.Header, ahs []byte) error {
	s := c.sess
	t := s.newTask(c)
	t.cmd.Unmarshal(h)
	t.itt, t.immediate, t.edtl = t.cmd.ITT, t.cmd.Immediate, t.cmd.EDTL
	if !t.immediate && !s.acceptCmdSN(t.cmd.CmdSN) {
		// Outside the CmdSN window: RFC 7143 says to ignore it silently.
		s.recycle(t)
		return c.skipSegment(h)
	}
	if err := t.setCDB(ahs); err != nil {
		return c.refuseCommand(t, h, pdu.RejectInvalidPDUField)
	}
	if reason := s.register(t); reason != 0 {
		return c.refuseCommand(t, h, reason)
	}
	v := s.currentView()
	t.view = v
	t.lun = scsi.DecodeLUN(t.cmd.LUN)
	if v != nil && v.view != nil {
		t.lu = v.view.LU(t.lun)
	}
	if t.edtl > MaxTransferLength {
		if err := c.skipSegment(h); err != nil {
			return err
		}
		t.failEarly(scsi.StatusCheckCondition, senseInvalidFieldInCDB)
		return nil
	}
	if !t.cmd.Write {
		if h.DataSegmentLength() > 0 {
			return c.refuseCommand(t, h, pdu.RejectProtocolError)
		}
		t.start()
		return nil
	}
	return t.gatherImmediate(h)
}

// refuseCommand rejects a command PDU; its CmdSN stays consumed, as RFC
// 7143 11.17.1 requires for a rejected non-immediate command.
func (c *conn) refuseCommand(t *task, h *pdu.Header, reason byte) error {
	s := c.sess
	s.unregister(t)
	if !t.immediate {
		s.commandDone()
	}
	s.recycle(t)
	return c.rejectAndSkip(h, reason)
}

func (t *task) setCDB(ahs []byte) error {
	ext, err := pdu.ExtendedCDB(ahs)
	if err != nil {
		return err
	}
	if 16+len(ext) > len(t.cdbBuf) {
		return fmt.Errorf("extended CDB of %d bytes", len(ext))
	}
	n := copy(t.cdbBuf[:], t.cmd.CDB[:])
	n += copy(t.cdbBuf[n:], ext)
	t.cdb = t.cdbBuf[:n]
	return nil
}

// gatherImmediate reads immediate data and decides how the rest arrives.
func (t *task) gatherImmediate(h *pdu.Header) error {
	c, p := t.c, &t.c.params
	n := uint32(h.DataSegmentLength())
	if n > 0 && (!p.ImmediateData || n > p.FirstBurstLength || n > t.edtl) {
		return c.refuseCommand(t, h, pdu.RejectProtocolError)
	}
	t.buf = backend.GetBuffer(int(t.edtl))
	if err := pdu.ReadData(c.br, t.buf.B[:n], p.DataDigest); err != nil {
		t.abandon()
		if err == pdu.ErrDataDigest {
			c.reject(h, pdu.RejectDataDigest)
			return nil
		}
		return err
	}
	t.received = n
	t.nextR2T = n
	if !p.InitialR2T && !t.cmd.Final && n < t.edtl {
		t.inUnsolicited = true
		t.unsolicitedEnd = min(p.FirstBurstLength, t.edtl)
	}
	t.advance()
	return nil
}

// advance moves a write forward: run it when all data is in, else ask for
// more with R2Ts (once the unsolicited burst is over).
func (t *task) advance() {
	if t.received == t.edtl {
		if t.aborted.Load() {
			// A reset from another session aborted it while its data
			// arrived: it must not reach the medium after that reset.
			t.abandon()
			return
		}
		t.start()
		return
	}
	if !t.inUnsolicited {
		t.sendR2Ts()
	}
}

func (t *task) sendR2Ts() {
	p := &t.c.params
	if t.ttt == 0 {
		t.ttt = t.s.allocTTT(t)
	}
	for t.outstandingR2T < p.MaxOutstandingR2T && t.nextR2T < t.edtl {
		length := min(p.MaxBurstLength, t.edtl-t.nextR2T)
		o := &outPDU{stat: statPeek}
		(&pdu.R2T{LUN: t.cmd.LUN, ITT: t.itt, TTT: t.ttt, R2TSN: t.r2tSN, BufferOffset: t.nextR2T, DesiredLength: length}).Marshal(&o.hdr)
		t.r2tSN++
		t.nextR2T += length
		t.outstandingR2T++
		t.c.send(o)
	}
}

// handleDataOut places one Data-Out PDU's payload into its task's buffer.
func (c *conn) handleDataOut(h *pdu.Header) error {
	var d pdu.DataOut
	d.Unmarshal(h)
	t := c.sess.gathering(d.ITT)
	if t == nil || t.received >= t.edtl {
		// Data for a task that is gone (refused, aborted, complete) or that
		// takes no data is dropped: RFC 7143 11.5.1 has the target discard
		// data of aborted tasks, which an initiator may still have in flight.
		return c.skipSegment(h)
	}
	if t.aborted.Load() {
		t.abandon() // aborted from another session while gathering data
		return c.skipSegment(h)
	}
	if err := t.checkDataOut(&d); err != nil {
		// The stream itself is intact (the PDU is well framed), so only this
		// command fails: ERL 0 cannot recover its data, and dropping the whole
		// connection would take every other command with it.
		c.log.Warn("bad Data-Out, failing the command", "itt", d.ITT, "err", err)
		if err := c.skipSegment(h); err != nil {
			return err
		}
		t.failEarly(scsi.StatusCheckCondition, senseDataPhaseError)
		return nil
	}
	n := uint32(d.DataLen)
	if err := pdu.ReadData(c.br, t.buf.B[d.BufferOffset:d.BufferOffset+n], c.params.DataDigest); err != nil {
		if err == pdu.ErrDataDigest {
			// ERL 0 cannot ask for the data again: the task can never
			// complete, so the connection goes.
			c.reject(h, pdu.RejectDataDigest)
		}
		return err
	}
	t.received += n
	t.dataSN++
	if d.Final {
		t.dataSN = 0
		if d.TTT == pdu.ReservedTag {
			t.inUnsolicited = false
			t.nextR2T = t.received
		} else {
			t.outstandingR2T--
		}
	}
	t.advance()
	return nil
}

// checkDataOut validates a Data-Out against what the task expects. With
// DataPDUInOrder and DataSequenceInOrder in force and one R2T outstanding,
// data must arrive exactly at the next offset.
func (t *task) checkDataOut(d *pdu.DataOut) error {
	n := uint32(d.DataLen)
	switch {
	case d.TTT == pdu.ReservedTag && !t.inUnsolicited:
		return fmt.Errorf("unsolicited Data-Out outside the first burst")
	case d.TTT == pdu.ReservedTag && d.BufferOffset+n > t.unsolicitedEnd:
		return fmt.Errorf("unsolicited data beyond FirstBurstLength")
	case d.TTT != pdu.ReservedTag && (d.TTT != t.ttt || t.outstandingR2T == 0):
		return fmt.Errorf("Data-Out with unknown TTT 0x%x", d.TTT)
	case d.BufferOffset != t.received:
		return fmt.Errorf("Data-Out at offset %d, expected %d", d.BufferOffset, t.received)
	case uint64(d.BufferOffset)+uint64(n) > uint64(t.edtl):
		return fmt.Errorf("Data-Out beyond expected data transfer length %d", t.edtl)
	case d.TTT != pdu.ReservedTag && d.BufferOffset+n > t.nextR2T:
		return fmt.Errorf("Data-Out beyond the solicited range")
	case d.DataSN != t.dataSN:
		return fmt.Errorf("DataSN %d, expected %d", d.DataSN, t.dataSN)
	}
	return nil
}

// start runs the command. A plain read or write that is the session's only
// command, with nothing more waiting to be read, runs right here on the
// reader and writes its own response: at queue depth 1 every goroutine
// hand-off is latency. A write the device completes later (a replicated
// LUN's) is started here, and completes where its device's answers
// arrive. Anything else goes to a worker so the reader keeps reading:
// commands already buffered behind this one must not wait for it (that
// would serialize a deep queue on one goroutine), nor may a polling TEST
// UNIT READY wait for a SANITIZE.
func (t *task) start() {
	t.s.mu.Lock()
	t.running = true
	t.s.mu.Unlock()
	if !t.immediate && t.s.inflight.Load() == 1 && t.c.br.Buffered() == 0 && t.view != nil && scsi.QuickCommand(t.view.view, t.lun, t.cdb) {
		t.run()
		return
	}
	if t.startAsync() {
		return
	}
	t.c.workers.submit(t)
}

// startAsync starts the command through scsi.ExecuteAsync; false when it
// must run through Execute instead.
func (t *task) startAsync() bool {
	if !t.cmd.Write || t.buf == nil || t.view == nil || t.aborted.Load() {
		return false
	}
	t.prepare()
	t.inlineFlush = false
	return scsi.ExecuteAsync(t.view.view, &t.scmd, &t.res, t.respondFn, &t.c.plug)
}

// prepare makes t's SCSI command, with its data buffers, and a fresh
// result.
func (t *task) prepare() {
	t.scmd = scsi.Command{Nexus: t.s.nexus, LUN: t.lun, CDB: t.cdb, TaskTag: t.itt}
	if t.cmd.Write && t.buf != nil {
		t.scmd.DataOut = t.buf.B[:t.edtl]
	}
	if t.cmd.Read {
		if t.buf == nil {
			t.buf = backend.GetBuffer(int(t.edtl))
		}
		t.scmd.DataIn = t.buf.B[:t.edtl]
	}
	t.res = scsi.Result{}
}

func (t *task) run() {
	if t.aborted.Load() {
		// Aborted while queued: it must neither touch the medium nor
		// consume a unit attention in a response nobody will see.
		t.respond()
		return
	}
	t.prepare()
	t.inlineFlush = true
	var view scsi.View
	if t.view != nil {
		view = t.view.view
	}
	scsi.Execute(view, &t.scmd, &t.res)
	t.respond()
}

// respond queues Data-In PDUs and the status for a finished command.
func (t *task) respond() {
	s := t.s
	if !t.immediate {
		s.commandDone()
	}
	s.mu.Lock()
	t.running = false
	s.unregisterLocked(t)
	s.mu.Unlock()
	if t.aborted.Load() {
		t.release()
		return
	}
	t.queueResponse(t.res.Status, t.res.Sense, t.res.DataInLen, t.res.Transfer)
}

// queueResponse builds the Data-In sequence (status collapsed into its last
// PDU when there is no sense) or a SCSI Response.
func (t *task) queueResponse(status scsi.Status, sense []byte, dataLen, transfer int) {
	p := &t.c.params
	overflow, underflow, residual := residuals(t.edtl, transfer)
	collapse := dataLen > 0 && len(sense) == 0 && status == scsi.StatusGood
	n := 0
	for off := 0; off < dataLen; n++ {
		size := min(dataLen-off, int(p.MaxXmitDataSegmentLength))
		last := off+size == dataLen
		o := t.nextOut()
		di := pdu.DataIn{
			Final: last || (off+size)%int(p.MaxBurstLength) == 0, DataLen: size,
			LUN: t.cmd.LUN, ITT: t.itt, TTT: pdu.ReservedTag, DataSN: uint32(n), BufferOffset: uint32(off),
		}
		if last && collapse {
			di.HasStatus, di.Status = true, byte(status)
			di.Overflow, di.Underflow, di.Residual = overflow, underflow, residual
			o.stat = statAssign
		}
		di.Marshal(&o.hdr)
		o.data = t.buf.B[off : off+size]
		off += size
	}
	if !collapse {
		o := t.nextOut()
		o.stat = statAssign
		r := pdu.SCSIResponse{Status: byte(status), ITT: t.itt, ExpDataSN: uint32(n),
			Overflow: overflow, Underflow: underflow, Residual: residual}
		if len(sense) > 0 {
			binary.BigEndian.PutUint16(t.senseSeg[:], uint16(len(sense)))
			k := copy(t.senseSeg[2:], sense)
			o.data = t.senseSeg[:2+k]
			r.DataLen = len(o.data)
		}
		r.Marshal(&o.hdr)
	}
	// Once its last PDU is queued, the task may be written, released and
	// reused for the next command at any moment: nothing of it is read
	// after.
	c, inline := t.c, t.inlineFlush
	t.pending.Store(int32(len(t.out)))
	for i := range t.out {
		c.enqueue(&t.out[i])
	}
	// The writer goroutine releases what is queued when the connection
	// closes; what is queued after that, the writing fails and releases.
	if inline || c.isClosed() {
		c.flush()
	} else {
		c.kick()
	}
}

// residuals compares what the command transferred with what the initiator
// expected (RFC 7143 11.4.5).
func residuals(edtl uint32, transfer int) (overflow, underflow bool, residual uint32) {
	switch {
	case uint64(transfer) > uint64(edtl):
		return true, false, uint32(min(uint64(transfer)-uint64(edtl), 0xffffffff))
	case uint64(transfer) < uint64(edtl):
		return false, true, edtl - uint32(transfer)
	}
	return false, false, 0
}

func (t *task) nextOut() *outPDU {
	t.out = append(t.out, outPDU{})
	o := &t.out[len(t.out)-1]
	o.done = t.doneFn
	return o
}

// pduWritten runs when one of the task's PDUs left; the last one frees the
// task.
func (t *task) pduWritten() {
	if t.pending.Add(-1) == 0 {
		t.release()
	}
}

// failEarly answers a command that never reaches the SCSI layer.
func (t *task) failEarly(status scsi.Status, sense []byte) {
	if !t.immediate {
		t.s.commandDone()
	}
	t.s.unregister(t)
	t.queueResponse(status, sense, 0, 0)
}

// abandon drops a task that will never run (aborted while gathering data,
// or its connection is gone).
func (t *task) abandon() {
	if !t.immediate {
		t.s.commandDone()
	}
	t.s.unregister(t)
	t.release()
}

// release returns the task's buffer and the task itself.
func (t *task) release() {
	backend.PutBuffer(t.buf)
	t.buf = nil
	clear(t.out)
	t.out = t.out[:0]
	t.s.recycle(t)
}

// senseDataPhaseError is fixed-format sense ABORTED COMMAND / DATA PHASE
// ERROR, for a write whose Data-Out sequence broke the rules.
var senseDataPhaseError = []byte{0x70, 0, 0x0b, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0, 0x4b, 0x00, 0, 0, 0, 0}

// senseInvalidFieldInCDB is fixed-format sense ILLEGAL REQUEST / INVALID
// FIELD IN CDB, for commands refused by the transport itself.
var senseInvalidFieldInCDB = []byte{0x70, 0, 0x05, 0, 0, 0, 0, 0x0a, 0, 0, 0, 0, 0x24, 0x00, 0, 0, 0, 0}
