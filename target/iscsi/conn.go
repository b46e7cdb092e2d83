package iscsi

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/iscsi/pdu"
)

// statMode says how the writer fills a PDU's StatSN field.
type statMode uint8

const (
	statNone   statMode = iota // field unused (Data-In without status)
	statAssign                 // status-carrying PDU: takes the next StatSN
	statPeek                   // carries the next StatSN without using it (R2T, NOP-In ping)
)

// outPDU is one PDU queued for the writer. Tasks embed their own outPDUs,
// so queuing a response does not allocate.
type outPDU struct {
	hdr     pdu.Header
	digest  [4]byte
	data    []byte
	trailer [8]byte
	stat    statMode
	// done runs after the PDU reached the socket (or the connection died):
	// it returns data buffers to their pool.
	done func()
	// closeAfter ends the connection once this PDU is written (logout).
	closeAfter bool
	// ctl marks a PDU queued by send, which ctlQueue bounds.
	ctl bool
}

// ctlQueue counts the PDUs queued by send and not yet written: answers to
// the initiator's requests (NOP-In echoes, Rejects, text, TMF and logout
// responses) and R2Ts. Command responses are bounded by the CmdSN window;
// these are not, so an initiator that sends requests and never reads the
// answers would make the queue, and the echoed data it holds, grow without
// end. Past the limits the connection is dropped.
type ctlQueue struct {
	pdus, bytes       int
	maxPDUs, maxBytes int
}

// Limits of ctlQueue. An initiator that reads its answers never has more
// than a few outstanding; R2Ts are bounded by the tasks a session may have
// (twice the queue depth, immediate commands included) times
// MaxOutstandingR2T, and one echo by MaxRecvDataSegmentLength.
const (
	ctlQueueMinPDUs  = 1024
	ctlQueueMinBytes = 4 << 20
)

func newCtlQueue(p *Params) ctlQueue {
	return ctlQueue{
		maxPDUs:  ctlQueueMinPDUs + 2*int(p.QueueDepth)*int(max(p.MaxOutstandingR2T, 1)),
		maxBytes: max(ctlQueueMinBytes, 4*int(p.MaxRecvDataSegmentLength)),
	}
}

// add counts p, or reports false when the queue is full.
func (q *ctlQueue) add(p *outPDU) bool {
	if q.pdus >= q.maxPDUs || q.bytes+len(p.data) > q.maxBytes {
		return false
	}
	q.pdus++
	q.bytes += len(p.data)
	p.ctl = true
	return true
}

var errNotReading = errors.New("initiator does not read the answers to its requests")

// writerYieldBelow: see writeLoop.
const writerYieldBelow = 4

// conn is one TCP connection. The reader goroutine owns br and all login and
// command-decoding state; the writer goroutine owns the socket's write side.
type conn struct {
	srv    *Server
	nc     net.Conn
	br     *bufio.Reader
	log    *slog.Logger
	ahsBuf [pdu.AHSBufLen]byte

	sess    *session // set once login completes
	cid     uint16
	params  Params
	text    textState
	workers *workerPool
	// plug holds back what the writes the reader starts send to other
	// nodes until the reader is about to wait for the initiator.
	plug backend.Plug

	wmu      sync.Mutex
	wq       []*outPDU
	ctlq     ctlQueue
	statSN   uint32
	wsig     chan struct{}
	writing  bool // full feature phase: the writer goroutine exists
	flushing bool // some goroutine is writing; it drains wq before it stops
	batch    []*outPDU
	batchCtl ctlQueue // what of batch counts in ctlq
	bufs     net.Buffers

	lastRecv  atomic.Int64 // unix nanos of the last PDU received
	pingTTT   atomic.Uint32
	closed    chan struct{}
	closeOnce sync.Once
	closeErr  error
	draining  atomic.Bool
	// stopping is set when the reader stops, or is about to (a logout is
	// answered): the session is over, and a login of the same initiator
	// waits for its end (awaitFailed).
	stopping atomic.Bool
}

func newConn(s *Server, nc net.Conn) *conn {
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	return &conn{
		srv:    s,
		nc:     nc,
		br:     bufio.NewReaderSize(nc, loginReadBuffer),
		log:    s.log.With("remote", nc.RemoteAddr().String()),
		wsig:   make(chan struct{}, 1),
		closed: make(chan struct{}),
	}
}

// serve runs login and then the full feature phase until the connection ends.
func (c *conn) serve() {
	defer c.close(nil)
	c.nc.SetDeadline(time.Now().Add(c.srv.opts.LoginTimeout))
	if err := c.login(); err != nil {
		c.log.Info("login failed", "err", err)
		return
	}
	c.nc.SetDeadline(time.Time{})
	c.growReader()
	c.workers = newWorkerPool(int(c.params.QueueDepth))
	c.wmu.Lock()
	c.writing = true
	c.ctlq = newCtlQueue(&c.params)
	c.wmu.Unlock()
	go c.writeLoop()
	if c.srv.opts.NOPInterval > 0 {
		go c.pingLoop()
	}
	err := c.readLoop()
	c.plug.Unplug()
	c.stopping.Store(true)
	c.workers.close()
	if c.draining.Load() {
		c.sess.waitIdle(c) // graceful shutdown: let running commands answer
	}
	// Whatever ended the reader, PDUs already queued (a logout response, a
	// Reject explaining the drop, responses of finished commands) still go
	// out, within a bound so a peer that stopped reading cannot hold us.
	c.flushAndClose()
	select {
	case <-c.closed:
	case <-time.After(2 * time.Second):
	}
	if err != nil && !errors.Is(err, errLogout) {
		c.close(err)
	}
	c.sess.connectionLost(c, err)
}

// Read buffer sizes: a connection holds only a small buffer until it has
// logged in, so that the connections a peer may open without
// authenticating (Options.MaxConnections) cost little memory; the full
// feature phase reads through a large one, which gathers many small PDUs
// per system call.
const (
	loginReadBuffer = 4 << 10
	ffpReadBuffer   = 64 << 10
)

// growReader switches to the full feature phase's read buffer, carrying
// over whatever the initiator already sent after its last Login Request.
func (c *conn) growReader() {
	var src io.Reader = c.nc
	if n := c.br.Buffered(); n > 0 {
		rest, _ := c.br.Peek(n)
		src = io.MultiReader(bytes.NewReader(bytes.Clone(rest)), c.nc)
	}
	c.br = bufio.NewReaderSize(unplugReader{src, &c.plug}, ffpReadBuffer)
}

// unplugReader unplugs before each read from the connection, which may
// wait for the initiator.
type unplugReader struct {
	r    io.Reader
	plug *backend.Plug
}

func (u unplugReader) Read(p []byte) (int, error) {
	u.plug.Unplug()
	return u.r.Read(p)
}

// readLoop decodes PDUs in the full feature phase.
func (c *conn) readLoop() error {
	var h pdu.Header
	for {
		ahs, err := pdu.ReadHeader(c.br, &h, c.ahsBuf[:], c.params.HeaderDigest)
		if err != nil {
			return c.readError(err)
		}
		c.lastRecv.Store(time.Now().UnixNano())
		if err := c.dispatch(&h, ahs); err != nil {
			return err
		}
	}
}

func (c *conn) readError(err error) error {
	if errors.Is(err, io.EOF) || c.isClosed() || c.draining.Load() {
		return nil
	}
	if errors.Is(err, pdu.ErrHeaderDigest) {
		// After a bad header digest the PDU boundaries are unknown: at
		// ErrorRecoveryLevel 0 the only way on is to drop the connection.
		c.log.Warn("header digest error, dropping connection")
	}
	return err
}

func (c *conn) dispatch(h *pdu.Header, ahs []byte) error {
	if n := h.DataSegmentLength(); uint32(n) > c.params.MaxRecvDataSegmentLength {
		// A peer announcing more than it negotiated could make us buffer
		// without bound: refuse the PDU and drop the connection.
		c.reject(h, pdu.RejectProtocolError)
		return fmt.Errorf("%s with %d-byte data segment exceeds MaxRecvDataSegmentLength %d", h.Opcode(), n, c.params.MaxRecvDataSegmentLength)
	}
	if c.sess.discovery {
		switch h.Opcode() {
		case pdu.OpTextReq, pdu.OpLogoutReq, pdu.OpNOPOut:
		default:
			return c.rejectAndSkip(h, pdu.RejectProtocolError)
		}
	}
	switch h.Opcode() {
	case pdu.OpSCSICommand:
		return c.handleCommand(h, ahs)
	case pdu.OpDataOut:
		return c.handleDataOut(h)
	}
	// The other requests may wait for the commands in flight (task
	// management waits for the tasks it aborts): what those send to
	// other nodes must not wait for the reader.
	c.plug.Unplug()
	switch h.Opcode() {
	case pdu.OpNOPOut:
		return c.handleNOPOut(h)
	case pdu.OpTaskMgmtReq:
		return c.handleTaskMgmt(h)
	case pdu.OpTextReq:
		return c.handleText(h)
	case pdu.OpLogoutReq:
		return c.handleLogout(h)
	case pdu.OpSNACKReq:
		// SNACK needs ErrorRecoveryLevel > 0, which we never negotiate.
		return c.rejectAndSkip(h, pdu.RejectSNACK)
	case pdu.OpLoginReq:
		return c.rejectAndSkip(h, pdu.RejectProtocolError)
	default:
		return c.rejectAndSkip(h, pdu.RejectNotSupported)
	}
}

// readSegment reads the data segment of h into a pooled buffer.
func (c *conn) readSegment(h *pdu.Header) (*backend.Buffer, []byte, error) {
	n := h.DataSegmentLength()
	if n == 0 {
		return nil, nil, nil
	}
	b := backend.GetBuffer(n)
	if err := pdu.ReadData(c.br, b.B[:n], c.params.DataDigest); err != nil {
		backend.PutBuffer(b)
		return nil, nil, err
	}
	return b, b.B[:n], nil
}

// skipSegment discards the data segment of h.
func (c *conn) skipSegment(h *pdu.Header) error {
	return pdu.Discard(c.br, h.DataSegmentLength(), c.params.DataDigest)
}

// rejectAndSkip answers h with a Reject and discards its data so the stream
// stays in step.
func (c *conn) rejectAndSkip(h *pdu.Header, reason byte) error {
	if err := c.skipSegment(h); err != nil {
		return err
	}
	c.reject(h, reason)
	return nil
}

// reject queues a Reject PDU carrying the offending header.
func (c *conn) reject(h *pdu.Header, reason byte) {
	c.log.Debug("rejecting PDU", "opcode", h.Opcode().String(), "reason", reason)
	p := &outPDU{stat: statAssign}
	hdrCopy := *h
	(&pdu.Reject{Reason: reason, DataLen: pdu.HeaderLen}).Marshal(&p.hdr)
	p.data = hdrCopy[:]
	c.send(p)
}

// send queues p and wakes the writer goroutine. The reader uses it: it must
// never block on the socket's write side, or a peer that is itself blocked
// writing to us would deadlock with us.
func (c *conn) send(p *outPDU) {
	if !c.queue(p, true) {
		if p.done != nil {
			p.done()
		}
		c.close(errNotReading)
		return
	}
	c.kick()
}

// enqueue adds p to the write queue, filling the sequence numbers in queue
// order so StatSN is strictly increasing on the wire.
func (c *conn) enqueue(p *outPDU) { c.queue(p, false) }

// queue is enqueue, for a ctl PDU only while ctlq has room.
func (c *conn) queue(p *outPDU, ctl bool) bool {
	c.wmu.Lock()
	if ctl && !c.ctlq.add(p) {
		c.wmu.Unlock()
		return false
	}
	switch p.stat {
	case statAssign:
		binary.BigEndian.PutUint32(p.hdr[24:], c.statSN)
		c.statSN++
	case statPeek:
		binary.BigEndian.PutUint32(p.hdr[24:], c.statSN)
	}
	if c.sess != nil {
		exp, maxSN := c.sess.window()
		binary.BigEndian.PutUint32(p.hdr[28:], exp)
		binary.BigEndian.PutUint32(p.hdr[32:], maxSN)
	}
	c.wq = append(c.wq, p)
	c.wmu.Unlock()
	return true
}

func (c *conn) kick() {
	select {
	case c.wsig <- struct{}{}:
	default:
	}
}

// writeLoop flushes whenever something was queued without being flushed:
// PDUs from the reader, and the responses of writes that completed where
// their replicas' answers arrived. Before a short round it yields the
// processor once: the goroutine that woke it is usually completing more
// commands, whose responses then share the round's system call.
func (c *conn) writeLoop() {
	for {
		select {
		case <-c.wsig:
			c.wmu.Lock()
			short := len(c.wq) < writerYieldBelow
			c.wmu.Unlock()
			if short {
				runtime.Gosched()
			}
			c.flush()
		case <-c.closed:
			c.releaseQueued()
			return
		}
	}
}

// flush makes the caller the writer unless another goroutine already is:
// it sends everything queued, one writev per round, until the queue is
// empty. A worker finishing a command flushes its own response this way, so
// at queue depth 1 the response leaves without waking another goroutine,
// and under load one writev carries many responses.
func (c *conn) flush() {
	c.wmu.Lock()
	if c.flushing || !c.writing {
		c.wmu.Unlock()
		return
	}
	c.flushing = true
	for len(c.wq) > 0 {
		c.batch = append(c.batch[:0], c.wq...)
		clear(c.wq)
		c.wq = c.wq[:0]
		c.wmu.Unlock()
		ok := c.writeBatch()
		c.wmu.Lock()
		c.ctlq.pdus -= c.batchCtl.pdus
		c.ctlq.bytes -= c.batchCtl.bytes
		if !ok {
			break
		}
	}
	c.flushing = false
	c.wmu.Unlock()
}

// writeBatch sends c.batch; false when the connection is finished.
func (c *conn) writeBatch() bool {
	c.bufs = c.frame(c.bufs[:0], c.batch)
	iov := c.bufs // WriteTo consumes its receiver
	_, err := iov.WriteTo(c.nc)
	closeNow := false
	c.batchCtl = ctlQueue{}
	for i, p := range c.batch {
		// done may recycle the task p belongs to, and the reader may be
		// filling it for the next command already: p is read before.
		closeNow = closeNow || p.closeAfter
		if p.ctl {
			c.batchCtl.pdus++
			c.batchCtl.bytes += len(p.data)
		}
		if p.done != nil {
			p.done()
		}
		c.batch[i] = nil
	}
	clear(c.bufs)
	switch {
	case err != nil:
		c.close(fmt.Errorf("write: %w", err))
		return false
	case closeNow:
		c.close(nil)
		return false
	}
	return true
}

// frame lays out each PDU as header (+digest), data, padding (+digest).
func (c *conn) frame(bufs net.Buffers, batch []*outPDU) net.Buffers {
	for _, p := range batch {
		if c.params.HeaderDigest {
			p.digest = pdu.HeaderDigest(&p.hdr, nil)
			bufs = append(bufs, p.hdr[:], p.digest[:])
		} else {
			bufs = append(bufs, p.hdr[:])
		}
		if len(p.data) > 0 {
			bufs = append(bufs, p.data)
			if t := pdu.Trailer(&p.trailer, p.data, c.params.DataDigest); len(t) > 0 {
				bufs = append(bufs, t)
			}
		}
	}
	return bufs
}

// releaseQueued runs the completion of PDUs that will never be written.
func (c *conn) releaseQueued() {
	c.wmu.Lock()
	q := c.wq
	c.wq = nil
	c.wmu.Unlock()
	for _, p := range q {
		if p.done != nil {
			p.done()
		}
	}
}

// writeDirect sends one PDU synchronously; used during login, before the
// writer goroutine exists.
func (c *conn) writeDirect(p *outPDU) error {
	bufs := c.frame(nil, []*outPDU{p})
	_, err := bufs.WriteTo(c.nc)
	return err
}

// close ends the connection once; the first error is kept for the log.
func (c *conn) close(err error) {
	c.closeOnce.Do(func() {
		c.closeErr = err
		close(c.closed)
		c.nc.Close()
		if err != nil && !errors.Is(err, net.ErrClosed) {
			c.log.Info("connection closed", "err", err)
		}
	})
}

func (c *conn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// drain stops reading new PDUs; serve then lets the session's running
// commands answer and closes the connection (graceful shutdown).
func (c *conn) drain() {
	c.draining.Store(true)
	c.nc.SetReadDeadline(time.Now())
}

// flushAndClose closes the connection after everything queued is written.
func (c *conn) flushAndClose() {
	c.wmu.Lock()
	writing := c.writing
	c.wmu.Unlock()
	if !writing {
		c.close(nil)
		return
	}
	// send fills StatSN (not advanced) and the command window.
	c.send(&outPDU{closeAfter: true, stat: statPeek, hdr: nopHeader()})
}

// nopHeader is a NOP-In that needs no answer, used as the last PDU written
// before a graceful close (it also tells the initiator our final StatSN).
func nopHeader() pdu.Header {
	var h pdu.Header
	(&pdu.NOPIn{ITT: pdu.ReservedTag, TTT: pdu.ReservedTag}).Marshal(&h)
	return h
}

// pingLoop sends a NOP-In when the initiator has been silent for
// NOPInterval, and drops the connection when the ping goes unanswered.
func (c *conn) pingLoop() {
	interval, timeout := c.srv.opts.NOPInterval, c.srv.opts.NOPTimeout
	c.lastRecv.Store(time.Now().UnixNano())
	t := time.NewTicker(min(interval, timeout) / 2)
	defer t.Stop()
	var pingSent time.Time
	for {
		select {
		case <-c.closed:
			return
		case now := <-t.C:
			last := time.Unix(0, c.lastRecv.Load())
			switch {
			case !pingSent.IsZero() && last.After(pingSent):
				pingSent = time.Time{}
			case !pingSent.IsZero() && now.Sub(pingSent) > timeout:
				c.close(fmt.Errorf("no answer to NOP-In for %s", timeout))
				return
			case pingSent.IsZero() && now.Sub(last) > interval:
				pingSent = now
				c.sendPing()
			}
		}
	}
}

func (c *conn) sendPing() {
	ttt := c.pingTTT.Add(1) & 0x7fffffff // never the reserved tag
	p := &outPDU{stat: statPeek}
	(&pdu.NOPIn{ITT: pdu.ReservedTag, TTT: ttt}).Marshal(&p.hdr)
	c.send(p)
}

// handleNOPOut answers an initiator ping (echoing its data) or notes the
// answer to ours.
func (c *conn) handleNOPOut(h *pdu.Header) error {
	var n pdu.NOPOut
	n.Unmarshal(h)
	buf, data, err := c.readSegment(h)
	if err != nil {
		return err
	}
	if n.ITT == pdu.ReservedTag {
		backend.PutBuffer(buf) // the answer to our ping; nothing to send
		return nil
	}
	if !c.sess.consumeCmdSN(n.Immediate, n.CmdSN) {
		backend.PutBuffer(buf)
		return nil
	}
	p := &outPDU{stat: statAssign, data: data, done: func() { backend.PutBuffer(buf) }}
	(&pdu.NOPIn{DataLen: len(data), LUN: n.LUN, ITT: n.ITT, TTT: pdu.ReservedTag}).Marshal(&p.hdr)
	c.send(p)
	return nil
}
