package scsi

import (
	"errors"
	"syscall"

	"github.com/hatarget/hatarget/target/backend"
)

// WRITE SAME (10) and (16) (SBC-4 5.49, 5.50).
//
// The single block of the Data-Out buffer (zeros with NDOB) is written to
// every LBA of the range through one bounded, pooled buffer. With the UNMAP
// bit on a thin LU the range is deallocated instead (SBC-4 table "ANCHOR
// bit, UNMAP bit, and ANC_SUP bit relationships": a thin provisioned LU
// should deallocate each LBA), whatever the block holds; it then reads back
// as zeros (LBPRZ=1). Initiators send zeros with UNMAP, and libiscsi's
// WriteSame10.UnmapUntilEnd checks for zeros after sending 0xff, as LIO
// and SCST behave. ANC_SUP is zero, so ANCHOR is always an error; WSNZ is
// zero, so a NUMBER OF LOGICAL BLOCKS of zero means "to the last LBA",
// bounded by MAXIMUM WRITE SAME LENGTH.

// maxWriteSameBlocks bounds one WRITE SAME (VPD B0h MAXIMUM WRITE SAME
// LENGTH), as LIO does: the largest WRITE SAME (10) count, 32 MiB of
// writes with 512-byte blocks. A command asking for more, zero-length
// ones reaching further than that included, fails with INVALID FIELD IN
// CDB and the initiator splits it.
const maxWriteSameBlocks = 0xffff

// writeSameTimeout is the recommended timeout reported for WRITE SAME.
const writeSameTimeout = 120

const (
	wsAnchor = 0x10
	wsUnmap  = 0x08
	wsNDOB   = 0x01 // WRITE SAME (16) only
)

func writeSame(r request) error {
	st, cdb := r.st, r.cdb
	var lba, n uint64
	lenField := 7
	ndob := false
	if cdb[0] == opWriteSame16 {
		lba, n, lenField = getU64(cdb[2:]), uint64(getU32(cdb[10:])), 10
		ndob = cdb[1]&wsNDOB != 0
	} else {
		lba, n = uint64(getU32(cdb[2:])), uint64(getU16(cdb[7:]))
	}
	if !ndob {
		r.res.Transfer = int(st.blockSize)
	}
	flags := cdb[1]
	switch {
	case flags>>5 != 0:
		return invalidCDB(1, 7) // WRPROTECT without protection information
	case flags&wsAnchor != 0:
		return invalidCDB(1, 4) // ANC_SUP is zero
	}
	// A write-protected LU says so before judging the UNMAP bit: the
	// initiator learns the real reason its write cannot happen.
	if err := r.lu.writeProtected(st); err != nil {
		return err
	}
	if flags&wsUnmap != 0 && !st.thin {
		// LBPWS/LBPWS10 are clear on a fully provisioned LU.
		return invalidCDB(1, 3)
	}
	if lba > st.blocks {
		return errLBAOutOfRange
	}
	if n == 0 {
		n = st.blocks - lba
	} else if n > st.blocks-lba {
		return errLBAOutOfRange
	}
	if n > maxWriteSameBlocks {
		return invalidCDB(lenField, -1)
	}
	var block []byte
	if !ndob {
		// Exactly one logical block: an initiator sending more or less
		// disagrees with us about the block size.
		if len(r.cmd.DataOut) != int(st.blockSize) {
			return invalidCDB(lenField, -1)
		}
		block = r.cmd.DataOut
	}
	if n == 0 {
		return nil
	}
	off, length := int64(lba)<<st.shift, int64(n)<<st.shift
	h := r.lockBlocks(lba, n, false)
	defer h.release()
	if flags&wsUnmap != 0 {
		return r.deallocate(off, length)
	}
	return r.fill(off, length, block)
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if getU64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, v := range b {
		if v != 0 {
			return false
		}
	}
	return true
}

// fill writes block (zeros when nil) to every logical block of
// [off, off+length), a pooled chunk at a time.
func (r request) fill(off, length int64, block []byte) error {
	st := r.st
	buf := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(buf)
	chunk := *buf
	if block == nil {
		clear(chunk)
	} else {
		for i := 0; i < len(chunk); i += len(block) {
			copy(chunk[i:], block)
		}
	}
	durable := !r.lu.wce.Load()
	for done := int64(0); done < length; {
		n := min(int64(len(chunk)), length-done)
		if err := st.dev.WriteAt(chunk[:n], off+done, durable); err != nil {
			return writeError(err)
		}
		done += n
	}
	return nil
}

// deallocate unmaps [off, off+length): punched holes read back as zeros.
// A filesystem that cannot punch holes gets the zeros written instead,
// which reads back the same. With the write cache disabled the
// deallocation is made durable before the command completes.
func (r request) deallocate(off, length int64) error {
	u, ok := r.st.dev.(backend.Unmapper)
	if !ok {
		return r.fill(off, length, nil)
	}
	if err := u.Unmap(off, length); err != nil {
		if errors.Is(err, syscall.EOPNOTSUPP) {
			return r.fill(off, length, nil)
		}
		return writeError(err)
	}
	if !r.lu.wce.Load() {
		if err := r.st.dev.Flush(); err != nil {
			return writeError(err)
		}
	}
	return nil
}

// thinState decides whether an LU configured thin can be: it needs a
// device that deallocates.
func thinState(cfg LUConfig) bool {
	_, ok := cfg.Device.(backend.Unmapper)
	return cfg.Thin && ok
}

func thinAvail(st *luState) bool { return st.thin }
