//go:build !linux

package iscsi

// peerClosed would report a connection the initiator closed before our
// reader saw it; without TCP_INFO it cannot tell, and a login then waits
// only for sessions whose reader has stopped.
func (c *conn) peerClosed() bool { return false }
