package scsi

import (
	"cmp"
	"slices"
)

// The dispatch table is the single description of every command this package
// executes. Execute, the reserved-bit checks and REPORT SUPPORTED OPERATION
// CODES all read it, so what is reported cannot drift from what is done.

// Operation codes.
const (
	opTestUnitReady     = 0x00
	opRequestSense      = 0x03
	opRead6             = 0x08
	opWrite6            = 0x0a
	opInquiry           = 0x12
	opModeSelect6       = 0x15
	opModeSense6        = 0x1a
	opStartStopUnit     = 0x1b
	opPreventAllow      = 0x1e
	opReadCapacity10    = 0x25
	opRead10            = 0x28
	opWrite10           = 0x2a
	opWriteVerify10     = 0x2e
	opVerify10          = 0x2f
	opPrefetch10        = 0x34
	opSyncCache10       = 0x35
	opReadDefect10      = 0x37
	opWriteSame10       = 0x41
	opUnmap             = 0x42
	opSanitize          = 0x48
	opReserve6          = 0x16
	opRelease6          = 0x17
	opReserve10         = 0x56
	opRelease10         = 0x57
	opPRIn              = 0x5e
	opPROut             = 0x5f
	opModeSelect10      = 0x55
	opModeSense10       = 0x5a
	opRead16            = 0x88
	opCompareAndWrite   = 0x89
	opWrite16           = 0x8a
	opORWrite16         = 0x8b
	opWriteVerify16     = 0x8e
	opVerify16          = 0x8f
	opPrefetch16        = 0x90
	opSyncCache16       = 0x91
	opWriteSame16       = 0x93
	opWriteAtomic16     = 0x9c
	opServiceActionIn16 = 0x9e
	opReportLUNs        = 0xa0
	opMaintenanceIn     = 0xa3
	opRead12            = 0xa8
	opWrite12           = 0xaa
	opWriteVerify12     = 0xae
	opVerify12          = 0xaf
	opReadDefect12      = 0xb7
)

// Service actions.
const (
	saReadCapacity16   = 0x10 // SERVICE ACTION IN(16)
	saGetLBAStatus     = 0x12 // SERVICE ACTION IN(16)
	saReportTPG        = 0x0a // MAINTENANCE IN
	saReportOpcodes    = 0x0c // MAINTENANCE IN
	saReportTMFunction = 0x0d // MAINTENANCE IN

	saReadKeys           = 0x00 // PERSISTENT RESERVE IN
	saReadReservation    = 0x01 // PERSISTENT RESERVE IN
	saReportCapabilities = 0x02 // PERSISTENT RESERVE IN
	saReadFullStatus     = 0x03 // PERSISTENT RESERVE IN
)

// cmdFlags record how a command interacts with LU state. The ALUA flags are
// recorded now so the issue that adds port-group states only has to read
// them (SPC-4 5.15.2.4); the reservation flags feed accessClass
// (reservations.go, SPC-4 table 63 and SBC-3 table 13).
type cmdFlags uint16

const (
	// flagNoUA: executes even while a unit attention is pending (SAM-5 5.14:
	// INQUIRY, REPORT LUNS and REQUEST SENSE).
	flagNoUA cmdFlags = 1 << iota
	// flagNeedsMedium: fails with MEDIUM NOT PRESENT while a removable
	// medium is ejected.
	flagNeedsMedium
	// flagMediaAccess: reads or writes the medium. Today it only implies
	// flagNeedsMedium; it is the set of commands a non-owner node forwards
	// to the owner once ALUA arrives (shared/design/alua.md).
	flagMediaAccess
	// flagStandbyOK / flagUnavailableOK: allowed when the target port group
	// is in the standby / unavailable or transitioning ALUA state.
	flagStandbyOK
	flagUnavailableOK
	// flagConflictEA: RESERVATION CONFLICT when another I_T nexus holds an
	// exclusive-access reservation. flagConflictWE: also under a
	// write-exclusive one (the command modifies the medium or the LU).
	flagConflictEA
	flagConflictWE
	// flagSPC2OK: allowed while another I_T nexus holds an SPC-2
	// (RESERVE(6)/(10)) reservation. flagPR: PERSISTENT RESERVE IN/OUT,
	// which conflict with any SPC-2 reservation (reservations.go).
	flagSPC2OK
	flagPR
)

const (
	allALUA      = flagStandbyOK | flagUnavailableOK
	readAccess   = flagNeedsMedium | flagMediaAccess | flagConflictEA
	writeAccess  = readAccess | flagConflictWE
	conflictsAll = flagConflictEA | flagConflictWE
)

// handler executes one decoded command. A Sense error becomes CHECK
// CONDITION; any other error is an internal target failure.
type handler func(r request) error

// request carries a command through its handler. It is passed by value:
// handlers are called indirectly, and a pointer to a stack value would
// escape and cost an allocation per command.
type request struct {
	lu  *LU
	st  *luState
	ns  *nexusState
	cmd *Command
	res *Result
	cdb []byte
}

// command is one row of the dispatch table.
type command struct {
	opcode byte
	sa     byte
	hasSA  bool
	// usage is the CDB USAGE DATA of REPORT SUPPORTED OPERATION CODES: its
	// length is the CDB length, byte 0 is the opcode, the service action
	// field holds the service action (SPC-4 6.35.3), and elsewhere a set bit
	// means the device server looks at that CDB bit. Any other bit set in a
	// CDB is a reserved bit and fails with INVALID FIELD IN CDB.
	usage []byte
	flags cmdFlags
	// kind classifies the command for Stats. Only opcodes without service
	// actions are reads or writes, so the table keeps it per opcode.
	kind CommandKind
	// timeout is the recommended command timeout in seconds (RCTD).
	timeout uint32
	run     handler
	// avail, when set, says whether the LU offers the command (thin
	// provisioning, the SANITIZE opt-in). An LU that does not is answered
	// INVALID COMMAND OPERATION CODE and REPORT SUPPORTED OPERATION CODES
	// leaves the command out for it.
	avail func(st *luState) bool
}

// commands lists everything this package implements. Anything else fails
// with INVALID COMMAND OPERATION CODE (or INVALID FIELD IN CDB for an
// unknown service action of a known opcode).
func commands() []command {
	// The GROUP NUMBER byte is accepted with SBC-4's six bits; grouping has
	// no effect here.
	rw10 := func(op, flags1 byte) []byte {
		return []byte{op, flags1, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x00}
	}
	rw12 := func(op, flags1 byte) []byte {
		return []byte{op, flags1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x00}
	}
	rw16 := func(op, flags1 byte) []byte {
		return []byte{op, flags1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x00}
	}
	// Byte 1 of the READ/WRITE/VERIFY family: xxPROTECT (7:5), DPO (4), FUA
	// (3), FUA_NV (1); BYTCHK (2:1) for the verifying ones.
	const rdFlags, wrFlags, vrFlags = 0xfa, 0xfa, 0xf6
	return []command{
		{opcode: opTestUnitReady, usage: []byte{opTestUnitReady, 0, 0, 0, 0, 0}, flags: flagNeedsMedium, run: testUnitReady},
		{opcode: opRequestSense, usage: []byte{opRequestSense, 0x01, 0, 0, 0xff, 0}, flags: flagNoUA | allALUA | flagSPC2OK, run: requestSense},
		{opcode: opRead6, usage: []byte{opRead6, 0x1f, 0xff, 0xff, 0xff, 0}, flags: readAccess, kind: KindRead, run: read},
		{opcode: opWrite6, usage: []byte{opWrite6, 0x1f, 0xff, 0xff, 0xff, 0}, flags: writeAccess, kind: KindWrite, run: write},
		{opcode: opInquiry, usage: []byte{opInquiry, 0x01, 0xff, 0xff, 0xff, 0}, flags: flagNoUA | allALUA | flagSPC2OK, run: inquiry},
		{opcode: opModeSelect6, usage: []byte{opModeSelect6, 0x11, 0, 0, 0xff, 0}, flags: flagStandbyOK | conflictsAll, run: modeSelect},
		{opcode: opModeSense6, usage: []byte{opModeSense6, 0x08, 0xff, 0xff, 0xff, 0}, flags: flagStandbyOK | flagConflictEA, run: modeSense},
		{opcode: opStartStopUnit, usage: []byte{opStartStopUnit, 0x01, 0, 0x0f, 0xf7, 0}, flags: conflictsAll, run: startStopUnit},
		{opcode: opPreventAllow, usage: []byte{opPreventAllow, 0, 0, 0, 0x03, 0}, flags: conflictsAll, run: preventAllow},
		{opcode: opReadCapacity10, usage: []byte{opReadCapacity10, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, 0}, flags: flagNeedsMedium, run: readCapacity10},
		{opcode: opRead10, usage: rw10(opRead10, rdFlags), flags: readAccess, kind: KindRead, run: read},
		{opcode: opWrite10, usage: rw10(opWrite10, wrFlags), flags: writeAccess, kind: KindWrite, run: write},
		{opcode: opWriteVerify10, usage: rw10(opWriteVerify10, vrFlags), flags: writeAccess, kind: KindWrite, run: writeVerify},
		{opcode: opVerify10, usage: rw10(opVerify10, vrFlags), flags: readAccess, run: verify},
		{opcode: opPrefetch10, usage: rw10(opPrefetch10, 0x02), flags: readAccess, run: prefetch},
		{opcode: opSyncCache10, usage: rw10(opSyncCache10, 0x06), flags: readAccess | flagConflictWE, run: syncCache},
		{opcode: opModeSelect10, usage: []byte{opModeSelect10, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0}, flags: flagStandbyOK | conflictsAll, run: modeSelect},
		{opcode: opModeSense10, usage: []byte{opModeSense10, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0}, flags: flagStandbyOK | flagConflictEA, run: modeSense},
		{opcode: opRead16, usage: rw16(opRead16, rdFlags), flags: readAccess, kind: KindRead, run: read},
		{opcode: opWrite16, usage: rw16(opWrite16, wrFlags), flags: writeAccess, kind: KindWrite, run: write},
		{opcode: opWriteVerify16, usage: rw16(opWriteVerify16, vrFlags), flags: writeAccess, kind: KindWrite, run: writeVerify},
		{opcode: opVerify16, usage: rw16(opVerify16, vrFlags), flags: readAccess, run: verify},
		{opcode: opPrefetch16, usage: rw16(opPrefetch16, 0x02), flags: readAccess, run: prefetch},
		{opcode: opSyncCache16, usage: rw16(opSyncCache16, 0x06), flags: readAccess | flagConflictWE, run: syncCache},
		{opcode: opServiceActionIn16, sa: saReadCapacity16, hasSA: true,
			usage: []byte{opServiceActionIn16, saReadCapacity16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0},
			flags: flagNeedsMedium, run: readCapacity16},
		{opcode: opReportLUNs, usage: []byte{opReportLUNs, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0}, flags: flagNoUA | allALUA | flagSPC2OK, run: reportLUNsAlone},
		{opcode: opMaintenanceIn, sa: saReportTPG, hasSA: true,
			usage: []byte{opMaintenanceIn, 0xe0 | saReportTPG, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0},
			flags: allALUA | flagSPC2OK, run: reportTargetPortGroups},
		{opcode: opMaintenanceIn, sa: saReportOpcodes, hasSA: true,
			usage: []byte{opMaintenanceIn, saReportOpcodes, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0},
			flags: allALUA | flagConflictEA, run: reportOpcodes},
		{opcode: opMaintenanceIn, sa: saReportTMFunction, hasSA: true,
			usage: []byte{opMaintenanceIn, saReportTMFunction, 0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0},
			flags: allALUA | flagConflictEA, run: reportTMFunctions},
		{opcode: opRead12, usage: rw12(opRead12, rdFlags), flags: readAccess, kind: KindRead, run: read},
		{opcode: opWrite12, usage: rw12(opWrite12, wrFlags), flags: writeAccess, kind: KindWrite, run: write},
		{opcode: opWriteVerify12, usage: rw12(opWriteVerify12, vrFlags), flags: writeAccess, kind: KindWrite, run: writeVerify},
		{opcode: opVerify12, usage: rw12(opVerify12, vrFlags), flags: readAccess, run: verify},
		// Atomic and combined writes (caw.go), thin provisioning (writesame.go,
		// unmap.go, lbastatus.go), SANITIZE (sanitize.go), READ DEFECT DATA
		// (defect.go).
		{opcode: opCompareAndWrite,
			usage: []byte{opCompareAndWrite, wrFlags, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xff, 0x3f, 0},
			flags: writeAccess, run: compareAndWrite},
		{opcode: opORWrite16, usage: rw16(opORWrite16, wrFlags), flags: writeAccess, run: orWrite},
		{opcode: opWriteAtomic16,
			usage: []byte{opWriteAtomic16, 0xf8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0xff, 0xff, 0x3f, 0},
			flags: writeAccess, kind: KindWrite, run: writeAtomic},
		{opcode: opWriteSame10, usage: []byte{opWriteSame10, 0xf8, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0},
			flags: writeAccess, timeout: writeSameTimeout, run: writeSame},
		{opcode: opWriteSame16,
			usage: []byte{opWriteSame16, 0xf9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0},
			flags: writeAccess, timeout: writeSameTimeout, run: writeSame},
		{opcode: opUnmap, usage: []byte{opUnmap, 0x01, 0, 0, 0, 0, 0x3f, 0xff, 0xff, 0},
			flags: writeAccess, avail: thinAvail, run: unmap},
		{opcode: opServiceActionIn16, sa: saGetLBAStatus, hasSA: true,
			usage: []byte{opServiceActionIn16, saGetLBAStatus, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0},
			flags: readAccess, run: getLBAStatus},
		{opcode: opSanitize, sa: saSanitizeOverwrite, hasSA: true,
			usage: []byte{opSanitize, 0xa0 | saSanitizeOverwrite, 0, 0, 0, 0, 0, 0xff, 0xff, 0},
			flags: writeAccess | flagSanitize, timeout: sanitizeTimeout, avail: sanitizeAvail, run: sanitize},
		{opcode: opSanitize, sa: saSanitizeBlockErase, hasSA: true,
			usage: []byte{opSanitize, 0xa0 | saSanitizeBlockErase, 0, 0, 0, 0, 0, 0xff, 0xff, 0},
			flags: writeAccess | flagSanitize, timeout: sanitizeTimeout, avail: blockEraseAvail, run: sanitize},
		{opcode: opSanitize, sa: saSanitizeCryptoErase, hasSA: true,
			usage: []byte{opSanitize, 0xa0 | saSanitizeCryptoErase, 0, 0, 0, 0, 0, 0xff, 0xff, 0},
			flags: writeAccess | flagSanitize, timeout: sanitizeTimeout, avail: sanitizeAvail, run: sanitize},
		{opcode: opSanitize, sa: saSanitizeExitFail, hasSA: true,
			usage: []byte{opSanitize, 0xa0 | saSanitizeExitFail, 0, 0, 0, 0, 0, 0xff, 0xff, 0},
			flags: writeAccess | flagSanitize, avail: sanitizeAvail, run: sanitize},
		{opcode: opReadDefect10, usage: []byte{opReadDefect10, 0, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0},
			flags: flagNeedsMedium | flagConflictEA, run: readDefectData},
		{opcode: opReadDefect12,
			usage: []byte{opReadDefect12, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0},
			flags: flagNeedsMedium | flagConflictEA, run: readDefectData},
		// Reservations (reserve6.go, pr_in.go, pr_out.go): the reservation
		// rules of these commands are decided by the state machine itself.
		{opcode: opReserve6, usage: []byte{opReserve6, 0, 0, 0, 0, 0}, flags: flagStandbyOK | flagSPC2OK, run: reserveSPC2},
		{opcode: opRelease6, usage: []byte{opRelease6, 0, 0, 0, 0, 0}, flags: flagStandbyOK | flagSPC2OK, run: releaseSPC2},
		{opcode: opReserve10, usage: []byte{opReserve10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, flags: flagStandbyOK | flagSPC2OK, run: reserveSPC2},
		{opcode: opRelease10, usage: []byte{opRelease10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, flags: flagStandbyOK | flagSPC2OK, run: releaseSPC2},
		prIn(saReadKeys), prIn(saReadReservation), prIn(saReportCapabilities), prIn(saReadFullStatus),
		prOut(PRRegister), prOut(PRReserve), prOut(PRRelease), prOut(PRClear),
		prOut(PRPreempt), prOut(PRPreemptAndAbort), prOut(PRRegisterAndIgnore), prOut(PRRegisterAndMove),
		// Copy offload (xcopy.go, copyresults.go). EXTENDED COPY meets the
		// reservations of its copy targets itself, as READ and WRITE would.
		{opcode: opExtendedCopy, sa: saExtendedCopyLID1, hasSA: true,
			usage: []byte{opExtendedCopy, saExtendedCopyLID1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0},
			flags: writeAccess, timeout: xcTimeout, run: extendedCopy},
		{opcode: opReceiveCopyResults, sa: saCopyStatus, hasSA: true,
			usage: []byte{opReceiveCopyResults, saCopyStatus, 0xff, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0},
			run:   receiveCopyResults},
		{opcode: opReceiveCopyResults, sa: saOperatingParams, hasSA: true,
			usage: []byte{opReceiveCopyResults, saOperatingParams, 0xff, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0},
			run:   receiveCopyResults},
	}
}

const defaultTimeout = 30 // seconds, reported as the recommended timeout

// dispatchTable indexes the command list by opcode and service action.
type dispatchTable struct {
	list []command // in opcode, service action order (REPORT SUPPORTED OPCODES)
	byOp [256]opEntry
}

type opEntry struct {
	cmd  *command   // the command, for opcodes without service actions
	sas  []*command // by service action, for opcodes with them
	kind CommandKind
}

var dispatch = newDispatchTable(commands())

func newDispatchTable(cmds []command) *dispatchTable {
	slices.SortFunc(cmds, func(a, b command) int {
		return cmp.Or(cmp.Compare(a.opcode, b.opcode), cmp.Compare(a.sa, b.sa))
	})
	t := &dispatchTable{list: cmds}
	for i := range t.list {
		c := &t.list[i]
		if c.timeout == 0 {
			c.timeout = defaultTimeout
		}
		if avail, run := c.avail, c.run; avail != nil {
			c.run = func(r request) error {
				if !avail(r.st) {
					return errInvalidOpcode
				}
				return run(r)
			}
		}
		e := &t.byOp[c.opcode]
		if c.hasSA {
			e.sas = append(e.sas, c)
		} else {
			e.cmd, e.kind = c, c.kind
		}
	}
	return t
}

// lookup finds the command a CDB asks for.
func (t *dispatchTable) lookup(cdb []byte) (*command, error) {
	e := &t.byOp[cdb[0]]
	if e.cmd != nil {
		return e.cmd, nil
	}
	if e.sas == nil {
		return nil, errInvalidOpcode
	}
	if len(cdb) < 2 {
		return nil, invalidCDB(1, 4)
	}
	sa := cdb[1] & 0x1f
	for _, c := range e.sas {
		if c.sa == sa {
			return c, nil
		}
	}
	// An unknown service action of a known opcode (SPC-4 4.3.2 leaves the
	// choice; initiators such as libiscsi treat this as "not implemented").
	return nil, invalidCDB(1, 4)
}

// kindOf classifies a CDB for Stats with one array index: it runs for
// every command, after the command has been looked up and executed.
func (t *dispatchTable) kindOf(cdb []byte) CommandKind {
	if len(cdb) == 0 {
		return KindOther
	}
	return t.byOp[cdb[0]].kind
}

// find returns the command for an opcode and, if it has service actions, a
// service action; nil when unsupported.
func (t *dispatchTable) find(op byte, sa uint16, withSA bool) *command {
	e := &t.byOp[op]
	if !withSA {
		return e.cmd
	}
	for _, c := range e.sas {
		if uint16(c.sa) == sa {
			return c
		}
	}
	return nil
}

// checkCDB rejects a CDB that is too short or sets a bit the command does
// not use: SPC-4 lets a device server check reserved fields, and doing so
// turns CDB fields we do not implement (NACA, RARC, ...) into clean errors.
func (c *command) checkCDB(cdb []byte) error {
	if len(cdb) < len(c.usage) {
		return invalidCDB(len(cdb), -1)
	}
	for i := 1; i < len(c.usage); i++ {
		used := c.usage[i]
		if i == 1 && c.hasSA {
			used |= 0x1f // the service action, already matched by lookup
		}
		if bad := cdb[i] &^ used; bad != 0 {
			return invalidCDB(i, highBit(bad))
		}
	}
	return nil
}

func highBit(b byte) int {
	for i := 7; i > 0; i-- {
		if b&(1<<i) != 0 {
			return i
		}
	}
	return 0
}
