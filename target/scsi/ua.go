package scsi

import (
	"sync"
	"sync/atomic"
)

// nexusState is what an LU remembers about one I_T nexus: its queue of unit
// attention conditions and its PREVENT MEDIUM REMOVAL bit.
type nexusState struct {
	// pending mirrors len(ua) so that the command path, where nothing is
	// pending almost always, reads one atomic instead of taking a lock.
	pending atomic.Int32

	mu sync.Mutex
	ua []uint16 // ASC<<8 | ASCQ, oldest first; guarded by mu

	prevent bool // guarded by LU.mu
	lost    bool // NexusLoss seen and no command since; guarded by LU.mu
}

// newNexusState is the state of nexus n (nil: known by key only), which
// the LU meets for the first time.
func (lu *LU) newNexusState(n *Nexus) *nexusState {
	ns := &nexusState{ua: make([]uint16, 0, maxPendingUA)}
	// A nexus the LU has not seen before gets POWER ON, RESET, OR BUS DEVICE
	// RESET OCCURRED, as real targets do after login, so the initiator
	// revalidates whatever it cached about the LU.
	ns.raise(ascPowerOnReset)
	// A session that was logged in before the LU's ALUA states last
	// changed is not new to the initiator: this node took the LU over,
	// and the session's commands had gone to the old owner, which held
	// its state. ASYMMETRIC ACCESS STATE CHANGED follows then: it is what
	// makes initiators re-read the path states at once (Linux's ALUA
	// handler, and multipathd on the event it sends) rather than at their
	// next periodic check, many seconds later. A session made since gets
	// POWER ON, RESET alone: libiscsi, for one, fails its connection on
	// any other unit attention.
	if changed := lu.groupsChangedAt.Load(); changed != 0 && n != nil && !n.Established.IsZero() && n.Established.UnixNano() < changed {
		ns.raise(ascAsymmetricAccessChanged)
	}
	return ns
}

func nexusKey(n *Nexus) string {
	if n == nil {
		return ""
	}
	return n.Key
}

// nexusFor finds or creates the state of n. A nil nexus (unit tests, tools)
// shares one anonymous state.
func (lu *LU) nexusFor(n *Nexus) *nexusState {
	key := nexusKey(n)
	lu.mu.RLock()
	ns := lu.nexuses[key]
	lu.mu.RUnlock()
	if ns != nil {
		return ns
	}
	lu.mu.Lock()
	defer lu.mu.Unlock()
	if ns = lu.nexuses[key]; ns == nil {
		ns = lu.newNexusState(n)
		lu.nexuses[key] = ns
	}
	if n != nil {
		lu.ports[n.RelativePort] = n.TargetPort // for REGISTER AND MOVE
	}
	return ns
}

// raiseOnKey queues code for the nexus with Nexus.Key key. Reservations
// name nexuses that may not have sent a command to the LU yet (SPEC_I_PT,
// REGISTER AND MOVE): such a nexus gets a state now, holding POWER ON,
// RESET first and then code, and counts as lost until it shows up, so
// that it is forgotten like one if it never does.
func (lu *LU) raiseOnKey(key string, code uint16) {
	lu.mu.RLock()
	ns := lu.nexuses[key]
	lu.mu.RUnlock()
	if ns == nil {
		lu.mu.Lock()
		if ns = lu.nexuses[key]; ns == nil {
			ns = lu.newNexusState(nil)
			ns.lost = true
			lu.nexuses[key] = ns
			lu.lost = append(lu.lost, key)
			lu.forgetLostLocked()
		}
		lu.mu.Unlock()
	}
	ns.raise(code)
}

// raise queues a unit attention. A reset-class condition (ASC 29h) replaces
// everything queued: the reset already invalidated what the others said.
func (ns *nexusState) raise(code uint16) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if code>>8 == ascPowerOnReset>>8 {
		ns.ua = ns.ua[:0]
	}
	for _, c := range ns.ua {
		if c == code {
			return
		}
	}
	if len(ns.ua) == maxPendingUA {
		copy(ns.ua, ns.ua[1:])
		ns.ua = ns.ua[:maxPendingUA-1]
	}
	ns.ua = append(ns.ua, code)
	ns.pending.Store(int32(len(ns.ua)))
}

// pop removes and returns the oldest unit attention.
func (ns *nexusState) pop() (uint16, bool) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if len(ns.ua) == 0 {
		return 0, false
	}
	code := ns.ua[0]
	copy(ns.ua, ns.ua[1:])
	ns.ua = ns.ua[:len(ns.ua)-1]
	ns.pending.Store(int32(len(ns.ua)))
	return code, true
}

// popUA reports the oldest unit attention of ns. Reporting I_T NEXUS LOSS
// OCCURRED (or the POWER ON, RESET of a nexus raiseOnKey created) means the
// nexus is here, so it is no longer a candidate for being forgotten.
func (lu *LU) popUA(ns *nexusState) (uint16, bool) {
	code, ok := ns.pop()
	if ok && (code == ascITNexusLoss || code == ascPowerOnReset) {
		lu.mu.Lock()
		ns.lost = false
		lu.mu.Unlock()
	}
	return code, ok
}

// drop removes a queued unit attention without reporting it.
func (ns *nexusState) drop(code uint16) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	for i, c := range ns.ua {
		if c == code {
			ns.ua = append(ns.ua[:i], ns.ua[i+1:]...)
			break
		}
	}
	ns.pending.Store(int32(len(ns.ua)))
}

// raiseAll queues code on every nexus the LU knows except skip.
func (lu *LU) raiseAll(code uint16, skip *nexusState) {
	lu.mu.RLock()
	defer lu.mu.RUnlock()
	for _, ns := range lu.nexuses {
		if ns != skip {
			ns.raise(code)
		}
	}
}

// clearReportedLUNsChanged drops REPORTED LUNS DATA HAS CHANGED for n: SPC-4
// 6.33 clears it once that nexus has read the new LUN inventory.
func (lu *LU) clearReportedLUNsChanged(n *Nexus) {
	lu.mu.RLock()
	ns := lu.nexuses[nexusKey(n)]
	lu.mu.RUnlock()
	if ns != nil && ns.pending.Load() != 0 {
		ns.drop(ascReportedLUNsChanged)
	}
}
