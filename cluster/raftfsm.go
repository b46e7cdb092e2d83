package cluster

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"github.com/hatarget/hatarget/fsm"
)

// applyResult is what the FSM returns to the proposer of an entry.
type applyResult struct {
	value any
	err   error
}

// raftFSM adapts the pure state machine to raft.FSM. The current state is
// an immutable value behind an atomic pointer: readers never lock.
type raftFSM struct {
	state atomic.Pointer[fsm.State]
	env   fsm.Env

	mu      sync.Mutex
	waiters []chan struct{} // closed on the next change
	// observers hear of every state change, in log order, on the Raft
	// apply goroutine: they must not block. c is nil when the state
	// changed without a command (a refused entry, a snapshot restore).
	observers []func(c fsm.Command, res any, s *fsm.State)
	// observed is the index of the last state the observers have seen.
	observed atomic.Uint64
	// committed, set before Raft starts, hears of every command applied
	// with its log entry, whose Extensions the observers do not see: the
	// audit log's hook.
	committed func(l *raft.Log, c fsm.Command)
}

func newRaftFSM(env fsm.Env) *raftFSM {
	f := &raftFSM{env: env}
	f.state.Store(fsm.Empty())
	return f
}

// State returns the current state; callers must not modify it.
func (f *raftFSM) State() *fsm.State { return f.state.Load() }

// Changed returns a channel closed at the next state change.
func (f *raftFSM) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{})
	f.waiters = append(f.waiters, ch)
	return ch
}

func (f *raftFSM) observe(fn func(c fsm.Command, res any, s *fsm.State)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.observers = append(f.observers, fn)
}

// publish makes s the current state, then tells the observers, then
// wakes the waiters. State() changes before the observers run; whoever
// needs what they keep (the reservation stores) up to date as well waits
// for Observed instead (waitIndex).
func (f *raftFSM) publish(s *fsm.State, c fsm.Command, res any) {
	f.state.Store(s)
	f.mu.Lock()
	observers := f.observers
	f.mu.Unlock()
	for _, fn := range observers {
		fn(c, res, s)
	}
	f.observed.Store(s.Index)
	// Waiters are taken only now, so that one that registered while the
	// observers ran, and found Observed behind, is woken too.
	f.mu.Lock()
	waiters := f.waiters
	f.waiters = nil
	f.mu.Unlock()
	for _, ch := range waiters {
		close(ch)
	}
}

// Observed returns the index of the last state every observer has seen.
func (f *raftFSM) Observed() uint64 { return f.observed.Load() }

// Apply implements raft.FSM.
func (f *raftFSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	cur := f.state.Load()
	c, err := fsm.Decode(l.Data)
	if err != nil {
		// Refused like an invalid command, identically on every node that
		// runs this binary; the version gate keeps such entries out.
		f.publish(cur.WithIndex(l.Index), nil, nil)
		return applyResult{err: err}
	}
	next, res, err := cur.ApplyCommand(l.Index, c, f.env)
	if err != nil {
		f.publish(next, nil, nil)
		return applyResult{err: err}
	}
	f.publish(next, c, res)
	if f.committed != nil {
		f.committed(l, c)
	}
	return applyResult{value: res}
}

// Snapshot implements raft.FSM: the state is immutable, so the snapshot
// is just the current pointer.
func (f *raftFSM) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{state: f.state.Load()}, nil
}

// Restore implements raft.FSM.
func (f *raftFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("reading snapshot: %w", err)
	}
	s, err := fsm.UnmarshalSnapshot(b)
	if err != nil {
		return err
	}
	f.publish(s, nil, nil)
	return nil
}

type fsmSnapshot struct{ state *fsm.State }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	b, err := fsm.MarshalSnapshot(s.state)
	if err == nil {
		_, err = sink.Write(b)
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("writing snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
