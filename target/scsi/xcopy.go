package scsi

import (
	"bytes"
	"math"
	"sync"
)

// EXTENDED COPY (LID1) with block device to block device segments: the LU
// receiving the command is the copy manager (SPC-4 6.4), and the copy
// targets are LUs of the same target, named by Identification Descriptor
// CSCD descriptors (type E4h) carrying a designator of VPD page 83h.
//
// Copy targets are resolved through Command.View, the LUNs the I_T nexus
// may address after LUN masking, and through nothing else: an initiator
// reaches through EXTENDED COPY exactly the LUs it could READ and WRITE
// itself. (CVE-2020-28374 was LIO looking the designator up among every
// device of the target, which let any initiator copy from and to LUs
// outside its ACL.) Without a View (LU.Execute called directly) the only
// copy target is the LU itself. The same nexus's reservations and the
// destination's write protection apply as if it read the source and wrote
// the destination directly.
//
// The parameter list is checked as a whole before any data moves:
//
//  1. Header and descriptor structure: ILLEGAL REQUEST (PARAMETER LIST
//     LENGTH ERROR, INVALID FIELD IN PARAMETER LIST with a field pointer,
//     UNSUPPORTED TARGET/SEGMENT DESCRIPTOR TYPE CODE, TOO MANY
//     TARGET/SEGMENT DESCRIPTORS, INLINE DATA LENGTH EXCEEDED).
//  2. Copy targets: COPY ABORTED with COPY TARGET DEVICE NOT REACHABLE for
//     a designator no LU of the View carries (or a null device), UNREACHABLE
//     COPY TARGET for a segment naming a CSCD descriptor that is not in the
//     list, INCORRECT COPY TARGET DEVICE TYPE for a non-block CSCD, and NO
//     ADDITIONAL SENSE for a segment beyond the end of its source or
//     destination; the COMMAND-SPECIFIC INFORMATION field holds the number
//     of the segment (libiscsi's ExtendedCopy tests accept these codes).
//  3. Access: RESERVATION CONFLICT, DATA PROTECT or NOT READY exactly as a
//     READ of each source and a WRITE of each destination would get.
//
// Then the segments are copied in order, 1 MiB at a time: each chunk is
// read under the source's range lock taken shared and written under the
// destination's taken exclusively (rangelock.go), so COMPARE AND WRITE and
// the other atomic commands see a chunk either copied or not. Before each
// chunk the access checks are repeated (a few atomic loads while nothing is
// reserved): a PREEMPT AND ABORT on a copy target only aborts the tasks
// addressed to that LU, so a copy another LU runs stops here. Overlapping
// ranges of one LU are copied back to front when the destination lies
// above the source. An error while copying ends the command with COPY
// ABORTED, the segment number and, if part of the segment was written, the
// residual in destination blocks in INFORMATION.
//
// Inline data, held data, stream devices and the other segment and CSCD
// descriptor types are not supported; VPD page 8Fh and RECEIVE COPY
// RESULTS (copyresults.go) say so.

// Operation codes and service actions (SPC-4 names the opcodes THIRD-PARTY
// COPY OUT and THIRD-PARTY COPY IN).
const (
	opExtendedCopy       = 0x83
	opReceiveCopyResults = 0x84

	saExtendedCopyLID1 = 0x00 // EXTENDED COPY(LID1)
	saCopyStatus       = 0x00 // RECEIVE COPY RESULTS: COPY STATUS(LID1)
	saOperatingParams  = 0x03 // RECEIVE COPY RESULTS: COPY OPERATING PARAMETERS
)

// Descriptor type codes supported.
const (
	segBlockToBlock    = 0x02 // block device to block device segment descriptor
	cscdIdentification = 0xe4 // Identification Descriptor CSCD descriptor
)

// Limits, reported by RECEIVE COPY RESULTS (OPERATING PARAMETERS) and VPD
// page 8Fh. A full list of descriptors is exactly the maximum descriptor
// list length, so a list longer than that fails with PARAMETER LIST LENGTH
// ERROR before its descriptors are counted, and one descriptor too many of
// either kind fails with TOO MANY ... DESCRIPTORS.
const (
	xcHeaderLen  = 16
	xcCSCDLen    = 32
	xcSegmentLen = 28

	xcMaxCSCDs       = 16
	xcMaxSegments    = 16
	xcMaxDescListLen = xcMaxCSCDs*xcCSCDLen + xcMaxSegments*xcSegmentLen
	// xcMaxSegmentBytes bounds one segment (and, with xcMaxSegments, one
	// command) so an EXTENDED COPY completes well within its timeout.
	xcMaxSegmentBytes = 32 << 20
	xcMaxInlineData   = 0
	// xcMaxConcurrent is reported as the number of copies the copy manager
	// runs at once; copies are not queued, so it only guides initiators.
	xcMaxConcurrent = 64
	xcChunkBytes    = 1 << 20
	xcTimeout       = 60 // seconds, the recommended timeout
)

// ASC/ASCQ pairs of the copy manager.
const (
	ascOperationInProgress      uint16 = 0x0016
	ascUnreachableCopyTarget    uint16 = 0x0804
	ascCopyTargetNotReachable   uint16 = 0x0d02
	ascIncorrectCopyTargetType  uint16 = 0x0d03
	ascTooManyCSCDs             uint16 = 0x2606
	ascUnsupportedCSCDType      uint16 = 0x2607
	ascTooManySegments          uint16 = 0x2608
	ascUnsupportedSegmentType   uint16 = 0x2609
	ascUnexpectedInexactSegment uint16 = 0x260a
	ascInlineDataLengthExceeded uint16 = 0x260b
)

// List ID usage values (SPC-4 table 125).
const (
	listIDHold    = 0 // hold the status for RECEIVE COPY RESULTS
	listIDNoHold  = 2 // unique list identifier, status need not be held
	listIDNoCheck = 3 // no list identifier
)

var errOperationInProgress = illegal(ascOperationInProgress)

// paramErr is ILLEGAL REQUEST with code and a field pointer into the
// parameter list.
func paramErr(code uint16, field int) Sense {
	s := invalidParam(field, -1)
	s.ASC, s.ASCQ = byte(code>>8), byte(code)
	return s
}

// copyAborted is COPY ABORTED with code, and the segment being processed in
// COMMAND-SPECIFIC INFORMATION when segment >= 0.
func copyAborted(code uint16, segment int) Sense {
	s := newSense(KeyCopyAborted, code)
	if segment >= 0 {
		s.CSI, s.HasCSI = uint64(segment), true
	}
	return s
}

// xcList is a parameter list that passed the structural checks.
type xcList struct {
	id    byte
	usage byte // LIST ID USAGE
	cscds []xcCSCD
	segs  []xcSegDesc
}

// xcCSCD is one Identification Descriptor CSCD descriptor.
type xcCSCD struct {
	off        int // in the parameter list, for field pointers
	nul        bool
	pdt        byte
	codeSet    byte
	assoc      byte
	desigType  byte
	designator []byte
	blockLen   uint32 // DISK BLOCK LENGTH (peripheral device type 0)
}

// xcSegDesc is one block device to block device segment descriptor.
type xcSegDesc struct {
	off            int
	dc             bool // NUMBER OF BLOCKS counts destination blocks
	src, dst       uint16
	blocks         uint16
	srcLBA, dstLBA uint64
}

// parseXCopy checks the structure of an EXTENDED COPY(LID1) parameter list
// (stage 1). p is the whole parameter list.
func parseXCopy(p []byte) (*xcList, error) {
	if len(p) < xcHeaderLen {
		return nil, errParamListLength
	}
	l := &xcList{id: p[0], usage: p[1] >> 3 & 3}
	if bad := p[1] & 0xc0; bad != 0 {
		return nil, invalidParam(1, highBit(bad))
	}
	if l.usage == 1 {
		return nil, invalidParam(1, 4) // reserved LIST ID USAGE
	}
	tdll := int64(getU16(p[2:]))
	sdll := int64(getU32(p[8:]))
	inline := int64(getU32(p[12:]))
	if tdll+sdll > xcMaxDescListLen || xcHeaderLen+tdll+sdll+inline > int64(len(p)) {
		return nil, errParamListLength
	}
	if inline > xcMaxInlineData {
		return nil, paramErr(ascInlineDataLengthExceeded, 12)
	}

	end := xcHeaderLen + int(tdll)
	for off := xcHeaderLen; off < end; off += xcCSCDLen {
		if p[off] != cscdIdentification {
			return nil, paramErr(ascUnsupportedCSCDType, off)
		}
		if len(l.cscds) == xcMaxCSCDs {
			return nil, illegal(ascTooManyCSCDs)
		}
		if off+xcCSCDLen > end {
			return nil, invalidParam(2, -1) // list length not a whole descriptor
		}
		d := p[off : off+xcCSCDLen]
		// The LU ID TYPE field (byte 1, bits 7-6) says how CSCD descriptors
		// with an LU IDENTIFIER field carry the LU; an identification
		// descriptor has none, and SPC-4 has it ignored (libiscsi's
		// ValidTgtDescr expects a reserved value to be accepted).
		//
		// Bytes 8-23 hold the designator (the rest of the designation
		// descriptor, and reserved bytes, are not checked: initiators such
		// as libiscsi leave them uninitialised).
		n := int(d[7])
		if n > 16 {
			return nil, invalidParam(off+7, -1)
		}
		l.cscds = append(l.cscds, xcCSCD{
			off: off, nul: d[1]&0x20 != 0, pdt: d[1] & 0x1f,
			codeSet: d[4] & 0x0f, assoc: d[5] >> 4 & 3, desigType: d[5] & 0x0f,
			designator: d[8 : 8+n], blockLen: getU24(d[29:]),
		})
	}

	off, send := end, end+int(sdll)
	for off < send {
		if off+4 > send {
			return nil, invalidParam(8, -1)
		}
		if p[off] != segBlockToBlock {
			return nil, paramErr(ascUnsupportedSegmentType, off)
		}
		if getU16(p[off+2:]) != xcSegmentLen-4 {
			return nil, invalidParam(off+2, -1)
		}
		if off+xcSegmentLen > send {
			return nil, invalidParam(8, -1)
		}
		if len(l.segs) == xcMaxSegments {
			return nil, illegal(ascTooManySegments)
		}
		d := p[off : off+xcSegmentLen]
		if bad := d[1] & 0xfc; bad != 0 {
			return nil, invalidParam(off+1, highBit(bad))
		}
		// CAT (bit 0) only matters for inexact segments, which are refused.
		l.segs = append(l.segs, xcSegDesc{
			off: off, dc: d[1]&0x02 != 0,
			src: getU16(d[4:]), dst: getU16(d[6:]), blocks: getU16(d[10:]),
			srcLBA: getU64(d[12:]), dstLBA: getU64(d[20:]),
		})
		off += xcSegmentLen
	}
	return l, nil
}

// xcTarget is a resolved copy target.
type xcTarget struct {
	lu  *LU
	st  *luState
	pdt byte
	src bool // read by some segment
	dst bool // written by some segment
}

// xcSegment is a segment ready to copy.
type xcSegment struct {
	src, dst       *xcTarget
	srcOff, dstOff int64 // bytes
	n              int64 // bytes
}

// extendedCopy is EXTENDED COPY(LID1).
func extendedCopy(r request) error {
	paramLen := int64(getU32(r.cdb[10:]))
	r.res.Transfer = int(min(paramLen, int64(math.MaxInt)))
	if paramLen == 0 {
		return nil // no parameter list: nothing to copy, not an error
	}
	if int64(len(r.cmd.DataOut)) < paramLen {
		return errParamListLength // the parameter list did not arrive whole
	}
	l, err := parseXCopy(r.cmd.DataOut[:paramLen])
	if err != nil {
		return err
	}
	var e *copyEntry
	if l.usage != listIDNoCheck {
		if e, err = r.lu.copies.begin(nexusKey(r.cmd.Nexus), l.id, l.usage == listIDHold); err != nil {
			return err
		}
	}
	err = r.runCopy(l, e)
	if e != nil {
		// Status is kept only for copies that got as far as the copy
		// targets: a list refused as malformed never started.
		s, ok := err.(Sense)
		r.lu.copies.end(e, err != nil, err == nil || ok && s.Key == KeyCopyAborted)
	}
	return err
}

func (r request) runCopy(l *xcList, e *copyEntry) error {
	targets, err := r.copyTargets(l)
	if err != nil {
		return err
	}
	segs, err := segmentsOf(l, targets)
	if err != nil {
		return err
	}
	if err := r.checkCopyAccess(targets); err != nil {
		return err
	}
	buf := xcopyPool.Get().(*[]byte)
	defer xcopyPool.Put(buf)
	var total uint64
	for i := range segs {
		sg := &segs[i]
		done, err := r.copySegment(sg, *buf)
		total += uint64(done)
		if e != nil {
			r.lu.copies.progress(e, i, total)
		}
		if err == errTransitioning {
			// This node may have lost the LU: the initiator retries the
			// copy on a path to the new owner.
			return err
		}
		if err != nil {
			s := copyAborted(ascNoAdditionalSense, i)
			if done > 0 {
				s.Info, s.HasInfo = uint64((sg.n-done)>>sg.dst.st.shift), true
			}
			return s
		}
		if e != nil {
			r.lu.copies.progress(e, i+1, total)
		}
	}
	return nil
}

// copyTargets resolves every CSCD descriptor to an LU the nexus may access
// (stage 2).
func (r request) copyTargets(l *xcList) ([]xcTarget, error) {
	targets := make([]xcTarget, len(l.cscds))
	for i := range l.cscds {
		c := &l.cscds[i]
		var lu *LU
		if !c.nul { // null devices are not supported
			lu = r.findCopyTarget(c)
		}
		if lu == nil {
			return nil, copyAborted(ascCopyTargetNotReachable, -1)
		}
		st := r.st
		if lu != r.lu {
			st = lu.state.Load()
		}
		if c.pdt == 0 && c.blockLen != st.blockSize {
			return nil, invalidParam(c.off+29, -1) // DISK BLOCK LENGTH
		}
		targets[i] = xcTarget{lu: lu, st: st, pdt: c.pdt}
	}
	return targets, nil
}

// findCopyTarget returns the LU of the nexus's View that carries c's
// designator, or nil. This lookup is the access control of EXTENDED COPY:
// it must never consult anything wider than the View.
func (r request) findCopyTarget(c *xcCSCD) *LU {
	if c.assoc != assocLU {
		return nil // a port or target designator names no LU
	}
	v := r.cmd.View
	if v == nil {
		if designates(r.st, c) {
			return r.lu
		}
		return nil
	}
	for _, lun := range v.LUNs() {
		lu := v.LU(lun)
		if lu == nil {
			continue
		}
		st := lu.state.Load()
		if lu == r.lu {
			st = r.st
		}
		if designates(st, c) {
			return lu
		}
	}
	return nil
}

// designates reports whether c carries one of the LU designators VPD page
// 83h reports for st: the NAA designator, or the T10 vendor ID designator
// when it fits the 16 bytes of an identification descriptor.
func designates(st *luState, c *xcCSCD) bool {
	switch {
	case c.desigType == typeNAA && c.codeSet == codeBinary:
		return bytes.Equal(c.designator, st.naa[:])
	case c.desigType == typeT10Vendor && c.codeSet == codeASCII:
		if len(c.designator) != 8+len(st.cfg.DeviceID) {
			return false
		}
		var vendor [8]byte
		padASCII(vendor[:], st.cfg.VendorID)
		return bytes.Equal(c.designator[:8], vendor[:]) && string(c.designator[8:]) == st.cfg.DeviceID
	}
	return false
}

// segmentsOf checks every segment against its copy targets (stage 2).
func segmentsOf(l *xcList, targets []xcTarget) ([]xcSegment, error) {
	segs := make([]xcSegment, len(l.segs))
	for i := range l.segs {
		d := &l.segs[i]
		if int(d.src) >= len(targets) || int(d.dst) >= len(targets) {
			return nil, copyAborted(ascUnreachableCopyTarget, i)
		}
		src, dst := &targets[d.src], &targets[d.dst]
		if src.pdt != 0 || dst.pdt != 0 {
			return nil, copyAborted(ascIncorrectCopyTargetType, i)
		}
		unit := src.st.blockSize
		if d.dc {
			unit = dst.st.blockSize
		}
		n := int64(d.blocks) * int64(unit)
		if n%int64(src.st.blockSize) != 0 || n%int64(dst.st.blockSize) != 0 {
			return nil, paramErr(ascUnexpectedInexactSegment, d.off+10)
		}
		if n > xcMaxSegmentBytes {
			return nil, invalidParam(d.off+10, -1)
		}
		if !inRange(src.st, d.srcLBA, uint64(n)>>src.st.shift) || !inRange(dst.st, d.dstLBA, uint64(n)>>dst.st.shift) {
			return nil, copyAborted(ascNoAdditionalSense, i)
		}
		src.src, dst.dst = true, true
		segs[i] = xcSegment{
			src: src, dst: dst, n: n,
			srcOff: int64(d.srcLBA) << src.st.shift, dstOff: int64(d.dstLBA) << dst.st.shift,
		}
	}
	return segs, nil
}

func inRange(st *luState, lba, blocks uint64) bool {
	return lba <= st.blocks && blocks <= st.blocks-lba
}

// checkCopyAccess refuses a copy the nexus could not do itself (stage 3):
// a source it may not read or a destination it may not write, because of a
// reservation, write protection or the medium's state.
func (r request) checkCopyAccess(targets []xcTarget) error {
	for i := range targets {
		t := &targets[i]
		if !t.src && !t.dst {
			continue
		}
		// A copy target owned by another node is not this node's to read
		// or write: its writes would bypass the owner (and its replicas),
		// its reads miss what the owner has in flight. The initiator
		// falls back to reading and writing itself, through each LU's
		// owner.
		if !t.lu.executesHere() {
			return copyAborted(ascCopyTargetNotReachable, -1)
		}
		// The reservation and readiness rules of the direct command the
		// copy stands for.
		c := r.lu.table.find(opRead16, 0, false)
		if t.dst {
			c = r.lu.table.find(opWrite16, 0, false)
		}
		if err := r.stillAccessible(t, c); err != nil {
			return err
		}
		if err := t.lu.checkReady(c.flags); err != nil {
			return err
		}
	}
	return nil
}

// xcopyPool holds the bounded copy buffers.
var xcopyPool = sync.Pool{New: func() any { b := make([]byte, xcChunkBytes); return &b }}

// copySegment moves a segment through buf and returns the bytes written.
// Before each chunk the copy targets are checked again, so a reservation
// another nexus takes (PREEMPT AND ABORT aborts only the tasks addressed
// to its LU, not a copy another LU is running) or write protection
// switched on stops the copy within a chunk.
func (r request) copySegment(sg *xcSegment, buf []byte) (int64, error) {
	src, dst := sg.src, sg.dst
	rd := r.lu.table.find(opRead16, 0, false)
	wr := r.lu.table.find(opWrite16, 0, false)
	durable := !dst.lu.wce.Load()
	// Like memmove: copy back to front when the destination overlaps the
	// end of the source on the same LU.
	backward := src.lu == dst.lu && sg.dstOff > sg.srcOff && sg.dstOff < sg.srcOff+sg.n
	var done int64
	for done < sg.n {
		c := min(int64(len(buf)), sg.n-done)
		pos := done
		if backward {
			pos = sg.n - done - c
		}
		chunk := buf[:c]
		if err := r.stillAccessible(src, rd); err != nil {
			return done, err
		}
		if err := r.stillAccessible(dst, wr); err != nil {
			return done, err
		}
		h := src.lu.rl.acquire(sg.srcOff+pos, c, false)
		err := src.st.dev.ReadAt(chunk, sg.srcOff+pos)
		h.release()
		if err != nil {
			return done, readError(err)
		}
		h = dst.lu.rl.acquire(sg.dstOff+pos, c, true)
		err = dst.st.dev.WriteAt(chunk, sg.dstOff+pos, durable)
		h.release()
		if err != nil {
			return done, writeError(err)
		}
		done += c
	}
	return done, nil
}

// stillAccessible is the per-chunk part of checkCopyAccess: it costs a few
// atomic loads while no reservation is held.
func (r request) stillAccessible(t *xcTarget, c *command) error {
	if t.lu.closed.Load() {
		return errClosed
	}
	if !t.lu.executesHere() {
		// The target moved to another node during the copy: the
		// initiator retries, and meets the check above.
		return errTransitioning
	}
	if err := t.lu.checkReservation(c, r.cmd.Nexus, nil); err != nil {
		return err
	}
	if c.flags&flagConflictWE != 0 {
		return t.lu.writeProtected(t.lu.state.Load())
	}
	return nil
}
