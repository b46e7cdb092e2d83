// Package alua holds the pure parts of asymmetric logical unit access
// (SPC-4 5.16) for a cluster that looks to initiators like one multi-ported
// disk array: which state each node's target port group reports for a LUN,
// what a media-access command gets in each state, and the byte formats of
// REPORT TARGET PORT GROUPS and SET TARGET PORT GROUPS.
//
// # Model
//
// Every node is one target port group of every LUN; its group id and its
// relative target port ids are allocated once in Raft and never reused, so
// every node describes every other node the same way. Each LUN has one owner,
// the only node that executes its commands. The state of a node's group is a
// function of facts the caller gathers at the moment it answers — the LUN's
// owner, policy and move in progress from the FSM; whether the node is alive
// (gossip and the leader see it), fenced, in sync, and, for the owner, whether
// it still holds its lease — so this package takes no clock and does no I/O.
// GroupState applies an ordered rule table to those facts; the first rule
// that matches decides:
//
//	LUN has no owner                     unavailable    nobody may serve it
//	node not alive                       offline        only peers report this
//	node fenced                          unavailable
//	node out of sync                     unavailable    it must not serve stale data
//	owner or move target during a move   transitioning  the owner drains, the target prepares
//	owner without a lease                transitioning  it has stopped serving by itself
//	owner                                active/optimized
//	other node, policy NonOwnerStandby   standby
//	other node                           active/non-optimized (forwards to the owner)
//
// A node that is not alive cannot answer at all, so "offline" only ever
// appears in what its peers report; a node that still answers but must not
// serve says unavailable or transitioning, which multipath initiators treat
// as "use another path" and "retry soon".
//
// Only the owner's group is active/optimized and carries the PREF bit, so an
// initiator using ALUA priorities sends I/O to the owner and keeps the other
// paths as fallbacks; a node that reports active/non-optimized still accepts
// media commands and forwards them to the owner, so an initiator that spreads
// I/O over every path keeps working while the owner stays the single executor.
package alua
