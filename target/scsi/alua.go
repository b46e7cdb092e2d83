package scsi

import "github.com/hatarget/hatarget/alua"

// implicitTransitionSecs is what REPORT TARGET PORT GROUPS announces as the
// longest an implicit transition (a move or a failover) takes, so that
// initiators keep retrying transitioning paths that long.
const implicitTransitionSecs = 10

// groupState is the ALUA state of the port group a command arrived
// through. Without port groups (a single node) every port is
// active/optimized; a group the LU does not list is unavailable, so a node
// that does not know its place yet serves nothing.
func (st *luState) groupState(n *Nexus) alua.State {
	groups := st.cfg.PortGroups
	if len(groups) == 0 || n == nil {
		return alua.ActiveOptimized
	}
	for i := range groups {
		if groups[i].ID == n.PortGroup {
			return groups[i].State
		}
	}
	return alua.Unavailable
}

// checkALUA refuses what SPC-4 5.15.2.4 does not allow in the state of the
// command's port group, with the sense the state prescribes. A lease that
// ran out makes every group transitioning at once, on the command path:
// an owner that was frozen (SIGSTOP) or cut off must not execute a single
// command before it has learned whether it still owns the LU.
func (st *luState) checkALUA(f cmdFlags, n *Nexus) error {
	if l := st.cfg.Lease; l != nil && f&flagUnavailableOK == 0 && !l.Valid() {
		return errTransitioning
	}
	s := st.groupState(n)
	allowed, sense := s.MediaAccess()
	switch {
	case allowed:
		return nil
	case s == alua.Standby && f&flagStandbyOK != 0:
		return nil
	case s != alua.Standby && f&flagUnavailableOK != 0:
		return nil
	}
	return newSense(sense.Key, uint16(sense.ASC)<<8|uint16(sense.ASCQ))
}

// sameGroupStates reports whether two group tables give every group the
// same state: any difference raises ASYMMETRIC ACCESS STATE CHANGED.
func sameGroupStates(a, b []alua.Group) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID || a[i].State != b[i].State {
			return false
		}
	}
	return true
}

// portGroups is what REPORT TARGET PORT GROUPS lists: the configured
// groups, or on a single node the one group of the port asked through.
func (st *luState) portGroups(n *Nexus) []alua.Group {
	if len(st.cfg.PortGroups) > 0 {
		return st.cfg.PortGroups
	}
	var group, port uint16
	if n != nil {
		group, port = n.PortGroup, n.RelativePort
	}
	return []alua.Group{{ID: group, State: alua.ActiveOptimized, Ports: []uint16{port}}}
}

// supportedStates are the states REPORT TARGET PORT GROUPS says a group
// may enter: all of them in a cluster, only active/optimized on its own.
func (st *luState) supportedStates() alua.SupportedStates {
	if len(st.cfg.PortGroups) > 0 {
		return alua.Implemented
	}
	return alua.AOSup
}

// ascALUATransition is ASYMMETRIC ACCESS STATE TRANSITION.
const ascALUATransition uint16 = 0x040a
