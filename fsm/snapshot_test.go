package fsm

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestSnapshotRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state *State
	}{
		{"empty", Empty()},
		{"zero value", &State{}},
		{"sample", sampleState()},
		{"built by commands", build(t,
			&RegisterNode{Node: node("n1")}, &CreateTarget{IQN: iqnA},
			&CreateLUN{Target: iqnA, LUN: 0, Device: nullDevice("d0")},
			&Reservation{Device: "d0", Op: []byte(`1`)}, sampleCommand(TypeImport))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := MarshalSnapshot(tc.state)
			if err != nil {
				t.Fatalf("MarshalSnapshot: %v", err)
			}
			got, err := UnmarshalSnapshot(b)
			if err != nil {
				t.Fatalf("UnmarshalSnapshot: %v\n%s", err, b)
			}
			if got.Nodes == nil || got.Devices == nil || got.Targets == nil {
				t.Errorf("restored state has nil maps: %+v", got)
			}
			if got.Index != tc.state.Index || stateJSON(t, got) != stateJSON(t, tc.state.next()) {
				t.Errorf("round trip changed the state\n got: %s\nwant: %s", stateJSON(t, got), stateJSON(t, tc.state))
			}
			// A restored state is canonical (no nil maps): it marshals to
			// a fixed point.
			again := remarshal(t, got)
			if twice := remarshal(t, mustUnmarshalSnapshot(t, again)); !bytes.Equal(again, twice) {
				t.Errorf("re-marshalled snapshot differs:\n%s\n%s", again, twice)
			}
		})
	}
}

func remarshal(t *testing.T, s *State) []byte {
	t.Helper()
	b, err := MarshalSnapshot(s)
	if err != nil {
		t.Fatalf("MarshalSnapshot: %v", err)
	}
	return b
}

func mustUnmarshalSnapshot(t *testing.T, b []byte) *State {
	t.Helper()
	s, err := UnmarshalSnapshot(b)
	if err != nil {
		t.Fatalf("UnmarshalSnapshot: %v\n%s", err, b)
	}
	return s
}

func TestSnapshotRoundTripIsExactForSample(t *testing.T) {
	want := sampleState()
	b, err := MarshalSnapshot(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalSnapshot(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("round trip\n got: %#v\nwant: %#v", got, want)
	}
}

func TestMarshalSnapshotIsDeterministic(t *testing.T) {
	s := sampleState()
	for _, name := range []string{"z", "y", "x", "w", "v", "u"} {
		d := nullDevice(name)
		s.Devices[name] = &d
		s.Nodes[name] = ptr(node(name))
	}
	first, err := MarshalSnapshot(s)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if b, _ := MarshalSnapshot(s); !bytes.Equal(b, first) {
			t.Fatalf("MarshalSnapshot differs between calls:\n%s\n%s", first, b)
		}
	}
}

func TestUnmarshalSnapshotRefuses(t *testing.T) {
	valid, err := MarshalSnapshot(sampleState())
	if err != nil {
		t.Fatal(err)
	}
	nilState, err := MarshalSnapshot(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		input string
		code  Code
		want  string // substring of the message
	}{
		{"unknown format", strings.Replace(string(valid), `"format":1`, `"format":2`, 1), CodeUnsupported, "format 2"},
		{"missing format", `{"protocol":2,"state":{}}`, CodeUnsupported, "format 0"},
		{"unknown top-level field", strings.Replace(string(valid), `{"format":1,`, `{"format":1,"extra":true,`, 1), CodeUnsupported, `unknown field "extra"`},
		{"unknown state field", strings.Replace(string(valid), `"state":{`, `"state":{"colour":"red",`, 1), CodeUnsupported, `unknown field "colour"`},
		{"unknown device field", strings.Replace(string(valid), `"handler":`, `"size_mb":1,"handler":`, 1), CodeUnsupported, `unknown field "size_mb"`},
		{"nil state", string(nilState), CodeInvalid, "no state"},
		{"no state", `{"format":1,"protocol":2}`, CodeInvalid, "no state"},
		{"not JSON", "not json", CodeInvalid, "snapshot"},
		{"empty", "", CodeInvalid, "snapshot"},
		{"trailing data", string(valid) + "{}", CodeInvalid, "snapshot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.input == string(valid) {
				t.Fatal("test input was not changed: the replacement did not match")
			}
			s, err := UnmarshalSnapshot([]byte(tc.input))
			if err == nil {
				t.Fatalf("accepted: %+v", s)
			}
			if s != nil {
				t.Errorf("returned a state along with the error")
			}
			if CodeOf(err) != tc.code {
				t.Errorf("code %q, want %q (%v)", CodeOf(err), tc.code, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("message %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestSnapshotRecordsFormatAndProtocol(t *testing.T) {
	b, err := MarshalSnapshot(Empty())
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf(`{"format":1,"protocol":%d,`, Protocol); !bytes.HasPrefix(b, []byte(want)) {
		t.Fatalf("snapshot header: %s", b)
	}
}

// A snapshot written before replication (protocol 3: no replicas, no
// in-sync set) loads as shared storage, unchanged.
func TestProtocol3SnapshotLoads(t *testing.T) {
	old := `{"format":1,"protocol":3,"state":{"index":9,` +
		`"nodes":{"n1":{"name":"n1","iscsi_addr":"a:3260","api_addr":"a:7410","raft_addr":"a:7411","gossip_addr":"a:7412","port_group":1,"version":"v0","protocol":3}},` +
		`"devices":{"d0":{"name":"d0","handler":"nullio","size":1048576,"block_size":512,"serial":"s","naa":"n","owner":"n1","epoch":4}},` +
		`"targets":{"iqn.2025-01.com.example:a":{"iqn":"iqn.2025-01.com.example:a","enabled":true,"luns":[{"lun":0,"device":"d0"}]}},"next_port_group":2}}`
	s, err := UnmarshalSnapshot([]byte(old))
	if err != nil {
		t.Fatalf("protocol-3 snapshot refused: %v", err)
	}
	d := s.Devices["d0"]
	if d.Replicated() || d.Replicas != nil || d.InSync != nil || d.Owner != "n1" || d.Epoch != 4 {
		t.Fatalf("device %+v, want shared storage owned by n1 at epoch 4", d)
	}
	// And it still works: a move on shared storage needs no in-sync set.
	if _, _, err := s.ApplyCommand(10, &SetOwner{Device: "d0", Owner: "n1", Epoch: 4}, fakeEnv); err != nil {
		t.Fatalf("SetOwner on a protocol-3 device: %v", err)
	}
}

// A state without replicated devices snapshots without the new fields, so
// a protocol-3 binary still loads it during a rolling upgrade; with them,
// the snapshot round-trips.
func TestSnapshotReplicationFields(t *testing.T) {
	shared := build(t, &RegisterNode{Node: node("n1")}, &CreateTarget{IQN: iqnA},
		&CreateLUN{Target: iqnA, LUN: 0, Device: deviceWith("d0", func(d *Device) { d.Owner = "n1" })})
	b := remarshal(t, shared)
	for _, f := range []string{`"replicas"`, `"in_sync"`} {
		if bytes.Contains(b, []byte(f)) {
			t.Errorf("snapshot of shared storage has %s: %s", f, b)
		}
	}
	replicated := build(t, &RegisterNode{Node: node("n1")}, &RegisterNode{Node: node("n2")}, &CreateTarget{IQN: iqnA},
		&CreateLUN{Target: iqnA, LUN: 0, Device: replicatedDevice("r", "n2", "n2", "n1")},
		&SetInSync{Device: "r", Epoch: 1, Remove: []string{"n1"}})
	b = remarshal(t, replicated)
	if !bytes.Contains(b, []byte(`"replicas":["n1","n2"],"in_sync":["n2"]`)) {
		t.Errorf("snapshot does not record the replication state: %s", b)
	}
	got := mustUnmarshalSnapshot(t, b)
	if !reflect.DeepEqual(got.Devices["r"], replicated.Devices["r"]) {
		t.Errorf("round trip: %+v, want %+v", got.Devices["r"], replicated.Devices["r"])
	}
}
