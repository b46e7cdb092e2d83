package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
)

// allTypes is every Type* constant. TestRegistryMatchesAllTypes keeps it in
// step with the registry, so the round trip and the fuzz seeds cover every
// command type.
var allTypes = []CommandType{
	TypeRegisterNode, TypeRemoveNode,
	TypeCreateTarget, TypeDeleteTarget, TypeSetTarget, TypeSetCHAP, TypeSetACL,
	TypeCreateLUN, TypeDeleteLUN, TypeResizeDevice, TypeReservation,
	TypeRestore, TypeImport, TypeSetOwner, TypeSetDrain,
	TypeSetInSync, TypeReplaceReplica, TypeForcePromote,
	TypeSetClusterVersion,
	TypeBootstrapTokens, TypeCreateToken, TypeRevokeToken,
}

const (
	iqnA = "iqn.2025-01.com.example:a"
	iqnB = "iqn.2025-01.com.example:b"
	iqnC = "iqn.2025-01.com.example:c"
	iqnD = "iqn.2025-01.com.example:d"
)

// nullDevice is a valid 1 MiB nullio device.
func nullDevice(name string) Device {
	return Device{Name: name, Handler: HandlerNullIO, Size: 1 << 20, BlockSize: 512,
		Serial: "serial-" + name, NAA: "6001405" + fmt.Sprintf("%025x", len(name))}
}

// replicatedDevice is nullDevice(name) owned by owner ("" for none) and
// replicated on replicas, as the leader proposes it.
func replicatedDevice(name, owner string, replicas ...string) Device {
	d := nullDevice(name)
	d.Owner, d.Replicas = owner, replicas
	return d
}

// fileDevice is a valid fileio device on a 1 MiB file.
func fileDevice(name string) Device {
	d := nullDevice(name)
	d.Handler, d.Path, d.Create = HandlerFileIO, "/srv/"+name+".img", true
	return d
}

func node(name string) Node {
	return Node{Name: name, ISCSIAddr: name + ":3260", APIAddr: name + ":7410",
		RaftAddr: name + ":7411", GossipAddr: name + ":7412", Version: "v1", Protocol: Protocol}
}

func ptr[T any](v T) *T { return &v }

// sampleCommand returns a command of type t with every field set, so that
// a round trip through JSON (which drops empty omitempty fields) must give
// back exactly the same value.
func sampleCommand(t CommandType) Command {
	switch t {
	case TypeRegisterNode:
		return &RegisterNode{Node: node("n1")}
	case TypeRemoveNode:
		return &RemoveNode{Name: "n1"}
	case TypeCreateTarget:
		return &CreateTarget{IQN: iqnB, Alias: "bee"}
	case TypeDeleteTarget:
		return &DeleteTarget{IQN: iqnB, Force: true}
	case TypeSetTarget:
		return &SetTarget{IQN: iqnA, Alias: ptr("aye"), Enabled: ptr(false),
			Params: []Param{{Key: "MaxRecvDataSegmentLength", Value: "65536"}, {Key: "HeaderDigest", Value: ""}}}
	case TypeSetCHAP:
		return &SetCHAP{IQN: iqnA, Incoming: []CHAPUser{{User: "joe", Secret: "secret123456"}},
			Mutual: &CHAPUser{User: "tgt", Secret: "mutual123456"}}
	case TypeSetACL:
		return &SetACL{IQN: iqnA, Initiator: "iqn.1993-08.org.debian:*", Allow: true}
	case TypeCreateLUN:
		d := fileDevice("d2")
		d.ReadOnly, d.NVCache, d.WriteThrough, d.Thin, d.Removable, d.Rotational, d.AllowSanitize = true, true, true, true, true, true, true
		d.T10DeviceID, d.VendorID, d.ProductID = "t10", "HATARGET", "DISK"
		d.Owner, d.Epoch, d.Standby, d.Replicas = "n1", 1, true, []string{"n1", "n2"}
		return &CreateLUN{Target: iqnA, LUN: 2, Device: d}
	case TypeDeleteLUN:
		return &DeleteLUN{Target: iqnA, LUN: 0}
	case TypeResizeDevice:
		return &ResizeDevice{Name: "d0", Size: 2 << 20}
	case TypeReservation:
		return &Reservation{Device: "d0", Origin: "n1", Op: json.RawMessage(`{"kind":"register","key":7}`)}
	case TypeRestore:
		return &Restore{State: sampleState()}
	case TypeImport:
		return &Import{
			Devices: []Device{nullDevice("imp0"), fileDevice("imp1")},
			Targets: []Target{{
				IQN: iqnC, Alias: "sea", Enabled: true,
				LUNs:              []LUN{{Number: 0, Device: "imp0"}},
				Groups:            []InitiatorGroup{{Name: "g1", Initiators: []string{"iqn.1993-08.org.debian:x"}, LUNs: []LUN{{Number: 0, Device: "imp1", ReadOnly: true}}}},
				AllowedInitiators: []string{"iqn.1993-08.org.debian:*"},
				IncomingUsers:     []CHAPUser{{User: "joe", Secret: "secret123456"}},
				OutgoingUser:      &CHAPUser{User: "tgt", Secret: "mutual123456"},
				Params:            []Param{{Key: "ImmediateData", Value: "Yes"}},
			}},
			DiscoveryUsers: []CHAPUser{{User: "disc", Secret: "discovery123"}},
		}
	case TypeSetOwner:
		return &SetOwner{Device: "r0", Owner: "n2", Epoch: 1, Drop: []string{"n1"}}
	case TypeSetDrain:
		return &SetDrain{Node: "n1", Drained: true}
	case TypeSetInSync:
		return &SetInSync{Device: "r0", Epoch: 1, Remove: []string{"n3"}, Add: []string{"n2"}}
	case TypeReplaceReplica:
		return &ReplaceReplica{Device: "r0", Epoch: 1, Old: "n3", New: "n4"}
	case TypeForcePromote:
		return &ForcePromote{Device: "r0", Epoch: 1, Owner: "n3"}
	case TypeSetClusterVersion:
		return &SetClusterVersion{Version: ClusterVersion}
	case TypeBootstrapTokens:
		return &BootstrapTokens{Token: Token{Name: "root", Role: RoleAdmin, Hash: HashSecret("root-secret")}}
	case TypeCreateToken:
		return &CreateToken{Token: Token{Name: "ops", Role: RoleOperator, Hash: HashSecret("ops-secret")}}
	case TypeRevokeToken:
		return &RevokeToken{Name: "ops"}
	}
	panic("sampleCommand: no sample for " + string(t))
}

// sampleState is a small consistent state with every field set; d1 is
// replicated, with one replica out of sync.
func sampleState() *State {
	d0, d1 := nullDevice("d0"), fileDevice("d1")
	d0.Owner, d0.Epoch, d0.Standby = "n1", 2, true
	d1.Owner, d1.Epoch, d1.Replicas, d1.InSync = "n1", 3, []string{"n1", "n2"}, []string{"n1"}
	return &State{
		Index:   42,
		Nodes:   map[string]*Node{"n1": ptr(node("n1"))},
		Devices: map[string]*Device{"d0": &d0, "d1": &d1},
		Targets: map[string]*Target{iqnA: {
			IQN: iqnA, Alias: "aye", Enabled: true,
			LUNs:   []LUN{{Number: 0, Device: "d0"}},
			Groups: []InitiatorGroup{{Name: "g1", Initiators: []string{"iqn.1993-08.org.debian:x"}, LUNs: []LUN{{Number: 1, Device: "d1"}}}},
			Params: []Param{{Key: "ImmediateData", Value: "Yes"}},
		}},
		Reservations:   map[string][]byte{"d0": []byte("pr-state")},
		DiscoveryUsers: []CHAPUser{{User: "disc", Secret: "discovery123"}},
	}
}

// fakeReservations is a deterministic ReservationMachine: the new state is
// the old one with the operation appended, the outcome names the operation
// count. The operation "fail" is refused.
type fakeReservations struct{}

func (fakeReservations) Apply(state, op []byte) ([]byte, []byte, error) {
	if string(op) == `"fail"` {
		return nil, nil, errors.New("fake machine refuses")
	}
	next := append(append(append([]byte{}, state...), '+'), op...)
	return next, fmt.Appendf(nil, "op#%d", bytes.Count(next, []byte{'+'})), nil
}

var fakeEnv = Env{Reservations: fakeReservations{}}

func mustEncode(t testing.TB, c Command) []byte {
	t.Helper()
	b, err := Encode(c)
	if err != nil {
		t.Fatalf("Encode(%s): %v", c.Type(), err)
	}
	return b
}

// stateJSON is the deep content of s: two equal stateJSON values mean the
// same nodes, devices, targets (with their slices) and reservations.
func stateJSON(t testing.TB, s *State) string {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatalf("marshal state: %v", err)
	}
	return string(b)
}

// sameExceptIndex reports whether got is want with only Index changed.
func sameExceptIndex(t testing.TB, got, want *State) bool {
	t.Helper()
	g := *got
	g.Index = want.Index
	return stateJSON(t, &g) == stateJSON(t, want)
}

// build applies cmds to Empty() and fails the test on any refusal.
func build(t testing.TB, cmds ...Command) *State {
	t.Helper()
	s := Empty()
	for i, c := range cmds {
		var err error
		if s, _, err = s.ApplyCommand(uint64(i+1), c, fakeEnv); err != nil {
			t.Fatalf("setup command %d (%s): %v", i+1, c.Type(), err)
		}
	}
	return s
}
