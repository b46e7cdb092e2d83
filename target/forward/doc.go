// Package forward carries SCSI commands from a node that does not own a
// logical unit to the node that does (shared/design/alua.md: the
// active/non-optimized paths of a LUN forward to the active/optimized one,
// like the partner controller of a dual-controller array).
//
// A non-owner node forwards every command of the LU, not only media access:
// the owner's LU is then the one place that holds unit attentions,
// reservations, range locks and per-nexus state for the nexuses of every
// node. The forwarded command carries its whole I_T nexus (initiator port,
// target port and name, relative port, port group), so the owner answers
// INQUIRY VPD 83h and REPORT TARGET PORT GROUPS for the port the command
// came in on, and keys its per-nexus state by the same Nexus.Key the
// non-owner's iSCSI session has.
//
// The pieces:
//
//   - wire.go: the binary protocol, versioned by a hello exchange and made of
//     length-prefixed frames. Decoders are pure and never panic.
//   - Client: one persistent connection to one owner, many commands in
//     flight matched by tag, writes batched into one writev. ForLU gives the
//     scsi.Forwarder a non-owner LU is configured with.
//   - Server: serves connections from other nodes and executes their
//     commands with scsi.LU.ExecuteLocal, after checking that this node owns
//     the LU in the epoch the sender believes in.
//
// Failure semantics. A command the client cannot get answered (no
// connection, connection lost, peer silent, the peer is not the owner in
// that epoch or does not know the device) completes with CHECK CONDITION,
// NOT READY, ASYMMETRIC ACCESS STATE TRANSITION (02/04/0A): multipath
// initiators retry it, on this path or another, and never take it for a
// lost disk (guarantees.md, promise 9). When a connection drops, the owner
// still finishes the commands it had started, as it does for the commands
// of an iSCSI session that drops; commands it had not started are dropped.
//
// Task management. Resets and nexus losses change per-nexus state, which
// lives at the owner: LUForwarder implements scsi.TaskManagementForwarder,
// so scsi.LU.ResetLU and NexusLoss on a non-owner send a task management
// frame and wait for the owner to perform them (ResetLULocal,
// NexusLossLocal) for the remote nexus, after the same owner and epoch
// check as a command. An owner that refuses or cannot be reached makes
// them return an error: the transport reports the function as failed.
//
// Aborts. An abort frame names a request tag. If that command has not
// started it never runs; if it is running it runs to completion (the LU
// has no way to stop a command halfway). Either way it is answered with
// TASK ABORTED status and no data.
package forward
