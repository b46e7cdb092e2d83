package iscsi

import (
	"encoding/binary"
	"syscall"
)

// tcpEstablished is TCP_ESTABLISHED, tcpi_state of a healthy connection.
const tcpEstablished = 1

// peerClosed reports whether the initiator has closed or reset the
// connection, which our reader may not have read up to yet: the kernel's
// TCP state is no longer ESTABLISHED (CLOSE_WAIT once the peer's FIN
// arrived, CLOSE after a reset), whatever data is still unread before it.
// One getsockopt; only logins ask, never the command path.
func (c *conn) peerClosed() bool {
	sc, ok := c.nc.(syscall.Conn)
	if !ok {
		return false // not a socket (tests): unknown
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	state := tcpEstablished
	if err := rc.Control(func(fd uintptr) {
		// TCP_INFO truncated to four bytes: the kernel copies as much of
		// struct tcp_info as asked for, and tcpi_state is its first byte.
		v, err := syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_INFO)
		if err == nil {
			var b [4]byte
			binary.NativeEndian.PutUint32(b[:], uint32(v))
			state = int(b[0])
		}
	}); err != nil {
		return true // the socket is closed already
	}
	return state != tcpEstablished
}
