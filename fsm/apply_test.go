package fsm

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// step is one entry of a script: a command, the code it must be refused
// with ("" when it must succeed) and a check of the resulting state and
// result.
type step struct {
	name  string
	cmd   Command
	code  Code
	env   *Env // nil: the fake reservation machine
	check func(t *testing.T, s *State, res any)
}

// runScript applies steps in order from start, each as an encoded log
// entry at the next index. It checks every step's outcome, that a refused
// command changes nothing but Index, and that no state published along the
// way is changed by a later command.
func runScript(t *testing.T, start *State, steps []step) *State {
	t.Helper()
	type published struct {
		state *State
		json  string
	}
	history := []published{{start, stateJSON(t, start)}}
	s := start
	for i, st := range steps {
		index := start.Index + uint64(i) + 1
		env := fakeEnv
		if st.env != nil {
			env = *st.env
		}
		before := stateJSON(t, s)
		next, res, err := s.Apply(index, mustEncode(t, st.cmd), env)
		if next == nil {
			t.Fatalf("step %d %q: Apply returned a nil state", i, st.name)
		}
		if next.Index != index {
			t.Errorf("step %d %q: Index %d, want %d", i, st.name, next.Index, index)
		}
		switch {
		case st.code == "" && err != nil:
			t.Fatalf("step %d %q: refused: %v", i, st.name, err)
		case st.code != "" && err == nil:
			t.Fatalf("step %d %q: accepted, want %s", i, st.name, st.code)
		case st.code != "" && CodeOf(err) != st.code:
			t.Fatalf("step %d %q: code %q, want %q (%v)", i, st.name, CodeOf(err), st.code, err)
		case err != nil && !sameExceptIndex(t, next, s):
			t.Fatalf("step %d %q: refused command changed the state", i, st.name)
		case err != nil && res != nil:
			t.Errorf("step %d %q: refused command returned a result %#v", i, st.name, res)
		}
		if after := stateJSON(t, s); after != before {
			t.Fatalf("step %d %q: Apply changed the previous state\nbefore: %s\nafter:  %s", i, st.name, before, after)
		}
		if st.check != nil {
			st.check(t, next, res)
		}
		s = next
		history = append(history, published{s, stateJSON(t, s)})
	}
	for i, h := range history {
		if got := stateJSON(t, h.state); got != h.json {
			t.Fatalf("state published after step %d changed later\nthen: %s\nnow:  %s", i-1, h.json, got)
		}
	}
	return s
}

// Small checks for the scripts.

func portGroups(want map[string]uint16) func(*testing.T, *State, any) {
	return func(t *testing.T, s *State, _ any) {
		t.Helper()
		got := map[string]uint16{}
		for name, n := range s.Nodes {
			got[name] = n.PortGroup
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("port groups %v, want %v", got, want)
		}
	}
}

func devicesAre(names ...string) func(*testing.T, *State, any) {
	return func(t *testing.T, s *State, _ any) {
		t.Helper()
		if got := SortedKeys(s.Devices); !slices.Equal(got, names) {
			t.Errorf("devices %v, want %v", got, names)
		}
	}
}

func targetsAre(iqns ...string) func(*testing.T, *State, any) {
	return func(t *testing.T, s *State, _ any) {
		t.Helper()
		if got := SortedKeys(s.Targets); !slices.Equal(got, iqns) {
			t.Errorf("targets %v, want %v", got, iqns)
		}
	}
}

func lunsOf(iqn string, want ...LUN) func(*testing.T, *State, any) {
	return func(t *testing.T, s *State, _ any) {
		t.Helper()
		if got := s.Targets[iqn].LUNs; !slices.Equal(got, want) {
			t.Errorf("%s LUNs %v, want %v", iqn, got, want)
		}
	}
}

func target(iqn string, check func(t *testing.T, tg *Target)) func(*testing.T, *State, any) {
	return func(t *testing.T, s *State, _ any) {
		t.Helper()
		tg := s.Targets[iqn]
		if tg == nil {
			t.Fatalf("no target %s", iqn)
		}
		check(t, tg)
	}
}

func all(checks ...func(*testing.T, *State, any)) func(*testing.T, *State, any) {
	return func(t *testing.T, s *State, res any) {
		t.Helper()
		for _, c := range checks {
			c(t, s, res)
		}
	}
}

func TestScriptNodes(t *testing.T) {
	n2moved := node("n2")
	n2moved.ISCSIAddr, n2moved.PortGroup = "elsewhere:3260", 99 // the proposer's port group is ignored
	runScript(t, Empty(), []step{
		{name: "first node", cmd: &RegisterNode{Node: node("n1")}, check: all(portGroups(map[string]uint16{"n1": 1}),
			func(t *testing.T, _ *State, res any) {
				if n, ok := res.(*Node); !ok || n.PortGroup != 1 {
					t.Errorf("result %#v, want the node with port group 1", res)
				}
			})},
		{name: "second node", cmd: &RegisterNode{Node: node("n2")}, check: portGroups(map[string]uint16{"n1": 1, "n2": 2})},
		{name: "third node", cmd: &RegisterNode{Node: node("n3")}, check: portGroups(map[string]uint16{"n1": 1, "n2": 2, "n3": 3})},
		{name: "re-register keeps the port group", cmd: &RegisterNode{Node: n2moved}, check: all(
			portGroups(map[string]uint16{"n1": 1, "n2": 2, "n3": 3}),
			func(t *testing.T, s *State, _ any) {
				if got := s.Nodes["n2"].ISCSIAddr; got != "elsewhere:3260" {
					t.Errorf("address %q not updated", got)
				}
			})},
		{name: "remove", cmd: &RemoveNode{Name: "n2"}, check: portGroups(map[string]uint16{"n1": 1, "n3": 3})},
		{name: "a removed node's id is never reused", cmd: &RegisterNode{Node: node("n4")}, check: portGroups(map[string]uint16{"n1": 1, "n3": 3, "n4": 4})},
		{name: "ids keep growing", cmd: &RegisterNode{Node: node("n5")}, check: portGroups(map[string]uint16{"n1": 1, "n3": 3, "n4": 4, "n5": 5})},
		{name: "remove unknown", cmd: &RemoveNode{Name: "n2"}, code: CodeNotFound},
		{name: "bad node name", cmd: &RegisterNode{Node: node("n 6")}, code: CodeInvalid},
		{name: "missing protocol", cmd: &RegisterNode{Node: Node{Name: "n6"}}, code: CodeInvalid},
	})
}

func TestScriptOwnership(t *testing.T) {
	start := Empty()
	for _, n := range []string{"n1", "n2"} {
		start, _, _ = start.ApplyCommand(start.Index+1, &RegisterNode{Node: node(n)}, fakeEnv)
	}
	start, _, _ = start.ApplyCommand(start.Index+1, &CreateTarget{IQN: iqnA}, fakeEnv)
	start, _, _ = start.ApplyCommand(start.Index+1, &CreateLUN{Target: iqnA, LUN: 0, Device: nullDevice("d0")}, fakeEnv)
	owner := func(name string, epoch uint64) func(*testing.T, *State, any) {
		return func(t *testing.T, s *State, _ any) {
			if d := s.Devices["d0"]; d.Owner != name || d.Epoch != epoch {
				t.Errorf("owner %q epoch %d, want %q epoch %d", d.Owner, d.Epoch, name, epoch)
			}
		}
	}
	runScript(t, start, []step{
		{name: "first owner", cmd: &SetOwner{Device: "d0", Owner: "n1", Epoch: 0}, check: owner("n1", 1)},
		{name: "stale epoch refused", cmd: &SetOwner{Device: "d0", Owner: "n2", Epoch: 0}, code: CodeConflict},
		{name: "move", cmd: &SetOwner{Device: "d0", Owner: "n2", Epoch: 1}, check: owner("n2", 2)},
		{name: "unknown node", cmd: &SetOwner{Device: "d0", Owner: "n9", Epoch: 2}, code: CodeNotFound},
		{name: "unknown device", cmd: &SetOwner{Device: "d9", Owner: "n1", Epoch: 0}, code: CodeNotFound},
		{name: "drain", cmd: &SetDrain{Node: "n1", Drained: true}, check: func(t *testing.T, s *State, _ any) {
			if !s.Nodes["n1"].Drained {
				t.Error("n1 not drained")
			}
		}},
		{name: "re-registering keeps the drain", cmd: &RegisterNode{Node: node("n1")}, check: func(t *testing.T, s *State, _ any) {
			if !s.Nodes["n1"].Drained {
				t.Error("re-registering n1 undrained it")
			}
		}},
		{name: "drain unknown", cmd: &SetDrain{Node: "n9", Drained: true}, code: CodeNotFound},
	})
}

func TestLeastLoaded(t *testing.T) {
	s := Empty()
	s.Devices["a"] = &Device{Name: "a", Owner: "n1"}
	s.Devices["b"] = &Device{Name: "b", Owner: "n1"}
	s.Devices["c"] = &Device{Name: "c", Owner: "n2"}
	for _, tc := range []struct {
		candidates []string
		want       string
	}{
		{[]string{"n1", "n2", "n3"}, "n3"},
		{[]string{"n1", "n2"}, "n2"},
		{[]string{"n2", "n1"}, "n2"},
		{[]string{"n1"}, "n1"},
		{nil, ""},
	} {
		if got := s.LeastLoaded(tc.candidates); got != tc.want {
			t.Errorf("LeastLoaded(%v) = %q, want %q", tc.candidates, got, tc.want)
		}
	}
}

func TestScriptTargets(t *testing.T) {
	start := build(t, &CreateTarget{IQN: iqnA}, &CreateLUN{Target: iqnA, LUN: 0, Device: nullDevice("d0")})
	chap := []CHAPUser{{User: "joe", Secret: "secret123456"}}
	mutual := &CHAPUser{User: "tgt", Secret: "mutual123456"}
	initiator := "iqn.1993-08.org.debian:01:abc"
	runScript(t, start, []step{
		{name: "create", cmd: &CreateTarget{IQN: iqnB, Alias: "bee"}, check: target(iqnB, func(t *testing.T, tg *Target) {
			if !tg.Enabled || tg.Alias != "bee" || len(tg.LUNs) != 0 {
				t.Errorf("new target %+v, want enabled, aliased, no LUNs", tg)
			}
		})},
		{name: "create duplicate", cmd: &CreateTarget{IQN: iqnB}, code: CodeConflict},
		{name: "create with a bad IQN", cmd: &CreateTarget{IQN: "iqn.2025-01.com.Example:upper"}, code: CodeInvalid},
		{name: "create with a bad prefix", cmd: &CreateTarget{IQN: "target1"}, code: CodeInvalid},

		{name: "set alias and disable", cmd: &SetTarget{IQN: iqnB, Alias: ptr("b2"), Enabled: ptr(false)}, check: target(iqnB, func(t *testing.T, tg *Target) {
			if tg.Alias != "b2" || tg.Enabled {
				t.Errorf("target %+v, want alias b2, disabled", tg)
			}
		})},
		{name: "nil fields are left alone", cmd: &SetTarget{IQN: iqnB}, check: target(iqnB, func(t *testing.T, tg *Target) {
			if tg.Alias != "b2" || tg.Enabled {
				t.Errorf("target %+v changed", tg)
			}
		})},
		{name: "add params", cmd: &SetTarget{IQN: iqnB, Params: []Param{{Key: "MaxBurstLength", Value: "1"}, {Key: "ImmediateData", Value: "Yes"}, {Key: "QueuedCommands", Value: "32"}}},
			check: paramsOf(iqnB, "ImmediateData=Yes", "MaxBurstLength=1", "QueuedCommands=32")},
		{name: "replace and remove params", cmd: &SetTarget{IQN: iqnB, Params: []Param{{Key: "MaxBurstLength", Value: "2"}, {Key: "ImmediateData", Value: ""}, {Key: "AAA", Value: "first"}}},
			check: paramsOf(iqnB, "AAA=first", "MaxBurstLength=2", "QueuedCommands=32")},
		{name: "removing a missing param is a no-op", cmd: &SetTarget{IQN: iqnB, Params: []Param{{Key: "Nope", Value: ""}}},
			check: paramsOf(iqnB, "AAA=first", "MaxBurstLength=2", "QueuedCommands=32")},
		{name: "param key with '='", cmd: &SetTarget{IQN: iqnB, Params: []Param{{Key: "a=b", Value: "1"}}}, code: CodeInvalid},
		{name: "param value with newline", cmd: &SetTarget{IQN: iqnB, Params: []Param{{Key: "a", Value: "1\n2"}}}, code: CodeInvalid},
		{name: "set missing target", cmd: &SetTarget{IQN: iqnC, Alias: ptr("x")}, code: CodeNotFound},

		{name: "mutual CHAP without incoming", cmd: &SetCHAP{IQN: iqnB, Mutual: mutual}, code: CodeInvalid},
		{name: "CHAP user without secret", cmd: &SetCHAP{IQN: iqnB, Incoming: []CHAPUser{{User: "joe"}}}, code: CodeInvalid},
		{name: "CHAP on missing target", cmd: &SetCHAP{IQN: iqnC, Incoming: chap}, code: CodeNotFound},
		{name: "set CHAP with mutual", cmd: &SetCHAP{IQN: iqnB, Incoming: chap, Mutual: mutual}, check: target(iqnB, func(t *testing.T, tg *Target) {
			if !slices.Equal(tg.IncomingUsers, chap) || tg.OutgoingUser == nil || *tg.OutgoingUser != *mutual {
				t.Errorf("CHAP %+v / %+v", tg.IncomingUsers, tg.OutgoingUser)
			}
			if tg.OutgoingUser == mutual {
				t.Error("the state shares the command's mutual user")
			}
		})},
		{name: "clear CHAP", cmd: &SetCHAP{IQN: iqnB}, check: target(iqnB, func(t *testing.T, tg *Target) {
			if len(tg.IncomingUsers) != 0 || tg.OutgoingUser != nil {
				t.Errorf("CHAP not cleared: %+v / %+v", tg.IncomingUsers, tg.OutgoingUser)
			}
		})},

		{name: "allow initiator", cmd: &SetACL{IQN: iqnB, Initiator: initiator, Allow: true}, check: aclOf(iqnB, initiator)},
		{name: "allow pattern", cmd: &SetACL{IQN: iqnB, Initiator: "iqn.1993-08.org.debian:*", Allow: true}, check: aclOf(iqnB, initiator, "iqn.1993-08.org.debian:*")},
		{name: "allow duplicate", cmd: &SetACL{IQN: iqnB, Initiator: initiator, Allow: true}, code: CodeConflict},
		{name: "disallow", cmd: &SetACL{IQN: iqnB, Initiator: initiator}, check: aclOf(iqnB, "iqn.1993-08.org.debian:*")},
		{name: "disallow missing", cmd: &SetACL{IQN: iqnB, Initiator: initiator}, code: CodeNotFound},
		{name: "ACL with a space", cmd: &SetACL{IQN: iqnB, Initiator: "a b", Allow: true}, code: CodeInvalid},
		{name: "ACL on missing target", cmd: &SetACL{IQN: iqnC, Initiator: initiator, Allow: true}, code: CodeNotFound},

		{name: "delete target with LUNs", cmd: &DeleteTarget{IQN: iqnA}, code: CodeConflict},
		{name: "delete empty target", cmd: &DeleteTarget{IQN: iqnB}, check: all(targetsAre(iqnA), devicesAre("d0"))},
		{name: "delete missing target", cmd: &DeleteTarget{IQN: iqnB}, code: CodeNotFound},
		{name: "force delete removes LUNs and devices", cmd: &DeleteTarget{IQN: iqnA, Force: true}, check: all(targetsAre(), devicesAre())},
	})
}

func paramsOf(iqn string, want ...string) func(*testing.T, *State, any) {
	return target(iqn, func(t *testing.T, tg *Target) {
		var got []string
		for _, p := range tg.Params {
			got = append(got, p.Key+"="+p.Value)
		}
		if !slices.Equal(got, want) {
			t.Errorf("params %v, want %v (sorted by key)", got, want)
		}
	})
}

func aclOf(iqn string, want ...string) func(*testing.T, *State, any) {
	return target(iqn, func(t *testing.T, tg *Target) {
		if !slices.Equal(tg.AllowedInitiators, want) {
			t.Errorf("allowed initiators %v, want %v", tg.AllowedInitiators, want)
		}
	})
}

// deviceWith returns nullDevice(name) changed by f.
func deviceWith(name string, f func(d *Device)) Device {
	d := nullDevice(name)
	f(&d)
	return d
}

func TestScriptLUNs(t *testing.T) {
	start := build(t, &CreateTarget{IQN: iqnA}, &CreateTarget{IQN: iqnB})
	createLUN := func(iqn string, lun uint64, d Device) *CreateLUN { return &CreateLUN{Target: iqn, LUN: lun, Device: d} }
	runScript(t, start, []step{
		{name: "create nullio", cmd: createLUN(iqnA, 3, nullDevice("d0")), check: all(devicesAre("d0"), lunsOf(iqnA, LUN{Number: 3, Device: "d0"}),
			func(t *testing.T, s *State, res any) {
				if d, ok := res.(*Device); !ok || !reflect.DeepEqual(d, s.Devices["d0"]) {
					t.Errorf("result %#v, want the new device", res)
				}
			})},
		{name: "create fileio, LUNs stay sorted", cmd: createLUN(iqnA, 1, deviceWith("d1", func(d *Device) { *d = fileDevice("d1"); d.ReadOnly = true })),
			check: lunsOf(iqnA, LUN{Number: 1, Device: "d1", ReadOnly: true}, LUN{Number: 3, Device: "d0"})},
		{name: "device name conflict", cmd: createLUN(iqnB, 0, nullDevice("d0")), code: CodeConflict},
		{name: "LUN number conflict", cmd: createLUN(iqnA, 3, nullDevice("d2")), code: CodeConflict},
		{name: "missing target", cmd: createLUN(iqnC, 0, nullDevice("d2")), code: CodeNotFound},
		{name: "LUN above the maximum", cmd: createLUN(iqnA, MaxLUN+1, nullDevice("d2")), code: CodeInvalid},
		{name: "bad name chars", cmd: createLUN(iqnA, 4, nullDevice("d/2")), code: CodeInvalid},
		{name: "name starting with a dot", cmd: createLUN(iqnA, 4, nullDevice(".d2")), code: CodeInvalid},
		{name: "name too long", cmd: createLUN(iqnA, 4, nullDevice(strings.Repeat("x", maxNameLen+1))), code: CodeInvalid},
		{name: "block size 1024", cmd: createLUN(iqnA, 4, deviceWith("d2", func(d *Device) { d.BlockSize = 1024 })), code: CodeInvalid},
		{name: "size not a multiple of the block size", cmd: createLUN(iqnA, 4, deviceWith("d2", func(d *Device) { d.Size = 1000 })), code: CodeInvalid},
		{name: "nullio without size", cmd: createLUN(iqnA, 4, deviceWith("d2", func(d *Device) { d.Size = 0 })), code: CodeInvalid},
		{name: "fileio without path", cmd: createLUN(iqnA, 4, deviceWith("d2", func(d *Device) { *d = fileDevice("d2"); d.Path = "" })), code: CodeInvalid},
		{name: "new backing file without size", cmd: createLUN(iqnA, 4, deviceWith("d2", func(d *Device) { *d = fileDevice("d2"); d.Size = 0 })), code: CodeInvalid},
		{name: "unknown handler", cmd: createLUN(iqnA, 4, deviceWith("d2", func(d *Device) { d.Handler = "rbd" })), code: CodeInvalid},
		{name: "missing serial", cmd: createLUN(iqnA, 4, deviceWith("d2", func(d *Device) { d.Serial = "" })), code: CodeInvalid},
		{name: "missing NAA", cmd: createLUN(iqnA, 4, deviceWith("d2", func(d *Device) { d.NAA = "" })), code: CodeInvalid},

		{name: "grow", cmd: &ResizeDevice{Name: "d0", Size: 4 << 20}, check: func(t *testing.T, s *State, _ any) {
			if got := s.Devices["d0"].Size; got != 4<<20 {
				t.Errorf("size %d, want %d", got, 4<<20)
			}
		}},
		{name: "shrink", cmd: &ResizeDevice{Name: "d0", Size: 1 << 20}, code: CodeInvalid},
		{name: "same size", cmd: &ResizeDevice{Name: "d0", Size: 4 << 20}, code: CodeConflict},
		{name: "not a multiple of the block size", cmd: &ResizeDevice{Name: "d0", Size: 4<<20 + 100}, code: CodeInvalid},
		{name: "zero size", cmd: &ResizeDevice{Name: "d0"}, code: CodeInvalid},
		{name: "resize missing device", cmd: &ResizeDevice{Name: "nope", Size: 8 << 20}, code: CodeNotFound},

		{name: "delete LUN drops the unmapped device", cmd: &DeleteLUN{Target: iqnA, LUN: 1}, check: all(devicesAre("d0"), lunsOf(iqnA, LUN{Number: 3, Device: "d0"}))},
		{name: "delete missing LUN", cmd: &DeleteLUN{Target: iqnA, LUN: 1}, code: CodeNotFound},
		{name: "delete LUN of missing target", cmd: &DeleteLUN{Target: iqnC, LUN: 0}, code: CodeNotFound},

		{name: "import a device mapped twice", cmd: &Import{
			Devices: []Device{nullDevice("shared")},
			Targets: []Target{{IQN: iqnC, Enabled: true, LUNs: []LUN{{Number: 0, Device: "shared"}, {Number: 1, Device: "shared"}}}},
		}, check: all(devicesAre("d0", "shared"), targetsAre(iqnA, iqnB, iqnC), func(t *testing.T, s *State, res any) {
			want := &ImportResult{Devices: []string{"shared"}, Targets: []string{iqnC}}
			if !reflect.DeepEqual(res, want) {
				t.Errorf("result %#v, want %#v", res, want)
			}
		})},
		{name: "reservation on the shared device", cmd: &Reservation{Device: "shared", Origin: "n1", Op: json.RawMessage(`1`)}},
		{name: "delete one mapping keeps the device", cmd: &DeleteLUN{Target: iqnC, LUN: 0}, check: func(t *testing.T, s *State, _ any) {
			if s.Devices["shared"] == nil || s.Reservations["shared"] == nil {
				t.Error("device or its reservation state dropped while still mapped")
			}
		}},
		{name: "delete the last mapping drops device and reservation", cmd: &DeleteLUN{Target: iqnC, LUN: 1}, check: func(t *testing.T, s *State, _ any) {
			if s.Devices["shared"] != nil || s.Reservations["shared"] != nil {
				t.Error("device or its reservation state kept after the last mapping went")
			}
		}},

		{name: "import mapping a device of another target", cmd: &Import{Targets: []Target{{IQN: iqnD, LUNs: []LUN{{Number: 0, Device: "d0"}}}}}},
		{name: "force delete keeps a device mapped elsewhere", cmd: &DeleteTarget{IQN: iqnD, Force: true}, check: all(targetsAre(iqnA, iqnB, iqnC), devicesAre("d0"))},
	})
}

func TestScriptImport(t *testing.T) {
	start := build(t, &CreateTarget{IQN: iqnA}, &CreateLUN{Target: iqnA, LUN: 0, Device: nullDevice("d0")})
	runScript(t, start, []step{
		{name: "conflict on the last target changes nothing", cmd: &Import{
			Devices:        []Device{nullDevice("new0"), nullDevice("new1")},
			Targets:        []Target{{IQN: iqnB, LUNs: []LUN{{Number: 0, Device: "new0"}}}, {IQN: iqnA}},
			DiscoveryUsers: []CHAPUser{{User: "disc", Secret: "discovery123"}},
		}, code: CodeConflict},
		{name: "existing device", cmd: &Import{Devices: []Device{nullDevice("d0")}}, code: CodeConflict},
		{name: "same device twice", cmd: &Import{Devices: []Device{nullDevice("x"), nullDevice("x")}}, code: CodeConflict},
		{name: "same target twice", cmd: &Import{Targets: []Target{{IQN: iqnB}, {IQN: iqnB}}}, code: CodeConflict},
		{name: "target mapping a missing device", cmd: &Import{Targets: []Target{{IQN: iqnB, LUNs: []LUN{{Number: 0, Device: "ghost"}}}}}, code: CodeNotFound},
		{name: "group mapping a missing device", cmd: &Import{Targets: []Target{{IQN: iqnB, Groups: []InitiatorGroup{{Name: "g", LUNs: []LUN{{Number: 0, Device: "ghost"}}}}}}}, code: CodeNotFound},
		{name: "invalid device", cmd: &Import{Devices: []Device{deviceWith("x", func(d *Device) { d.BlockSize = 1024 })}}, code: CodeInvalid},
		{name: "LUN mapped twice", cmd: &Import{Targets: []Target{{IQN: iqnB, LUNs: []LUN{{Number: 0, Device: "d0"}, {Number: 0, Device: "d0"}}}}}, code: CodeInvalid},
		{name: "group defined twice", cmd: &Import{Targets: []Target{{IQN: iqnB, Groups: []InitiatorGroup{{Name: "g"}, {Name: "g"}}}}}, code: CodeInvalid},
		{name: "bad discovery user", cmd: &Import{DiscoveryUsers: []CHAPUser{{User: "disc"}}}, code: CodeInvalid},
		{name: "everything new", cmd: sampleCommand(TypeImport), check: all(
			devicesAre("d0", "imp0", "imp1"), targetsAre(iqnA, iqnC),
			func(t *testing.T, s *State, _ any) {
				if len(s.DiscoveryUsers) != 1 || s.DiscoveryUsers[0].User != "disc" {
					t.Errorf("discovery users %v", s.DiscoveryUsers)
				}
				want := sampleCommand(TypeImport).(*Import).Targets[0]
				if !reflect.DeepEqual(*s.Targets[iqnC], want) {
					t.Errorf("imported target %+v, want %+v", s.Targets[iqnC], want)
				}
			})},
		{name: "import without discovery users keeps them", cmd: &Import{Targets: []Target{{IQN: iqnB}}}, check: func(t *testing.T, s *State, _ any) {
			if len(s.DiscoveryUsers) != 1 {
				t.Errorf("discovery users %v, want kept", s.DiscoveryUsers)
			}
		}},
	})
}

func TestImportResultIsTheStateBeforeExceptIndex(t *testing.T) {
	prev := build(t, &CreateTarget{IQN: iqnA})
	next, res, err := prev.Apply(7, mustEncode(t, &Import{
		Devices: []Device{nullDevice("new0")},
		Targets: []Target{{IQN: iqnB, LUNs: []LUN{{Number: 0, Device: "new0"}}}, {IQN: iqnA}},
	}), fakeEnv)
	if CodeOf(err) != CodeConflict || res != nil {
		t.Fatalf("got %v, %v; want a conflict and no result", res, err)
	}
	if next.Index != 7 {
		t.Errorf("Index %d, want 7", next.Index)
	}
	want := *prev
	want.Index = 7
	if !reflect.DeepEqual(*next, want) {
		t.Fatalf("state after a refused import\n got: %+v\nwant: %+v", next, &want)
	}
}

func TestScriptRestore(t *testing.T) {
	start := build(t,
		&RegisterNode{Node: node("n1")}, &RegisterNode{Node: node("n2")},
		&CreateTarget{IQN: iqnD}, &CreateLUN{Target: iqnD, LUN: 0, Device: nullDevice("old")},
		&Reservation{Device: "old", Op: json.RawMessage(`1`)},
	)
	backup := sampleState()
	backup.Nodes = map[string]*Node{"stranger": ptr(node("stranger"))}
	broken := sampleState()
	broken.Targets[iqnA].Groups[0].LUNs[0].Device = "ghost"
	runScript(t, start, []step{
		{name: "target mapping a missing device", cmd: &Restore{State: broken}, code: CodeNotFound},
		{name: "no state", cmd: &Restore{}, code: CodeInvalid},
		{name: "invalid device", cmd: &Restore{State: withDevice(sampleState(), "bad", ptr(deviceWith("bad", func(d *Device) { d.BlockSize = 1 })))}, code: CodeInvalid},
		{name: "device under another name", cmd: &Restore{State: withDevice(sampleState(), "alias", ptr(nullDevice("d9")))}, code: CodeInvalid},
		{name: "null device", cmd: &Restore{State: withDevice(sampleState(), "nil", nil)}, code: CodeInvalid},
		{name: "null target", cmd: &Restore{State: withTarget(sampleState(), iqnB, nil)}, code: CodeInvalid},
		{name: "target under another IQN", cmd: &Restore{State: withTarget(sampleState(), iqnB, &Target{IQN: iqnC})}, code: CodeInvalid},
		{name: "bad discovery user", cmd: &Restore{State: func() *State { s := sampleState(); s.DiscoveryUsers = []CHAPUser{{User: "u"}}; return s }()}, code: CodeInvalid},
		{name: "restore keeps nodes and replaces the rest", cmd: &Restore{State: backup}, check: func(t *testing.T, s *State, _ any) {
			if got := SortedKeys(s.Nodes); !slices.Equal(got, []string{"n1", "n2"}) {
				t.Errorf("nodes %v, want the cluster's own n1, n2", got)
			}
			want := sampleState()
			if !reflect.DeepEqual(s.Devices, want.Devices) || !reflect.DeepEqual(s.Targets, want.Targets) ||
				!reflect.DeepEqual(s.Reservations, want.Reservations) || !reflect.DeepEqual(s.DiscoveryUsers, want.DiscoveryUsers) {
				t.Errorf("restored state %s\nwant the backup's %s", stateJSON(t, s), stateJSON(t, want))
			}
		}},
		{name: "restore of an empty state clears the configuration", cmd: &Restore{State: &State{}}, check: all(devicesAre(), targetsAre(),
			func(t *testing.T, s *State, _ any) {
				if len(s.Nodes) != 2 || len(s.Reservations) != 0 || len(s.DiscoveryUsers) != 0 || s.Devices == nil || s.Targets == nil {
					t.Errorf("state after restoring nothing: %s", stateJSON(t, s))
				}
			})},
	})
}

func withDevice(s *State, key string, d *Device) *State {
	s.Devices[key] = d
	return s
}

func withTarget(s *State, key string, tg *Target) *State {
	s.Targets[key] = tg
	return s
}

// A command is refused with the same error on every node, so the error
// must not depend on map iteration order.
func TestRestoreErrorIsDeterministic(t *testing.T) {
	bad := sampleState()
	for _, name := range []string{"b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8"} {
		bad.Devices[name] = ptr(deviceWith(name, func(d *Device) { d.BlockSize = 1 }))
		bad.Targets["iqn.2025-01.com.example:"+name] = &Target{IQN: "iqn.2025-01.com.example:" + name, LUNs: []LUN{{Device: "ghost-" + name}}}
	}
	ghosts := sampleState()
	for _, name := range []string{"b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8"} {
		ghosts.Targets["iqn.2025-01.com.example:"+name] = &Target{IQN: "iqn.2025-01.com.example:" + name, LUNs: []LUN{{Device: "ghost-" + name}}}
	}
	for _, tc := range []struct {
		name  string
		state *State
	}{{"invalid devices", bad}, {"missing devices", ghosts}} {
		t.Run(tc.name, func(t *testing.T) {
			entry := mustEncode(t, &Restore{State: tc.state})
			_, _, first := Empty().Apply(1, entry, fakeEnv)
			if first == nil {
				t.Fatal("accepted")
			}
			for range 50 {
				if _, _, err := Empty().Apply(1, entry, fakeEnv); err.Error() != first.Error() {
					t.Fatalf("errors differ between runs: %q and %q", first, err)
				}
			}
		})
	}
}

func TestScriptReservation(t *testing.T) {
	start := build(t, &CreateTarget{IQN: iqnA}, &CreateLUN{Target: iqnA, LUN: 0, Device: nullDevice("d0")})
	op := func(s string) *Reservation { return &Reservation{Device: "d0", Origin: "n1", Op: json.RawMessage(s)} }
	outcome := func(want string) func(*testing.T, *State, any) {
		return func(t *testing.T, _ *State, res any) {
			r, ok := res.(*ReservationResult)
			if !ok || string(r.Outcome) != want {
				t.Errorf("result %#v, want outcome %q", res, want)
			}
		}
	}
	prState := func(want string) func(*testing.T, *State, any) {
		return func(t *testing.T, s *State, _ any) {
			if got := string(s.Reservations["d0"]); got != want {
				t.Errorf("reservation state %q, want %q", got, want)
			}
		}
	}
	runScript(t, start, []step{
		{name: "first operation", cmd: op(`{"a":1}`), check: all(prState(`+{"a":1}`), outcome("op#1"))},
		{name: "second operation sees the first's state", cmd: op(`2`), check: all(prState(`+{"a":1}+2`), outcome("op#2"))},
		{name: "no machine", cmd: op(`3`), env: &Env{}, code: CodeUnsupported},
		{name: "unknown device", cmd: &Reservation{Device: "nope", Op: json.RawMessage(`3`)}, code: CodeNotFound},
		{name: "machine error", cmd: op(`"fail"`), code: CodeInvalid},
		{name: "empty operation", cmd: &Reservation{Device: "d0", Op: nil}, code: CodeInvalid},
		{name: "state unchanged by the refusals", cmd: op(`4`), check: all(prState(`+{"a":1}+2+4`), outcome("op#3"))},
	})
}

// TestApplyOnZeroState checks that a State{} with nil maps (as a decoded
// snapshot or a hand-made value may be) is usable.
func TestApplyOnZeroState(t *testing.T) {
	s, _, err := (&State{}).ApplyCommand(1, &CreateTarget{IQN: iqnA}, fakeEnv)
	if err != nil || s.Targets[iqnA] == nil || s.Nodes == nil || s.Devices == nil {
		t.Fatalf("CreateTarget on a zero state: %v, %s", err, stateJSON(t, s))
	}
}

// determinismLog is a log mixing accepted and refused commands and
// entries that do not decode.
func determinismLog(t *testing.T) [][]byte {
	var log [][]byte
	for _, c := range []Command{
		&RegisterNode{Node: node("n2")}, &RegisterNode{Node: node("n1")}, &RegisterNode{Node: node("n3")},
		&RemoveNode{Name: "n2"}, &RegisterNode{Node: node("n4")},
		&CreateTarget{IQN: iqnA}, &CreateTarget{IQN: iqnA},
		&CreateLUN{Target: iqnA, LUN: 0, Device: nullDevice("d0")},
		&CreateLUN{Target: iqnA, LUN: 5, Device: fileDevice("d5")},
		&CreateLUN{Target: iqnA, LUN: 2, Device: nullDevice("d2")},
		&SetTarget{IQN: iqnA, Params: []Param{{Key: "z", Value: "1"}, {Key: "a", Value: "2"}, {Key: "m", Value: "3"}}},
		&SetCHAP{IQN: iqnA, Incoming: []CHAPUser{{User: "u", Secret: "s"}}},
		&SetACL{IQN: iqnA, Initiator: "iqn.x:*", Allow: true},
		&Reservation{Device: "d0", Op: json.RawMessage(`1`)},
		&Reservation{Device: "d0", Op: json.RawMessage(`"fail"`)},
		&ResizeDevice{Name: "d2", Size: 2 << 20}, &ResizeDevice{Name: "d2", Size: 1 << 20},
		sampleCommand(TypeImport), sampleCommand(TypeImport),
		&DeleteLUN{Target: iqnA, LUN: 5},
		&DeleteTarget{IQN: iqnC, Force: true},
	} {
		log = append(log, mustEncode(t, c))
	}
	return append(log, nil, []byte("\x01{}"), []byte("garbage"))
}

func TestApplyIsDeterministic(t *testing.T) {
	log := determinismLog(t)
	run := func() ([]byte, []string) {
		s := Empty()
		var errs []string
		for i, entry := range log {
			var err error
			s, _, err = s.Apply(uint64(i+1), entry, fakeEnv)
			if s.Index != uint64(i+1) {
				t.Fatalf("entry %d: Index %d, want %d even when refused (%v)", i+1, s.Index, i+1, err)
			}
			if err != nil {
				errs = append(errs, err.Error())
			}
		}
		b, err := MarshalSnapshot(s)
		if err != nil {
			t.Fatal(err)
		}
		return b, errs
	}
	snapA, errsA := run()
	snapB, errsB := run()
	if !bytes.Equal(snapA, snapB) {
		t.Fatalf("two replicas diverged:\n%s\n%s", snapA, snapB)
	}
	if !slices.Equal(errsA, errsB) {
		t.Fatalf("two replicas refused differently:\n%q\n%q", errsA, errsB)
	}
	if len(errsA) < 5 {
		t.Errorf("only %d refusals, the log should exercise refused entries: %q", len(errsA), errsA)
	}
}

func TestWithIndex(t *testing.T) {
	s := sampleState()
	before := stateJSON(t, s)
	n := s.WithIndex(100)
	if n == s || n.Index != 100 || s.Index != 42 {
		t.Fatalf("WithIndex: new %p index %d, old %p index %d", n, n.Index, s, s.Index)
	}
	if !sameExceptIndex(t, n, s) || stateJSON(t, s) != before {
		t.Fatal("WithIndex changed more than Index")
	}
}

func TestMappings(t *testing.T) {
	s := sampleState()
	s.Targets[iqnB] = &Target{IQN: iqnB, LUNs: []LUN{{Number: 7, Device: "d1", ReadOnly: true}}}
	want := []Mapping{{Target: iqnA, Group: "g1", LUN: 1}, {Target: iqnB, LUN: 7, ReadOnly: true}}
	if got := s.Mappings("d1"); !reflect.DeepEqual(got, want) {
		t.Fatalf("Mappings(d1) = %+v, want %+v", got, want)
	}
	if got := s.Mappings("none"); got != nil {
		t.Fatalf("Mappings(none) = %+v", got)
	}
}
