package scsi

// UNMAP (SBC-4 5.32), offered on thin LUs only (a fully provisioned LU
// answers INVALID COMMAND OPERATION CODE and reports LBPU=0).
//
// Every descriptor is checked before anything is unmapped, so a bad
// descriptor fails the command without half of it done. Each range is
// punched under the range lock taken shared, like a WRITE.

const (
	// maxUnmapDescriptors is the MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT of VPD
	// page B0h: a 16 KiB parameter list (initiators send one descriptor,
	// or a few).
	maxUnmapDescriptors = 1024
	// maxUnmapLBACount is the MAXIMUM UNMAP LBA COUNT: no limit, since a
	// punched hole costs the same whatever its size.
	maxUnmapLBACount = 0xffffffff
)

const unmapHeaderLen = 8
const unmapDescriptorLen = 16

func unmap(r request) error {
	st, cdb := r.st, r.cdb
	paramLen := int(getU16(cdb[7:]))
	r.res.Transfer = paramLen
	if cdb[1]&0x01 != 0 {
		return invalidCDB(1, 0) // ANCHOR, and ANC_SUP is zero
	}
	if err := r.lu.writeProtected(st); err != nil {
		return err
	}
	if paramLen == 0 {
		return nil // no parameter list: nothing to unmap, not an error
	}
	data := r.cmd.DataOut[:min(paramLen, len(r.cmd.DataOut))]
	if len(data) < unmapHeaderLen {
		return errParamListLength
	}
	// The BLOCK DESCRIPTOR DATA LENGTH decides how many descriptors there
	// are; a trailing partial descriptor, or one the initiator announced but
	// did not send, is ignored.
	bdl := min(int(getU16(data[2:])), len(data)-unmapHeaderLen)
	count := bdl / unmapDescriptorLen
	if count > maxUnmapDescriptors {
		return invalidParam(2, -1)
	}
	var total uint64
	for i := range count {
		d := data[unmapHeaderLen+i*unmapDescriptorLen:]
		lba, n := getU64(d), uint64(getU32(d[8:]))
		if lba > st.blocks || n > st.blocks-lba {
			return errLBAOutOfRange
		}
		if total += n; total > maxUnmapLBACount {
			return invalidParam(unmapHeaderLen+i*unmapDescriptorLen+8, -1)
		}
	}
	for i := range count {
		d := data[unmapHeaderLen+i*unmapDescriptorLen:]
		lba, n := getU64(d), uint64(getU32(d[8:]))
		if n == 0 {
			continue
		}
		h := r.lockBlocks(lba, n, false)
		err := r.deallocate(int64(lba)<<st.shift, int64(n)<<st.shift)
		h.release()
		if err != nil {
			return err
		}
	}
	return nil
}
