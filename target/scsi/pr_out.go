package scsi

// PERSISTENT RESERVE OUT (SPC-4 6.17): the CDB and parameter list are
// decoded into a PROp here, and the state machine decides.

// prOut is the dispatch table row of one PERSISTENT RESERVE OUT service
// action. Byte 2 carries SCOPE and TYPE; bytes 5-8 the parameter list
// length.
func prOut(sa byte) command {
	return command{opcode: opPROut, sa: sa, hasSA: true,
		usage: []byte{opPROut, sa, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0},
		flags: allALUA | flagPR, run: persistentReserveOut}
}

// Parameter list layout.
const (
	prParamLen    = 24 // the basic parameter list
	prFlagsByte   = 20 // SPEC_I_PT, ALL_TG_PT, APTPL
	prSpecIPT     = 0x08
	prAllTgPt     = 0x04
	prAPTPL       = 0x01
	prMoveFlags   = 17 // REGISTER AND MOVE: UNREG, APTPL
	prMoveUnreg   = 0x02
	prMoveRelPort = 18
	prTIDLen      = 20 // REGISTER AND MOVE: TRANSPORTID PARAMETER DATA LENGTH
)

func persistentReserveOut(r request) error {
	sa := r.cdb[1] & 0x1f
	plen := getU32(r.cdb[5:])
	r.res.Transfer = int(min(plen, uint32(MaxTransferBytes)))
	if plen < prParamLen || uint64(plen) > uint64(len(r.cmd.DataOut)) {
		return errParamListLength
	}
	data := r.cmd.DataOut[:plen]
	op := PROp{
		Kind:          OpPROut,
		Nexus:         NexusIDOf(r.cmd.Nexus),
		ServiceAction: sa,
		Scope:         r.cdb[2] >> 4,
		Type:          PRType(r.cdb[2] & 0x0f),
		Key:           getU64(data[0:]),
		SAKey:         getU64(data[8:]),
	}
	var err error
	if sa == PRRegisterAndMove {
		err = r.decodeMove(&op, data)
	} else {
		err = r.decodeBasic(&op, data)
	}
	if err != nil {
		return err
	}
	return r.lu.applyPR(op, r.cmd)
}

// decodeBasic reads the parameter list of every service action but
// REGISTER AND MOVE: 24 bytes, followed for SPEC_I_PT by the TransportIDs.
func (r request) decodeBasic(op *PROp, data []byte) error {
	flags := data[prFlagsByte]
	register := op.ServiceAction == PRRegister || op.ServiceAction == PRRegisterAndIgnore
	if register {
		op.APTPL = flags&prAPTPL != 0
		op.AllTgPt = flags&prAllTgPt != 0
		if op.APTPL && !r.lu.ptplCapable {
			return invalidParam(prFlagsByte, 0)
		}
	}
	// SPEC_I_PT is only valid with REGISTER; the state machine rejects it
	// where the nexus is registered, and with REGISTER AND IGNORE.
	op.SpecIPT = register && flags&prSpecIPT != 0
	if !op.SpecIPT || op.ServiceAction != PRRegister {
		if len(data) != prParamLen {
			return errParamListLength
		}
		return nil
	}
	if len(data) < prParamLen+4 {
		return errParamListLength
	}
	n := int(getU32(data[prParamLen:]))
	if n != len(data)-prParamLen-4 {
		return errParamListLength
	}
	for off := prParamLen + 4; off < len(data); {
		t, l, err := ParseTransportID(data[off:])
		if err != nil {
			return invalidParam(off, -1)
		}
		op.TransportIDs = append(op.TransportIDs, t)
		off += l
	}
	return nil
}

// decodeMove reads the REGISTER AND MOVE parameter list and resolves the
// relative target port identifier to a target port.
func (r request) decodeMove(op *PROp, data []byte) error {
	op.Unreg = data[prMoveFlags]&prMoveUnreg != 0
	op.APTPL = data[prMoveFlags]&prAPTPL != 0
	if op.APTPL && !r.lu.ptplCapable {
		return invalidParam(prMoveFlags, 0)
	}
	n := int(getU32(data[prTIDLen:]))
	if n != len(data)-prParamLen {
		return errParamListLength
	}
	t, l, err := ParseTransportID(data[prParamLen:])
	if err != nil || l != n {
		return invalidParam(prParamLen, -1)
	}
	op.TransportIDs = []TransportID{t}
	op.MoveRelativePort = getU16(data[prMoveRelPort:])
	port, ok := r.lu.targetPortByID(op.MoveRelativePort)
	if !ok {
		return invalidParam(prMoveRelPort, -1)
	}
	op.MoveTargetPort = port
	return nil
}
