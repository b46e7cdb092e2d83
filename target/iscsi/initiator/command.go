package initiator

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hatarget/hatarget/target/iscsi/pdu"
)

// TaskAttr is the SAM task attribute of a command. The zero value is
// Simple, the attribute every ordinary command uses.
type TaskAttr uint8

const (
	AttrSimple TaskAttr = iota
	AttrOrdered
	AttrHeadOfQueue
	AttrACA
	AttrUntagged
)

// wire maps to the ATTR field codes of RFC 7143 11.3.1.
func (a TaskAttr) wire() byte {
	switch a {
	case AttrOrdered:
		return 2
	case AttrHeadOfQueue:
		return 3
	case AttrACA:
		return 4
	case AttrUntagged:
		return 0
	}
	return 1
}

// MaxCDBLen is the longest CDB Start accepts; bytes past 16 travel in an
// Extended CDB AHS.
const MaxCDBLen = 260

// Command is one SCSI command for Start.
type Command struct {
	LUN uint64
	CDB []byte
	// DataOut is sent to the target (a write); DataIn receives data from
	// it (a read), and its length is the expected transfer length. At most
	// one of them may be non-empty: bidirectional commands are not
	// supported.
	DataOut, DataIn []byte
	Attr            TaskAttr
}

// Response is the outcome of a SCSI command that the target completed.
type Response struct {
	Status byte
	// Sense is the sense data of a CHECK CONDITION, nil otherwise.
	Sense               []byte
	Residual            int
	Overflow, Underflow bool
	// DataInLen is how many bytes of Data-In the target sent.
	DataInLen int
}

// Call is a command in flight, returned by Start. Wait must be called
// exactly once: it also sends the Data-Out the target asks for with R2T.
type Call struct {
	s    *Session
	t    *task
	itt  uint32
	op   byte
	lun  [8]byte
	out  []byte
	inN  int
	busy bool
}

// ITT is the command's initiator task tag, for TaskMgmt.
func (c Call) ITT() uint32 { return c.itt }

// EncodeLUN turns a LUN number into the 8-byte SAM LUN structure:
// peripheral addressing below 256, flat space addressing below 16384.
// Larger values are taken to be the 8-byte structure already.
func EncodeLUN(lun uint64) [8]byte {
	switch {
	case lun < 256:
		return [8]byte{0, byte(lun)}
	case lun < 1<<14:
		return [8]byte{0x40 | byte(lun>>8), byte(lun)}
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], lun)
	return b
}

// Do runs one SCSI command and waits for its response. It is Start plus
// Wait; a non-GOOD status is reported in Response, not as an error.
func (s *Session) Do(ctx context.Context, lun uint64, cdb, dataOut, dataIn []byte) (Response, error) {
	c, err := s.start(ctx, lun, cdb, dataOut, dataIn, AttrSimple)
	if err != nil {
		return Response{}, err
	}
	return c.Wait(ctx)
}

// Start sends a SCSI command with its immediate and unsolicited data,
// waiting for a free slot and for the target's command window.
func (s *Session) Start(ctx context.Context, cmd Command) (Call, error) {
	return s.start(ctx, cmd.LUN, cmd.CDB, cmd.DataOut, cmd.DataIn, cmd.Attr)
}

// start is Start with the command's fields as separate arguments: escape
// analysis is not field-sensitive, so a Command would drag the caller's
// CDB array to the heap along with the data buffers.
func (s *Session) start(ctx context.Context, lun uint64, cdb, out, in []byte, attr TaskAttr) (Call, error) {
	if err := checkCommand(cdb, out, in); err != nil {
		return Call{}, err
	}
	lun8 := EncodeLUN(lun)
	t, err := s.acquire(ctx, kindSCSI, lun8, in, len(out) > 0)
	if err != nil {
		return Call{}, fmt.Errorf("SCSI command %#02x: %w", cdb[0], err)
	}
	c := Call{s: s, t: t, itt: t.itt, op: cdb[0], lun: lun8, out: out, inN: len(in), busy: true}
	if err := s.sendCommand(ctx, &c, cdb, out, len(in), attr); err != nil {
		s.release(t)
		return Call{}, fmt.Errorf("SCSI command %#02x: %w", cdb[0], err)
	}
	return c, nil
}

func checkCommand(cdb, out, in []byte) error {
	if len(cdb) == 0 || len(cdb) > MaxCDBLen {
		return fmt.Errorf("initiator: CDB of %d bytes; want 1 to %d", len(cdb), MaxCDBLen)
	}
	if len(out) > 0 && len(in) > 0 {
		return errors.New("initiator: bidirectional commands are not supported")
	}
	if len(out) > 1<<32-1 || len(in) > 1<<32-1 {
		return errors.New("initiator: transfer longer than 4 GiB")
	}
	return nil
}

func (s *Session) sendCommand(ctx context.Context, c *Call, cdb, out []byte, inLen int, attr TaskAttr) error {
	imm, unsol := s.unsolicited(len(out))
	var ahsBuf [pdu.MaxAHSLen]byte
	ahs := extendedCDB(&ahsBuf, cdb)
	err := s.send(ctx, false, func(h *pdu.Header, sn, exp uint32) {
		sc := pdu.SCSICommand{
			Final: unsol == imm, // no unsolicited Data-Out follows
			Read:  inLen > 0, Write: len(out) > 0, Attr: attr.wire(),
			DataLen: imm, LUN: c.lun, ITT: c.itt, EDTL: uint32(inLen + len(out)),
			CmdSN: sn, ExpStatSN: exp,
		}
		copy(sc.CDB[:], cdb)
		sc.Marshal(h)
		s.stamp(c.t, sn)
	}, ahs, out[:imm])
	if err != nil {
		return err
	}
	if unsol > imm {
		// A failure here takes the session down; Wait reports it.
		_ = s.sendDataOut(c.itt, c.lun, pdu.ReservedTag, out[imm:unsol], uint32(imm))
	}
	return nil
}

// unsolicited splits a write of n bytes: imm bytes ride in the command
// PDU, and the first unsol bytes (imm included) go before any R2T.
func (s *Session) unsolicited(n int) (imm, unsol int) {
	p := &s.params
	first := min(n, int(p.FirstBurstLength))
	if p.ImmediateData {
		imm = min(first, s.maxSeg)
	}
	if p.InitialR2T {
		return imm, imm
	}
	return imm, first
}

// extendedCDB lays out the Extended CDB AHS (RFC 7143 11.2.1.3) for the
// CDB bytes beyond the 16 the header holds.
func extendedCDB(buf *[pdu.MaxAHSLen]byte, cdb []byte) []byte {
	if len(cdb) <= 16 {
		return nil
	}
	rest := cdb[16:]
	n := len(rest) + 1 // AHSLength counts the reserved byte
	buf[0], buf[1], buf[2], buf[3] = byte(n>>8), byte(n), 1, 0
	copy(buf[4:], rest)
	end := 4 + len(rest)
	total := end + pdu.PadLen(end)
	clear(buf[end:total])
	return buf[:total]
}

// Wait sends the Data-Out the target solicits and returns the command's
// outcome. If ctx ends first, Wait returns at once and the session aborts
// the command with ABORT TASK; the buffers are no longer touched.
func (c Call) Wait(ctx context.Context) (Response, error) {
	if !c.busy {
		return Response{}, errors.New("initiator: Wait on a Call that Start did not return")
	}
	cancelled := false
	for {
		select {
		case ev := <-c.t.ev:
			if ev.kind == evR2T {
				if !cancelled {
					c.s.answerR2T(&c, ev)
				}
				continue
			}
			return c.s.complete(&c)
		case <-ctx.Done():
			if c.s.abandon(c.t) {
				return Response{}, fmt.Errorf("SCSI command %#02x (ITT %#x): %w", c.op, c.itt, ctx.Err())
			}
			// It finished meanwhile: collect the result after all.
			ctx, cancelled = context.Background(), true
		}
	}
}

// answerR2T sends the Data-Out an R2T asks for. A malformed R2T is a
// protocol error that takes the session down.
func (s *Session) answerR2T(c *Call, ev event) {
	end := uint64(ev.offset) + uint64(ev.length)
	switch {
	case ev.length == 0 || end > uint64(len(c.out)):
		s.fail(protocolErr("R2T for bytes [%d, %d) of a %d-byte write (ITT %#x)", ev.offset, end, len(c.out), c.itt))
	case ev.length > s.params.MaxBurstLength:
		s.fail(protocolErr("R2T for %d bytes exceeds MaxBurstLength %d", ev.length, s.params.MaxBurstLength))
	default:
		_ = s.sendDataOut(c.itt, c.lun, ev.ttt, c.out[ev.offset:end], ev.offset)
	}
}

// complete builds the Response from the PDU that ended the task and frees
// the slot.
func (s *Session) complete(c *Call) (Response, error) {
	t := c.t
	var r Response
	err := t.respErr
	switch t.resp.Opcode() {
	case pdu.OpSCSIResponse:
		var sr pdu.SCSIResponse
		sr.Unmarshal(&t.resp)
		r.Status, r.Overflow, r.Underflow, r.Residual = sr.Status, sr.Overflow, sr.Underflow, int(sr.Residual)
		r.Sense = senseData(t.respData)
		if sr.Response != 0 && err == nil {
			err = fmt.Errorf("target failure (iSCSI response %#02x)", sr.Response)
		}
	case pdu.OpDataIn:
		var d pdu.DataIn
		d.Unmarshal(&t.resp)
		r.Status, r.Overflow, r.Underflow, r.Residual = d.Status, d.Overflow, d.Underflow, int(d.Residual)
	}
	r.DataInLen = t.inLen
	s.release(t)
	if err == nil {
		err = checkDataIn(&r, c.inN)
	}
	if err != nil {
		return r, fmt.Errorf("SCSI command %#02x (ITT %#x): %w", c.op, c.itt, err)
	}
	return r, nil
}

// checkDataIn catches a target whose Data-In does not add up to what its
// status claims: a GOOD read must deliver exactly EDTL minus the residual.
func checkDataIn(r *Response, edtl int) error {
	if r.Status != 0 || edtl == 0 {
		return nil
	}
	want := edtl
	if r.Underflow {
		want -= r.Residual
	}
	if r.DataInLen != want {
		return protocolErr("%d bytes of Data-In for EDTL %d with underflow=%v residual %d", r.DataInLen, edtl, r.Underflow, r.Residual)
	}
	return nil
}

// senseData extracts sense bytes from a SCSI Response data segment, where
// they follow a two-byte SenseLength.
func senseData(data []byte) []byte {
	if len(data) < 2 {
		return nil
	}
	n := int(binary.BigEndian.Uint16(data))
	if n == 0 {
		return nil
	}
	return data[2:min(2+n, len(data))]
}
