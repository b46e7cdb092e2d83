package scsi

// View is the set of LUNs one I_T nexus may address, after LUN masking.
type View interface {
	LU(lun uint64) *LU // nil if not mapped
	LUNs() []uint64    // sorted
}

// Execute runs one command for a nexus. REPORT LUNS and commands to LUNs
// the view does not map are answered here; everything else goes to the LU.
// It sets cmd.View to v: v must be exactly what the nexus may access, since
// EXTENDED COPY reaches every LU in it.
func Execute(v View, cmd *Command, res *Result) {
	cmd.View = v
	if len(cmd.CDB) > 0 && cmd.CDB[0] == opReportLUNs {
		resetResult(res)
		if err := reportLUNsOf(v, cmd, res); err != nil {
			failFixed(res, err)
		}
		return
	}
	if lu := v.LU(cmd.LUN); lu != nil {
		lu.Execute(cmd, res)
		return
	}
	resetResult(res)
	if err := executeUnmapped(cmd, res); err != nil {
		failFixed(res, err)
	}
}

// failFixed reports a CHECK CONDITION outside any LU: there is no control
// mode page, so the sense data is in fixed format.
func failFixed(res *Result, err error) {
	s, ok := err.(Sense)
	if !ok {
		s = errInternal
	}
	setCheckCondition(res, &s, false)
}

func reportLUNsOf(v View, cmd *Command, res *Result) error {
	if err := dispatch.find(opReportLUNs, 0, false).checkCDB(cmd.CDB); err != nil {
		return err
	}
	luns := v.LUNs()
	if err := reportLUNs(cmd.CDB, cmd, res, luns); err != nil {
		return err
	}
	for _, l := range luns {
		if lu := v.LU(l); lu != nil {
			lu.clearReportedLUNsChanged(cmd.Nexus)
		}
	}
	return nil
}

// reportLUNsAlone is REPORT LUNS sent straight to an LU, without a View:
// the LU only knows its own LUN.
func reportLUNsAlone(r request) error {
	return reportLUNs(r.cdb, r.cmd, r.res, []uint64{r.cmd.LUN})
}

// reportLUNs encodes the LUN inventory (SPC-4 6.33). There are no
// well-known LUs, so SELECT REPORT 01h returns an empty list.
// The caller has checked the CDB against the dispatch table.
func reportLUNs(cdb []byte, cmd *Command, res *Result, luns []uint64) error {
	alloc := int(getU32(cdb[6:]))
	if alloc < 16 {
		return invalidCDB(6, -1)
	}
	switch cdb[2] {
	case 0x00, 0x02:
	case 0x01:
		luns = nil
	default:
		return invalidCDB(2, -1)
	}
	data := make([]byte, 8+8*len(luns))
	putU32(data, uint32(8*len(luns)))
	for i, l := range luns {
		b := EncodeLUN(l)
		copy(data[8+8*i:], b[:])
	}
	respond(cmd, res, data, alloc)
	return nil
}

// executeUnmapped answers a command for a LUN that is not mapped. INQUIRY
// reports that no LU is there (peripheral qualifier 011b, type 1Fh), REQUEST
// SENSE returns LOGICAL UNIT NOT SUPPORTED as data, and anything else fails
// with it (SPC-4 4.5.1 and 6.6.2).
func executeUnmapped(cmd *Command, res *Result) error {
	cdb := cmd.CDB
	if len(cdb) == 0 {
		return errInvalidOpcode
	}
	switch cdb[0] {
	case opInquiry:
		c := dispatch.find(opInquiry, 0, false)
		if err := c.checkCDB(cdb); err != nil {
			return err
		}
		return inquiryUnmapped(cmd, res)
	case opRequestSense:
		c := dispatch.find(opRequestSense, 0, false)
		if err := c.checkCDB(cdb); err != nil {
			return err
		}
		s := errLUNotSupported
		var buf [SenseBufLen]byte
		n := s.encode(buf[:], cdb[1]&0x01 != 0)
		respond(cmd, res, buf[:n], int(cdb[4]))
		return nil
	}
	return errLUNotSupported
}

const noLU = 0x7f // peripheral qualifier 011b, device type 1Fh

func inquiryUnmapped(cmd *Command, res *Result) error {
	cdb := cmd.CDB
	alloc := int(getU16(cdb[3:]))
	if cdb[1]&0x01 == 0 {
		if cdb[2] != 0 {
			return invalidCDB(2, -1)
		}
		b := make([]byte, 36)
		b[0] = noLU
		b[2] = 0x06
		b[3] = 0x12
		b[4] = byte(len(b) - 5)
		padASCII(b[8:36], "")
		respond(cmd, res, b, alloc)
		return nil
	}
	if cdb[2] != vpdSupportedPages {
		return invalidCDB(2, -1)
	}
	respond(cmd, res, []byte{noLU, 0, 0, 1, vpdSupportedPages}, alloc)
	return nil
}
