package fsm

import (
	"strings"
	"testing"
)

func TestSetClusterVersion(t *testing.T) {
	at := func(v uint16) *State {
		s := sampleState()
		s.ClusterVersion = v
		return s
	}
	for _, tc := range []struct {
		name      string
		state     *State
		version   uint16
		wantCode  Code
		wantField uint16
	}{
		{"a state without one raised to this binary's", at(0), ClusterVersion, "", ClusterVersion},
		{"a state without one set to the base", at(0), ClusterVersionBase, "", 0},
		{"set again", at(ClusterVersion), ClusterVersion, "", ClusterVersion},
		{"lowered", at(ClusterVersion), ClusterVersionBase, CodeConflict, ClusterVersion},
		{"above what this binary supports", at(0), ClusterVersion + 1, CodeUnsupported, 0},
		{"zero", at(0), 0, CodeUnsupported, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next, _, err := tc.state.ApplyCommand(100, &SetClusterVersion{Version: tc.version}, fakeEnv)
			if CodeOf(err) != tc.wantCode || (err != nil) != (tc.wantCode != "") {
				t.Fatalf("err = %v (code %q), want code %q", err, CodeOf(err), tc.wantCode)
			}
			if next.ClusterVersion != tc.wantField || next.Index != 100 {
				t.Errorf("cluster version field %d at index %d, want %d at 100", next.ClusterVersion, next.Index, tc.wantField)
			}
			if err != nil && !sameExceptIndex(t, next, tc.state) {
				t.Error("a refused command changed the state")
			}
		})
	}
}

// A state written by a release without cluster versions (this is the
// snapshot encoding of v0.1.0) reads as the base version, and a state that
// never finalized encodes nothing that release would refuse.
func TestClusterVersionOfOlderStates(t *testing.T) {
	old := `{"format":1,"protocol":4,"state":{"index":7,"nodes":{},"devices":{},"targets":{},"next_port_group":2}}`
	s, err := UnmarshalSnapshot([]byte(old))
	if err != nil {
		t.Fatalf("reading a v0.1.0 snapshot: %v", err)
	}
	if got := s.ActiveVersion(); got != ClusterVersionBase {
		t.Errorf("active version %d, want the base %d", got, ClusterVersionBase)
	}
	for _, st := range []*State{Empty(), sampleState(), s} {
		if b := string(remarshal(t, st)); strings.Contains(b, "cluster_version") {
			t.Errorf("a state that never finalized encodes its cluster version: %s", b)
		}
	}
	finalized := Empty()
	finalized.ClusterVersion = ClusterVersion
	if got := mustUnmarshalSnapshot(t, remarshal(t, finalized)).ActiveVersion(); got != ClusterVersion {
		t.Errorf("finalized state reads back at version %d, want %d", got, ClusterVersion)
	}
}

func TestClusterVersionGate(t *testing.T) {
	v4 := []Peer{{Name: "n1", Protocol: ProtocolClusterVersion}, {Name: "old", Protocol: ProtocolReplication}}
	v5 := []Peer{{Name: "n1", Protocol: ProtocolClusterVersion}, {Name: "n2", Protocol: Protocol}}
	finalized := sampleState()
	finalized.ClusterVersion = ClusterVersion
	for _, tc := range []struct {
		name string
		cmd  Command
		want uint16
		what string
	}{
		{"set_cluster_version", &SetClusterVersion{Version: ClusterVersion}, ProtocolClusterVersion, "set_cluster_version needs"},
		{"restore of a finalized state", &Restore{State: finalized}, ProtocolClusterVersion, "restore with cluster version fields"},
		{"restore of a state that never finalized", &Restore{State: sampleState()}, ProtocolReplication, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := RequiredProtocol(tc.cmd); got != tc.want {
				t.Fatalf("RequiredProtocol = %d, want %d", got, tc.want)
			}
			if err := CheckCommand(tc.cmd, v5); err != nil {
				t.Errorf("refused with every voter at protocol 5: %v", err)
			}
			err := CheckCommand(tc.cmd, v4)
			if tc.what == "" {
				if err != nil {
					t.Errorf("refused with a protocol-4 voter: %v", err)
				}
				return
			}
			if CodeOf(err) != CodeUnsupported || !strings.Contains(err.Error(), tc.what) || !strings.Contains(err.Error(), "old (protocol 4)") {
				t.Errorf("with a protocol-4 voter: %v, want %q naming old", err, tc.what)
			}
		})
	}
}

// Restore keeps the cluster version: a backup taken before the upgrade
// was finalized must not take the cluster back to the previous release.
func TestRestoreKeepsClusterVersion(t *testing.T) {
	s := sampleState()
	s.ClusterVersion = ClusterVersion
	next, _, err := s.ApplyCommand(50, &Restore{State: sampleState()}, fakeEnv)
	if err != nil {
		t.Fatal(err)
	}
	if next.ActiveVersion() != ClusterVersion {
		t.Errorf("restore changed the active version to %d", next.ActiveVersion())
	}
}
