package scsi

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/hatarget/hatarget/target/durable"
)

// Reservations: SPC-4 persistent reservations and SPC-2 RESERVE/RELEASE.
//
// The decisions live in one place, the PRState state machine (pr_state.go):
// PRState.Apply for everything that changes registrations or reservations,
// PRState.Conflict for the RESERVATION CONFLICT check every command makes.
// An LU reaches the state only through its ReservationStore. The default
// store keeps it in memory (and in an APTPL file through a Persister); a
// cluster store replicates the PROp operations through Raft and applies
// them on every node.
//
// What the LU does with an outcome (pr_out.go): unit attentions on the
// nexuses the effects name, a nexus the LU has not seen yet included, and
// for PREEMPT AND ABORT a call to LUConfig.Aborter.

// ReservationStore holds the reservation state of one LU.
type ReservationStore interface {
	// State returns the current state. Every command calls it, so it must
	// not block or allocate; the caller never modifies the result.
	State() *PRState
	// Apply runs op through PRState.Apply atomically with respect to other
	// operations, makes the result durable as the store promises (the
	// in-memory store saves APTPL state through its Persister), and returns
	// the outcome. An error means op was not applied; a Sense error is
	// reported to the initiator as is, any other as a target failure.
	Apply(op PROp) (PROutcome, error)
}

// EffectApplier is how a replicated ReservationStore delivers the effects
// of operations that other nodes proposed: LU.ApplyReservationEffects.
// Effects of an operation returned by Apply are applied by the LU that
// called it and must not be delivered twice.
type EffectApplier interface {
	ApplyReservationEffects(effects []PREffect, except *Command)
}

var _ EffectApplier = (*LU)(nil)

// Persister keeps the serialised reservation state across restarts for
// APTPL (Activate Persist Through Power Loss).
type Persister interface {
	// Save replaces the saved state with state and returns once it is
	// durable: a crash at any point leaves either the old or the new state.
	Save(state []byte) error
	// Load returns the last saved state, or nil and no error if nothing was
	// ever saved.
	Load() ([]byte, error)
}

// TaskAborter aborts tasks for PREEMPT AND ABORT; the transport implements
// it.
type TaskAborter interface {
	// AbortTasks aborts every task addressed to lu by the I_T nexuses whose
	// Nexus.Key is in nexusKeys, except the task of except (the PREEMPT AND
	// ABORT command itself, which is executing on the calling goroutine).
	// Tasks not started yet are dropped; tasks executing are waited for.
	// It returns when none of them is queued or executing any more. It is
	// called synchronously from lu.Execute with no LU lock held; keys of
	// nexuses without a session are ignored.
	AbortTasks(lu *LU, nexusKeys []string, except *Command)
}

// MemoryReservations is the in-memory ReservationStore, with APTPL state
// saved through an optional Persister.
type MemoryReservations struct {
	mu    sync.Mutex // serialises Apply
	state atomic.Pointer[PRState]
	p     Persister
}

// NewMemoryReservations returns a store holding the state p saved, if any,
// as it is after a power cycle: registrations and the reservation only if
// APTPL was set, and PRgeneration zero. p may be nil.
func NewMemoryReservations(p Persister) (*MemoryReservations, error) {
	m := &MemoryReservations{p: p}
	s := &PRState{}
	if p != nil {
		b, err := p.Load()
		if err != nil {
			return nil, fmt.Errorf("scsi: loading reservations: %w", err)
		}
		if len(b) > 0 {
			if s, err = UnmarshalPRState(b); err != nil {
				return nil, err
			}
			s, _ = s.Apply(PROp{Kind: OpPowerOn})
		}
	}
	m.state.Store(s)
	return m, nil
}

// State implements ReservationStore.
func (m *MemoryReservations) State() *PRState { return m.state.Load() }

// Apply implements ReservationStore. A PERSISTENT RESERVE OUT that changes
// the state while APTPL is (or was) set is saved before it takes effect; if
// saving fails nothing changes.
func (m *MemoryReservations) Apply(op PROp) (PROutcome, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.state.Load()
	next, out := cur.Apply(op)
	if next == cur {
		return out, nil
	}
	if m.p != nil && op.Kind == OpPROut && (next.APTPL || cur.APTPL) {
		saved := next
		if !next.APTPL {
			saved = &PRState{} // nothing survives a power loss now
		}
		b, err := MarshalPRState(saved)
		if err == nil {
			err = m.p.Save(b)
		}
		if err != nil {
			return PROutcome{}, fmt.Errorf("scsi: saving reservations: %w", err)
		}
	}
	m.state.Store(next)
	return out, nil
}

// FilePersister is a Persister writing one file.
type FilePersister struct {
	path string
}

// NewFilePersister returns a Persister keeping the state in the file at
// path (mode 0600). Its directory must exist.
func NewFilePersister(path string) *FilePersister { return &FilePersister{path: path} }

// Save replaces the file with state durably (durable.WriteFile).
func (p *FilePersister) Save(state []byte) error { return durable.WriteFile(p.path, state) }

// Load reads the file; a missing file is no saved state.
func (p *FilePersister) Load() ([]byte, error) {
	b, err := os.ReadFile(p.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return b, err
}

// errReservationConflict ends a command with RESERVATION CONFLICT status.
var errReservationConflict = errors.New("scsi: reservation conflict")

// accessClass derives how a command meets reservations from its dispatch
// table flags, with the exceptions that depend on CDB fields.
func accessClass(c *command, cdb []byte) AccessClass {
	var a AccessClass
	if c.flags&flagConflictEA != 0 {
		a |= AccessConflictEA
	}
	if c.flags&flagConflictWE != 0 {
		a |= AccessConflictWE
	}
	if c.flags&flagSPC2OK != 0 {
		a |= AccessSPC2Allowed
	}
	if c.flags&flagPR != 0 {
		a |= AccessPR
	}
	switch c.opcode {
	case opPreventAllow:
		// PREVENT=0 is allowed through every reservation (SPC-4 table 63).
		if cdb[4]&0x03 == 0 {
			a = AccessSPC2Allowed
		}
	case opStartStopUnit:
		// START=1 without a power condition is allowed through persistent
		// reservations (SBC-3 table 13).
		if cdb[4]&0xf1 == 0x01 {
			a &^= AccessConflictEA | AccessConflictWE
		}
	}
	return a
}

// checkReservation fails a command that conflicts with a reservation.
func (lu *LU) checkReservation(c *command, n *Nexus, cdb []byte) error {
	s := lu.pr.State()
	if s.idle() {
		return nil
	}
	var ip, tp, key string
	if n != nil {
		ip, tp, key = n.InitiatorPort, n.TargetPort, n.Key
	} else {
		key = "|"
	}
	if s.Conflict(ip, tp, key, accessClass(c, cdb)) {
		return errReservationConflict
	}
	return nil
}

// applyPR runs op through the store and applies its effects; it returns the
// error that ends the command, if any.
func (lu *LU) applyPR(op PROp, cmd *Command) error {
	out, err := lu.pr.Apply(op)
	if err != nil {
		return err
	}
	lu.ApplyReservationEffects(out.Effects, cmd)
	switch out.Status {
	case StatusGood:
		return nil
	case StatusReservationConflict:
		return errReservationConflict
	default:
		return out.Sense
	}
}

// ApplyReservationEffects establishes the unit attentions of effects and
// aborts the tasks PREEMPT AND ABORT preempted (through LUConfig.Aborter),
// except the task of except. A registration naming one I_T nexus gets its
// unit attention even if that nexus never sent a command here; broader ones
// (ALL_TG_PT, a TransportID without ISID) reach the nexuses the LU knows.
func (lu *LU) ApplyReservationEffects(effects []PREffect, except *Command) {
	if len(effects) == 0 {
		return
	}
	type unitAttention struct {
		key  string
		code uint16
	}
	var abort []string
	var uas []unitAttention
	for i := range effects {
		e := &effects[i]
		for _, key := range lu.nexusKeysCovered(&e.Target) {
			if key == e.Skip || key == "" && e.Skip == "|" { // "" is the nil nexus
				continue
			}
			if e.UA != 0 {
				uas = append(uas, unitAttention{key, e.UA})
			}
			if e.Abort {
				abort = append(abort, key)
			}
		}
	}
	// Abort first: a preempted nexus's task running between the unit
	// attention being raised and its abort would report (and so consume)
	// the unit attention in a response that is then suppressed.
	if len(abort) > 0 {
		if a := lu.state.Load().cfg.Aborter; a != nil {
			a.AbortTasks(lu, abort, except)
		}
	}
	for _, u := range uas {
		lu.raiseOnKey(u.key, u.code)
	}
}

// nexusKeysCovered lists the Nexus.Key values of the nexuses g covers.
func (lu *LU) nexusKeysCovered(g *Registration) []string {
	if g.Specific() {
		return []string{g.InitiatorPort + "|" + g.TargetPort}
	}
	lu.mu.RLock()
	defer lu.mu.RUnlock()
	var keys []string
	for key := range lu.nexuses {
		ip, tp := splitNexusKey(key)
		if g.Covers(ip, tp) {
			keys = append(keys, key)
		}
	}
	return keys
}

func splitNexusKey(key string) (initiatorPort, targetPort string) {
	for i := 0; i < len(key); i++ {
		if key[i] == '|' {
			return key[:i], key[i+1:]
		}
	}
	return key, ""
}

// targetPortByID returns the target port with relative port identifier id
// that the LU has seen a nexus through.
func (lu *LU) targetPortByID(id uint16) (string, bool) {
	lu.mu.RLock()
	defer lu.mu.RUnlock()
	p, ok := lu.ports[id]
	return p, ok
}
