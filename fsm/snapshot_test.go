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
