package iscsi

import (
	"path"

	"github.com/hatarget/hatarget/target/scsi"
)

// Target is one iSCSI target as the transport sees it: its name and what a
// login needs to decide. The target package builds these from configuration
// and replaces them as a set with Server.SetTargets.
type Target struct {
	Name  string
	Alias string
	// IncomingUsers are the CHAP credentials initiators log in with; when
	// empty, no authentication is required.
	IncomingUsers []CHAPUser
	// OutgoingUser is our identity for mutual CHAP, when configured.
	OutgoingUser *CHAPUser
	// AllowedInitiators are initiator name patterns (path.Match syntax) that
	// may log in; empty allows everybody.
	AllowedInitiators []string
	// Limits are the negotiation bounds for sessions to this target.
	Limits Limits
	// Views returns the LUNs an initiator sees (LUN masking).
	Views func(initiator string) scsi.View
	// RelativePort and PortGroup identify this node's port (VPD 0x83).
	RelativePort uint16
	PortGroup    uint16
	// PortalGroupTag is the tag logins to this target are answered with;
	// zero means the server's (Options.PortalGroupTag). A cluster node
	// learns its tag only after it joined, so it comes with the targets.
	PortalGroupTag uint16
	// Portals are what SendTargets lists for the target. A cluster gives
	// every node's, since every node serves every target and an initiator
	// discovering through one node must learn of the paths through all.
	// Empty: this server's own listening portals, with its PortalGroupTag.
	Portals []Portal
}

// Portal is one network portal of a target: Addr is host:port (IPv6 hosts
// in brackets) and Tag its target portal group tag.
type Portal struct {
	Addr string
	Tag  uint16
}

// tag returns the portal group tag sessions to t use.
func (t *Target) tag(serverTag uint16) uint16 {
	if t.PortalGroupTag != 0 {
		return t.PortalGroupTag
	}
	return serverTag
}

// allows reports whether the ACL admits initiator.
func (t *Target) allows(initiator string) bool {
	if len(t.AllowedInitiators) == 0 {
		return true
	}
	return MatchInitiator(t.AllowedInitiators, initiator)
}

// MatchInitiator reports whether name matches one of the patterns (SCST's
// wildcard syntax: '*' and '?', as path.Match). A malformed pattern matches
// only itself, literally.
func MatchInitiator(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, err := path.Match(p, name); ok || (err != nil && p == name) {
			return true
		}
	}
	return false
}

// targetSet is an immutable snapshot of the configured targets.
type targetSet struct {
	gen    uint64
	byName map[string]*Target
	names  []string // in configuration order, for SendTargets
	// discoveryUsers require CHAP on discovery sessions when non-empty.
	discoveryUsers []CHAPUser
}

func (ts *targetSet) lookup(name string) *Target {
	if ts == nil {
		return nil
	}
	return ts.byName[name]
}
