package fsm

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

// replicationStart has four registered nodes, a target, a shared-storage
// device "shared" owned by n1, and a replicated device "r" owned by n1 on
// n1, n2 and n3 (all in sync, epoch 1).
func replicationStart(t *testing.T) *State {
	return build(t,
		&RegisterNode{Node: node("n1")}, &RegisterNode{Node: node("n2")},
		&RegisterNode{Node: node("n3")}, &RegisterNode{Node: node("n4")},
		&CreateTarget{IQN: iqnA},
		&CreateLUN{Target: iqnA, LUN: 0, Device: deviceWith("shared", func(d *Device) { d.Owner = "n1" })},
		&CreateLUN{Target: iqnA, LUN: 1, Device: replicatedDevice("r", "n1", "n3", "n1", "n2")},
	)
}

// replicaState checks a device's owner, epoch, replicas and in-sync set.
func replicaState(name, owner string, epoch uint64, replicas, inSync []string) func(*testing.T, *State, any) {
	return func(t *testing.T, s *State, _ any) {
		t.Helper()
		d := s.Devices[name]
		if d == nil {
			t.Fatalf("no device %s", name)
		}
		if d.Owner != owner || d.Epoch != epoch || !slices.Equal(d.Replicas, replicas) || !slices.Equal(d.InSync, inSync) {
			t.Errorf("%s: owner %q epoch %d replicas %v in sync %v; want owner %q epoch %d replicas %v in sync %v",
				name, d.Owner, d.Epoch, d.Replicas, d.InSync, owner, epoch, replicas, inSync)
		}
	}
}

// resultIsDevice checks that the result is the device as the state holds it.
func resultIsDevice(name string) func(*testing.T, *State, any) {
	return func(t *testing.T, s *State, res any) {
		t.Helper()
		d, ok := res.(*Device)
		if !ok || !reflect.DeepEqual(d, s.Devices[name]) {
			t.Errorf("result %#v, want device %s as stored", res, name)
		}
	}
}

func l(names ...string) []string { return names }

func TestCreateReplicatedLUN(t *testing.T) {
	start := build(t,
		&RegisterNode{Node: node("n1")}, &RegisterNode{Node: node("n2")}, &RegisterNode{Node: node("n3")},
		&CreateTarget{IQN: iqnA},
	)
	for _, tc := range []struct {
		name  string
		cmd   Command
		code  Code
		check func(*testing.T, *State, any)
	}{
		{name: "replicas sorted, all in sync, epoch 1",
			cmd:   &CreateLUN{Target: iqnA, LUN: 0, Device: replicatedDevice("r", "n2", "n3", "n2", "n1")},
			check: all(replicaState("r", "n2", 1, l("n1", "n2", "n3"), l("n1", "n2", "n3")), resultIsDevice("r"))},
		{name: "a single replica",
			cmd:   &CreateLUN{Target: iqnA, LUN: 0, Device: replicatedDevice("r", "n1", "n1")},
			check: replicaState("r", "n1", 1, l("n1"), l("n1"))},
		{name: "without an owner yet",
			cmd:   &CreateLUN{Target: iqnA, LUN: 0, Device: replicatedDevice("r", "", "n2", "n3")},
			check: replicaState("r", "", 0, l("n2", "n3"), l("n2", "n3"))},
		{name: "shared storage is unchanged",
			cmd:   &CreateLUN{Target: iqnA, LUN: 0, Device: deviceWith("s", func(d *Device) { d.Owner = "n1" })},
			check: replicaState("s", "n1", 1, nil, nil)},
		{name: "import of a replicated device",
			cmd: &Import{Devices: []Device{replicatedDevice("i", "n3", "n3", "n1")},
				Targets: []Target{{IQN: iqnB, LUNs: []LUN{{Number: 0, Device: "i"}}}}},
			check: replicaState("i", "n3", 1, l("n1", "n3"), l("n1", "n3"))},

		{name: "replica listed twice", cmd: &CreateLUN{Target: iqnA, LUN: 0, Device: replicatedDevice("r", "n1", "n1", "n2", "n1")}, code: CodeInvalid},
		{name: "owner not a replica", cmd: &CreateLUN{Target: iqnA, LUN: 0, Device: replicatedDevice("r", "n3", "n1", "n2")}, code: CodeInvalid},
		{name: "bad replica name", cmd: &CreateLUN{Target: iqnA, LUN: 0, Device: replicatedDevice("r", "n1", "n1", "n 2")}, code: CodeInvalid},
		{name: "empty replica name", cmd: &CreateLUN{Target: iqnA, LUN: 0, Device: replicatedDevice("r", "n1", "n1", "")}, code: CodeInvalid},
		{name: "unregistered replica", cmd: &CreateLUN{Target: iqnA, LUN: 0, Device: replicatedDevice("r", "n1", "n1", "n9")}, code: CodeNotFound},
		{name: "more replicas than nodes", cmd: &CreateLUN{Target: iqnA, LUN: 0, Device: replicatedDevice("r", "n1", "n1", "n2", "n3", "n4")}, code: CodeNotFound},
		{name: "in-sync set from the proposer", cmd: &CreateLUN{Target: iqnA, LUN: 0,
			Device: deviceWith("r", func(d *Device) { d.Owner, d.Replicas, d.InSync = "n1", l("n1", "n2"), l("n1") })}, code: CodeInvalid},
		{name: "in-sync set without replicas", cmd: &CreateLUN{Target: iqnA, LUN: 0,
			Device: deviceWith("r", func(d *Device) { d.InSync = l("n1") })}, code: CodeInvalid},
		{name: "unregistered owner of a replicated device", cmd: &CreateLUN{Target: iqnA, LUN: 0, Device: replicatedDevice("r", "n9", "n9", "n1")}, code: CodeNotFound},
		{name: "import: unregistered replica", cmd: &Import{Devices: []Device{replicatedDevice("i", "n1", "n1", "n7")}}, code: CodeNotFound},
		{name: "import: in-sync set from the proposer", cmd: &Import{Devices: []Device{
			deviceWith("i", func(d *Device) { d.Replicas, d.InSync = l("n1"), l("n1") })}}, code: CodeInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runScript(t, start, []step{{name: tc.name, cmd: tc.cmd, code: tc.code, check: tc.check}})
		})
	}
}

// A created device must not share its slices with the command: a later
// change of the command (or of a proposer's copy) must not reach the state.
func TestCreateLUNCopiesReplicas(t *testing.T) {
	start := build(t, &RegisterNode{Node: node("n1")}, &RegisterNode{Node: node("n2")}, &CreateTarget{IQN: iqnA})
	c := &CreateLUN{Target: iqnA, LUN: 0, Device: replicatedDevice("r", "n1", "n1", "n2")}
	s, _, err := start.ApplyCommand(10, c, fakeEnv)
	if err != nil {
		t.Fatal(err)
	}
	c.Device.Replicas[0] = "zz"
	if got := s.Devices["r"].Replicas; !slices.Equal(got, l("n1", "n2")) {
		t.Fatalf("state replicas %v changed with the command", got)
	}
}

func TestScriptSetInSync(t *testing.T) {
	start := build(t,
		&RegisterNode{Node: node("n1")}, &RegisterNode{Node: node("n2")},
		&RegisterNode{Node: node("n3")}, &RegisterNode{Node: node("n4")},
		&CreateTarget{IQN: iqnA},
		&CreateLUN{Target: iqnA, LUN: 0, Device: deviceWith("shared", func(d *Device) { d.Owner = "n1" })},
		&CreateLUN{Target: iqnA, LUN: 1, Device: replicatedDevice("r", "n1", "n3", "n1", "n2")},
		&CreateLUN{Target: iqnA, LUN: 2, Device: replicatedDevice("u", "", "n2", "n3")},
	)
	runScript(t, start, []step{
		{name: "stale epoch", cmd: &SetInSync{Device: "r", Epoch: 0, Remove: l("n3")}, code: CodeConflict},
		{name: "future epoch", cmd: &SetInSync{Device: "r", Epoch: 2, Remove: l("n3")}, code: CodeConflict},
		{name: "removing the owner", cmd: &SetInSync{Device: "r", Epoch: 1, Remove: l("n3", "n1")}, code: CodeConflict},
		{name: "remove a replica", cmd: &SetInSync{Device: "r", Epoch: 1, Remove: l("n3")},
			check: all(replicaState("r", "n1", 1, l("n1", "n2", "n3"), l("n1", "n2")), resultIsDevice("r"))},
		{name: "removing it again is a no-op", cmd: &SetInSync{Device: "r", Epoch: 1, Remove: l("n3")},
			check: all(replicaState("r", "n1", 1, l("n1", "n2", "n3"), l("n1", "n2")), resultIsDevice("r"))},
		{name: "removing a node that is no replica is a no-op", cmd: &SetInSync{Device: "r", Epoch: 1, Remove: l("n4", "n9")},
			check: replicaState("r", "n1", 1, l("n1", "n2", "n3"), l("n1", "n2"))},
		{name: "adding a node that is no replica", cmd: &SetInSync{Device: "r", Epoch: 1, Add: l("n4")}, code: CodeConflict},
		{name: "adding an unknown node", cmd: &SetInSync{Device: "r", Epoch: 1, Add: l("n9")}, code: CodeConflict},
		{name: "add the replica back", cmd: &SetInSync{Device: "r", Epoch: 1, Add: l("n3")},
			check: all(replicaState("r", "n1", 1, l("n1", "n2", "n3"), l("n1", "n2", "n3")), resultIsDevice("r"))},
		{name: "adding it again is a no-op", cmd: &SetInSync{Device: "r", Epoch: 1, Add: l("n3", "n2")},
			check: replicaState("r", "n1", 1, l("n1", "n2", "n3"), l("n1", "n2", "n3"))},
		{name: "remove and add in one entry", cmd: &SetInSync{Device: "r", Epoch: 1, Remove: l("n2", "n3"), Add: l("n1")},
			check: replicaState("r", "n1", 1, l("n1", "n2", "n3"), l("n1"))},
		{name: "add in any order, stored sorted", cmd: &SetInSync{Device: "r", Epoch: 1, Add: l("n3", "n2")},
			check: replicaState("r", "n1", 1, l("n1", "n2", "n3"), l("n1", "n2", "n3"))},
		{name: "nothing to change", cmd: &SetInSync{Device: "r", Epoch: 1}, code: CodeInvalid},
		{name: "added and removed at once", cmd: &SetInSync{Device: "r", Epoch: 1, Remove: l("n2"), Add: l("n2")}, code: CodeInvalid},
		{name: "bad node name", cmd: &SetInSync{Device: "r", Epoch: 1, Add: l("n/2")}, code: CodeInvalid},
		{name: "shared storage has no in-sync set", cmd: &SetInSync{Device: "shared", Epoch: 1, Remove: l("n2")}, code: CodeInvalid},
		{name: "unknown device", cmd: &SetInSync{Device: "nope", Epoch: 1, Remove: l("n2")}, code: CodeNotFound},
		{name: "unowned: removing the last in-sync replica", cmd: &SetInSync{Device: "u", Remove: l("n2", "n3")}, code: CodeConflict},
		{name: "unowned: removing one of two", cmd: &SetInSync{Device: "u", Remove: l("n3")},
			check: replicaState("u", "", 0, l("n2", "n3"), l("n2"))},
	})
}

func TestScriptPromotion(t *testing.T) {
	runScript(t, replicationStart(t), []step{
		{name: "replica n3 drops out", cmd: &SetInSync{Device: "r", Epoch: 1, Remove: l("n3")},
			check: replicaState("r", "n1", 1, l("n1", "n2", "n3"), l("n1", "n2"))},
		{name: "promoting an out-of-sync replica", cmd: &SetOwner{Device: "r", Owner: "n3", Epoch: 1}, code: CodeConflict},
		{name: "promoting a node holding no copy", cmd: &SetOwner{Device: "r", Owner: "n4", Epoch: 1}, code: CodeConflict},
		{name: "dropping the new owner", cmd: &SetOwner{Device: "r", Owner: "n2", Epoch: 1, Drop: l("n1", "n2")}, code: CodeInvalid},
		{name: "stale epoch", cmd: &SetOwner{Device: "r", Owner: "n2", Epoch: 0, Drop: l("n1")}, code: CodeConflict},
		{name: "bad name in drop", cmd: &SetOwner{Device: "r", Owner: "n2", Epoch: 1, Drop: l("n 1")}, code: CodeInvalid},
		{name: "drop on shared storage", cmd: &SetOwner{Device: "shared", Owner: "n2", Epoch: 1, Drop: l("n1")}, code: CodeInvalid},
		{name: "promotion in one entry", cmd: &SetOwner{Device: "r", Owner: "n2", Epoch: 1, Drop: l("n1", "n3")},
			check: all(replicaState("r", "n2", 2, l("n1", "n2", "n3"), l("n2")), resultIsDevice("r"))},
		{name: "the old owner's stale proposal", cmd: &SetInSync{Device: "r", Epoch: 1, Remove: l("n2")}, code: CodeConflict},
		{name: "the old owner cannot be promoted back", cmd: &SetOwner{Device: "r", Owner: "n1", Epoch: 2}, code: CodeConflict},
		{name: "resynced n1 comes back", cmd: &SetInSync{Device: "r", Epoch: 2, Add: l("n1")},
			check: replicaState("r", "n2", 2, l("n1", "n2", "n3"), l("n1", "n2"))},
		{name: "planned move without drop", cmd: &SetOwner{Device: "r", Owner: "n1", Epoch: 2},
			check: replicaState("r", "n1", 3, l("n1", "n2", "n3"), l("n1", "n2"))},
		{name: "dropping nodes not in sync is a no-op", cmd: &SetOwner{Device: "r", Owner: "n2", Epoch: 3, Drop: l("n3", "n4")},
			check: replicaState("r", "n2", 4, l("n1", "n2", "n3"), l("n1", "n2"))},
		{name: "shared storage: any node, as before", cmd: &SetOwner{Device: "shared", Owner: "n4", Epoch: 1},
			check: replicaState("shared", "n4", 2, nil, nil)},
	})
}

func TestScriptReplaceReplica(t *testing.T) {
	start := build(t,
		&RegisterNode{Node: node("n1")}, &RegisterNode{Node: node("n2")},
		&RegisterNode{Node: node("n3")}, &RegisterNode{Node: node("n4")},
		&CreateTarget{IQN: iqnA},
		&CreateLUN{Target: iqnA, LUN: 0, Device: deviceWith("shared", func(d *Device) { d.Owner = "n1" })},
		&CreateLUN{Target: iqnA, LUN: 1, Device: replicatedDevice("r", "n1", "n3", "n1", "n2")},
		&CreateLUN{Target: iqnA, LUN: 2, Device: replicatedDevice("u", "", "n2")},
	)
	runScript(t, start, []step{
		{name: "stale epoch", cmd: &ReplaceReplica{Device: "r", Epoch: 0, Old: "n3", New: "n4"}, code: CodeConflict},
		{name: "old is not a replica", cmd: &ReplaceReplica{Device: "r", Epoch: 1, Old: "n4", New: "n3"}, code: CodeConflict},
		{name: "old is the owner", cmd: &ReplaceReplica{Device: "r", Epoch: 1, Old: "n1", New: "n4"}, code: CodeConflict},
		{name: "new is not registered", cmd: &ReplaceReplica{Device: "r", Epoch: 1, Old: "n3", New: "n9"}, code: CodeNotFound},
		{name: "new is a replica already", cmd: &ReplaceReplica{Device: "r", Epoch: 1, Old: "n3", New: "n2"}, code: CodeConflict},
		{name: "old and new the same", cmd: &ReplaceReplica{Device: "r", Epoch: 1, Old: "n3", New: "n3"}, code: CodeInvalid},
		{name: "bad name", cmd: &ReplaceReplica{Device: "r", Epoch: 1, Old: "n3", New: ""}, code: CodeInvalid},
		{name: "shared storage", cmd: &ReplaceReplica{Device: "shared", Epoch: 1, Old: "n3", New: "n4"}, code: CodeInvalid},
		{name: "unknown device", cmd: &ReplaceReplica{Device: "nope", Epoch: 1, Old: "n3", New: "n4"}, code: CodeNotFound},
		{name: "the only in-sync copy", cmd: &ReplaceReplica{Device: "u", Old: "n2", New: "n4"}, code: CodeConflict},
		{name: "replace an in-sync replica: the new one starts out of sync", cmd: &ReplaceReplica{Device: "r", Epoch: 1, Old: "n3", New: "n4"},
			check: all(replicaState("r", "n1", 1, l("n1", "n2", "n4"), l("n1", "n2")), resultIsDevice("r"))},
		{name: "a retry is refused", cmd: &ReplaceReplica{Device: "r", Epoch: 1, Old: "n3", New: "n4"}, code: CodeConflict},
		{name: "the new replica cannot be promoted", cmd: &SetOwner{Device: "r", Owner: "n4", Epoch: 1}, code: CodeConflict},
		{name: "the replaced node cannot be added back", cmd: &SetInSync{Device: "r", Epoch: 1, Add: l("n3")}, code: CodeConflict},
		{name: "resynced", cmd: &SetInSync{Device: "r", Epoch: 1, Add: l("n4")},
			check: replicaState("r", "n1", 1, l("n1", "n2", "n4"), l("n1", "n2", "n4"))},
		{name: "replace an out-of-sync replica", cmd: &SetInSync{Device: "r", Epoch: 1, Remove: l("n2")}},
		{name: "by the node it replaced earlier", cmd: &ReplaceReplica{Device: "r", Epoch: 1, Old: "n2", New: "n3"},
			check: replicaState("r", "n1", 1, l("n1", "n3", "n4"), l("n1", "n4"))},
		{name: "unowned, not the only copy", cmd: &ReplaceReplica{Device: "u", Old: "n2", New: "n4"}, code: CodeConflict},
	})
}

func TestScriptForcePromote(t *testing.T) {
	start := build(t,
		&RegisterNode{Node: node("n1")}, &RegisterNode{Node: node("n2")},
		&RegisterNode{Node: node("n3")}, &RegisterNode{Node: node("n4")},
		&CreateTarget{IQN: iqnA},
		&CreateLUN{Target: iqnA, LUN: 0, Device: deviceWith("shared", func(d *Device) { d.Owner = "n1" })},
		&CreateLUN{Target: iqnA, LUN: 1, Device: replicatedDevice("r", "n1", "n3", "n1", "n2")},
		&CreateLUN{Target: iqnA, LUN: 2, Device: replicatedDevice("u", "", "n2", "n3")},
		// n3 falls out of sync, then n2: only the owner n1 holds every
		// acknowledged write.
		&SetInSync{Device: "r", Epoch: 1, Remove: l("n3", "n2")},
		&SetInSync{Device: "u", Remove: l("n3")},
	)
	runScript(t, start, []step{
		{name: "stale epoch", cmd: &ForcePromote{Device: "r", Epoch: 0, Owner: "n3"}, code: CodeConflict},
		{name: "future epoch", cmd: &ForcePromote{Device: "r", Epoch: 2, Owner: "n3"}, code: CodeConflict},
		{name: "a node holding no copy", cmd: &ForcePromote{Device: "r", Epoch: 1, Owner: "n4"}, code: CodeConflict},
		{name: "an unregistered node", cmd: &ForcePromote{Device: "r", Epoch: 1, Owner: "n9"}, code: CodeNotFound},
		{name: "the in-sync owner", cmd: &ForcePromote{Device: "r", Epoch: 1, Owner: "n1"}, code: CodeConflict},
		{name: "bad node name", cmd: &ForcePromote{Device: "r", Epoch: 1, Owner: "n 3"}, code: CodeInvalid},
		{name: "no node", cmd: &ForcePromote{Device: "r", Epoch: 1}, code: CodeInvalid},
		{name: "shared storage", cmd: &ForcePromote{Device: "shared", Epoch: 1, Owner: "n2"}, code: CodeInvalid},
		{name: "unknown device", cmd: &ForcePromote{Device: "nope", Epoch: 1, Owner: "n2"}, code: CodeNotFound},
		{name: "out-of-sync n3 is forced to own r: alone in sync, epoch+1", cmd: &ForcePromote{Device: "r", Epoch: 1, Owner: "n3"},
			check: all(replicaState("r", "n3", 2, l("n1", "n2", "n3"), l("n3")), resultIsDevice("r"))},
		{name: "a retry at the old epoch is refused", cmd: &ForcePromote{Device: "r", Epoch: 1, Owner: "n3"}, code: CodeConflict},
		{name: "the old owner's stale proposal", cmd: &SetInSync{Device: "r", Epoch: 1, Add: l("n2")}, code: CodeConflict},
		{name: "the overridden n1 cannot own without a resync", cmd: &SetOwner{Device: "r", Owner: "n1", Epoch: 2}, code: CodeConflict},
		{name: "forcing the new owner again", cmd: &ForcePromote{Device: "r", Epoch: 2, Owner: "n3"}, code: CodeConflict},
		{name: "forcing back to an overridden replica", cmd: &ForcePromote{Device: "r", Epoch: 2, Owner: "n2"},
			check: replicaState("r", "n2", 3, l("n1", "n2", "n3"), l("n2"))},
		{name: "unowned device, out-of-sync replica", cmd: &ForcePromote{Device: "u", Owner: "n3"},
			check: replicaState("u", "n3", 1, l("n2", "n3"), l("n3"))},
		{name: "an overridden replica resyncs", cmd: &SetInSync{Device: "u", Epoch: 1, Add: l("n2")},
			check: replicaState("u", "n3", 1, l("n2", "n3"), l("n2", "n3"))},
	})
}

func TestScriptRemoveNodeWithReplicas(t *testing.T) {
	start := build(t,
		&RegisterNode{Node: node("n1")}, &RegisterNode{Node: node("n2")},
		&RegisterNode{Node: node("n3")}, &RegisterNode{Node: node("n4")}, &RegisterNode{Node: node("n5")},
		&CreateTarget{IQN: iqnA},
		&CreateLUN{Target: iqnA, LUN: 0, Device: deviceWith("shared", func(d *Device) { d.Owner = "n4" })},
		&CreateLUN{Target: iqnA, LUN: 1, Device: replicatedDevice("r", "n1", "n3", "n1", "n2")},
		&CreateLUN{Target: iqnA, LUN: 2, Device: replicatedDevice("u", "", "n5")},
		&CreateLUN{Target: iqnA, LUN: 3, Device: replicatedDevice("v", "n2", "n2", "n3")},
	)
	runScript(t, start, []step{
		{name: "the owner of a replicated LUN", cmd: &RemoveNode{Name: "n1"}, code: CodeConflict},
		{name: "the only in-sync copy", cmd: &RemoveNode{Name: "n5"}, code: CodeConflict},
		{name: "the owner of v", cmd: &RemoveNode{Name: "n2"}, code: CodeConflict},
		{name: "an in-sync replica leaves every in-sync set, keeps its replica slots", cmd: &RemoveNode{Name: "n3"}, check: all(
			replicaState("r", "n1", 1, l("n1", "n2", "n3"), l("n1", "n2")),
			replicaState("v", "n2", 1, l("n2", "n3"), l("n2")),
			func(t *testing.T, s *State, _ any) {
				if s.Nodes["n3"] != nil {
					t.Error("n3 still registered")
				}
			})},
		{name: "the removed node cannot be added back", cmd: &SetInSync{Device: "r", Epoch: 1, Add: l("n3")}, code: CodeNotFound},
		{name: "nor promoted", cmd: &SetOwner{Device: "v", Owner: "n3", Epoch: 1}, code: CodeNotFound},
		{name: "the owner of a shared LUN can go, as before", cmd: &RemoveNode{Name: "n4"}, check: replicaState("shared", "n4", 1, nil, nil)},
		{name: "a replacement for the removed replica", cmd: &ReplaceReplica{Device: "r", Epoch: 1, Old: "n3", New: "n5"},
			check: replicaState("r", "n1", 1, l("n1", "n2", "n5"), l("n1", "n2"))},
		{name: "fail r over to n2, dropping n1", cmd: &SetOwner{Device: "r", Owner: "n2", Epoch: 1, Drop: l("n1")},
			check: replicaState("r", "n2", 2, l("n1", "n2", "n5"), l("n2"))},
		{name: "n1 is no longer in sync anywhere: it can go", cmd: &RemoveNode{Name: "n1"},
			check: replicaState("r", "n2", 2, l("n1", "n2", "n5"), l("n2"))},
	})
}

// The refusal must name the same device on every node, whatever the map
// order.
func TestRemoveNodeErrorIsDeterministic(t *testing.T) {
	cmds := []Command{&RegisterNode{Node: node("n1")}, &RegisterNode{Node: node("n2")}, &CreateTarget{IQN: iqnA}}
	for i, name := range []string{"z", "b", "q", "a", "m", "k", "c", "x"} {
		cmds = append(cmds, &CreateLUN{Target: iqnA, LUN: uint64(i), Device: replicatedDevice(name, "n1", "n1", "n2")})
	}
	s := build(t, cmds...)
	_, _, first := s.ApplyCommand(100, &RemoveNode{Name: "n1"}, fakeEnv)
	if first == nil || !strings.Contains(first.Error(), "LUN a") {
		t.Fatalf("error %v, want one naming LUN a (the first by name)", first)
	}
	for range 50 {
		if _, _, err := s.ApplyCommand(100, &RemoveNode{Name: "n1"}, fakeEnv); err.Error() != first.Error() {
			t.Fatalf("errors differ: %q and %q", first, err)
		}
	}
}

func TestRestoreReplicated(t *testing.T) {
	start := build(t, &RegisterNode{Node: node("n1")})
	withReplicas := func(owner string, replicas, inSync []string) *State {
		s := sampleState()
		d := s.Devices["d1"]
		d.Owner, d.Replicas, d.InSync = owner, replicas, inSync
		return s
	}
	for _, tc := range []struct {
		name  string
		state *State
		code  Code
		check func(*testing.T, *State, any)
	}{
		{name: "kept as saved, sorted", state: withReplicas("n2", l("n3", "n2", "n1"), l("n2", "n1")),
			check: replicaState("d1", "n2", 3, l("n1", "n2", "n3"), l("n1", "n2"))},
		{name: "nodes need not exist", state: withReplicas("x", l("x", "y"), l("x")),
			check: replicaState("d1", "x", 3, l("x", "y"), l("x"))},
		{name: "unowned", state: withReplicas("", l("x", "y"), l("y")),
			check: replicaState("d1", "", 3, l("x", "y"), l("y"))},
		{name: "owner out of sync", state: withReplicas("n1", l("n1", "n2"), l("n2")), code: CodeInvalid},
		{name: "nothing in sync", state: withReplicas("", l("n1", "n2"), nil), code: CodeInvalid},
		{name: "in sync but no replica", state: withReplicas("n1", l("n1"), l("n1", "n2")), code: CodeInvalid},
		{name: "owner not a replica", state: withReplicas("n3", l("n1", "n2"), l("n1")), code: CodeInvalid},
		{name: "duplicate replica", state: withReplicas("n1", l("n1", "n1"), l("n1")), code: CodeInvalid},
		{name: "duplicate in-sync node", state: withReplicas("n1", l("n1", "n2"), l("n1", "n1")), code: CodeInvalid},
		{name: "in-sync set on shared storage", state: withReplicas("n1", nil, l("n1")), code: CodeInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runScript(t, start, []step{{name: tc.name, cmd: &Restore{State: tc.state}, code: tc.code, check: tc.check}})
		})
	}
}

func TestPlaceReplicas(t *testing.T) {
	// Owners: n1 two, n2 one. Replicas held: n1 3, n2 2, n3 1, n4 0.
	s := Empty()
	s.Devices["a"] = &Device{Name: "a", Owner: "n1", Replicas: l("n1", "n2", "n3")}
	s.Devices["b"] = &Device{Name: "b", Owner: "n1", Replicas: l("n1", "n2")}
	s.Devices["c"] = &Device{Name: "c", Owner: "n2", Replicas: l("n1")}
	for _, tc := range []struct {
		name       string
		candidates []string
		n          int
		owner      string
		replicas   []string
		code       Code
	}{
		{"one replica: the least loaded owner alone", l("n1", "n2", "n3", "n4"), 1, "n3", l("n3"), ""},
		{"owner by ownership, others by replicas held", l("n1", "n2", "n3", "n4"), 2, "n3", l("n3", "n4"), ""},
		{"three", l("n1", "n2", "n3", "n4"), 3, "n3", l("n2", "n3", "n4"), ""},
		{"every candidate", l("n1", "n2", "n3", "n4"), 4, "n3", l("n1", "n2", "n3", "n4"), ""},
		{"candidate order does not matter", l("n4", "n2", "n3", "n1"), 3, "n3", l("n2", "n3", "n4"), ""},
		{"duplicates count once", l("n2", "n2", "n1", "n1"), 2, "n2", l("n1", "n2"), ""},
		{"ties broken by name", l("x3", "x1", "x2"), 2, "x1", l("x1", "x2"), ""},
		{"too many", l("n1", "n2"), 3, "", nil, CodeConflict},
		{"duplicates do not make up the number", l("n1", "n1"), 2, "", nil, CodeConflict},
		{"no candidates", nil, 1, "", nil, CodeConflict},
		{"zero", l("n1", "n2"), 0, "", nil, CodeInvalid},
		{"negative", l("n1", "n2"), -1, "", nil, CodeInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := stateJSON(t, s)
			candidates := slices.Clone(tc.candidates)
			owner, replicas, err := s.PlaceReplicas(candidates, tc.n)
			if CodeOf(err) != tc.code || (tc.code == "") != (err == nil) {
				t.Fatalf("error %v, want code %q", err, tc.code)
			}
			if owner != tc.owner || !slices.Equal(replicas, tc.replicas) {
				t.Errorf("PlaceReplicas(%v, %d) = %q %v, want %q %v", tc.candidates, tc.n, owner, replicas, tc.owner, tc.replicas)
			}
			if err == nil && !slices.Contains(replicas, owner) {
				t.Errorf("owner %s not among the replicas %v", owner, replicas)
			}
			if !slices.Equal(candidates, tc.candidates) || stateJSON(t, s) != before {
				t.Error("PlaceReplicas changed its input")
			}
			for range 20 {
				o, r, _ := s.PlaceReplicas(tc.candidates, tc.n)
				if o != owner || !slices.Equal(r, replicas) {
					t.Fatalf("PlaceReplicas differs between calls: %q %v, then %q %v", owner, replicas, o, r)
				}
			}
		})
	}
}

// Planning several devices with WithDevice spreads owners and replicas,
// and the placement is accepted by CreateLUN.
func TestPlaceReplicasSpreadsAndApplies(t *testing.T) {
	s := build(t,
		&RegisterNode{Node: node("n1")}, &RegisterNode{Node: node("n2")}, &RegisterNode{Node: node("n3")},
		&CreateTarget{IQN: iqnA})
	candidates := l("n1", "n2", "n3")
	planned := s
	var devs []Device
	owners, held := map[string]int{}, map[string]int{}
	for _, name := range []string{"a", "b", "c", "d", "e", "f"} {
		owner, replicas, err := planned.PlaceReplicas(candidates, 2)
		if err != nil {
			t.Fatal(err)
		}
		d := replicatedDevice(name, owner, replicas...)
		d.Epoch = 1
		planned = planned.WithDevice(&d)
		devs = append(devs, d)
		owners[owner]++
		for _, r := range replicas {
			held[r]++
		}
	}
	for _, n := range candidates {
		if owners[n] != 2 || held[n] != 4 {
			t.Errorf("%s owns %d and holds %d replicas, want 2 and 4 (owners %v, held %v)", n, owners[n], held[n], owners, held)
		}
	}
	for i, d := range devs {
		var err error
		if s, _, err = s.ApplyCommand(s.Index+1, &CreateLUN{Target: iqnA, LUN: uint64(i), Device: d}, fakeEnv); err != nil {
			t.Fatalf("create %s: %v", d.Name, err)
		}
		checkReplicaInvariant(t, s.Devices[d.Name])
	}
}

func TestRequiredProtocolAndCheckCommand(t *testing.T) {
	v3 := []Peer{{Name: "n1", Protocol: ProtocolReplication}, {Name: "old", Protocol: 3}}
	v4 := []Peer{{Name: "n1", Protocol: ProtocolReplication}, {Name: "n2", Protocol: Protocol}}
	replicatedState := sampleState()
	sharedState := sampleState()
	sharedState.Devices["d1"].Replicas, sharedState.Devices["d1"].InSync = nil, nil
	for _, tc := range []struct {
		name string
		cmd  Command
		want uint16
	}{
		{"create_lun on shared storage", &CreateLUN{Target: iqnA, Device: nullDevice("d")}, 1},
		{"create_lun with replicas", &CreateLUN{Target: iqnA, Device: replicatedDevice("d", "n1", "n1")}, ProtocolReplication},
		{"import on shared storage", &Import{Devices: []Device{nullDevice("d")}}, 2},
		{"import with replicas", &Import{Devices: []Device{nullDevice("d"), replicatedDevice("e", "", "n1")}}, ProtocolReplication},
		{"restore on shared storage", &Restore{State: sharedState}, 1},
		{"restore with replicas", &Restore{State: replicatedState}, ProtocolReplication},
		{"restore without a state", &Restore{}, 1},
		{"set_owner", &SetOwner{Device: "d", Owner: "n1", Epoch: 1}, 3},
		{"set_owner with drop", &SetOwner{Device: "d", Owner: "n1", Epoch: 1, Drop: l("n2")}, ProtocolReplication},
		{"set_in_sync", sampleCommand(TypeSetInSync), ProtocolReplication},
		{"replace_replica", sampleCommand(TypeReplaceReplica), ProtocolReplication},
		{"force_promote", sampleCommand(TypeForcePromote), ProtocolReplication},
		{"remove_node", &RemoveNode{Name: "n1"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := RequiredProtocol(tc.cmd); got != tc.want {
				t.Fatalf("RequiredProtocol = %d, want %d", got, tc.want)
			}
			if err := CheckCommand(tc.cmd, v4); err != nil {
				t.Errorf("refused with every voter at protocol 4: %v", err)
			}
			err := CheckCommand(tc.cmd, v3)
			if (err != nil) != (tc.want > 3) {
				t.Fatalf("with a protocol-3 voter: %v, want refused: %v", err, tc.want > 3)
			}
			if err != nil {
				if CodeOf(err) != CodeUnsupported || !strings.Contains(err.Error(), "old (protocol 3)") || strings.Contains(err.Error(), "n1") {
					t.Errorf("message %q (code %q) should name old only", err, CodeOf(err))
				}
				// The encoding really is what a protocol-3 node refuses:
				// it carries a field or type protocol 3 did not know.
				b := string(mustEncode(t, tc.cmd))
				if !strings.Contains(b, `"replicas"`) && !strings.Contains(b, `"in_sync"`) && !strings.Contains(b, `"drop"`) &&
					!strings.Contains(b, "set_in_sync") && !strings.Contains(b, "replace_replica") && !strings.Contains(b, "force_promote") {
					t.Errorf("refused, but the encoding has nothing new: %s", b)
				}
			}
		})
	}
	if err := CheckDecodable(TypeSetInSync, v3); err == nil {
		t.Error("CheckDecodable(set_in_sync) accepted a protocol-3 voter")
	}
	if err := CheckCommand(&SetOwner{Device: "d", Owner: "n1", Drop: l("n2")}, v3); err == nil || !strings.Contains(err.Error(), "set_owner with replication fields") {
		t.Errorf("error %v should name the gated fields", err)
	}
}

// A command of an old type without the new fields encodes exactly as a
// protocol-3 binary expects: nothing it would refuse as unknown.
func TestOldShapedCommandsHaveNoNewFields(t *testing.T) {
	for _, c := range []Command{
		&CreateLUN{Target: iqnA, Device: nullDevice("d")},
		&SetOwner{Device: "d", Owner: "n1", Epoch: 1},
		&SetOwner{Device: "d", Owner: "n1", Epoch: 1, Drop: []string{}},
		&Import{Devices: []Device{fileDevice("d")}},
	} {
		b := string(mustEncode(t, c))
		for _, f := range []string{"replicas", "in_sync", "drop"} {
			if strings.Contains(b, `"`+f+`"`) {
				t.Errorf("%s encodes %q: %s", c.Type(), f, b)
			}
		}
	}
}
