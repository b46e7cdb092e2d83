package cluster

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm"
)

// The audit log: the leader puts who proposed each entry, from where and
// when, in the Raft log entry's Extensions, beside the command rather than
// in it. Extensions are replicated and stored with the entry but never
// reach the state machine, so the command encoding, its strict decoding
// and the version gate are unchanged, and releases that know nothing of
// them (v0.1.0) ignore them. Every node appends the changes it applies to
// DATA-DIR/audit.jsonl and logs each one.

// auditFile is the audit log's name in the data directory.
const auditFile = "audit.jsonl"

// The audit file is rotated when a record would take it past
// auditRotateBytes: audit.jsonl becomes audit.jsonl.1, the older ones
// move up, and the oldest past auditKeep goes. Configuration changes are
// rare (a record is a few hundred bytes), so this keeps hundreds of
// thousands of them while bounding the disk a runaway client could fill.
var auditRotateBytes int64 = 64 << 20

const auditKeep = 3

// auditBodyMax bounds the command body kept in a record (an import or a
// restore carries a whole configuration): past it, only its size is kept.
const auditBodyMax = 4096

// unknownPrincipal names the author of entries without audit data:
// written before this release, or by a node of an older one.
const unknownPrincipal = "unknown"

// auditMeta is the Extensions of an entry this release proposes.
type auditMeta struct {
	Principal string    `json:"principal"`
	Role      string    `json:"role,omitempty"`
	Source    string    `json:"source,omitempty"`
	Time      time.Time `json:"time"`
}

func encodeAuditMeta(p principal, now time.Time) []byte {
	b, _ := json.Marshal(auditMeta{Principal: p.name, Role: p.role, Source: p.source, Time: now.UTC()})
	return b
}

// decodeAuditMeta reads an entry's Extensions leniently: they are a record
// of who did it, not state, and a later release may add fields.
func decodeAuditMeta(ext []byte) auditMeta {
	var m auditMeta
	if len(ext) == 0 || json.Unmarshal(ext, &m) != nil || m.Principal == "" {
		return auditMeta{Principal: unknownPrincipal}
	}
	return m
}

// auditLog appends the commands this node applies to its audit file. It
// runs on Raft's apply goroutine, so a record is one append without
// fsync. The file is opened per record, and read once, on the first, to
// learn the last index it holds: by then the data dir exists.
type auditLog struct {
	path string // the current file; rotated ones are path.1 .. path.auditKeep
	log  *slog.Logger

	mu     sync.Mutex
	read   bool   // last is known
	last   uint64 // the highest index in the file
	failed bool   // an error was logged already
}

func newAuditLog(dataDir string, log *slog.Logger) *auditLog {
	return &auditLog{path: filepath.Join(dataDir, auditFile), log: log}
}

// record appends the entry at l, which applied c. Reservations are left
// out: they are initiators' SCSI traffic, not configuration. An index
// the file holds already (Raft replays the log after a restart) is
// neither written nor logged again.
func (a *auditLog) record(l *raft.Log, c fsm.Command) {
	if c.Type() == fsm.TypeReservation {
		return
	}
	rec := newAuditRecord(l, c)
	a.mu.Lock()
	defer a.mu.Unlock()
	err := a.learnLast()
	if err == nil && rec.Index <= a.last {
		return
	}
	a.log.Info("audit", "index", rec.Index, "principal", rec.Principal, "role", rec.Role, "source", rec.Source,
		"command", rec.Command, "proposed", rec.Time, "body", jsonText(rec.Body))
	if err == nil {
		err = a.append(rec)
	}
	if err != nil && !a.failed {
		a.log.Error("audit log: cannot write it; changes are still logged", "path", a.path, "err", err)
		a.failed = true
	}
}

// learnLast reads the last index from the newest file that has a record
// (the current one is empty right after a rotation).
func (a *auditLog) learnLast() error {
	if a.read {
		return nil
	}
	files := auditFiles(a.path)
	for i := len(files) - 1; i >= 0; i-- {
		recs, err := readAuditFile(files[i], time.Time{})
		if err != nil {
			return err
		}
		if len(recs) > 0 {
			a.last = recs[len(recs)-1].Index
			break
		}
	}
	a.read = true
	return nil
}

// auditFiles lists the audit files of path, oldest first, the current
// one last; rotated ones that do not exist are left out.
func auditFiles(path string) []string {
	var files []string
	for i := auditKeep; i >= 1; i-- {
		if rotated := fmt.Sprintf("%s.%d", path, i); fileExists(rotated) {
			files = append(files, rotated)
		}
	}
	return append(files, path)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// rotate moves the current file to path.1, and each older one up by one,
// the oldest past auditKeep out.
func (a *auditLog) rotate() error {
	for i := auditKeep - 1; i >= 1; i-- {
		from := fmt.Sprintf("%s.%d", a.path, i)
		if err := os.Rename(from, fmt.Sprintf("%s.%d", a.path, i+1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("rotating the audit log: %w", err)
		}
	}
	if err := os.Rename(a.path, a.path+".1"); err != nil {
		return fmt.Errorf("rotating the audit log: %w", err)
	}
	a.log.Info("audit log rotated", "path", a.path, "kept", auditKeep)
	return nil
}

func (a *auditLog) append(rec api.AuditRecord) error {
	line, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if st, err := os.Stat(a.path); err == nil && st.Size() > 0 && st.Size()+int64(len(line))+1 > auditRotateBytes {
		if err := a.rotate(); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(a.path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("opening the audit log: %w", err)
	}
	defer f.Close()
	if err := endLine(f); err != nil {
		return err
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("appending to the audit log: %w", err)
	}
	a.last = rec.Index
	return nil
}

// endLine ends a line a crash cut short, so that the next record starts
// on its own line.
func endLine(f *os.File) error {
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return err
	}
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, st.Size()-1); err != nil {
		return fmt.Errorf("reading the audit log: %w", err)
	}
	if last[0] != '\n' {
		_, err = f.Write([]byte{'\n'})
	}
	return err
}

func newAuditRecord(l *raft.Log, c fsm.Command) api.AuditRecord {
	m := decodeAuditMeta(l.Extensions)
	if m.Time.IsZero() {
		// Older entries have the leader's append time at least.
		m.Time = l.AppendedAt.UTC()
	}
	return api.AuditRecord{
		Index: l.Index, Time: m.Time, Principal: m.Principal, Role: m.Role, Source: m.Source,
		Command: string(c.Type()), Body: redactedBody(c),
	}
}

// secretKeys are the JSON fields whose values never leave a node in an
// audit record or a log line: CHAP secrets and token hashes.
var secretKeys = map[string]bool{"secret": true, "hash": true}

// redactedBody is c's JSON with every secret replaced, or its size when
// it is too large to keep.
func redactedBody(c fsm.Command) any {
	b, err := json.Marshal(c)
	if err != nil {
		return nil
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil
	}
	v = redact(v)
	if red, _ := json.Marshal(v); len(red) > auditBodyMax {
		return map[string]any{"omitted_bytes": len(red)}
	}
	return v
}

func redact(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if secretKeys[k] {
				t[k] = "[redacted]"
			} else {
				t[k] = redact(x)
			}
		}
	case []any:
		for i, x := range t {
			t[i] = redact(x)
		}
	}
	return v
}

// jsonText is v as one line of JSON, for a log field.
func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return string(b)
}

// readAuditFile returns the records of the audit file at path proposed at
// or after since (zero: all), oldest first; a missing file has none. A
// line that does not parse (one being written, or cut short by a crash)
// is skipped.
func readAuditFile(path string, since time.Time) ([]api.AuditRecord, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the audit log: %w", err)
	}
	defer f.Close()
	var out []api.AuditRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		var rec api.AuditRecord
		if len(line) == 0 || json.Unmarshal(line, &rec) != nil {
			continue
		}
		if !since.IsZero() && rec.Time.Before(since) {
			continue
		}
		out = append(out, rec)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading the audit log: %w", err)
	}
	return out, nil
}

// readAudit serves GET /v1/audit?since=RFC3339: the records of the node
// that answers (the leader, unless ?stale=1).
func (n *Node) readAudit(r *http.Request, _ *fsm.State) (any, error) {
	var since time.Time
	if s := r.URL.Query().Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return nil, badRequest("since %q: want an RFC 3339 time", s)
		}
		since = t
	}
	return readAuditLog(filepath.Join(n.cfg.DataDir, auditFile), since)
}

// readAuditLog is readAuditFile over the rotated files of path and path
// itself, oldest first; never nil without an error.
func readAuditLog(path string, since time.Time) ([]api.AuditRecord, error) {
	recs := []api.AuditRecord{}
	for _, file := range auditFiles(path) {
		more, err := readAuditFile(file, since)
		if err != nil {
			return nil, err
		}
		recs = append(recs, more...)
	}
	return recs, nil
}
