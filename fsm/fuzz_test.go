package fsm

import (
	"bytes"
	"testing"
)

// entrySeparator splits a FuzzApply input into log entries. An encoded
// command never contains a NUL byte (JSON escapes control characters).
const entrySeparator = 0

func seedEntries(f *testing.F) [][]byte {
	var entries [][]byte
	for _, typ := range allTypes {
		entries = append(entries, mustEncode(f, sampleCommand(typ)))
	}
	return entries
}

// decodeEdgeCases are entries near the edge of what Decode and Apply
// accept.
var decodeEdgeCases = []string{
	"", "\x02{}", "\x01{}", "\x01null",
	"\x01" + `{"type":"remove_node","body":null}`,
	"\x01" + `{"TYPE":"remove_node","Body":{"NAME":"n1"}}`,
	"\x01" + `{"type":"reservation","body":{"device":"d0","op": [ 1, {"a" : 2} ]}}`,
	"\x01" + `{"type":"reservation","body":{"device":"d0","op":null}}`,
	"\x01" + `{"type":"restore","body":{"state":{"devices":{"x":null},"targets":{"y":null}}}}`,
	"\x01" + `{"type":"restore","body":{"state":{"devices":{"x":{"name":"y","handler":"nullio","size":512,"block_size":512,"serial":"s","naa":"n"}}}}}`,
	"\x01" + `{"type":"remove_node","body":{"name":"n1"}}]`,
	"\x01" + `{"type":"set_owner","body":{"device":"r0","owner":"n2","epoch":1,"drop":[]}}`,
	"\x01" + `{"type":"set_owner","body":{"device":"r0","owner":"n2","epoch":1,"drop":null}}`,
	"\x01" + `{"type":"set_owner","body":{"device":"r0","owner":"n2","epoch":1,"drop":["n1","n1","n3"]}}`,
	"\x01" + `{"type":"set_in_sync","body":{"device":"r0","epoch":1,"remove":["n1"],"add":["n1"]}}`,
	"\x01" + `{"type":"set_in_sync","body":{"device":"r0","epoch":1,"remove":["n2","n3"]}}`,
	"\x01" + `{"type":"set_in_sync","body":{"device":"r0","epoch":1,"add":[""]}}`,
	"\x01" + `{"type":"replace_replica","body":{"device":"r0","epoch":1,"old":"n2","new":"n2"}}`,
	"\x01" + `{"type":"replace_replica","body":{"device":"r0","epoch":1,"old":"n2","new":"n4","extra":1}}`,
	"\x01" + `{"type":"force_promote","body":{"device":"r0","epoch":1,"owner":"n1"}}`,
	"\x01" + `{"type":"set_cluster_version","body":{"version":65535}}`,
	"\x01" + `{"type":"set_cluster_version","body":{"version":1}}`,
	"\x01" + `{"type":"force_promote","body":{"device":"r0","epoch":1,"owner":"n4"}}`,
	"\x01" + `{"type":"bootstrap_tokens","body":{"token":{"name":"root","role":"admin","hash":"` + HashSecret("x") + `","secret":"x"}}}`,
	"\x01" + `{"type":"create_token","body":{"token":{"name":"ops","role":"operator","hash":"` + HashSecret("x") + `","index":3}}}`,
	"\x01" + `{"type":"create_token","body":{"token":null}}`,
	"\x01" + `{"type":"revoke_token","body":{"name":""}}`,
	"\x01" + `{"type":"force_promote","body":{"device":"r0","epoch":1,"owner":""}}`,
	"\x01" + `{"type":"force_promote","body":{"device":"r0","epoch":1,"owner":"n3","drop":["n1"]}}`,
	"\x01" + `{"type":"create_lun","body":{"target":"iqn.2025-01.com.example:a","lun":9,"device":{"name":"x","handler":"nullio","size":512,"block_size":512,"serial":"s","naa":"n","replicas":["n2","n1","n2"]}}}`,
	"\x01" + `{"type":"create_lun","body":{"target":"iqn.2025-01.com.example:a","lun":9,"device":{"name":"x","handler":"nullio","size":512,"block_size":512,"serial":"s","naa":"n","replicas":["n2","n1"],"in_sync":["n1"]}}}`,
	"\x01" + `{"type":"restore","body":{"state":{"devices":{"x":{"name":"x","handler":"nullio","size":512,"block_size":512,"serial":"s","naa":"n","owner":"n1","replicas":["n2","n1"],"in_sync":["n2"]}}}}}`,
	"\x01" + `{"type":"restore","body":{"state":{"devices":{"x":{"name":"x","handler":"nullio","size":512,"block_size":512,"serial":"s","naa":"n","owner":"n1","replicas":["n2","n1"],"in_sync":["n2","n1"]}}}}}`,
}

// sameCommand compares commands by their canonical encoding: decoding
// does not keep the exact bytes (JSON drops empty omitempty slices and
// compacts a raw reservation operation), but a decoded command must encode
// to what it decodes from.
func sameCommand(t *testing.T, a, b Command) bool {
	return a.Type() == b.Type() && bytes.Equal(mustEncode(t, a), mustEncode(t, b))
}

// FuzzDecode checks that Decode never panics, fails only with
// CodeUnsupported, and that a command it accepts survives Encode and a
// second Decode.
func FuzzDecode(f *testing.F) {
	for _, e := range seedEntries(f) {
		f.Add(e)
	}
	for _, e := range decodeEdgeCases {
		f.Add([]byte(e))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Decode(data)
		if err != nil {
			if c != nil {
				t.Fatalf("Decode returned a command with the error %v", err)
			}
			if CodeOf(err) != CodeUnsupported {
				t.Fatalf("error %v has code %q, want %q", err, CodeOf(err), CodeUnsupported)
			}
			return
		}
		b, err := Encode(c)
		if err != nil {
			t.Fatalf("Encode of a decoded %s: %v", c.Type(), err)
		}
		again, err := Decode(b)
		if err != nil {
			t.Fatalf("re-decoding %s: %v\ninput:   %q\nencoded: %q", c.Type(), err, data, b)
		}
		if !sameCommand(t, c, again) {
			t.Fatalf("round trip changed the command\ninput:   %q\nencoded: %q\nagain:   %q", data, b, mustEncode(t, again))
		}
	})
}

// fuzzStart is a small valid state the fuzzed entries act on: nodes, two
// targets, devices mapped in the default map and in a group, reservation
// state, and a replicated device r0 (owner n1, replicas n1 n2 n3, all in
// sync, epoch 1; n4 holds no replica).
func fuzzStart(t testing.TB) *State {
	return build(t,
		&RegisterNode{Node: node("n1")}, &RegisterNode{Node: node("n2")},
		&RegisterNode{Node: node("n3")}, &RegisterNode{Node: node("n4")},
		&CreateTarget{IQN: iqnA}, &CreateTarget{IQN: iqnB},
		&CreateLUN{Target: iqnA, LUN: 0, Device: nullDevice("d0")},
		&CreateLUN{Target: iqnA, LUN: 3, Device: replicatedDevice("r0", "n1", "n1", "n2", "n3")},
		&CreateLUN{Target: iqnB, LUN: 1, Device: fileDevice("d1")},
		&Reservation{Device: "d0", Origin: "n1", Op: []byte(`1`)},
		&Import{Devices: []Device{nullDevice("g0")}, Targets: []Target{{IQN: iqnD,
			Groups: []InitiatorGroup{{Name: "g", Initiators: []string{"iqn.x:*"}, LUNs: []LUN{{Number: 0, Device: "g0"}}}}}}},
	)
}

// FuzzApply feeds arbitrary log entries through State.Apply. It checks
// that Apply never panics, sets Index on every entry, refuses only with a
// coded error and without changing anything else, never changes a state
// it was given, keeps every mapped device defined, replays identically,
// and that the final state survives a snapshot round trip.
func FuzzApply(f *testing.F) {
	entries := seedEntries(f)
	f.Add(bytes.Join(entries, []byte{entrySeparator}))
	for _, e := range entries {
		f.Add(e)
	}
	for _, script := range [][]Command{
		{&DeleteLUN{Target: iqnA, LUN: 0}, &Reservation{Device: "d0", Op: []byte(`2`)}},
		{&DeleteTarget{IQN: iqnD, Force: true}, &ResizeDevice{Name: "g0", Size: 4096}},
		{sampleCommand(TypeRestore), &DeleteTarget{IQN: iqnA, Force: true}, &RegisterNode{Node: node("n3")}},
		{&RemoveNode{Name: "n1"}, &RegisterNode{Node: node("n3")}, &SetCHAP{IQN: iqnB}, &SetACL{IQN: iqnB, Initiator: "iqn.x:1"}},
		// A replica drops out, the owner fails over to another in-sync
		// one, the lost node is replaced, resynced and removed.
		{&SetInSync{Device: "r0", Epoch: 1, Remove: []string{"n3"}},
			&SetOwner{Device: "r0", Owner: "n2", Epoch: 1, Drop: []string{"n1"}},
			&ReplaceReplica{Device: "r0", Epoch: 2, Old: "n3", New: "n4"},
			&SetInSync{Device: "r0", Epoch: 2, Add: []string{"n4", "n1"}},
			&RemoveNode{Name: "n1"}, &RemoveNode{Name: "n2"},
			&ReplaceReplica{Device: "r0", Epoch: 2, Old: "n1", New: "n3"}},
		// Refusals: a stale epoch, the owner, an out-of-sync promotion.
		{&SetInSync{Device: "r0", Epoch: 0, Remove: []string{"n2"}},
			&SetInSync{Device: "r0", Epoch: 1, Remove: []string{"n1"}},
			&SetInSync{Device: "r0", Epoch: 1, Remove: []string{"n2", "n3"}},
			&SetOwner{Device: "r0", Owner: "n3", Epoch: 1},
			&RemoveNode{Name: "n2"}, &RemoveNode{Name: "n1"},
			&SetOwner{Device: "r0", Owner: "n4", Epoch: 1}},
		// Every in-sync copy is lost: n3, out of sync, is forced to own
		// r0; the overridden n1 and n2 are resynced, then n1 owns again.
		{&SetInSync{Device: "r0", Epoch: 1, Remove: []string{"n3"}},
			&ForcePromote{Device: "r0", Epoch: 1, Owner: "n2"},
			&ForcePromote{Device: "r0", Epoch: 0, Owner: "n3"},
			&ForcePromote{Device: "r0", Epoch: 1, Owner: "n3"},
			&SetOwner{Device: "r0", Owner: "n1", Epoch: 2},
			&SetInSync{Device: "r0", Epoch: 2, Add: []string{"n1", "n2"}},
			&SetOwner{Device: "r0", Owner: "n1", Epoch: 2, Drop: []string{"n3"}},
			&ForcePromote{Device: "r0", Epoch: 3, Owner: "n4"},
			&RemoveNode{Name: "n3"}, &ForcePromote{Device: "r0", Epoch: 3, Owner: "n3"}},
		// Tokens, once the cluster version allows them.
		{sampleCommand(TypeCreateToken), &SetClusterVersion{Version: ClusterVersionTokens},
			sampleCommand(TypeBootstrapTokens), sampleCommand(TypeBootstrapTokens), sampleCommand(TypeCreateToken),
			&RevokeToken{Name: "root"}, sampleCommand(TypeRevokeToken), sampleCommand(TypeCreateToken)},
		{&CreateLUN{Target: iqnB, LUN: 5, Device: replicatedDevice("r1", "", "n4")},
			&RemoveNode{Name: "n4"}, &SetInSync{Device: "r1", Remove: []string{"n4"}},
			&ReplaceReplica{Device: "r1", Old: "n4", New: "n3"},
			&SetOwner{Device: "r1", Owner: "n4"}},
	} {
		var log [][]byte
		for _, c := range script {
			log = append(log, mustEncode(f, c))
		}
		f.Add(bytes.Join(log, []byte{entrySeparator}))
	}
	for _, e := range decodeEdgeCases {
		f.Add([]byte(e))
	}
	start := fuzzStart(f)
	startJSON := stateJSON(f, start)
	f.Fuzz(func(t *testing.T, data []byte) {
		log := bytes.Split(data, []byte{entrySeparator})
		final, errs := applyChecked(t, start, log)
		replay, replayErrs := applyChecked(t, start, log)
		if a, b := remarshal(t, final), remarshal(t, replay); !bytes.Equal(a, b) {
			t.Fatalf("replaying the log gave another state:\n%s\n%s", a, b)
		}
		for i := range errs {
			if errs[i] != replayErrs[i] {
				t.Fatalf("entry %d: refused with %q, then with %q", i, errs[i], replayErrs[i])
			}
		}
		if stateJSON(t, start) != startJSON {
			t.Fatal("applying the log changed the start state")
		}
		snap := remarshal(t, final)
		restored, err := UnmarshalSnapshot(snap)
		if err != nil {
			t.Fatalf("snapshot of the final state does not load: %v\n%s", err, snap)
		}
		if again := remarshal(t, restored); !bytes.Equal(again, snap) {
			t.Fatalf("snapshot changed on reload:\n%s\n%s", snap, again)
		}
	})
}

// applyChecked applies log from start, checking every step, and returns
// the final state and each entry's error text ("" when accepted).
func applyChecked(t *testing.T, start *State, log [][]byte) (*State, []string) {
	s := start
	errs := make([]string, len(log))
	for i, entry := range log {
		index := start.Index + uint64(i) + 1
		before := stateJSON(t, s)
		next, _, err := s.Apply(index, entry, fakeEnv)
		if next == nil || next.Index != index {
			t.Fatalf("entry %d: state %+v, want Index %d", i, next, index)
		}
		if stateJSON(t, s) != before {
			t.Fatalf("entry %d %q changed the state it was applied to", i, entry)
		}
		if err != nil {
			errs[i] = err.Error()
			if CodeOf(err) == "" {
				t.Fatalf("entry %d %q: error without a code: %v", i, entry, err)
			}
			if !sameExceptIndex(t, next, s) {
				t.Fatalf("entry %d %q: refused but changed the state", i, entry)
			}
		}
		checkConsistent(t, next)
		s = next
	}
	return s, errs
}

// checkConsistent checks the invariants every command keeps: maps are
// keyed by name, and every LUN maps a defined device.
func checkConsistent(t *testing.T, s *State) {
	t.Helper()
	for name, d := range s.Devices {
		if d == nil || d.Name != name {
			t.Fatalf("device key %q holds %+v", name, d)
		}
	}
	for name, n := range s.Nodes {
		if n == nil || n.Name != name {
			t.Fatalf("node key %q holds %+v", name, n)
		}
	}
	for iqn, tg := range s.Targets {
		if tg == nil || tg.IQN != iqn {
			t.Fatalf("target key %q holds %+v", iqn, tg)
		}
		for _, d := range tg.devices() {
			if s.Devices[d] == nil {
				t.Fatalf("target %s maps missing device %q", iqn, d)
			}
		}
	}
	for _, d := range s.Devices {
		checkReplicaInvariant(t, d)
	}
}

// checkReplicaInvariant checks what every command keeps of a device's
// replication state: Replicas and InSync sorted and distinct, S ⊆ R,
// S non-empty and holding the owner for a replicated device, and no S
// on shared storage.
func checkReplicaInvariant(t testing.TB, d *Device) {
	t.Helper()
	if !d.Replicated() {
		if len(d.InSync) > 0 {
			t.Fatalf("shared-storage device %s has an in-sync set %v", d.Name, d.InSync)
		}
		return
	}
	strictlySorted := func(l []string) bool {
		for i := 1; i < len(l); i++ {
			if l[i-1] >= l[i] {
				return false
			}
		}
		return true
	}
	if !strictlySorted(d.Replicas) || !strictlySorted(d.InSync) {
		t.Fatalf("device %s: replicas %v / in sync %v not sorted and distinct", d.Name, d.Replicas, d.InSync)
	}
	if len(d.InSync) == 0 {
		t.Fatalf("device %s: replicated (%v) with nothing in sync", d.Name, d.Replicas)
	}
	for _, r := range d.InSync {
		if !d.HasReplica(r) {
			t.Fatalf("device %s: in-sync %s is not a replica (%v)", d.Name, r, d.Replicas)
		}
	}
	if d.Owner != "" && !d.IsInSync(d.Owner) {
		t.Fatalf("device %s: owner %s not in sync (%v)", d.Name, d.Owner, d.InSync)
	}
}
