// Package clustertest runs a hatarget cluster of N nodes inside the test
// process, for fast tests of the cluster logic: real Raft (raft-boltdb in a
// temporary data directory per node), real memberlist gossip and the real
// HTTP management API, but a fake dataplane (Dataplane) that records every
// configuration it is given instead of serving iSCSI.
//
// Nodes are named n1..nN and indexed from 1, as in test/nodetest. Node i
// listens on 127.0.0.i (every 127/8 address is loopback on Linux) on ports
// that were free when the cluster was created; a restarted node gets the
// same addresses and data directory back. Every node joins all the others
// and bootstraps with BootstrapExpect N, exactly as `hatarget agent` does.
//
//	c := clustertest.New(t, 3, clustertest.Options{})
//	leader := c.Leader(t)
//	_, err := c.Client(2).CreateTarget(ctx, api.CreateTarget{IQN: iqn})
//	c.Member(3).Dataplane.WaitFor(t, time.Second, func(cfg target.Config) bool { ... })
//	c.Stop(t, leader)
//	c.Restart(t, leader)
//
// Limitations:
//
//   - Kill cannot kill -9 a node that shares the test's process, and
//     package cluster exports no way to stop a node other than the
//     graceful Shutdown. Without Options.Crash, Kill is therefore Stop,
//     which hands Raft leadership over and announces the departure through
//     gossip: the survivors need no election timeout and never see the
//     node fail. Package cluster's own tests set Options.Crash to a
//     test-only hook (cluster/export_test.go) that stops Raft without a
//     leadership transfer and memberlist without a leave message, a closer
//     emulation of a crash; even so the Raft store is closed cleanly, so
//     no unsynced write is ever lost as in a real crash.
//   - All nodes share the process, so they share its clock, its scheduler
//     and its CPU: a test that loads the machine delays every node's Raft
//     heartbeats at once. The default RaftTimeout (300 ms) speeds elections
//     up; under heavy load (the race detector on two cores) raise it.
//   - Ports are chosen free when the cluster is created and reused on
//     restart; another process may take one in between, in which case
//     Restart fails the test.
//   - Nothing is served over iSCSI: use test/nodetest for the dataplane.
package clustertest
