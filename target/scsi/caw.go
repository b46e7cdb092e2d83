package scsi

// COMPARE AND WRITE, ORWRITE and WRITE ATOMIC (SBC-4 5.3, 5.15, 5.48).
//
// Each runs under the LU's range lock taken exclusively for its LBAs
// (rangelock.go), so its read-compare-write or read-modify-write is one
// step for every other command on the LU: plain READs and WRITEs, WRITE
// SAME, UNMAP and other atomic commands wait for it, and it waits for them.
// The logic lives in the LU, so a cluster node forwarding these commands
// to the owner only has to forward them.

// maxCAWBlocks is the MAXIMUM COMPARE AND WRITE LENGTH of VPD page B0h; the
// CDB's NUMBER OF LOGICAL BLOCKS field has one byte.
const maxCAWBlocks = 255

// maxAtomicBytes is the MAXIMUM ATOMIC TRANSFER LENGTH of VPD page B0h:
// the range lock makes any transfer atomic, so it is the transfer limit.
const maxAtomicBytes = MaxTransferBytes

func compareAndWrite(r request) error {
	st, cdb := r.st, r.cdb
	lba := getU64(cdb[2:])
	n := uint64(cdb[13])
	r.res.Transfer = st.bytesOf(2 * n)
	if cdb[1]>>5 != 0 {
		return invalidCDB(1, 7) // WRPROTECT without protection information
	}
	if err := r.lu.writeProtected(st); err != nil {
		return err
	}
	if lba > st.blocks || n > st.blocks-lba {
		return errLBAOutOfRange
	}
	if n > maxCAWBlocks {
		return invalidCDB(13, -1)
	}
	// The Data-Out buffer is the verify data followed by the write data, n
	// blocks each. An initiator whose expected length disagrees with the
	// CDB gets nothing compared or written: a half-sent compare is no
	// compare.
	half := int(n) << st.shift
	if len(r.cmd.DataOut) != 2*half {
		return invalidCDB(13, -1)
	}
	if n == 0 {
		return nil
	}
	verifyData, writeData := r.cmd.DataOut[:half], r.cmd.DataOut[half:]
	off := int64(lba) << st.shift
	durable := cdb[1]&bitFUA != 0 || !r.lu.wce.Load()

	h := r.lockBlocks(lba, n, true)
	defer h.release()
	// MISCOMPARE carries the offset of the first differing byte within the
	// verify data in INFORMATION, and nothing is written.
	if err := r.compareData(off, verifyData); err != nil {
		return err
	}
	if err := st.dev.WriteAt(writeData, off, durable); err != nil {
		return writeError(err)
	}
	return nil
}

// orWrite is ORWRITE(16): each block becomes the bitwise OR of its old
// contents and the data sent.
func orWrite(r request) error {
	st := r.st
	b := decodeBlockCDB(r.cdb)
	r.res.Transfer = st.bytesOf(uint64(b.blocks))
	if b.flags>>5 != 0 {
		return invalidCDB(1, 7) // ORPROTECT
	}
	if err := r.lu.writeProtected(st); err != nil {
		return err
	}
	if err := r.checkRange(b, true); err != nil {
		return err
	}
	out := r.cmd.DataOut
	n := min(int64(b.blocks)<<st.shift, int64(len(out))) &^ int64(st.blockSize-1)
	if n == 0 {
		return nil
	}
	durable := b.flags&bitFUA != 0 || !r.lu.wce.Load()
	off := int64(b.lba) << st.shift

	h := r.lockBlocks(b.lba, uint64(n>>st.shift), true)
	defer h.release()
	buf := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(buf)
	for done := int64(0); done < n; {
		c := min(int64(len(*buf)), n-done)
		chunk := (*buf)[:c]
		if err := st.dev.ReadAt(chunk, off+done); err != nil {
			return readError(err)
		}
		for i, v := range out[done : done+c] {
			chunk[i] |= v
		}
		if err := st.dev.WriteAt(chunk, off+done, durable); err != nil {
			return writeError(err)
		}
		done += c
	}
	return nil
}

// writeAtomic is WRITE ATOMIC(16): the blocks are written all or nothing
// as far as any other command can tell. Alignment and granularity are
// unrestricted (VPD B0h reports zero for both) and atomic boundaries are
// not supported, so the ATOMIC BOUNDARY field is reserved.
func writeAtomic(r request) error {
	st, cdb := r.st, r.cdb
	b := blockCDB{lba: getU64(cdb[2:]), blocks: uint32(getU16(cdb[12:])), flags: cdb[1], lenField: 12}
	r.res.Transfer = st.bytesOf(uint64(b.blocks))
	if b.flags>>5 != 0 {
		return invalidCDB(1, 7) // WRPROTECT
	}
	if err := r.lu.writeProtected(st); err != nil {
		return err
	}
	if err := r.checkRange(b, false); err != nil {
		return err
	}
	if uint64(b.blocks) > maxAtomicBytes>>st.shift {
		return invalidCDB(12, -1)
	}
	// A short Data-Out cannot be written atomically: refuse it rather than
	// write part of it.
	if len(r.cmd.DataOut) < int(b.blocks)<<st.shift {
		return invalidCDB(12, -1)
	}
	if b.blocks == 0 {
		return nil
	}
	durable := b.flags&bitFUA != 0 || !r.lu.wce.Load()
	h := r.lockBlocks(b.lba, uint64(b.blocks), true)
	defer h.release()
	_, err := r.writeFrom(b.lba, b.blocks, durable)
	return err
}
