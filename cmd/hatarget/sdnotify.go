package main

// The agent tells systemd (or any service manager speaking its notify
// protocol) how it is doing: READY=1 once it serves, STATUS= lines on
// progress, RELOADING=1 and STOPPING=1. sd_notify(3) with the standard
// library, so that the binary stays static and cgo-free.

import (
	"fmt"
	"net"
	"strings"
)

// Notification states of sd_notify(3).
const (
	sdReady     = "READY=1"
	sdReloading = "RELOADING=1"
	sdStopping  = "STOPPING=1"
)

// Status is a STATUS= line: free text that `systemctl status` shows. A
// newline would end the state early, so it becomes a space.
func sdStatus(format string, args ...any) string {
	return "STATUS=" + strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", " ")
}

// notifier sends notifications to one service manager socket. The zero
// value, and a nil *notifier, send nothing: a process not started by a
// service manager runs the same code.
type notifier struct {
	addr *net.UnixAddr
}

// New returns a notifier for the socket named by $NOTIFY_SOCKET (pass
// os.Getenv("NOTIFY_SOCKET")): a path, or an abstract socket name starting
// with '@', which Go's net package maps to the Linux abstract namespace.
func newNotifier(socket string) *notifier {
	if socket == "" {
		return nil
	}
	return &notifier{addr: &net.UnixAddr{Name: socket, Net: "unixgram"}}
}

// Notify sends the states as one datagram, one per line, as sd_notify
// expects. Each call uses its own socket: notifications are rare, and a
// connected socket would go stale if the manager re-created its own.
func (n *notifier) Notify(states ...string) error {
	if n == nil || n.addr == nil {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, n.addr)
	if err != nil {
		return fmt.Errorf("sd_notify: connecting to %s: %w", n.addr.Name, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(states, "\n"))); err != nil {
		return fmt.Errorf("sd_notify: sending to %s: %w", n.addr.Name, err)
	}
	return nil
}
