package main

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// listen opens the service manager's side of the protocol.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestNotify(t *testing.T) {
	abstract := "@hatarget-sdnotify-test-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	tests := []struct {
		name   string
		socket string
		states []string
		want   string
	}{
		{"path socket, one state", filepath.Join(t.TempDir(), "notify"), []string{sdReady}, "READY=1"},
		{"abstract socket", abstract, []string{sdStopping}, "STOPPING=1"},
		{"several states in one datagram", filepath.Join(t.TempDir(), "notify"),
			[]string{sdReady, sdStatus("serving %d LUNs", 3)}, "READY=1\nSTATUS=serving 3 LUNs"},
		{"a newline in a status cannot start another state", filepath.Join(t.TempDir(), "notify"),
			[]string{sdReloading, sdStatus("line one\nREADY=1")}, "RELOADING=1\nSTATUS=line one READY=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn := listen(t, tt.socket)
			if err := newNotifier(tt.socket).Notify(tt.states...); err != nil {
				t.Fatal(err)
			}
			if got := receive(t, conn); got != tt.want {
				t.Errorf("datagram %q, want %q", got, tt.want)
			}
		})
	}
}

func TestNotifyWithoutManager(t *testing.T) {
	var zero notifier
	for name, n := range map[string]*notifier{"unset NOTIFY_SOCKET": newNotifier(""), "zero value": &zero} {
		if err := n.Notify(sdReady); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestNotifyMissingSocket(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "gone")
	err := newNotifier(socket).Notify(sdReady)
	if err == nil || !strings.Contains(err.Error(), socket) {
		t.Fatalf("err = %v, want one naming %s", err, socket)
	}
}
