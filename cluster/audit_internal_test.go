package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm"
)

func auditEntry(index uint64, p principal, at time.Time) *raft.Log {
	return &raft.Log{Index: index, Type: raft.LogCommand, Extensions: encodeAuditMeta(p, at)}
}

func TestAuditLog(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	a := newAuditLog(dir, slog.New(slog.NewTextHandler(&logs, nil)))
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ops := principal{name: "ops", role: api.RoleOperator, source: "192.0.2.1:1234"}
	chap := &fsm.SetCHAP{IQN: "iqn.2025-01.com.example:a", Incoming: []fsm.CHAPUser{{User: "joe", Secret: "chap-secret-1"}},
		Mutual: &fsm.CHAPUser{User: "tgt", Secret: "chap-secret-2"}}
	a.record(auditEntry(5, ops, t0), chap)
	a.record(auditEntry(6, ops, t0.Add(time.Minute)), &fsm.Reservation{Device: "d0", Op: json.RawMessage(`1`)})
	a.record(auditEntry(7, principal{name: "root", role: api.RoleAdmin}, t0.Add(2*time.Minute)),
		&fsm.CreateToken{Token: fsm.Token{Name: "ci", Role: fsm.RoleOperator, Hash: fsm.HashSecret("tok")}})
	a.record(&raft.Log{Index: 8, Type: raft.LogCommand}, &fsm.SetDrain{Node: "n1"})

	path := filepath.Join(dir, auditFile)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("audit log mode %v, want 0600", st.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	for _, secret := range []string{"chap-secret-1", "chap-secret-2", fsm.HashSecret("tok")} {
		if strings.Contains(string(raw), secret) || strings.Contains(logs.String(), secret) {
			t.Errorf("%s is in the audit log or the logs", secret)
		}
	}
	recs, err := readAuditFile(path, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.Principal+" "+r.Command)
	}
	if want := []string{"ops set_chap", "root create_token", "unknown set_drain"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("records %v, want %v (reservations left out)", got, want)
	}
	if recs[0].Source != "192.0.2.1:1234" || !recs[0].Time.Equal(t0) || recs[0].Index != 5 || recs[0].Role != api.RoleOperator {
		t.Errorf("first record %+v", recs[0])
	}

	// A restart replays the log: nothing is written or logged twice, and a
	// line cut short by a crash does not spoil the next one.
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"index":9,"principal":"cut`)
	f.Close()
	logs.Reset()
	b := newAuditLog(dir, slog.New(slog.NewTextHandler(&logs, nil)))
	b.record(auditEntry(7, ops, t0), &fsm.SetDrain{Node: "n1"})
	if logs.Len() != 0 {
		t.Errorf("a replayed entry was logged again: %s", logs.String())
	}
	b.record(auditEntry(10, ops, t0.Add(time.Hour)), &fsm.SetDrain{Node: "n2"})
	recs, _ = readAuditFile(path, t0.Add(30*time.Minute))
	if len(recs) != 1 || recs[0].Index != 10 {
		t.Fatalf("records since t0+30m: %+v, want index 10 only", recs)
	}
	if !strings.Contains(logs.String(), "principal=ops") || !strings.Contains(logs.String(), "command=set_drain") {
		t.Errorf("the change was not logged: %s", logs.String())
	}
}

func TestDecodeAuditMeta(t *testing.T) {
	for _, ext := range [][]byte{nil, []byte("garbage"), []byte(`{"role":"admin"}`)} {
		if m := decodeAuditMeta(ext); m.Principal != unknownPrincipal {
			t.Errorf("%q reads as %+v, want unknown", ext, m)
		}
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m := decodeAuditMeta(encodeAuditMeta(principal{name: "ops", role: "operator", source: "a:1"}, at))
	if m != (auditMeta{Principal: "ops", Role: "operator", Source: "a:1", Time: at}) {
		t.Errorf("round trip: %+v", m)
	}
}

func TestRedactedBody(t *testing.T) {
	big := &fsm.Import{}
	for i := 0; i < 100; i++ {
		big.Targets = append(big.Targets, fsm.Target{IQN: strings.Repeat("x", 50)})
	}
	if b, _ := redactedBody(big).(map[string]any); b == nil || b["omitted_bytes"] == nil {
		t.Errorf("a large body is kept: %v", redactedBody(big))
	}
	restore := &fsm.Restore{State: &fsm.State{DiscoveryUsers: []fsm.CHAPUser{{User: "d", Secret: "disc-secret"}}}}
	if s := jsonText(redactedBody(restore)); strings.Contains(s, "disc-secret") || !strings.Contains(s, "[redacted]") {
		t.Errorf("restore body %s", s)
	}
}

// FuzzAuditLog: whatever a node's audit file holds (cut short by a crash,
// edited by hand) and whatever an entry's extensions hold (written by
// another release), recording never panics, and a new index is readable
// afterwards with its author or "unknown".
func FuzzAuditLog(f *testing.F) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Add([]byte(`{"index":3,"principal":"ops"}`+"\n"+`{"index":4,"princ`), encodeAuditMeta(principal{name: "ops", role: "operator"}, at))
	f.Add([]byte("\n\n{}\n[1,2]\nnull\n"), []byte(`{"principal":"x","time":"garbage"}`))
	f.Add([]byte(`{"index":18446744073709551615}`), []byte(nil))
	f.Fuzz(func(t *testing.T, file, ext []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, auditFile)
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		before, err := readAuditFile(path, time.Time{})
		if err != nil {
			return // a line longer than the reader takes: refused, not a panic
		}
		var last uint64
		if len(before) > 0 {
			last = before[len(before)-1].Index
		}
		a := newAuditLog(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
		a.record(&raft.Log{Index: last + 1, Type: raft.LogCommand, Extensions: ext}, &fsm.SetDrain{Node: "n1"})
		after, err := readAuditFile(path, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if last+1 == 0 {
			return // the index wrapped: nothing can follow it
		}
		if len(after) == 0 || after[len(after)-1].Index != last+1 || after[len(after)-1].Principal == "" {
			t.Fatalf("index %d not recorded after %q: %+v", last+1, file, after)
		}
	})
}

// Past auditRotateBytes the file is rotated, auditKeep old files are kept,
// the API reads them all in order, and a restart right after a rotation
// still knows the last index written.
func TestAuditLogRotates(t *testing.T) {
	defer func(n int64) { auditRotateBytes = n }(auditRotateBytes)
	auditRotateBytes = 1024
	dir := t.TempDir()
	path := filepath.Join(dir, auditFile)
	a := newAuditLog(dir, slog.New(slog.DiscardHandler))
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ops := principal{name: "ops", role: api.RoleOperator}
	const entries = 60
	for i := uint64(1); i <= entries; i++ {
		a.record(auditEntry(i, ops, t0.Add(time.Duration(i)*time.Second)), &fsm.SetDrain{Node: "n1"})
	}
	for i := 1; i <= auditKeep; i++ {
		st, err := os.Stat(fmt.Sprintf("%s.%d", path, i))
		if err != nil {
			t.Fatalf("rotated file %d: %v", i, err)
		}
		if st.Size() > auditRotateBytes || st.Mode().Perm() != 0o600 {
			t.Errorf("rotated file %d: %d bytes, mode %v", i, st.Size(), st.Mode().Perm())
		}
	}
	if _, err := os.Stat(fmt.Sprintf("%s.%d", path, auditKeep+1)); err == nil {
		t.Errorf("more than %d rotated files kept", auditKeep)
	}
	recs, err := readAuditLog(path, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 || len(recs) == entries || recs[len(recs)-1].Index != entries {
		t.Fatalf("%d records read, the last %+v: want the newest, not all %d", len(recs), recs[len(recs)-1], entries)
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].Index != recs[i-1].Index+1 {
			t.Fatalf("records out of order or missing: %d after %d", recs[i].Index, recs[i-1].Index)
		}
	}

	// Rotate by hand so the current file is empty: a restart must find
	// the last index in audit.jsonl.1 and not write a replayed entry.
	if err := a.rotate(); err != nil {
		t.Fatal(err)
	}
	b := newAuditLog(dir, slog.New(slog.DiscardHandler))
	b.record(auditEntry(entries, ops, t0), &fsm.SetDrain{Node: "n1"})
	if _, err := os.Stat(path); err == nil {
		t.Error("a replayed entry was written after a restart")
	}
	b.record(auditEntry(entries+1, ops, t0), &fsm.SetDrain{Node: "n1"})
	if recs, _ := readAuditFile(path, time.Time{}); len(recs) != 1 || recs[0].Index != entries+1 {
		t.Errorf("after the restart the current file holds %+v, want index %d", recs, entries+1)
	}
}
