package scsi

// PERSISTENT RESERVE IN (SPC-4 6.16): READ KEYS, READ RESERVATION, REPORT
// CAPABILITIES and READ FULL STATUS, answered from the current state.

// prIn is the dispatch table row of one PERSISTENT RESERVE IN service
// action. They work in every ALUA state, so that cluster software using
// reservations keeps working on every path (shared/design/alua.md).
func prIn(sa byte) command {
	return command{opcode: opPRIn, sa: sa, hasSA: true,
		usage: []byte{opPRIn, sa, 0, 0, 0, 0, 0, 0xff, 0xff, 0},
		flags: allALUA | flagPR, run: persistentReserveIn}
}

func persistentReserveIn(r request) error {
	alloc := int(getU16(r.cdb[7:]))
	s := r.lu.pr.State()
	var data []byte
	switch r.cdb[1] & 0x1f {
	case saReadKeys:
		data = readKeys(s)
	case saReadReservation:
		data = readReservation(s)
	case saReportCapabilities:
		data = reportCapabilities(s, r.lu.ptplCapable)
	default: // saReadFullStatus; lookup rejected anything else
		data = readFullStatus(s)
	}
	respond(r.cmd, r.res, data, alloc)
	return nil
}

// readKeys lists the key of every registration. ADDITIONAL LENGTH is the
// full length whatever the allocation length cuts off.
func readKeys(s *PRState) []byte {
	b := make([]byte, 8+8*len(s.Registrations))
	putU32(b, s.Generation)
	putU32(b[4:], uint32(8*len(s.Registrations)))
	for i, g := range s.Registrations {
		putU64(b[8+8*i:], g.Key)
	}
	return b
}

func readReservation(s *PRState) []byte {
	if s.Reservation == nil {
		b := make([]byte, 8)
		putU32(b, s.Generation)
		return b
	}
	b := make([]byte, 24)
	putU32(b, s.Generation)
	putU32(b[4:], 16)
	putU64(b[8:], s.ReservationKey())
	b[21] = prScopeLU<<4 | byte(s.Reservation.Type)
	return b
}

// Persistent reservation type mask bits of REPORT CAPABILITIES.
const (
	maskWrExAR = 0x8000
	maskExAcRO = 0x4000
	maskWrExRO = 0x2000
	maskExAc   = 0x0800
	maskWrEx   = 0x0200
	maskExAcAR = 0x0001
)

func reportCapabilities(s *PRState, ptplCapable bool) []byte {
	b := make([]byte, 8)
	putU16(b, 8)
	// CRH 0: RESERVE and RELEASE conflict with registrations. SIP_C and
	// ATP_C: SPEC_I_PT and ALL_TG_PT work.
	b[2] = 0x08 | 0x04
	if ptplCapable {
		b[2] |= 0x01 // PTPL_C
	}
	// TMV, ALLOW COMMANDS 011b: TEST UNIT READY goes through WE and EA
	// reservations, MODE SENSE and the other commands of table 63 through
	// WE ones.
	b[3] = 0x80 | 0x3<<4
	if s.APTPL {
		b[3] |= 0x01 // PTPL_A
	}
	putU16(b[4:], maskWrExAR|maskExAcRO|maskWrExRO|maskExAc|maskWrEx|maskExAcAR)
	return b
}

// readFullStatus describes every registration with its TransportID.
func readFullStatus(s *PRState) []byte {
	b := make([]byte, 8, 8+len(s.Registrations)*48)
	putU32(b, s.Generation)
	for i := range s.Registrations {
		g := &s.Registrations[i]
		var d [24]byte
		putU64(d[0:], g.Key)
		if g.AllTgPt {
			d[12] |= 0x02
		}
		if s.isHolder(i) {
			d[12] |= 0x01
			d[13] = prScopeLU<<4 | byte(s.Reservation.Type)
		}
		if !g.AllTgPt {
			putU16(d[18:], g.RelativePort)
		}
		start := len(b)
		b = append(b, d[:]...)
		b = AppendTransportID(b, TransportIDFor(g.InitiatorPort))
		putU32(b[start+20:], uint32(len(b)-start-24))
	}
	putU32(b[4:], uint32(len(b)-8))
	return b
}
