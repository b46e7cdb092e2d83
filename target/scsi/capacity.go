package scsi

func readCapacity10(r request) error {
	pmi := r.cdb[8]&0x01 != 0
	if !pmi && getU32(r.cdb[2:]) != 0 {
		return invalidCDB(2, -1) // an LBA only makes sense with PMI
	}
	var b [8]byte
	last := uint64(0xffffffff) // "too big, use READ CAPACITY(16)"
	if r.st.blocks <= 0xffffffff {
		last = r.st.blocks - 1
		if r.st.blocks == 0 {
			last = 0
		}
	}
	putU32(b[0:], uint32(last))
	putU32(b[4:], r.st.blockSize)
	respond(r.cmd, r.res, b[:], len(b))
	return nil
}

func readCapacity16(r request) error {
	pmi := r.cdb[14]&0x01 != 0
	if !pmi && getU64(r.cdb[2:]) != 0 {
		return invalidCDB(2, -1)
	}
	alloc := int(getU32(r.cdb[10:]))
	var b [32]byte
	if r.st.blocks > 0 {
		putU64(b[0:], r.st.blocks-1)
	}
	putU32(b[8:], r.st.blockSize)
	// Byte 12 (protection) and 13 (LOGICAL BLOCKS PER PHYSICAL BLOCK
	// EXPONENT) stay zero. A thin LU sets LBPME and LBPRZ: a deallocated
	// block reads as zeros (lbastatus.go).
	if r.st.thin {
		b[14] = 0x80 | 0x40
	}
	respond(r.cmd, r.res, b[:], alloc)
	return nil
}
