package robust

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"
)

// Every block the soak test writes describes itself, so a read can tell
// which write put it there, and whether it is intact:
//
//	[0,8)    magic
//	[8,16)   LBA the block was written to
//	[16,24)  write id (unique per WRITE command, never 0)
//	[24,28)  worker id
//	[28]     LUN
//	[32,bs-4) filler derived from (write id, LBA)
//	[bs-4,bs) CRC32C of everything before it
//
// A block of zeros is the initial content of the sparse backing file and
// stands for write id 0.
const patMagic = 0x31214b414f534148 // "HASOAK!1"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// fillBlock lays out the pattern of write id at lba into b (one block).
func fillBlock(b []byte, lun uint8, worker uint32, lba, id uint64) {
	binary.LittleEndian.PutUint64(b[0:], patMagic)
	binary.LittleEndian.PutUint64(b[8:], lba)
	binary.LittleEndian.PutUint64(b[16:], id)
	binary.LittleEndian.PutUint32(b[24:], worker)
	b[28], b[29], b[30], b[31] = lun, 0, 0, 0
	body := b[32 : len(b)-4]
	binary.LittleEndian.PutUint64(body, mix64(id*0x9e3779b97f4a7c15^lba))
	binary.LittleEndian.PutUint64(body[8:], mix64(id^lba<<17^uint64(worker)))
	for n := 16; n < len(body); n *= 2 {
		copy(body[n:], body[:n])
	}
	binary.LittleEndian.PutUint32(b[len(b)-4:], crc32.Checksum(b[:len(b)-4], castagnoli))
}

// decodeBlock returns the write id held by b, which must be the block at
// lba of worker's region on lun. scratch is a block-sized buffer. A
// non-empty problem means the block is garbage: neither zeros nor an
// intact pattern of this worker for this LBA.
func decodeBlock(b, scratch []byte, lun uint8, worker uint32, lba uint64) (id uint64, problem string) {
	if binary.LittleEndian.Uint64(b) != patMagic {
		if isZero(b) {
			return 0, ""
		}
		return 0, fmt.Sprintf("no pattern magic (first bytes % x)", b[:min(32, len(b))])
	}
	id = binary.LittleEndian.Uint64(b[16:])
	gotLBA := binary.LittleEndian.Uint64(b[8:])
	gotWorker := binary.LittleEndian.Uint32(b[24:])
	gotLUN := b[28]
	if crc := crc32.Checksum(b[:len(b)-4], castagnoli); crc != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return id, fmt.Sprintf("CRC mismatch (header: write %d, LBA %d, worker %d, LUN %d): torn or corrupted block", id, gotLBA, gotWorker, gotLUN)
	}
	if gotLBA != lba || gotWorker != worker || gotLUN != lun {
		return id, fmt.Sprintf("intact block of write %d for LUN %d LBA %d worker %d found at LUN %d LBA %d (worker %d's region): misplaced data",
			id, gotLUN, gotLBA, gotWorker, lun, lba, worker)
	}
	fillBlock(scratch, lun, worker, lba, id)
	if !bytes.Equal(b, scratch) {
		return id, fmt.Sprintf("write %d: body differs from its pattern", id)
	}
	return id, ""
}

var zeros = make([]byte, 64<<10)

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeros))
		if !bytes.Equal(b[:n], zeros[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// blockState is what the model knows about one block.
//
// acked is the last write whose GOOD status we received (or whose content a
// later read observed, which settles every earlier doubt); 0 is the initial
// zeros. pending are writes issued after acked that ended without GOOD but
// are known to be over on the target (CHECK CONDITION, aborted by a task
// management function whose response we got, lost with a session that was
// reinstated): each may or may not have landed, and none can land after
// the next write. stale are writes lost with a session that was replaced by
// one with another ISID: nothing fences them, so they stay possible values
// for good.
type blockState struct {
	acked   uint64
	pending []uint64
	stale   []uint64
}

func (b *blockState) allows(id uint64) bool {
	return id == b.acked || slices.Contains(b.pending, id) || slices.Contains(b.stale, id)
}

// ack records a write that completed with GOOD.
func (b *blockState) ack(id uint64) { b.acked, b.pending = id, nil }

// maybe records a write that may or may not have landed.
func (b *blockState) maybe(id uint64) { b.pending = append(b.pending, id) }

// unfenced makes id a possible value for good.
func (b *blockState) unfenced(id uint64) {
	if !slices.Contains(b.stale, id) {
		b.stale = append(b.stale, id)
	}
}

// settle records what a read observed: the doubts about earlier writes are
// resolved.
func (b *blockState) settle(id uint64) { b.acked, b.pending = id, nil }

func (b *blockState) written() bool { return b.acked != 0 || len(b.pending) > 0 || len(b.stale) > 0 }

func (b *blockState) String() string {
	var s strings.Builder
	fmt.Fprintf(&s, "last acknowledged write %d", b.acked)
	if len(b.pending) > 0 {
		fmt.Fprintf(&s, ", unacknowledged candidates %v", b.pending)
	}
	if len(b.stale) > 0 {
		fmt.Fprintf(&s, ", unfenced candidates %v", b.stale)
	}
	return s.String()
}
