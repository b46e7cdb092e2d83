package scsi

import "github.com/hatarget/hatarget/target/backend"

// GET LBA STATUS (SBC-4 5.7) and the Logical Block Provisioning VPD page.
//
// A thin LU asks its device where the holes are (backend.Mapper: SEEK_DATA
// and SEEK_HOLE on a file). Holes come in filesystem blocks; a logical
// block that is partly allocated is reported mapped, so "deallocated"
// always means the whole block reads as zeros. A fully provisioned LU, or a
// device that cannot tell, reports everything mapped.

// Provisioning status of an LBA status descriptor.
const (
	lbaMapped      = 0
	lbaDeallocated = 1
)

const (
	// maxLBAStatusDescriptors bounds the descriptors one command returns.
	maxLBAStatusDescriptors = 1024
	// maxExtentLookups bounds the extent queries one command makes, so a
	// badly fragmented file cannot make GET LBA STATUS slow; the
	// descriptors found until then are returned, which SBC allows.
	maxExtentLookups = 4 * maxLBAStatusDescriptors
)

func getLBAStatus(r request) error {
	st := r.st
	lba := getU64(r.cdb[2:])
	alloc := int(getU32(r.cdb[10:]))
	if lba >= st.blocks {
		return errLBAOutOfRange
	}
	want := 1
	if alloc > 8+16 {
		want = min((alloc-8)/16, maxLBAStatusDescriptors)
	}
	var mapper backend.Mapper
	if st.thin {
		mapper, _ = st.dev.(backend.Mapper)
	}
	data := make([]byte, 8, 8+16*want)
	var lastLBA, lastEnd uint64
	lastStatus, ndesc := byte(0xff), 0
	for cur, lookups := lba, 0; cur < st.blocks && lookups < maxExtentLookups; lookups++ {
		status, end, err := r.extent(mapper, cur)
		if err != nil {
			return err
		}
		// A descriptor's NUMBER OF LOGICAL BLOCKS has 32 bits.
		if ndesc > 0 && status == lastStatus && end-lastLBA <= 0xffffffff {
			lastEnd = end
			putU32(data[len(data)-8:], uint32(end-lastLBA))
		} else {
			if ndesc == want {
				break
			}
			end = min(end, cur+0xffffffff)
			var d [16]byte
			putU64(d[0:], cur)
			putU32(d[8:], uint32(end-cur))
			d[12] = status
			data = append(data, d[:]...)
			lastLBA, lastEnd, lastStatus = cur, end, status
			ndesc++
		}
		cur = lastEnd
	}
	putU32(data[0:], uint32(len(data)-4))
	respond(r.cmd, r.res, data, alloc)
	return nil
}

// extent returns the provisioning status of the block at lba and the end
// (exclusive) of the run of blocks sharing it.
func (r request) extent(m backend.Mapper, lba uint64) (byte, uint64, error) {
	st := r.st
	if m == nil {
		return lbaMapped, st.blocks, nil
	}
	off := int64(lba) << st.shift
	mapped, n, err := m.Extent(off)
	if err != nil {
		return 0, 0, readError(err)
	}
	if !mapped {
		end := uint64(off+n) >> st.shift // whole blocks of hole only
		if end > lba {
			return lbaDeallocated, min(end, st.blocks), nil
		}
		// The hole ends inside this block: the block is partly allocated.
		off += n
		if _, n, err = m.Extent(off); err != nil {
			return 0, 0, readError(err)
		}
	}
	bs := int64(st.blockSize)
	end := uint64((off + n + bs - 1) / bs) // a partly mapped last block is mapped
	return lbaMapped, min(max(end, lba+1), st.blocks), nil
}

// Logical Block Provisioning VPD page bits (SBC-4 6.6.4).
const (
	vpdLBPU       = 0x80
	vpdLBPWS      = 0x40
	vpdLBPWS10    = 0x20
	vpdLBPRZ      = 0x04 // LBPRZ field xx1b: unmapped blocks read as zeros
	provisionThin = 0x02
)

// provisioningPage builds VPD page B2h for a thin LU: UNMAP and both WRITE
// SAME commands unmap, holes read as zeros, no anchoring, no thresholds.
func provisioningPage(st *luState) []byte {
	b := make([]byte, 8)
	b[1] = vpdProvisioning
	putU16(b[2:], 4)
	b[5] = vpdLBPU | vpdLBPWS | vpdLBPWS10 | vpdLBPRZ
	b[6] = provisionThin
	return b
}
