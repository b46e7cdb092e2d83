// Package fsm is the replicated state of a hatarget cluster: nodes,
// devices, targets with their LUN maps and ACLs, and reservation state, and
// the typed commands that change it.
//
// The package is pure: no I/O, no clocks, no randomness. The leader puts
// every generated value (serial numbers, NAA identifiers) into the command
// before proposing it, so every node that applies the same log reaches the
// same state.
//
// Commands are versioned for rolling upgrades. Every command type carries
// the protocol version that introduced it (CommandSpec.Since); a node
// advertises the highest protocol it decodes, and the proposer refuses a
// command some voter could not decode (CheckCommand, which also sees
// optional fields added to older types; CheckDecodable knows the type
// only). Decoding is strict: an unknown command type or an unknown field
// is an explicit error, never a silent skip.
//
// The active cluster version (protocol 5, version.go) is the other half of
// rolling upgrades: the gate above keeps a command from voters that cannot
// decode it, the cluster version keeps a feature unused until the operator
// finalizes the upgrade, so that until then any node can go back to the
// previous release.
//
// API tokens (protocol 6, tokens.go): bootstrap_tokens, create_token and
// revoke_token keep each token's name, role and SHA-256, never its secret,
// which the proposer makes and hands to its caller once. They are the
// first commands that also need an active cluster version
// (CommandSpec.ClusterVersion, checked by Apply on every node alike).
//
// Synchronous replication (protocol 4): a device with Replicas keeps its
// blocks on those nodes' own disks; InSync is the subset known to hold
// every acknowledged write, always holding the owner. Only an in-sync
// replica can become owner (SetOwner, with Drop for a promotion in one
// entry); the owner shrinks and grows the set with SetInSync, and
// ReplaceReplica swaps a replica for a node that starts out of sync.
// ForcePromote, the operator's last resort when every in-sync copy is
// lost, makes an out-of-sync replica owner and the only in-sync one.
// Every one is conditional on the device's epoch.
package fsm
