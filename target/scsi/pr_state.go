package scsi

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// This file is the reservation state machine: every decision about a
// registration or a reservation (persistent, SPC-4 5.13, and SPC-2
// RESERVE/RELEASE) is made by PRState.Apply and PRState.Conflict. Apply is
// a pure function of the state and an explicit operation, with no clock, no
// randomness and no map iteration, so a replicated store can log the
// operations and apply them on every node with the same result.

// PRType is a persistent reservation type (SPC-4 table 212).
type PRType byte

const (
	PRWriteExclusive                 PRType = 0x1
	PRExclusiveAccess                PRType = 0x3
	PRWriteExclusiveRegistrantsOnly  PRType = 0x5
	PRExclusiveAccessRegistrantsOnly PRType = 0x6
	PRWriteExclusiveAllRegistrants   PRType = 0x7
	PRExclusiveAccessAllRegistrants  PRType = 0x8
)

// Valid reports whether t is one of the six reservation types.
func (t PRType) Valid() bool {
	switch t {
	case PRWriteExclusive, PRExclusiveAccess,
		PRWriteExclusiveRegistrantsOnly, PRExclusiveAccessRegistrantsOnly,
		PRWriteExclusiveAllRegistrants, PRExclusiveAccessAllRegistrants:
		return true
	}
	return false
}

// AllRegistrants: every registered I_T nexus is a reservation holder.
func (t PRType) AllRegistrants() bool {
	return t == PRWriteExclusiveAllRegistrants || t == PRExclusiveAccessAllRegistrants
}

// RegistrantsOnly: one holder, and every registered I_T nexus has access.
func (t PRType) RegistrantsOnly() bool {
	return t == PRWriteExclusiveRegistrantsOnly || t == PRExclusiveAccessRegistrantsOnly
}

// ExclusiveAccess: reads conflict too, not only writes.
func (t PRType) ExclusiveAccess() bool {
	return t == PRExclusiveAccess || t == PRExclusiveAccessRegistrantsOnly || t == PRExclusiveAccessAllRegistrants
}

// PERSISTENT RESERVE OUT service actions (SPC-4 table 211).
const (
	PRRegister             byte = 0x0
	PRReserve              byte = 0x1
	PRRelease              byte = 0x2
	PRClear                byte = 0x3
	PRPreempt              byte = 0x4
	PRPreemptAndAbort      byte = 0x5
	PRRegisterAndIgnore    byte = 0x6
	PRRegisterAndMove      byte = 0x7
	prOutServiceActions         = 8
	prScopeLU              byte = 0x0
	maxRegistrations            = 1024
	initiatorPortSeparator      = ",i,0x"
)

// Unit attention conditions of reservations (ASC 2Ah).
const (
	ascReservationsPreempted  uint16 = 0x2a03
	ascReservationsReleased   uint16 = 0x2a04
	ascRegistrationsPreempted uint16 = 0x2a05
	ascInvalidRelease         uint16 = 0x2604 // INVALID RELEASE OF PERSISTENT RESERVATION
	ascInsufficientRegRes     uint16 = 0x5504 // INSUFFICIENT REGISTRATION RESOURCES
)

// NexusID names an I_T nexus for the reservation state: the initiator port
// ("iqn,i,0x<isid>", RFC 7143 13.6) and the target port ("iqn,t,0x<tpgt>")
// with its relative target port identifier.
type NexusID struct {
	InitiatorPort string `json:"initiator_port"`
	TargetPort    string `json:"target_port"`
	RelativePort  uint16 `json:"relative_port,omitempty"`
}

// NexusIDOf returns the identity of n; a nil nexus (tests, tools) is the
// empty identity.
func NexusIDOf(n *Nexus) NexusID {
	if n == nil {
		return NexusID{}
	}
	return NexusID{InitiatorPort: n.InitiatorPort, TargetPort: n.TargetPort, RelativePort: n.RelativePort}
}

// Key is the Nexus.Key of the nexus: InitiatorPort + "|" + TargetPort.
func (id NexusID) Key() string { return id.InitiatorPort + "|" + id.TargetPort }

// Registration is one registered reservation key. It covers one I_T nexus,
// or several: with AllTgPt the initiator port through every target port, and
// with an InitiatorPort that is a bare iSCSI name (registered through a
// TransportID without ISID) every initiator port of that name. No two
// registrations of a state cover the same I_T nexus.
type Registration struct {
	Key           uint64 `json:"key"`
	InitiatorPort string `json:"initiator_port"`
	// TargetPort is empty when AllTgPt is set.
	TargetPort   string `json:"target_port,omitempty"`
	RelativePort uint16 `json:"relative_port,omitempty"`
	AllTgPt      bool   `json:"all_tg_pt,omitempty"`
}

// Covers reports whether the registration applies to the I_T nexus of
// initiatorPort and targetPort.
func (r *Registration) Covers(initiatorPort, targetPort string) bool {
	return initiatorMatches(r.InitiatorPort, initiatorPort) && (r.AllTgPt || r.TargetPort == targetPort)
}

// Specific reports whether the registration covers exactly one I_T nexus.
func (r *Registration) Specific() bool { return !r.AllTgPt && !isBareName(r.InitiatorPort) }

func (r *Registration) sameIdentity(o *Registration) bool {
	return strings.EqualFold(r.InitiatorPort, o.InitiatorPort) && r.TargetPort == o.TargetPort && r.AllTgPt == o.AllTgPt
}

func (r *Registration) overlaps(o *Registration) bool {
	initiators := initiatorMatches(r.InitiatorPort, o.InitiatorPort) || initiatorMatches(o.InitiatorPort, r.InitiatorPort)
	return initiators && (r.AllTgPt || o.AllTgPt || r.TargetPort == o.TargetPort)
}

// isBareName: an initiator name without ",i,0x<isid>".
func isBareName(port string) bool { return !strings.Contains(port, initiatorPortSeparator) }

// initiatorName strips the ISID part of an initiator port.
func initiatorName(port string) string {
	if i := strings.Index(port, initiatorPortSeparator); i >= 0 {
		return port[:i]
	}
	return port
}

// initiatorMatches reports whether a registration's initiator port pattern
// covers port. iSCSI names compare case-insensitively (RFC 3722).
func initiatorMatches(pattern, port string) bool {
	if strings.EqualFold(pattern, port) {
		return true
	}
	return isBareName(pattern) && strings.EqualFold(pattern, initiatorName(port))
}

// PRReservation is the persistent reservation of the LU. The holder is the
// registration with HolderInitiatorPort, HolderTargetPort and HolderAllTgPt;
// for the all registrants types every registration holds it and the holder
// fields are empty.
type PRReservation struct {
	Type                PRType `json:"type"`
	HolderInitiatorPort string `json:"holder_initiator_port,omitempty"`
	HolderTargetPort    string `json:"holder_target_port,omitempty"`
	HolderAllTgPt       bool   `json:"holder_all_tg_pt,omitempty"`
}

// PRState is the reservation state of one LU: registrations, the persistent
// reservation, the SPC-2 reservation and PRgeneration. A PRState is never
// modified once published: Apply returns a new one.
type PRState struct {
	Generation uint32 `json:"generation"`
	// APTPL is the APTPL bit of the last successful REGISTER, REGISTER AND
	// IGNORE EXISTING KEY or REGISTER AND MOVE: whether registrations and
	// the reservation survive a power loss.
	APTPL         bool           `json:"aptpl,omitempty"`
	Registrations []Registration `json:"registrations,omitempty"`
	Reservation   *PRReservation `json:"reservation,omitempty"`
	// SPC2Holder is the Nexus.Key of the I_T nexus holding an SPC-2
	// (RESERVE(6)/RESERVE(10)) reservation, "" when there is none.
	SPC2Holder string `json:"spc2_holder,omitempty"`
}

// PROpKind says what a PROp does.
type PROpKind uint8

const (
	// OpPROut is a PERSISTENT RESERVE OUT command.
	OpPROut PROpKind = iota + 1
	// OpReserve and OpRelease are SPC-2 RESERVE(6)/(10) and RELEASE(6)/(10).
	OpReserve
	OpRelease
	// OpNexusLoss: the I_T nexus went away (logout, connection loss, I_T
	// NEXUS RESET); its SPC-2 reservation is released.
	OpNexusLoss
	// OpReset: LOGICAL UNIT RESET or a target reset; the SPC-2 reservation
	// is released. Persistent reservations are not affected.
	OpReset
	// OpPowerOn: the state is loaded after a restart. PRgeneration restarts
	// at zero, and registrations and the reservation survive only if APTPL
	// was set.
	OpPowerOn
)

// PROp is one input of the state machine. For OpPROut the fields are the
// decoded CDB and parameter list; TransportIDs and the move destination are
// already parsed and resolved, so applying an operation needs nothing else.
type PROp struct {
	Kind  PROpKind `json:"kind"`
	Nexus NexusID  `json:"nexus"`

	ServiceAction byte   `json:"sa,omitempty"`
	Scope         byte   `json:"scope,omitempty"`
	Type          PRType `json:"type,omitempty"`
	Key           uint64 `json:"key,omitempty"`    // RESERVATION KEY
	SAKey         uint64 `json:"sa_key,omitempty"` // SERVICE ACTION RESERVATION KEY
	APTPL         bool   `json:"aptpl,omitempty"`
	AllTgPt       bool   `json:"all_tg_pt,omitempty"`
	SpecIPT       bool   `json:"spec_i_pt,omitempty"`
	Unreg         bool   `json:"unreg,omitempty"` // REGISTER AND MOVE
	// TransportIDs are the initiator ports of SPEC_I_PT (REGISTER), or the
	// destination of REGISTER AND MOVE (exactly one).
	TransportIDs []TransportID `json:"transport_ids,omitempty"`
	// MoveTargetPort and MoveRelativePort are the target port REGISTER AND
	// MOVE moves the reservation to.
	MoveTargetPort   string `json:"move_target_port,omitempty"`
	MoveRelativePort uint16 `json:"move_relative_port,omitempty"`
}

// PREffect is a consequence of an operation for some I_T nexuses: a unit
// attention to establish and, for PREEMPT AND ABORT, their tasks to abort.
// The nexuses are those Target covers (Target.Key is meaningless), except
// the one whose Nexus.Key is Skip.
type PREffect struct {
	Target Registration `json:"target"`
	Skip   string       `json:"skip,omitempty"`
	// UA is the unit attention as ASC<<8 | ASCQ, 0 for none.
	UA    uint16 `json:"ua,omitempty"`
	Abort bool   `json:"abort,omitempty"`
}

// PROutcome is the result of an operation for the command that asked for
// it: GOOD, RESERVATION CONFLICT or CHECK CONDITION with Sense; Effects are
// what the LU must do on the nexuses concerned.
type PROutcome struct {
	Status  Status
	Sense   Sense
	Effects []PREffect
}

func conflictOutcome() PROutcome { return PROutcome{Status: StatusReservationConflict} }

func checkOutcome(s Sense) PROutcome { return PROutcome{Status: StatusCheckCondition, Sense: s} }

// idle reports whether no reservation of either kind exists, the common
// case the command path tests first.
func (s *PRState) idle() bool { return s == nil || (s.Reservation == nil && s.SPC2Holder == "") }

// find returns the index of the registration covering the I_T nexus, or -1.
func (s *PRState) find(initiatorPort, targetPort string) int {
	for i := range s.Registrations {
		if s.Registrations[i].Covers(initiatorPort, targetPort) {
			return i
		}
	}
	return -1
}

// isHolder reports whether registration i holds the persistent reservation.
func (s *PRState) isHolder(i int) bool {
	r := s.Reservation
	if r == nil || i < 0 {
		return false
	}
	if r.Type.AllRegistrants() {
		return true
	}
	g := &s.Registrations[i]
	return strings.EqualFold(g.InitiatorPort, r.HolderInitiatorPort) && g.TargetPort == r.HolderTargetPort && g.AllTgPt == r.HolderAllTgPt
}

// holder returns the index of the registration holding a reservation that
// is not of an all registrants type, or -1.
func (s *PRState) holder() int {
	if s.Reservation == nil || s.Reservation.Type.AllRegistrants() {
		return -1
	}
	for i := range s.Registrations {
		if s.isHolder(i) {
			return i
		}
	}
	return -1
}

// ReservationKey is the key READ RESERVATION reports: the holder's, or zero
// for the all registrants types.
func (s *PRState) ReservationKey() uint64 {
	if h := s.holder(); h >= 0 {
		return s.Registrations[h].Key
	}
	return 0
}

// AccessClass says how a command meets reservations; the dispatch table
// flags of each command give it (SPC-4 5.13.1, table 63, and SBC-3 4.17).
type AccessClass uint8

const (
	// AccessConflictEA: conflicts with an exclusive access reservation
	// (EA, EA-RO, EA-AR) for an I_T nexus that has no access through it.
	AccessConflictEA AccessClass = 1 << iota
	// AccessConflictWE: conflicts with a write exclusive one as well.
	AccessConflictWE
	// AccessSPC2Allowed: allowed while another I_T nexus holds an SPC-2
	// reservation.
	AccessSPC2Allowed
	// AccessPR: PERSISTENT RESERVE IN or OUT, which conflict with any SPC-2
	// reservation, whoever holds it (SPC-2 5.5.1).
	AccessPR
)

// Conflict decides whether a command of class from the I_T nexus
// (initiatorPort, targetPort, with Nexus.Key nexusKey) fails with
// RESERVATION CONFLICT. It does not allocate.
func (s *PRState) Conflict(initiatorPort, targetPort, nexusKey string, class AccessClass) bool {
	if s.idle() {
		return false
	}
	if s.SPC2Holder != "" {
		if class&AccessPR != 0 {
			return true
		}
		if s.SPC2Holder != nexusKey && class&AccessSPC2Allowed == 0 {
			return true
		}
	}
	r := s.Reservation
	if r == nil || class&(AccessConflictEA|AccessConflictWE) == 0 {
		return false
	}
	// The holder has access, and through the registrants only and all
	// registrants types every registered I_T nexus has.
	if i := s.find(initiatorPort, targetPort); i >= 0 &&
		(r.Type.RegistrantsOnly() || r.Type.AllRegistrants() || s.isHolder(i)) {
		return false
	}
	return r.Type.ExclusiveAccess() || class&AccessConflictWE != 0
}

// clone returns a copy Apply may modify.
func (s *PRState) clone() *PRState {
	c := *s
	c.Registrations = append([]Registration(nil), s.Registrations...)
	if s.Reservation != nil {
		r := *s.Reservation
		c.Reservation = &r
	}
	return &c
}

// Apply runs op against s and returns the next state (s itself when
// nothing changed) and the outcome for the command. A nil s is the empty
// state.
func (s *PRState) Apply(op PROp) (*PRState, PROutcome) {
	if s == nil {
		s = &PRState{}
	}
	key := op.Nexus.Key()
	switch op.Kind {
	case OpReserve:
		// CRH=0 (SPC-4 5.13.3): with any registration, RESERVE and RELEASE
		// conflict regardless of initiator.
		if len(s.Registrations) > 0 || (s.SPC2Holder != "" && s.SPC2Holder != key) {
			return s, conflictOutcome()
		}
		if s.SPC2Holder == key {
			return s, PROutcome{}
		}
		n := s.clone()
		n.SPC2Holder = key
		return n, PROutcome{}
	case OpRelease:
		if len(s.Registrations) > 0 {
			return s, conflictOutcome()
		}
		if s.SPC2Holder != key {
			return s, PROutcome{} // not the holder: nothing to release
		}
		n := s.clone()
		n.SPC2Holder = ""
		return n, PROutcome{}
	case OpNexusLoss:
		if s.SPC2Holder == "" || s.SPC2Holder != key {
			return s, PROutcome{}
		}
		n := s.clone()
		n.SPC2Holder = ""
		return n, PROutcome{}
	case OpReset:
		if s.SPC2Holder == "" {
			return s, PROutcome{}
		}
		n := s.clone()
		n.SPC2Holder = ""
		return n, PROutcome{}
	case OpPowerOn:
		n := s.clone()
		n.Generation = 0
		n.SPC2Holder = ""
		if !n.APTPL {
			n.Registrations, n.Reservation = nil, nil
		}
		return n, PROutcome{}
	case OpPROut:
		return s.applyOut(op)
	}
	return s, checkOutcome(errInternal)
}

func (s *PRState) applyOut(op PROp) (*PRState, PROutcome) {
	// SPC-2 5.5.1: while an SPC-2 reservation exists, every PERSISTENT
	// RESERVE command conflicts, whoever sent it.
	if s.SPC2Holder != "" {
		return s, conflictOutcome()
	}
	caller := s.find(op.Nexus.InitiatorPort, op.Nexus.TargetPort)
	switch op.ServiceAction {
	case PRRegister, PRRegisterAndIgnore:
		return s.register(op, caller)
	case PRRegisterAndMove:
		return s.registerAndMove(op, caller)
	}
	if op.ServiceAction >= prOutServiceActions {
		return s, checkOutcome(invalidCDB(1, 4))
	}
	// Every other service action needs a registered I_T nexus and its key.
	if caller < 0 || s.Registrations[caller].Key != op.Key {
		return s, conflictOutcome()
	}
	switch op.ServiceAction {
	case PRReserve:
		if op.Scope != prScopeLU || !op.Type.Valid() {
			return s, checkOutcome(invalidCDB(2, -1))
		}
		if r := s.Reservation; r != nil {
			if s.isHolder(caller) && r.Type == op.Type {
				return s, PROutcome{}
			}
			return s, conflictOutcome()
		}
		n := s.clone()
		n.Reservation = reservationFor(op.Type, &n.Registrations[caller])
		return n, PROutcome{}
	case PRRelease:
		r := s.Reservation
		if r == nil || !s.isHolder(caller) {
			return s, PROutcome{}
		}
		if op.Scope != prScopeLU || op.Type != r.Type {
			return s, checkOutcome(illegal(ascInvalidRelease))
		}
		n := s.clone()
		n.Reservation = nil
		var out PROutcome
		if r.Type.RegistrantsOnly() || r.Type.AllRegistrants() {
			out.Effects = n.uaAll(ascReservationsReleased, key(op))
		}
		return n, out
	case PRClear:
		n := s.clone()
		out := PROutcome{Effects: n.uaAll(ascReservationsPreempted, key(op))}
		n.Registrations, n.Reservation, n.APTPL = nil, nil, false
		n.Generation++
		return n, out
	default: // PRPreempt, PRPreemptAndAbort
		return s.preempt(op, caller)
	}
}

func key(op PROp) string { return op.Nexus.Key() }

// reservationFor makes a reservation of type t held by g.
func reservationFor(t PRType, g *Registration) *PRReservation {
	if t.AllRegistrants() {
		return &PRReservation{Type: t}
	}
	return &PRReservation{Type: t, HolderInitiatorPort: g.InitiatorPort, HolderTargetPort: g.TargetPort, HolderAllTgPt: g.AllTgPt}
}

// uaAll establishes code on every registered I_T nexus but skip.
func (s *PRState) uaAll(code uint16, skip string) []PREffect {
	var e []PREffect
	for _, g := range s.Registrations {
		e = append(e, PREffect{Target: g, Skip: skip, UA: code})
	}
	return e
}

// register handles REGISTER and REGISTER AND IGNORE EXISTING KEY (SPC-4
// 5.13.7).
func (s *PRState) register(op PROp, caller int) (*PRState, PROutcome) {
	if op.SpecIPT && (op.ServiceAction == PRRegisterAndIgnore || caller >= 0) {
		return s, checkOutcome(invalidParam(20, 3))
	}
	ignore := op.ServiceAction == PRRegisterAndIgnore
	if caller < 0 {
		if !ignore && op.Key != 0 {
			return s, conflictOutcome()
		}
		if op.SAKey == 0 {
			return s, PROutcome{} // unregistering an unregistered nexus: nothing to do
		}
		own := Registration{Key: op.SAKey, InitiatorPort: op.Nexus.InitiatorPort, TargetPort: op.Nexus.TargetPort,
			RelativePort: op.Nexus.RelativePort, AllTgPt: op.AllTgPt}
		if own.AllTgPt {
			own.TargetPort, own.RelativePort = "", 0
		}
		for i := range s.Registrations {
			if s.Registrations[i].overlaps(&own) {
				// ALL_TG_PT while the initiator port is registered through
				// another target port.
				return s, conflictOutcome()
			}
		}
		added := []Registration{own}
		for _, t := range op.TransportIDs {
			g := own
			g.InitiatorPort = t.InitiatorPort()
			skip := false
			for i := range s.Registrations {
				skip = skip || s.Registrations[i].overlaps(&g)
			}
			for i := range added {
				skip = skip || added[i].overlaps(&g)
			}
			if !skip { // already registered I_T nexuses are left alone
				added = append(added, g)
			}
		}
		if len(s.Registrations)+len(added) > maxRegistrations {
			return s, checkOutcome(illegal(ascInsufficientRegRes))
		}
		n := s.clone()
		n.Registrations = append(n.Registrations, added...)
		n.APTPL = op.APTPL
		n.Generation++
		return n, PROutcome{}
	}
	if !ignore && op.Key != s.Registrations[caller].Key {
		return s, conflictOutcome()
	}
	n := s.clone()
	n.APTPL = op.APTPL
	n.Generation++
	if op.SAKey != 0 {
		n.Registrations[caller].Key = op.SAKey
		return n, PROutcome{}
	}
	// Unregister (SPC-4 5.13.11.3).
	var out PROutcome
	wasHolder := n.isHolder(caller)
	n.Registrations = append(n.Registrations[:caller], n.Registrations[caller+1:]...)
	if r := n.Reservation; r != nil {
		switch {
		case r.Type.AllRegistrants():
			if len(n.Registrations) == 0 {
				n.Reservation = nil
			}
		case wasHolder:
			n.Reservation = nil
			if r.Type.RegistrantsOnly() {
				out.Effects = n.uaAll(ascReservationsReleased, key(op))
			}
		}
	}
	return n, out
}

// preempt handles PREEMPT and PREEMPT AND ABORT (SPC-4 5.13.11.4).
func (s *PRState) preempt(op PROp, caller int) (*PRState, PROutcome) {
	if op.Scope != prScopeLU || !op.Type.Valid() {
		return s, checkOutcome(invalidCDB(2, -1))
	}
	r := s.Reservation
	allReg := r != nil && r.Type.AllRegistrants()
	if op.SAKey == 0 && !allReg {
		return s, checkOutcome(invalidParam(8, -1))
	}
	abort := op.ServiceAction == PRPreemptAndAbort
	n := s.clone()
	var out PROutcome
	self := n.Registrations[caller]
	// remove drops the registrations match selects, with REGISTRATIONS
	// PREEMPTED on the nexuses that lose theirs (not the caller's own).
	remove := func(match func(i int, g *Registration) bool) int {
		kept := n.Registrations[:0]
		removed := 0
		for i, g := range n.Registrations {
			if !match(i, &g) {
				kept = append(kept, g)
				continue
			}
			removed++
			e := PREffect{Target: g, Skip: key(op), UA: ascRegistrationsPreempted, Abort: abort}
			out.Effects = append(out.Effects, e)
		}
		n.Registrations = kept
		return removed
	}
	switch {
	case allReg && op.SAKey == 0:
		// Every other registration goes, and the caller holds a new
		// reservation of the requested type.
		remove(func(i int, _ *Registration) bool { return i != caller })
		n.Reservation = reservationFor(op.Type, &self)
	case r == nil || allReg || s.holder() < 0 || s.Registrations[s.holder()].Key != op.SAKey:
		// The key names no reservation holder: preempt registrations only.
		// The caller may remove its own registration with its own key,
		// except from an all registrants reservation it holds.
		if remove(func(i int, g *Registration) bool { return g.Key == op.SAKey && !(allReg && i == caller) }) == 0 {
			return s, conflictOutcome()
		}
	default:
		// The key names the holder: its reservation goes to the caller
		// (possibly changing type), and every other registration with that
		// key is removed.
		oldType := r.Type
		remove(func(i int, g *Registration) bool { return g.Key == op.SAKey && i != caller })
		n.Reservation = reservationFor(op.Type, &self)
		if oldType != op.Type {
			out.Effects = append(out.Effects, n.uaAll(ascReservationsReleased, key(op))...)
		}
	}
	n.Generation++
	return n, out
}

// registerAndMove handles REGISTER AND MOVE (SPC-4 5.13.8).
func (s *PRState) registerAndMove(op PROp, caller int) (*PRState, PROutcome) {
	if caller < 0 || s.Registrations[caller].Key != op.Key {
		return s, conflictOutcome()
	}
	r := s.Reservation
	if r == nil || r.Type.AllRegistrants() || !s.isHolder(caller) {
		return s, conflictOutcome()
	}
	if op.SAKey == 0 {
		return s, checkOutcome(invalidParam(8, -1))
	}
	if len(op.TransportIDs) != 1 {
		return s, checkOutcome(invalidParam(24, -1))
	}
	dest := Registration{Key: op.SAKey, InitiatorPort: op.TransportIDs[0].InitiatorPort(),
		TargetPort: op.MoveTargetPort, RelativePort: op.MoveRelativePort}
	if dest.Covers(op.Nexus.InitiatorPort, op.Nexus.TargetPort) {
		return s, checkOutcome(invalidParam(24, -1)) // moving to itself
	}
	n := s.clone()
	d := -1
	for i := range n.Registrations {
		g := &n.Registrations[i]
		switch {
		case g.sameIdentity(&dest) || (dest.Specific() && g.Covers(dest.InitiatorPort, dest.TargetPort)):
			d = i
		case g.overlaps(&dest):
			// A bare-name destination partly registered already.
			return s, checkOutcome(invalidParam(24, -1))
		}
		if d >= 0 {
			break
		}
	}
	if d < 0 {
		if len(n.Registrations) >= maxRegistrations {
			return s, checkOutcome(illegal(ascInsufficientRegRes))
		}
		n.Registrations = append(n.Registrations, dest)
		d = len(n.Registrations) - 1
	}
	n.Reservation = reservationFor(r.Type, &n.Registrations[d])
	if op.Unreg {
		n.Registrations = append(n.Registrations[:caller], n.Registrations[caller+1:]...)
	}
	n.APTPL = op.APTPL
	n.Generation++
	return n, PROutcome{}
}

// PRStateVersion is the version of the serialised reservation state, as
// the Raft state holds it and APTPL files keep it.
const PRStateVersion = 1

type prStateFile struct {
	Version int `json:"version"`
	PRState
}

// MarshalPRState serialises s (JSON with a "version" field) for snapshots
// and APTPL files.
func MarshalPRState(s *PRState) ([]byte, error) {
	if s == nil {
		s = &PRState{}
	}
	return json.Marshal(prStateFile{Version: PRStateVersion, PRState: *s})
}

// UnmarshalPRState reads what MarshalPRState wrote. An unknown version or
// an inconsistent state is an error.
func UnmarshalPRState(b []byte) (*PRState, error) {
	var v struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("scsi: reservation state: %w", err)
	}
	if v.Version == nil {
		return nil, errors.New("scsi: reservation state has no version")
	}
	if *v.Version != PRStateVersion {
		return nil, fmt.Errorf("scsi: reservation state version %d is not supported (want %d)", *v.Version, PRStateVersion)
	}
	var f prStateFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("scsi: reservation state: %w", err)
	}
	s := f.PRState
	if err := s.validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// validate checks the invariants Apply maintains.
func (s *PRState) validate() error {
	if len(s.Registrations) > maxRegistrations {
		return fmt.Errorf("scsi: reservation state has %d registrations", len(s.Registrations))
	}
	for i := range s.Registrations {
		g := &s.Registrations[i]
		if g.Key == 0 {
			return errors.New("scsi: reservation state: registration with key 0")
		}
		if g.AllTgPt && g.TargetPort != "" {
			return errors.New("scsi: reservation state: ALL_TG_PT registration with a target port")
		}
		for j := range i {
			if s.Registrations[j].overlaps(g) {
				return fmt.Errorf("scsi: reservation state: registrations %d and %d overlap", j, i)
			}
		}
	}
	if r := s.Reservation; r != nil {
		if !r.Type.Valid() {
			return fmt.Errorf("scsi: reservation state: invalid type %d", r.Type)
		}
		if len(s.Registrations) == 0 {
			return errors.New("scsi: reservation state: a reservation without registrations")
		}
		if !r.Type.AllRegistrants() && s.holder() < 0 {
			return errors.New("scsi: reservation state: the reservation holder is not registered")
		}
	}
	return nil
}
