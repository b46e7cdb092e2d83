// Package cluster tests hatarget clusters end to end: each test starts
// three (or four) real `hatarget agent` processes on 127.0.0.1..127.0.0.n
// through test/nodetest, drives them with the binary's own control
// commands (target, lun, cluster, import, export) and checks what
// initiators see with libiscsi's tools and qemu-io: a LUN created through
// one node is served by every node, the cluster survives a killed leader,
// a full restart, concurrent conflicting changes, an scst.conf import, a
// node that speaks an older command protocol, and a node joining and being
// removed.
//
// The package holds only tests; this file exists so that it is a package
// with documentation even when built without them.
package cluster
