package replication

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/hatarget/hatarget/target/durable"
)

// The activity log is what a replica remembers of the last writes it
// received for a device: the regions (of ActivityRegion bytes) of its last
// ActivityEntries writes and unmaps, in flight or done. When an owner
// fails, the writes it had in flight may have reached some replicas and
// not others; those are among the last each replica received, so the new
// owner, after sealing the old epoch, reads every replica's log and makes
// the union of the regions identical on all of them (DRBD's activity log).
//
// With a file (ReplicaDevice.ActivityFile) the log survives a crash of the
// replica: an entry is on disk before the write it covers is applied. A
// write to an extent logged less than ActivityEntries/2 entries ago adds
// nothing, so only a write to a region not written recently waits for the
// disk, and concurrent ones share one write and one fdatasync.
const (
	ActivityRegion  = 1 << 20
	ActivityEntries = 4096
)

type activityLog struct {
	mu   sync.Mutex
	ring [ActivityEntries]Extent
	// seq numbers the entries: the one numbered s is in ring[(s-1) %
	// ActivityEntries] while s > seq-ActivityEntries.
	seq uint64
	// recent is the number of the latest entry of each extent in the ring.
	recent map[Extent]uint64
	// lost is reported besides the ring: the whole device when the log
	// on disk could not be read.
	lost Extent

	// file is the log on disk, nil in memory; failed why a file meant
	// for it could not be opened, which fails every write. durable is the
	// number of the last entry on disk; err, once set, fails every later
	// write (the log can no longer cover it). commitMu: one commit at a
	// time.
	file     *os.File
	failed   error
	durable  atomic.Uint64
	commitMu sync.Mutex
	err      error // guarded by commitMu
	buf      []byte
}

// add records a write of n bytes at off (n > 0), in whole regions, and
// returns once the entry is on disk (at once in memory, or when the
// extent is logged recently).
func (a *activityLog) add(off, n int64) error {
	if n <= 0 {
		return nil
	}
	start := off &^ (ActivityRegion - 1)
	end := off + n
	if r := end & (ActivityRegion - 1); r != 0 && end <= MaxOffset-ActivityRegion {
		end += ActivityRegion - r
	}
	e := Extent{Off: start, Len: end - start}
	a.mu.Lock()
	seq, ok := a.recentLocked(e)
	if !ok {
		seq = a.appendLocked(e)
	}
	a.mu.Unlock()
	if a.file == nil {
		return a.failed
	}
	if a.durable.Load() >= seq {
		return nil
	}
	return a.commit(seq)
}

// recentLocked returns the number of a recent entry that covers e.
// Sequential writes hit the last entry many times in a row; a region
// written again while in the newer half of the ring stays in it for at
// least ActivityEntries/2 more entries, far more than an owner has writes
// in flight.
func (a *activityLog) recentLocked(e Extent) (uint64, bool) {
	if a.seq == 0 {
		return 0, false
	}
	last := a.ring[(a.seq-1)%ActivityEntries]
	if e.Off >= last.Off && e.End() <= last.End() {
		return a.seq, true
	}
	s, ok := a.recent[e]
	return s, ok && a.seq-s < ActivityEntries/2
}

// appendLocked adds e as the newest entry, evicting the oldest.
func (a *activityLog) appendLocked(e Extent) uint64 {
	if a.recent == nil {
		a.recent = make(map[Extent]uint64)
	}
	a.seq++
	slot := &a.ring[(a.seq-1)%ActivityEntries]
	if a.seq > ActivityEntries && a.recent[*slot] == a.seq-ActivityEntries {
		delete(a.recent, *slot)
	}
	*slot = e
	a.recent[e] = a.seq
	return a.seq
}

// extents returns the logged regions merged, in offset order.
func (a *activityLog) extents() []Extent {
	a.mu.Lock()
	ext := make([]Extent, min(a.seq, ActivityEntries), min(a.seq, ActivityEntries)+1)
	copy(ext, a.ring[:])
	if a.lost.Len > 0 {
		ext = append(ext, a.lost)
	}
	a.mu.Unlock()
	return mergeExtents(ext)
}

// Activity log file, fixed size, updated in place, big-endian:
//
//	header: magic[4] "HTAL" | version u16 | reserved u16 | region u32 |
//	        entries u32 | reserved[12] | CRC-32C u32 (of the 28 bytes before)
//	ActivityEntries slots: off u64 | len u64 | seq u64 | reserved u32 |
//	        CRC-32C u32 (of the 28 bytes before)
//
// Entry seq is in slot (seq-1) % entries; seq 0 is an empty slot. A
// commit writes only the slots of new entries. A slot whose checksum
// fails was being written when the node crashed: it held the oldest entry
// or one whose write was never applied, so it is skipped.
//
// ActivityLogVersion is the version of the activity log file; a file of
// another version is refused.
const ActivityLogVersion = 1

const (
	activityMagic   = "HTAL"
	activitySlotLen = 32
	activityFileLen = activitySlotLen * (1 + ActivityEntries)
)

// ErrBadActivityLog wraps every reason an activity log file is refused.
var ErrBadActivityLog = errors.New("replication: bad activity log file")

// activityEntry is one slot of the file.
type activityEntry struct {
	Extent
	Seq uint64
}

func activityHeader() []byte {
	h := make([]byte, 0, activitySlotLen)
	h = append(h, activityMagic...)
	h = binary.BigEndian.AppendUint16(h, ActivityLogVersion)
	h = binary.BigEndian.AppendUint16(h, 0)
	h = binary.BigEndian.AppendUint32(h, ActivityRegion)
	h = binary.BigEndian.AppendUint32(h, ActivityEntries)
	h = append(h, make([]byte, 12)...)
	return binary.BigEndian.AppendUint32(h, crc32.Checksum(h, crc32c))
}

func putActivitySlot(b []byte, e activityEntry) {
	binary.BigEndian.PutUint64(b, uint64(e.Off))
	binary.BigEndian.PutUint64(b[8:], uint64(e.Len))
	binary.BigEndian.PutUint64(b[16:], e.Seq)
	binary.BigEndian.PutUint32(b[24:], 0)
	binary.BigEndian.PutUint32(b[28:], crc32.Checksum(b[:28], crc32c))
}

// encodeActivityLog returns the file holding entries (at most one per
// slot, as decodeActivityLog returns them).
func encodeActivityLog(entries []activityEntry) []byte {
	out := make([]byte, activityFileLen)
	copy(out, activityHeader())
	for _, e := range entries {
		putActivitySlot(out[activitySlotLen*(1+(e.Seq-1)%ActivityEntries):], e)
	}
	return out
}

// decodeActivityLog returns the entries of a file, oldest first.
func decodeActivityLog(data []byte) ([]activityEntry, error) {
	if len(data) != activityFileLen {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrBadActivityLog, len(data), activityFileLen)
	}
	h := data[:activitySlotLen]
	switch {
	case string(h[:4]) != activityMagic:
		return nil, fmt.Errorf("%w: magic %q", ErrBadActivityLog, h[:4])
	case binary.BigEndian.Uint16(h[4:]) != ActivityLogVersion:
		return nil, fmt.Errorf("%w: unknown version %d (this build reads version %d)", ErrBadActivityLog,
			binary.BigEndian.Uint16(h[4:]), ActivityLogVersion)
	case crc32.Checksum(h[:28], crc32c) != binary.BigEndian.Uint32(h[28:]):
		return nil, fmt.Errorf("%w: header checksum mismatch", ErrBadActivityLog)
	case string(h) != string(activityHeader()):
		return nil, fmt.Errorf("%w: header %x: want %d entries of %d-byte regions", ErrBadActivityLog,
			h, ActivityEntries, ActivityRegion)
	}
	var out []activityEntry
	for i := range ActivityEntries {
		b := data[activitySlotLen*(1+i):][:activitySlotLen]
		if crc32.Checksum(b[:28], crc32c) != binary.BigEndian.Uint32(b[28:]) {
			continue // torn
		}
		e := activityEntry{Extent{Off: int64(binary.BigEndian.Uint64(b)), Len: int64(binary.BigEndian.Uint64(b[8:]))},
			binary.BigEndian.Uint64(b[16:])}
		if e.Seq == 0 && e.Off == 0 && e.Len == 0 && binary.BigEndian.Uint32(b[24:]) == 0 {
			continue // empty
		}
		if e.Seq == 0 || (e.Seq-1)%ActivityEntries != uint64(i) || binary.BigEndian.Uint32(b[24:]) != 0 ||
			e.Off < 0 || e.Len <= 0 || e.Off > MaxOffset || e.Len > MaxOffset-e.Off || e.Off%ActivityRegion != 0 {
			return nil, fmt.Errorf("%w: slot %d holds entry %d of %d bytes at %d", ErrBadActivityLog, i, e.Seq, e.Len, e.Off)
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(x, y activityEntry) int { return cmp.Compare(x.Seq, y.Seq) })
	return out, nil
}

// open makes path the log's file: the entries it holds are restored, and
// a missing file is created. A file that cannot be read (corrupt, or of an
// unknown version) is replaced, and the whole device of size bytes is
// reported active meanwhile: what was in flight before is unknown. Call
// it before the log is used; if it fails, so do writes.
func (a *activityLog) open(path string, size int64) error {
	err := a.openFile(path, size)
	if a.file == nil {
		a.failed = err
	}
	return err
}

func (a *activityLog) openFile(path string, size int64) (err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("activity log: %w", err)
	}
	data, err := os.ReadFile(path)
	var bad error
	switch {
	case err == nil:
		var entries []activityEntry
		if entries, bad = decodeActivityLog(data); bad == nil {
			for _, e := range entries {
				a.seq = e.Seq - 1
				a.appendLocked(e.Extent)
			}
			if a.file, err = os.OpenFile(path, os.O_RDWR, 0); err != nil {
				return fmt.Errorf("activity log: %w", err)
			}
			a.durable.Store(a.seq)
			return nil
		}
		a.lost = Extent{Len: size}
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("activity log: %w", err)
	}
	// Entries continue from the one restored last: a fresh file starts
	// over.
	a.seq = 0
	clear(a.ring[:])
	clear(a.recent)
	if err := durable.WriteFile(path, encodeActivityLog(nil)); err != nil {
		return fmt.Errorf("activity log: %w", err)
	}
	if a.file, err = os.OpenFile(path, os.O_RDWR, 0); err != nil {
		return fmt.Errorf("activity log: %w", err)
	}
	if bad != nil {
		return fmt.Errorf("activity log %s replaced, the whole device is reported active: %w", path, bad)
	}
	return nil
}

// commit writes every entry up to at least seq to the file: the slots of
// the entries not on it yet, in one or two writes (the ring wraps), and
// one fdatasync for all.
func (a *activityLog) commit(seq uint64) error {
	a.commitMu.Lock()
	defer a.commitMu.Unlock()
	if a.durable.Load() >= seq {
		return nil
	}
	if a.err != nil {
		return a.err
	}
	if a.buf == nil {
		a.buf = make([]byte, activitySlotLen*ActivityEntries)
	}
	a.mu.Lock()
	last := a.seq
	first := max(a.durable.Load()+1, last-min(last, ActivityEntries)+1)
	for s := first; s <= last; s++ {
		i := (s - 1) % ActivityEntries
		putActivitySlot(a.buf[activitySlotLen*i:], activityEntry{a.ring[i], s})
	}
	a.mu.Unlock()
	i, j := (first-1)%ActivityEntries, (last-1)%ActivityEntries
	var err error
	if i <= j {
		_, err = a.file.WriteAt(a.buf[activitySlotLen*i:activitySlotLen*(j+1)], int64(activitySlotLen*(1+i)))
	} else {
		if _, err = a.file.WriteAt(a.buf[activitySlotLen*i:], int64(activitySlotLen*(1+i))); err == nil {
			_, err = a.file.WriteAt(a.buf[:activitySlotLen*(j+1)], activitySlotLen)
		}
	}
	if err == nil {
		err = fdatasync(a.file)
	}
	if err != nil {
		// The slots may be half written: no later entry can be trusted to
		// reach the disk either.
		a.err = fmt.Errorf("activity log: %w", err)
		return a.err
	}
	a.durable.Store(last)
	return nil
}

// close closes the file; the log must not be used any more.
func (a *activityLog) close() error {
	if a.file == nil {
		return nil
	}
	return a.file.Close()
}

// mergeExtents sorts ext and merges overlapping or touching extents, in
// place.
func mergeExtents(ext []Extent) []Extent {
	slices.SortFunc(ext, func(x, y Extent) int { return cmp.Compare(x.Off, y.Off) })
	out := ext[:0]
	for _, e := range ext {
		if e.Len <= 0 {
			continue
		}
		if k := len(out) - 1; k >= 0 && e.Off <= out[k].End() {
			out[k].Len = max(out[k].End(), e.End()) - out[k].Off
			continue
		}
		out = append(out, e)
	}
	return out
}
