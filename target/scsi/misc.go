package scsi

import "github.com/hatarget/hatarget/alua"

// testUnitReady has nothing left to check: an ejected medium was reported
// by the readiness check, and the LU cannot be stopped.
func testUnitReady(r request) error { return nil }

// requestSense returns (and clears) the oldest unit attention, else MEDIUM
// NOT PRESENT for an ejected medium, else NO SENSE. DESC selects the format
// regardless of D_SENSE (SPC-4 6.39).
func requestSense(r request) error {
	desc := r.cdb[1]&0x01 != 0
	var s Sense
	if code, ok := r.lu.popUA(r.ns); ok {
		s = newSense(KeyUnitAttention, code)
	} else if r.lu.san.running.Load() {
		s = r.lu.san.inProgress()
	} else if r.lu.ejected.Load() {
		s = errNoMedium
	}
	var buf [SenseBufLen]byte
	n := s.encode(buf[:], desc)
	respond(r.cmd, r.res, buf[:n], int(r.cdb[4]))
	return nil
}

// startStopUnit loads and ejects removable media. Stopping (START=0 without
// LOEJ) only flushes the cache unless NO_FLUSH is set: the LU keeps serving,
// as SCST and LIO do and as libiscsi's StartStopUnit.NoLoej test expects.
// SBC-3's stopped power condition (NOT READY, INITIALIZING COMMAND REQUIRED
// until START UNIT) would let one initiator halt I/O for every other host
// sharing the LU, which a clustered target must not allow. IMMED needs no
// handling: everything completes before the status is returned.
func startStopUnit(r request) error {
	b4 := r.cdb[4]
	if b4>>4 != 0 {
		// A power condition: there is no power to manage, and SBC-3 5.25 says
		// START and LOEJ are ignored in this case.
		return nil
	}
	noFlush, loej, start := b4&0x04 != 0, b4&0x02 != 0, b4&0x01 != 0
	if loej && !r.st.cfg.Removable {
		return invalidCDB(4, 1)
	}
	if !start && !noFlush {
		if err := r.st.dev.Flush(); err != nil {
			return writeError(err)
		}
	}
	lu := r.lu
	lu.mu.Lock()
	defer lu.mu.Unlock()
	if loej {
		if lu.prevents > 0 {
			return errRemovalPrevent
		}
		lu.ejected.Store(!start)
	}
	return nil
}

// preventAllow records PREVENT MEDIUM REMOVAL per I_T nexus (SPC-4 6.14);
// any nexus preventing it blocks ejection. On fixed media it is accepted and
// ignored.
func preventAllow(r request) error {
	prevent := r.cdb[4] & 0x03
	if prevent > 1 {
		return invalidCDB(4, 1) // medium changer values
	}
	if !r.st.cfg.Removable {
		return nil
	}
	lu := r.lu
	lu.mu.Lock()
	defer lu.mu.Unlock()
	if on := prevent == 1; on != r.ns.prevent {
		r.ns.prevent = on
		if on {
			lu.prevents++
		} else {
			lu.prevents--
		}
	}
	return nil
}

// Reporting options of REPORT SUPPORTED OPERATION CODES.
const (
	rsocAll      = 0
	rsocOpcode   = 1
	rsocOpcodeSA = 2
)

func reportOpcodes(r request) error {
	rctd := r.cdb[2]&0x80 != 0
	op, sa := r.cdb[3], getU16(r.cdb[4:])
	alloc := int(getU32(r.cdb[6:]))
	t := r.lu.table
	var data []byte
	switch r.cdb[2] & 0x07 {
	case rsocAll:
		data = allCommandDescriptors(t, r.st, rctd)
	case rsocOpcode:
		if t.byOp[op].sas != nil {
			return invalidCDB(2, 2) // the opcode needs a service action
		}
		data = oneCommandDescriptor(offered(t.find(op, 0, false), r.st), rctd)
	case rsocOpcodeSA:
		if t.byOp[op].cmd != nil {
			return invalidCDB(2, 2) // the opcode has no service actions
		}
		data = oneCommandDescriptor(offered(t.find(op, sa, true), r.st), rctd)
	default:
		return invalidCDB(2, 2)
	}
	respond(r.cmd, r.res, data, alloc)
	return nil
}

// offered returns c unless the LU does not offer it (command.avail).
func offered(c *command, st *luState) *command {
	if c != nil && c.avail != nil && !c.avail(st) {
		return nil
	}
	return c
}

func allCommandDescriptors(t *dispatchTable, st *luState, rctd bool) []byte {
	data := make([]byte, 4, 4+len(t.list)*20)
	for i := range t.list {
		c := &t.list[i]
		if offered(c, st) == nil {
			continue
		}
		var d [8]byte
		d[0] = c.opcode
		putU16(d[2:], uint16(c.sa))
		if rctd {
			d[5] |= 0x02 // CTDP
		}
		if c.hasSA {
			d[5] |= 0x01 // SERVACTV
		}
		putU16(d[6:], uint16(len(c.usage)))
		data = append(data, d[:]...)
		if rctd {
			data = appendTimeouts(data, c)
		}
	}
	putU32(data, uint32(len(data)-4))
	return data
}

func oneCommandDescriptor(c *command, rctd bool) []byte {
	if c == nil {
		return []byte{0, 0x01, 0, 0} // SUPPORT 001b: not supported
	}
	data := make([]byte, 4, 4+len(c.usage)+12)
	data[1] = 0x03 // SUPPORT 011b: supported as the standard says
	if rctd {
		data[1] |= 0x80 // CTDP
	}
	putU16(data[2:], uint16(len(c.usage)))
	data = append(data, c.usage...)
	if rctd {
		data = appendTimeouts(data, c)
	}
	return data
}

// appendTimeouts adds a command timeouts descriptor: no nominal time is
// promised, only the recommended timeout.
func appendTimeouts(b []byte, c *command) []byte {
	var d [12]byte
	putU16(d[0:], 0x0a)
	putU32(d[8:], c.timeout)
	return append(b, d[:]...)
}

// Task management functions the iSCSI layer implements (SPC-4 6.36): ABORT
// TASK, ABORT TASK SET, CLEAR TASK SET, LOGICAL UNIT RESET, TARGET RESET and
// I_T NEXUS RESET; not CLEAR ACA, QUERY TASK or WAKEUP.
const (
	tmfByte0 = 0x80 | 0x40 | 0x10 | 0x08 | 0x02 // ATS ATSS CTSS LURS TRS
	tmfByte1 = 0x01                             // ITNRS
)

func reportTMFunctions(r request) error {
	repd := r.cdb[2]&0x80 != 0
	alloc := int(getU32(r.cdb[6:]))
	if alloc < 4 {
		return invalidCDB(6, -1)
	}
	var b [16]byte
	b[0], b[1] = tmfByte0, tmfByte1
	n := 4
	if repd {
		b[3] = 0x0c // ADDITIONAL DATA LENGTH of the extended format
		n = 16
	}
	respond(r.cmd, r.res, b[:n], alloc)
	return nil
}

// reportTargetPortGroups lists every port group of the LU with its ALUA
// state, in the format the CDB asks for (SPC-4 6.36).
func reportTargetPortGroups(r request) error {
	format := r.cdb[1] >> 5
	if format > 1 {
		return invalidCDB(1, 7)
	}
	alloc := int(getU32(r.cdb[6:]))
	data := alua.ReportTargetPortGroups(r.st.portGroups(r.cmd.Nexus), format == 1, implicitTransitionSecs, r.st.supportedStates())
	respond(r.cmd, r.res, data, alloc)
	return nil
}
