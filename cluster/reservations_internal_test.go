package cluster

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/hatarget/hatarget/fsm"
	"github.com/hatarget/hatarget/target/scsi"
)

// Nexuses of the tests: two initiators, each through its own node's port.
var (
	nexusA = scsi.NexusID{InitiatorPort: "iqn.1994-05.com.example:a,i,0x1", TargetPort: "iqn.2025-01.com.example:t,t,0x1", RelativePort: 1}
	nexusB = scsi.NexusID{InitiatorPort: "iqn.1994-05.com.example:b,i,0x2", TargetPort: "iqn.2025-01.com.example:t,t,0x2", RelativePort: 2}
)

func prOut(nexus scsi.NexusID, sa byte, typ scsi.PRType, key, saKey uint64) scsi.PROp {
	return scsi.PROp{Kind: scsi.OpPROut, Nexus: nexus, ServiceAction: sa, Type: typ, Key: key, SAKey: saKey}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPRMachineDeterministic: the reservation machine the fsm runs on
// every node gives the same next state and outcome bytes for the same
// inputs, run after run and on fresh instances.
func TestPRMachineDeterministic(t *testing.T) {
	ops := []scsi.PROp{
		prOut(nexusA, scsi.PRRegister, 0, 0, 0xA),
		prOut(nexusB, scsi.PRRegister, 0, 0, 0xB),
		prOut(nexusA, scsi.PRReserve, scsi.PRWriteExclusive, 0xA, 0),
		prOut(nexusB, scsi.PRReserve, scsi.PRWriteExclusive, 0xB, 0), // conflict
		prOut(nexusB, scsi.PRPreempt, scsi.PRExclusiveAccess, 0xB, 0xA),
		{Kind: scsi.OpReserve, Nexus: nexusA}, // SPC-2 RESERVE with registrations: conflict
		prOut(nexusB, scsi.PRClear, 0, 0xB, 0),
		{Kind: scsi.OpReserve, Nexus: nexusA},
		{Kind: scsi.OpNexusLoss, Nexus: nexusA},
		prOut(nexusA, 9, 0, 0, 0), // invalid service action
	}
	run := func() (states, outcomes [][]byte) {
		var m prMachine
		var state []byte
		for i, op := range ops {
			next, out, err := m.Apply(state, mustJSON(t, op))
			if err != nil {
				t.Fatalf("op %d: %v", i, err)
			}
			states, outcomes = append(states, next), append(outcomes, out)
			state = next
		}
		return states, outcomes
	}
	s1, o1 := run()
	for range 3 {
		s2, o2 := run()
		for i := range ops {
			if !bytes.Equal(s1[i], s2[i]) || !bytes.Equal(o1[i], o2[i]) {
				t.Fatalf("op %d differs between runs:\nstate   %s\n    vs. %s\noutcome %s\n    vs. %s", i, s1[i], s2[i], o1[i], o2[i])
			}
		}
	}

	// The bytes are the state machine's own answers.
	var cur *scsi.PRState
	for i, op := range ops {
		next, out := cur.Apply(op)
		want := mustJSON(t, out)
		if !bytes.Equal(o1[i], want) {
			t.Errorf("op %d: outcome %s, scsi.PRState.Apply gives %s", i, o1[i], want)
		}
		got, err := scsi.UnmarshalPRState(s1[i])
		if err != nil {
			t.Fatalf("op %d: state %s: %v", i, s1[i], err)
		}
		if a, b := mustJSON(t, got), mustJSON(t, next); !bytes.Equal(a, b) {
			t.Errorf("op %d: state %s, scsi.PRState.Apply gives %s", i, a, b)
		}
		cur = next
	}
	// Spot checks that the sequence exercised what it was meant to.
	var conflict scsi.PROutcome
	if err := json.Unmarshal(o1[3], &conflict); err != nil || conflict.Status != scsi.StatusReservationConflict {
		t.Errorf("second RESERVE: outcome %s, want RESERVATION CONFLICT", o1[3])
	}
	var preempt scsi.PROutcome
	if err := json.Unmarshal(o1[4], &preempt); err != nil || len(preempt.Effects) == 0 {
		t.Errorf("PREEMPT: outcome %s, want effects", o1[4])
	}
}

// TestPRMachineRefuses: an operation with an unknown field, one that is
// not JSON, and a state that does not decode are errors, never silently
// read.
func TestPRMachineRefuses(t *testing.T) {
	good := mustJSON(t, prOut(nexusA, scsi.PRRegister, 0, 0, 0xA))
	state, _, err := prMachine{}.Apply(nil, good)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		state, op []byte
		want      string
	}{
		{"unknown op field", state, []byte(`{"kind":1,"nexus":{},"sa":0,"sa_key":10,"colour":"blue"}`), "colour"},
		{"unknown nexus field", state, []byte(`{"kind":1,"nexus":{"initiator":"x"},"sa_key":10}`), "initiator"},
		{"op not an object", state, []byte(`[1,2]`), "reservation operation"},
		{"op not JSON", state, []byte(`{`), "reservation operation"},
		{"state without version", []byte(`{"generation":1}`), good, "version"},
		{"state of a later version", []byte(`{"version":99}`), good, "version"},
		{"state not JSON", []byte(`nope`), good, "reservation state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next, out, err := prMachine{}.Apply(tc.state, tc.op)
			if err == nil {
				t.Fatalf("accepted: state %s, outcome %s", next, out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}

	// Through the fsm, the refusal is an invalid command that leaves the
	// state alone, identically on every node.
	s := fsm.Empty()
	s, _, err = s.ApplyCommand(1, &fsm.CreateTarget{IQN: "iqn.2025-01.com.example:t"}, fsm.Env{})
	if err != nil {
		t.Fatal(err)
	}
	s, _, err = s.ApplyCommand(2, &fsm.CreateLUN{Target: "iqn.2025-01.com.example:t", Device: fsm.Device{
		Name: "d", Handler: fsm.HandlerNullIO, Size: 1 << 20, BlockSize: 512, Serial: "s", NAA: "6000000000000000000000000000000a",
	}}, fsm.Env{})
	if err != nil {
		t.Fatal(err)
	}
	env := fsm.Env{Reservations: prMachine{}}
	bad := &fsm.Reservation{Device: "d", Origin: "n1/1", Op: json.RawMessage(`{"kind":1,"nexus":{},"bogus":true}`)}
	next, _, err := s.ApplyCommand(3, bad, env)
	if fsm.CodeOf(err) != fsm.CodeInvalid {
		t.Fatalf("reservation with an unknown field: error %v, want code invalid", err)
	}
	if next.Reservations["d"] != nil {
		t.Errorf("refused reservation changed the state: %s", next.Reservations["d"])
	}
}

// effectRecorder is a fake LU: it records the effects a replicated store
// delivers.
type effectRecorder struct {
	mu      sync.Mutex
	effects []scsi.PREffect
}

func newEffectRecorder() *effectRecorder { return &effectRecorder{} }

func (r *effectRecorder) ApplyReservationEffects(effects []scsi.PREffect, except *scsi.Command) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.effects = append(r.effects, effects...)
}

// testNode is a node with only the state machine and reservations: enough
// for tests of how the stores follow the applied state.
func testNode(name string) *Node {
	n := &Node{cfg: Config{Name: name}, log: slog.New(slog.NewTextHandler(io.Discard, nil)), stop: make(chan struct{})}
	n.fsm = newRaftFSM(fsm.Env{Reservations: prMachine{}})
	n.prs = NewReservations()
	n.prs.bind(n)
	return n
}

// stateWithRegistration is a state with device d whose reservation state
// holds nexusA's registration with key.
func stateWithRegistration(t *testing.T, key uint64) *fsm.State {
	t.Helper()
	s := fsm.Empty()
	s.Devices["d"] = &fsm.Device{Name: "d", Handler: fsm.HandlerNullIO, Size: 1 << 20, BlockSize: 512, Serial: "s", NAA: "6000000000000000000000000000000a"}
	pr, _ := (&scsi.PRState{}).Apply(prOut(nexusA, scsi.PRRegister, 0, 0, key))
	b, err := scsi.MarshalPRState(pr)
	if err != nil {
		t.Fatal(err)
	}
	s.Reservations = map[string][]byte{"d": b}
	return s
}

// TestStoresFollowSnapshotRestore: a follower that installs a Raft
// snapshot (raftFSM.Restore) must show the snapshot's reservation state
// through its stores, not the state it had before, without waiting for
// another command.
func TestStoresFollowSnapshotRestore(t *testing.T) {
	n := testNode("n1")
	store := n.prs.Store("d", newEffectRecorder())
	if got := store.State(); len(got.Registrations) != 0 {
		t.Fatalf("fresh store has registrations: %+v", got)
	}
	snap, err := fsm.MarshalSnapshot(stateWithRegistration(t, 0xA))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.fsm.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if regs := store.State().Registrations; len(regs) != 1 || regs[0].Key != 0xA {
		t.Fatalf("after restoring a snapshot with a registration, the store shows %+v", store.State())
	}
}

// TestAppliedStateVisibleToWaiters: whoever waits for an index (a
// follower's submit, through waitIndex) must find the reservation stores
// refreshed once woken: the LU answers PERSISTENT RESERVE OUT as soon as
// Apply returns, and its next command checks State().
func TestAppliedStateVisibleToWaiters(t *testing.T) {
	n := testNode("n1")
	store := n.prs.Store("d", newEffectRecorder())
	// A slow observer ahead of the stores' widens the window in which the
	// entry is applied but the stores are not refreshed yet, so that a
	// waiter woken (or not even waiting) in that window is caught.
	f := n.fsm
	slow := func(fsm.Command, any, *fsm.State) { time.Sleep(50 * time.Millisecond) }
	f.mu.Lock()
	f.observers = append([]func(fsm.Command, any, *fsm.State){slow}, f.observers...)
	f.mu.Unlock()

	base := stateWithRegistration(t, 0xA)
	base.Index = 1
	f.publish(base, nil, nil)
	op := mustJSON(t, prOut(nexusA, scsi.PRReserve, scsi.PRWriteExclusive, 0xA, 0))
	c := &fsm.Reservation{Device: "d", Origin: "n2/1", Op: op}
	b, err := fsm.Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan any)
	go func() { done <- f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: b}) }()
	// The leader's answer may reach a follower after it applied the
	// entry: waitIndex then returns at once. Wait for that moment.
	deadline := time.Now().Add(5 * time.Second)
	for f.State().Index < 2 {
		if time.Now().After(deadline) {
			t.Fatal("index 2 not applied after 5s")
		}
		time.Sleep(time.Millisecond)
	}
	n.waitIndex(t.Context(), 2)
	got := store.State()
	if res := <-done; res.(applyResult).err != nil {
		t.Fatalf("applying the reservation: %v", res.(applyResult).err)
	}
	if got.Reservation == nil {
		t.Fatalf("index 2 is applied, but the store does not show its reservation yet: %+v", got)
	}
}

// TestNewStoreSeesStateBeingApplied: a store opened (the dataplane
// opening a new LU) while a state is being published, after the stores'
// observer ran, must start from that state: nothing would refresh it
// until the next change.
func TestNewStoreSeesStateBeingApplied(t *testing.T) {
	n := testNode("n1")
	probe := n.prs.Store("d", newEffectRecorder())
	f := n.fsm
	release := make(chan struct{})
	f.observe(func(fsm.Command, any, *fsm.State) { <-release }) // after the stores' observer

	s := stateWithRegistration(t, 0xA)
	s.Index = 1
	s.Devices["d2"] = &fsm.Device{Name: "d2", Handler: fsm.HandlerNullIO, Size: 1 << 20, BlockSize: 512, Serial: "s2", NAA: "6000000000000000000000000000000b"}
	s.Reservations["d2"] = s.Reservations["d"]
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.publish(s, nil, nil)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for len(probe.State().Registrations) == 0 { // the stores' observer ran
		if time.Now().After(deadline) {
			close(release)
			t.Fatal("the existing store was not refreshed within 5s")
		}
		time.Sleep(time.Millisecond)
	}
	fresh := n.prs.Store("d2", newEffectRecorder())
	close(release)
	<-done
	if regs := fresh.State().Registrations; len(regs) != 1 {
		t.Fatalf("a store opened while index 1 was being published shows %+v, want index 1's registration", fresh.State())
	}
}
