package scsi

import (
	"bytes"
	"errors"
	"math"
	"sync"

	"github.com/hatarget/hatarget/target/backend"
)

// Data lengths that differ from the CDB (the iSCSI expected data transfer
// length, EDTL, against the CDB transfer length), as libiscsi's residual
// tests expect and as the transport reports them from Result.Transfer:
//
//   - READ returns min(EDTL, transfer length) bytes. When that ends inside
//     a block the last block is read into a scratch buffer and cut.
//   - WRITE writes the whole blocks the initiator sent, up to the transfer
//     length: extra data beyond the CDB is ignored, and a trailing partial
//     block (EDTL not a multiple of the block size) is not written, since a
//     block is the unit of atomicity. Status is GOOD; the transport reports
//     the overflow or underflow residual.
//   - VERIFY and WRITE AND VERIFY compare the whole blocks that were sent.

// blockCDB is what the READ/WRITE/VERIFY family of CDBs share.
type blockCDB struct {
	lba      uint64
	blocks   uint32
	flags    byte // byte 1: xxPROTECT, DPO, FUA, BYTCHK
	lenField int  // offset of the transfer length, for field pointers
}

// decodeBlockCDB reads the LBA and length of any 6, 10, 12 or 16-byte
// READ/WRITE/VERIFY/PRE-FETCH/SYNCHRONIZE CACHE CDB; the opcode's group
// code gives the layout. The caller has checked the CDB length.
func decodeBlockCDB(cdb []byte) blockCDB {
	switch cdb[0] >> 5 {
	case 0: // 6-byte: 21-bit LBA, and a transfer length of 0 means 256
		n := uint32(cdb[4])
		if n == 0 {
			n = 256
		}
		return blockCDB{lba: uint64(getU24(cdb[1:]) & 0x1fffff), blocks: n, lenField: 4}
	case 1, 2: // 10-byte
		return blockCDB{lba: uint64(getU32(cdb[2:])), blocks: uint32(getU16(cdb[7:])), flags: cdb[1], lenField: 7}
	case 5: // 12-byte
		return blockCDB{lba: uint64(getU32(cdb[2:])), blocks: getU32(cdb[6:]), flags: cdb[1], lenField: 6}
	default: // 16-byte
		return blockCDB{lba: getU64(cdb[2:]), blocks: getU32(cdb[10:]), flags: cdb[1], lenField: 10}
	}
}

const (
	bitDPO = 0x10
	bitFUA = 0x08
)

// bytesOf converts blocks to bytes for Result.Transfer.
func (st *luState) bytesOf(blocks uint64) int {
	n := blocks << st.shift
	if n > math.MaxInt || blocks>>(64-st.shift) != 0 {
		return math.MaxInt
	}
	return int(n)
}

// checkRange fails commands that reach past the last LBA or ask for more
// than MaxTransferBytes at once.
func (r request) checkRange(b blockCDB, limitTransfer bool) error {
	st := r.st
	if b.lba > st.blocks || uint64(b.blocks) > st.blocks-b.lba {
		return errLBAOutOfRange
	}
	if limitTransfer && uint64(b.blocks) > MaxTransferBytes>>st.shift {
		return invalidCDB(b.lenField, -1)
	}
	return nil
}

func read(r request) error {
	b := decodeBlockCDB(r.cdb)
	r.res.Transfer = r.st.bytesOf(uint64(b.blocks))
	if b.flags>>5 != 0 {
		// RDPROTECT without protection information (SBC-3 4.22.2).
		return invalidCDB(1, 7)
	}
	if err := r.checkRange(b, true); err != nil {
		return err
	}
	// Shared: reads run alongside each other and plain writes, but never
	// see half of a COMPARE AND WRITE or WRITE ATOMIC (rangelock.go).
	h := r.lockBlocks(b.lba, uint64(b.blocks), false)
	err := r.readInto(b.lba, b.blocks)
	h.release()
	return err
}

// readInto fills DataIn, up to its length, from the blocks at lba.
func (r request) readInto(lba uint64, blocks uint32) error {
	st, in := r.st, r.cmd.DataIn
	off := int64(lba) << st.shift
	want := min(int64(blocks)<<st.shift, int64(len(in)))
	whole := want &^ int64(st.blockSize-1)
	if whole > 0 {
		if err := st.dev.ReadAt(in[:whole], off); err != nil {
			return readError(err)
		}
	}
	if want > whole {
		if err := r.readPartial(in[whole:want], off+whole); err != nil {
			return err
		}
	}
	r.res.DataInLen = int(want)
	return nil
}

// readPartial reads the block at off and keeps its first len(p) bytes.
func (r request) readPartial(p []byte, off int64) error {
	buf := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(buf)
	blk := (*buf)[:r.st.blockSize]
	if err := r.st.dev.ReadAt(blk, off); err != nil {
		return readError(err)
	}
	copy(p, blk)
	return nil
}

func write(r request) error {
	b, durable, err := r.checkWrite()
	if err != nil {
		return err
	}
	h := r.lockBlocks(b.lba, uint64(b.blocks), false)
	_, err = r.writeFrom(b.lba, b.blocks, durable)
	h.release()
	return err
}

// checkWrite decodes a WRITE, sets res.Transfer and checks that it may
// write; durable tells whether the data must be on stable storage before
// GOOD.
func (r request) checkWrite() (b blockCDB, durable bool, err error) {
	b = decodeBlockCDB(r.cdb)
	r.res.Transfer = r.st.bytesOf(uint64(b.blocks))
	if b.flags>>5 != 0 {
		return b, false, invalidCDB(1, 7) // WRPROTECT
	}
	if err := r.lu.writeProtected(r.st); err != nil {
		return b, false, err
	}
	if err := r.checkRange(b, true); err != nil {
		return b, false, err
	}
	// With the write cache disabled every write must be on stable storage
	// before GOOD; otherwise only FUA writes must.
	return b, b.flags&bitFUA != 0 || !r.lu.wce.Load(), nil
}

// writeFrom writes the whole blocks of DataOut, at most blocks of them, and
// returns what it wrote.
func (r request) writeFrom(lba uint64, blocks uint32, durable bool) ([]byte, error) {
	data := r.wholeBlocks(blocks)
	if data == nil {
		return nil, nil
	}
	if err := r.st.dev.WriteAt(data, int64(lba)<<r.st.shift, durable); err != nil {
		return nil, writeError(err)
	}
	return data, nil
}

// wholeBlocks returns the whole blocks of DataOut, at most blocks of them;
// nil when there are none.
func (r request) wholeBlocks(blocks uint32) []byte {
	st, out := r.st, r.cmd.DataOut
	n := min(int64(blocks)<<st.shift, int64(len(out))) &^ int64(st.blockSize-1)
	if n == 0 {
		return nil
	}
	return out[:n]
}

func writeVerify(r request) error {
	b := decodeBlockCDB(r.cdb)
	r.res.Transfer = r.st.bytesOf(uint64(b.blocks))
	if b.flags>>5 != 0 {
		return invalidCDB(1, 7) // WRPROTECT
	}
	if bytchk := b.flags >> 1 & 3; bytchk > 1 {
		return invalidCDB(1, 2)
	}
	if err := r.lu.writeProtected(r.st); err != nil {
		return err
	}
	if err := r.checkRange(b, true); err != nil {
		return err
	}
	// The data has to be verified on the medium, so it is written durably and
	// read back. With BYTCHK=0 SBC only asks for a medium verification; the
	// read-back compare is that verification, and it costs no more.
	h := r.lockBlocks(b.lba, uint64(b.blocks), false)
	defer h.release()
	data, err := r.writeFrom(b.lba, b.blocks, true)
	if err != nil || data == nil {
		return err
	}
	return r.compareData(int64(b.lba)<<r.st.shift, data)
}

func verify(r request) error {
	b := decodeBlockCDB(r.cdb)
	if b.flags>>5 != 0 {
		return invalidCDB(1, 7) // VRPROTECT
	}
	bytchk := b.flags >> 1 & 3
	switch bytchk {
	case 0:
		// No data: the medium is virtual and cannot develop bad blocks we could
		// find by reading, so verification is the range check.
		return r.checkRange(b, false)
	case 1:
		r.res.Transfer = r.st.bytesOf(uint64(b.blocks))
	case 2:
		return invalidCDB(1, 2)
	case 3:
		// One block of data compared against every block in the range.
		r.res.Transfer = int(r.st.blockSize)
	}
	if err := r.checkRange(b, true); err != nil {
		return err
	}
	off := int64(b.lba) << r.st.shift
	if bytchk == 3 {
		if len(r.cmd.DataOut) < int(r.st.blockSize) {
			return nil
		}
		return r.comparePattern(off, b.blocks, r.cmd.DataOut[:r.st.blockSize])
	}
	n := min(int64(b.blocks)<<r.st.shift, int64(len(r.cmd.DataOut))) &^ int64(r.st.blockSize-1)
	return r.compareData(off, r.cmd.DataOut[:n])
}

// chunkPool holds scratch buffers for compares and partial-block reads, so
// those paths do not allocate per command either.
var chunkPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// compareData reads len(data) bytes at off and compares them with data,
// reporting MISCOMPARE with the offset of the first differing byte.
func (r request) compareData(off int64, data []byte) error {
	buf := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(buf)
	for done := 0; done < len(data); {
		n := min(len(*buf), len(data)-done)
		got := (*buf)[:n]
		if err := r.st.dev.ReadAt(got, off+int64(done)); err != nil {
			return readError(err)
		}
		if i := firstDiff(got, data[done:done+n]); i >= 0 {
			return miscompare(uint64(done + i))
		}
		done += n
	}
	return nil
}

// comparePattern compares every block of the range with one block.
func (r request) comparePattern(off int64, blocks uint32, pattern []byte) error {
	buf := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(buf)
	bs := int64(r.st.blockSize)
	total := int64(blocks) * bs
	for done := int64(0); done < total; {
		n := min(int64(len(*buf)), total-done)
		got := (*buf)[:n]
		if err := r.st.dev.ReadAt(got, off+done); err != nil {
			return readError(err)
		}
		for i := int64(0); i < n; i += bs {
			if j := firstDiff(got[i:i+bs], pattern); j >= 0 {
				return miscompare(uint64(done + i + int64(j)))
			}
		}
		done += n
	}
	return nil
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

func syncCache(r request) error {
	b := decodeBlockCDB(r.cdb)
	// A zero NUMBER OF LOGICAL BLOCKS means "to the last LBA", which the
	// range check accepts as it stands.
	if err := r.checkRange(b, false); err != nil {
		return err
	}
	// IMMED allows returning before the flush; flushing first is also allowed
	// and keeps the promise that GOOD means durable.
	if err := r.st.dev.Flush(); err != nil {
		return writeError(err)
	}
	return nil
}

// prefetch checks the range and returns GOOD: the page cache below is not
// ours to fill, and SBC-3 reports GOOD (not CONDITION MET) when the device
// server does not know whether the blocks now sit in its cache.
func prefetch(r request) error {
	return r.checkRange(decodeBlockCDB(r.cdb), false)
}

func readError(err error) error {
	if errors.Is(err, backend.ErrOutOfRange) {
		return errLBAOutOfRange // the capacity shrank under the command
	}
	return leaseSense(err, errReadFailed)
}

func writeError(err error) error {
	switch {
	case errors.Is(err, backend.ErrReadOnly):
		return errWriteProtected
	case errors.Is(err, backend.ErrOutOfRange):
		return errLBAOutOfRange
	}
	return leaseSense(err, errWriteFailed)
}
