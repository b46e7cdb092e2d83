package scsi

import "sync"

// RECEIVE COPY RESULTS (SPC-4 6.18) with the COPY STATUS(LID1) and COPY
// OPERATING PARAMETERS service actions, the status the copy manager keeps
// for it, and the Third-party Copy VPD page (SPC-4 7.8.17).
//
// Copies run synchronously inside their EXTENDED COPY command, so a status
// is "in progress" only while that command executes (another command of the
// same nexus can ask), then "completed without errors" or "completed with
// errors". Status is kept per I_T nexus and list identifier on the LU that
// received the EXTENDED COPY, for lists with LIST ID USAGE 00b and only if
// the copy got past the parameter list checks; COPY STATUS of a completed
// copy discards it, as does a new EXTENDED COPY with the same list
// identifier. At most xcHeldStatuses completed statuses are kept per LU,
// the oldest are forgotten first. COPY FAILURE DETAILS and COPY DATA are
// not supported: nothing but the sense data would be held, and that was
// already returned with the command.

// xcHeldStatuses bounds the completed copy statuses an LU keeps.
const xcHeldStatuses = 64

// Copy manager status (COPY STATUS(LID1)).
const (
	copyInProgress    = 0x00
	copyCompletedGood = 0x01
	copyCompletedErr  = 0x02
)

// copyResults is an LU's table of copy statuses; the zero value is empty.
type copyResults struct {
	mu   sync.Mutex
	list []*copyEntry // oldest first
}

// copyEntry is the status of one EXTENDED COPY; guarded by copyResults.mu.
type copyEntry struct {
	nexus    string // Nexus.Key
	id       byte
	hold     bool // LIST ID USAGE 00b: keep the status once complete
	running  bool
	failed   bool
	segments int    // segments processed
	bytes    uint64 // bytes written
}

// begin registers a copy about to run. A copy still running with the same
// nexus and list identifier makes it fail with OPERATION IN PROGRESS; a
// completed one's status is replaced.
func (t *copyResults) begin(nexus string, id byte, hold bool) (*copyEntry, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if i := t.indexLocked(nexus, id); i >= 0 {
		if t.list[i].running {
			return nil, errOperationInProgress
		}
		t.removeLocked(i)
	}
	e := &copyEntry{nexus: nexus, id: id, hold: hold, running: true}
	t.list = append(t.list, e)
	return e, nil
}

func (t *copyResults) progress(e *copyEntry, segments int, bytes uint64) {
	t.mu.Lock()
	e.segments, e.bytes = segments, bytes
	t.mu.Unlock()
}

// end records the outcome of e; keep says whether its status is worth
// holding (the copy was not refused outright).
func (t *copyResults) end(e *copyEntry, failed, keep bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e.running, e.failed = false, failed
	if !keep || !e.hold {
		for i, x := range t.list {
			if x == e {
				t.removeLocked(i)
				break
			}
		}
	}
	completed := 0
	for _, x := range t.list {
		if !x.running {
			completed++
		}
	}
	for i := 0; completed > xcHeldStatuses && i < len(t.list); {
		if t.list[i].running {
			i++
			continue
		}
		t.removeLocked(i)
		completed--
	}
}

// status returns a copy of the status of the nexus's list id. With
// consume, a completed copy's status is discarded.
func (t *copyResults) status(nexus string, id byte, consume bool) (copyEntry, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := t.indexLocked(nexus, id)
	if i < 0 {
		return copyEntry{}, false
	}
	e := *t.list[i]
	if consume && !e.running {
		t.removeLocked(i)
	}
	return e, true
}

func (t *copyResults) indexLocked(nexus string, id byte) int {
	for i, e := range t.list {
		if e.nexus == nexus && e.id == id {
			return i
		}
	}
	return -1
}

func (t *copyResults) removeLocked(i int) {
	copy(t.list[i:], t.list[i+1:])
	t.list[len(t.list)-1] = nil
	t.list = t.list[:len(t.list)-1]
}

const copyStatusLen = 12

func receiveCopyResults(r request) error {
	alloc := int(getU32(r.cdb[10:]))
	var data []byte
	switch r.cdb[1] & 0x1f {
	case saCopyStatus:
		e, ok := r.lu.copies.status(nexusKey(r.cmd.Nexus), r.cdb[2], alloc >= copyStatusLen)
		if !ok {
			return invalidCDB(2, -1) // no such list identifier
		}
		data = copyStatusData(&e)
	case saOperatingParams:
		data = operatingParameters(r.st)
	}
	respond(r.cmd, r.res, data, alloc)
	return nil
}

// copyStatusData encodes COPY STATUS(LID1) parameter data.
func copyStatusData(e *copyEntry) []byte {
	b := make([]byte, copyStatusLen)
	putU32(b, copyStatusLen-4)
	switch {
	case e.running:
		b[4] = copyInProgress
	case e.failed:
		b[4] = copyCompletedErr
	default:
		b[4] = copyCompletedGood
	}
	putU16(b[5:], uint16(e.segments))
	// TRANSFER COUNT UNITS: 00h bytes, 01h KiB, 02h MiB and so on.
	units, count := byte(0), e.bytes
	for count > 0xffffffff {
		count >>= 10
		units++
	}
	b[7] = units
	putU32(b[8:], uint32(count))
	return b
}

// operatingParameters encodes COPY OPERATING PARAMETERS.
func operatingParameters(st *luState) []byte {
	codes := []byte{segBlockToBlock, cscdIdentification}
	b := make([]byte, 44+len(codes))
	putU32(b, uint32(len(b)-4))
	b[4] = 0x01 // SNLID: LIST ID USAGE 11b is supported
	putU16(b[8:], xcMaxCSCDs)
	putU16(b[10:], xcMaxSegments)
	putU32(b[12:], xcMaxDescListLen)
	putU32(b[16:], xcMaxSegmentBytes)
	putU32(b[20:], xcMaxInlineData)
	// HELD DATA LIMIT and MAXIMUM STREAM DEVICE TRANSFER SIZE stay zero: no
	// held data, no stream devices.
	putU16(b[34:], xcMaxConcurrent) // TOTAL CONCURRENT COPIES
	b[36] = xcMaxConcurrent         // MAXIMUM CONCURRENT COPIES
	b[37] = byte(st.shift)          // DATA SEGMENT GRANULARITY: one block
	// INLINE and HELD DATA GRANULARITY stay zero.
	b[43] = byte(len(codes))
	copy(b[44:], codes)
	return b
}

// Third-party copy descriptor types of VPD page 8Fh.
const (
	tpcSupportedCommands    = 0x0001
	tpcParameterData        = 0x0004
	tpcSupportedDescriptors = 0x0008
	tpcSupportedCSCDIDs     = 0x000c
	tpcGeneralCopyOps       = 0x8001
)

// thirdPartyCopyPage builds VPD page 8Fh with the descriptors SPC-4
// requires of a copy manager supporting EXTENDED COPY(LID1).
func thirdPartyCopyPage(st *luState) []byte {
	var body []byte
	cmds := []byte{
		opExtendedCopy, 1, saExtendedCopyLID1,
		opReceiveCopyResults, 2, saCopyStatus, saOperatingParams,
	}
	body = appendTPCDescriptor(body, tpcSupportedCommands, append([]byte{byte(len(cmds))}, cmds...))

	params := make([]byte, 0x1c)
	putU16(params[4:], xcMaxCSCDs)
	putU16(params[6:], xcMaxSegments)
	putU32(params[8:], xcMaxDescListLen)
	putU32(params[12:], xcMaxInlineData)
	body = appendTPCDescriptor(body, tpcParameterData, params)

	body = appendTPCDescriptor(body, tpcSupportedDescriptors, []byte{2, segBlockToBlock, cscdIdentification})
	// No CSCD descriptor IDs beyond the indexes into the CSCD list.
	body = appendTPCDescriptor(body, tpcSupportedCSCDIDs, []byte{0, 0})

	gen := make([]byte, 0x20)
	putU32(gen[0:], xcMaxConcurrent)   // TOTAL CONCURRENT COPIES
	putU32(gen[4:], xcMaxConcurrent)   // MAXIMUM IDENTIFIED CONCURRENT COPIES
	putU32(gen[8:], xcMaxSegmentBytes) // MAXIMUM SEGMENT LENGTH
	gen[12] = byte(st.shift)           // DATA SEGMENT GRANULARITY
	body = appendTPCDescriptor(body, tpcGeneralCopyOps, gen)
	return vpdPage(vpdThirdPartyCopy, body)
}

// appendTPCDescriptor appends a third-party copy descriptor, padding its
// contents to a multiple of four bytes.
func appendTPCDescriptor(b []byte, typ uint16, contents []byte) []byte {
	n := (len(contents) + 3) &^ 3
	var h [4]byte
	putU16(h[:], typ)
	putU16(h[2:], uint16(n))
	b = append(b, h[:]...)
	b = append(b, contents...)
	return append(b, make([]byte, n-len(contents))...)
}
