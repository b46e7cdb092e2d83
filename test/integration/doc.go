// Package integration tests hatarget end to end: each test starts the real
// `hatarget serve` binary as a separate process (through test/nodetest) and
// talks to it over loopback TCP with the Go initiator, raw PDUs, or
// third-party initiators (libiscsi's tools, QEMU's iSCSI block driver).
//
// The package holds only tests; this file exists so that it is a package
// with documentation even when built without them.
package integration
