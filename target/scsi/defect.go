package scsi

// READ DEFECT DATA (10) and (12) (SBC-4 5.18, 5.19). Virtual storage has
// no grown or primary defects: the answer is an empty list, valid for
// whichever of the lists was requested, in the format requested.

const defectFormatReserved = 0x07

func readDefectData(r request) error {
	cdb := r.cdb
	var req byte // REQ_PLIST, REQ_GLIST, DEFECT LIST FORMAT
	var alloc int
	var hdr []byte
	if cdb[0] == opReadDefect10 {
		req, alloc = cdb[2], int(getU16(cdb[7:]))
		hdr = make([]byte, 4) // DEFECT LIST LENGTH (bytes 2-3) zero
		if req&0x07 == defectFormatReserved {
			return invalidCDB(2, 2)
		}
	} else {
		req, alloc = cdb[1], int(getU32(cdb[6:]))
		// GENERATION CODE (bytes 2-3) zero: not supported; DEFECT LIST
		// LENGTH (bytes 4-7) zero.
		hdr = make([]byte, 8)
		if req&0x07 == defectFormatReserved {
			return invalidCDB(1, 2)
		}
	}
	hdr[1] = req & 0x1f // PLISTV, GLISTV as requested; the format echoed
	respond(r.cmd, r.res, hdr, alloc)
	return nil
}
