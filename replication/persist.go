package replication

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hatarget/hatarget/target/durable"
)

// The owner keeps each dirty bitmap in a file of VolumeConfig.StateDir,
// so that an owner that restarts in the same epoch resumes resyncs from
// what its replicas lack instead of comparing everything (DESIGN.md,
// "Persistence"). A file holds the union of the node's dirty and volatile
// bitmaps, which is never less than what the node may lack:
//
//   - a region is on disk before the local write that the node misses is
//     issued (Volume.syncDirty before the local write), before a write it
//     failed is acknowledged and before it is dropped (settle, drop);
//   - a region leaves that union only once copied and made durable on
//     the node, and is cleared on disk lazily (saveDirtyLazily);
//   - a missing or unreadable file, one of another epoch (another owner
//     may have written since) or another geometry means "unknown": a node
//     out of the in-sync set without a bitmap is compared in full.
//
// Marks coalesce: writes that make regions dirty while a save is running
// wait for the next one, which covers all of them (group commit), and a
// write that marks nothing new costs two atomic loads.

// Replica state file, big-endian:
//
//	magic[4] "HTRS" | version u16 | flags u16 | epoch u64 |
//	node length u8 | node | bitmap (Bitmap.MarshalBinary) | CRC-32C u32
//
// Flag bit 0: the node's regions must be compared by checksum (the owner
// does not know what it holds). The CRC covers everything before it.
//
// StateVersion is the version of the replica state file (the persisted
// dirty bitmap); a file of another version is refused.
const StateVersion = 1

const (
	stateMagic      = "HTRS"
	stateCompare    = 1 << 0
	stateHead       = 17
	dirtyFilePrefix = "dirty-"
	// dirtyCheckpoint is how often a resync saves its progress (regions
	// cleared): what a crash of the owner makes it copy again.
	dirtyCheckpoint = time.Second
)

// ErrBadReplicaState wraps every reason a replica state file is refused.
var ErrBadReplicaState = errors.New("replication: bad replica state file")

// replicaState is what the owner keeps on disk of one replica.
type replicaState struct {
	node    string
	epoch   uint64
	compare bool
	dirty   *Bitmap
}

func (st replicaState) marshal() ([]byte, error) {
	if err := checkName("node", len(st.node)); err != nil {
		return nil, err
	}
	bm, err := st.dirty.MarshalBinary()
	if err != nil {
		return nil, err
	}
	var flags uint16
	if st.compare {
		flags |= stateCompare
	}
	out := make([]byte, 0, stateHead+len(st.node)+len(bm)+4)
	out = append(out, stateMagic...)
	out = binary.BigEndian.AppendUint16(out, StateVersion)
	out = binary.BigEndian.AppendUint16(out, flags)
	out = binary.BigEndian.AppendUint64(out, st.epoch)
	out = append(out, byte(len(st.node)))
	out = append(out, st.node...)
	out = append(out, bm...)
	return binary.BigEndian.AppendUint32(out, crc32.Checksum(out, crc32c)), nil
}

func decodeReplicaState(data []byte) (replicaState, error) {
	if len(data) < stateHead+4 {
		return replicaState{}, fmt.Errorf("%w: %d bytes", ErrBadReplicaState, len(data))
	}
	body := data[:len(data)-4]
	switch {
	case string(body[:4]) != stateMagic:
		return replicaState{}, fmt.Errorf("%w: magic %q", ErrBadReplicaState, body[:4])
	case binary.BigEndian.Uint16(body[4:]) != StateVersion:
		return replicaState{}, fmt.Errorf("%w: unknown version %d (this build reads version %d)", ErrBadReplicaState,
			binary.BigEndian.Uint16(body[4:]), StateVersion)
	case crc32.Checksum(body, crc32c) != binary.BigEndian.Uint32(data[len(body):]):
		return replicaState{}, fmt.Errorf("%w: checksum mismatch", ErrBadReplicaState)
	}
	flags := binary.BigEndian.Uint16(body[6:])
	if flags&^stateCompare != 0 {
		return replicaState{}, fmt.Errorf("%w: unknown flags %#x", ErrBadReplicaState, flags)
	}
	st := replicaState{epoch: binary.BigEndian.Uint64(body[8:]), compare: flags&stateCompare != 0}
	n := int(body[16])
	if n == 0 || len(body) < stateHead+n {
		return replicaState{}, fmt.Errorf("%w: node name of %d bytes", ErrBadReplicaState, n)
	}
	st.node = string(body[stateHead : stateHead+n])
	st.dirty = new(Bitmap)
	if err := st.dirty.UnmarshalBinary(body[stateHead+n:]); err != nil {
		return replicaState{}, fmt.Errorf("%w: %w", ErrBadReplicaState, err)
	}
	return st, nil
}

// dirtyStore is a volume's directory of replica state files.
type dirtyStore struct {
	dir string
	// marks is bumped by the volume's dirty and volatile bitmaps whenever
	// a region becomes marked; saved is the value the last save covers.
	marks, saved atomic.Uint64

	mu       sync.Mutex // one save at a time; guards the rest
	written  map[string]savedState
	lastSave time.Time
	err      error // a sync failed: later saves cannot be trusted either
}

// savedState identifies what a node's file holds: the bitmaps (by
// identity, so that a bitmap replaced by a new one is written again) at
// their versions, the epoch and the compare flag.
type savedState struct {
	dirty, volatile       *Bitmap
	dirtyVer, volatileVer uint64
	epoch                 uint64
	compare               bool
}

func dirtyFileName(node string) string { return dirtyFilePrefix + url.PathEscape(node) }

// loadDirty reads the state files of the volume's epoch into v.dirty and
// v.verify, and removes the others. Called by NewVolume.
func (v *Volume) loadDirty() error {
	s := v.store
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("replication state of %s: %w", v.cfg.Device, err)
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("replication state of %s: %w", v.cfg.Device, err)
	}
	for _, e := range entries {
		name := e.Name()
		path := filepath.Join(s.dir, name)
		switch {
		case strings.HasPrefix(name, "."+dirtyFilePrefix): // a save's temporary file
			os.Remove(path)
			continue
		case !strings.HasPrefix(name, dirtyFilePrefix):
			continue
		}
		st, err := readReplicaState(path)
		var why string
		switch {
		case err != nil:
			why = err.Error()
		case dirtyFileName(st.node) != name || st.node == v.cfg.Self:
			why = "not a replica's file: " + st.node
		case !v.cfg.ResumeState:
			why = "the cluster version does not let the owner resume persisted bitmaps yet"
		case st.epoch != v.epoch:
			why = fmt.Sprintf("epoch %d, not %d: another owner may have written since", st.epoch, v.epoch)
		case st.dirty.Size() != v.size || st.dirty.RegionSize() != v.cfg.RegionSize:
			why = fmt.Sprintf("a bitmap of %d bytes in %d-byte regions, not %d in %d",
				st.dirty.Size(), st.dirty.RegionSize(), v.size, v.cfg.RegionSize)
		}
		if why != "" {
			v.log.Warn("replica state file ignored: the replica's resync compares everything", "file", path, "why", why)
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("replication state of %s: %w", v.cfg.Device, err)
			}
			continue
		}
		st.dirty.marks = &s.marks
		v.dirty[st.node] = st.dirty
		if st.compare {
			v.verify[st.node] = true
		}
		s.written[st.node] = savedState{dirty: st.dirty, dirtyVer: st.dirty.version(), epoch: st.epoch, compare: st.compare}
		v.log.Info("dirty bitmap of a replica restored", "replica", st.node,
			"dirty", st.dirty.Count()*st.dirty.RegionSize(), "compare", st.compare)
	}
	return durable.SyncDir(s.dir)
}

func readReplicaState(path string) (replicaState, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return replicaState{}, err
	}
	return decodeReplicaState(data)
}

// syncDirty returns once every region marked so far in the bitmaps of
// the volume is on disk: the state files are saved if some is not.
// Concurrent callers share a save.
func (v *Volume) syncDirty() error {
	s := v.store
	if s == nil {
		return nil
	}
	want := s.marks.Load()
	if s.saved.Load() >= want {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.saved.Load() >= want {
		return nil
	}
	return v.saveLocked()
}

// dirtySaved reports whether the state files hold every region marked so
// far, so that a write need not wait for syncDirty.
func (v *Volume) dirtySaved() bool {
	s := v.store
	return s == nil || s.saved.Load() >= s.marks.Load()
}

// saveDirty saves the state files now.
func (v *Volume) saveDirty() error {
	s := v.store
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return v.saveLocked()
}

// saveDirtyLazily saves the files when the last save is older than
// dirtyCheckpoint, or now with force, without waiting for a save in
// progress: a resync calls it to record its progress.
func (v *Volume) saveDirtyLazily(force bool) {
	s := v.store
	if s == nil || !s.mu.TryLock() {
		return
	}
	defer s.mu.Unlock()
	if !force && time.Since(s.lastSave) < dirtyCheckpoint {
		return
	}
	if err := v.saveLocked(); err != nil {
		v.log.Error("saving the replicas' dirty bitmaps", "err", err)
	}
}

// dirtyFile is a state file to write.
type dirtyFile struct {
	node  string
	data  []byte
	state savedState
}

// saveLocked writes the files of the nodes whose bitmaps changed since
// they were written and removes those of the nodes without one, with
// s.mu held.
func (v *Volume) saveLocked() error {
	s := v.store
	if s.err != nil {
		return s.err
	}
	marks := s.marks.Load()
	files, keep, err := v.dirtyFiles()
	if err != nil {
		return fmt.Errorf("replication state of %s: %w", v.cfg.Device, err)
	}
	changed := len(files) > 0
	for _, f := range files {
		if err := durable.Replace(filepath.Join(s.dir, dirtyFileName(f.node)), f.data); err != nil {
			return fmt.Errorf("replication state of %s: %w", v.cfg.Device, err)
		}
		s.written[f.node] = f.state
	}
	for node := range s.written {
		if keep[node] {
			continue
		}
		if err := os.Remove(filepath.Join(s.dir, dirtyFileName(node))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("replication state of %s: %w", v.cfg.Device, err)
		}
		delete(s.written, node)
		changed = true
	}
	if changed {
		if err := durable.SyncDir(s.dir); err != nil {
			s.err = fmt.Errorf("replication state of %s: %w", v.cfg.Device, err)
			return s.err
		}
	}
	s.saved.Store(marks)
	s.lastSave = time.Now()
	return nil
}

// dirtyFiles encodes the files that differ from what s.written says is on
// disk, and lists the nodes that have one. The union of a node's dirty
// and volatile bitmaps is taken under v.mu, which regions moving from one
// to the other hold.
func (v *Volume) dirtyFiles() ([]dirtyFile, map[string]bool, error) {
	s := v.store
	v.mu.Lock()
	defer v.mu.Unlock()
	keep := make(map[string]bool, len(v.dirty))
	var files []dirtyFile
	for node, d := range v.dirty {
		keep[node] = true
		st := savedState{dirty: d, dirtyVer: d.version(), epoch: v.epoch, compare: v.verify[node]}
		if vb := v.volatile[node]; vb != nil {
			st.volatile, st.volatileVer = vb, vb.version()
		}
		if s.written[node] == st {
			continue
		}
		union := d.clone()
		if st.volatile != nil {
			if err := union.Or(st.volatile); err != nil {
				return nil, nil, err
			}
		}
		data, err := replicaState{node: node, epoch: v.epoch, compare: st.compare, dirty: union}.marshal()
		if err != nil {
			return nil, nil, err
		}
		files = append(files, dirtyFile{node: node, data: data, state: st})
	}
	return files, keep, nil
}

// fdatasync makes f's data durable, without the metadata a fixed-size
// file updated in place does not need.
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
