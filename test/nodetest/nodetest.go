// Package nodetest runs the real hatarget binary as a separate process for
// integration tests: it writes a config, picks free ports, waits until the
// portals accept connections and stops the process at the end of the test.
package nodetest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Binary returns the hatarget binary to test: $HATARGET_BIN, or one built
// once per test process from the module's source.
func Binary(t testing.TB) string {
	t.Helper()
	if b := os.Getenv("HATARGET_BIN"); b != "" {
		return b
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "hatarget-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "hatarget")
		cmd := exec.Command("go", "build", "-o", builtBin, "./cmd/hatarget")
		cmd.Dir = moduleRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

func moduleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Node is a running `hatarget serve`.
type Node struct {
	t      testing.TB
	cmd    *exec.Cmd
	Dir    string
	Config string   // path of the scst.conf
	Addrs  []string // portal addresses, host:port
	logs   *SyncBuffer
	done   chan struct{}
	err    error
}

// Options for Start.
type Options struct {
	// Hosts to listen on (default 127.0.0.1); all use the same free port.
	Hosts []string
	// Args are extra `serve` arguments.
	Args []string
	// DataDir is the node's --data-dir; default a fresh directory. A test
	// that restarts a node passes the same one again.
	DataDir string
}

// Start writes conf (an scst.conf; the string "{{DIR}}" is replaced by a
// fresh temporary directory for backing files) and serves it.
func Start(t testing.TB, conf string, opts Options) *Node {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "scst.conf")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(conf, "{{DIR}}", dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	hosts := opts.Hosts
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1"}
	}
	port := FreePort(t, hosts)
	n := &Node{t: t, Dir: dir, Config: path, logs: &SyncBuffer{}, done: make(chan struct{})}
	dataDir := opts.DataDir
	if dataDir == "" {
		dataDir = filepath.Join(dir, "data")
	}
	args := []string{"serve", "--config", path, "--data-dir", dataDir}
	for _, h := range hosts {
		addr := net.JoinHostPort(h, fmt.Sprint(port))
		n.Addrs = append(n.Addrs, addr)
		args = append(args, "--listen", addr)
	}
	args = append(args, opts.Args...)
	n.cmd = exec.Command(Binary(t), args...)
	n.cmd.Stdout = n.logs
	n.cmd.Stderr = n.logs
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { n.err = n.cmd.Wait(); close(n.done) }()
	t.Cleanup(func() {
		n.Stop()
		if t.Failed() {
			t.Logf("hatarget log:\n%s", n.Logs())
		}
	})
	for _, a := range n.Addrs {
		n.waitListening(a)
	}
	return n
}

func (n *Node) waitListening(addr string) {
	n.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-n.done:
			n.t.Fatalf("hatarget exited before listening on %s: %v\n%s", addr, n.err, n.Logs())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	n.t.Fatalf("hatarget not listening on %s after 15s\n%s", addr, n.Logs())
}

// Addr is the first portal.
func (n *Node) Addr() string { return n.Addrs[0] }

// PID of the process.
func (n *Node) PID() int { return n.cmd.Process.Pid }

// Logs returns everything the process printed so far.
func (n *Node) Logs() string { return n.logs.String() }

// Signal sends sig to the process.
func (n *Node) Signal(sig os.Signal) error { return n.cmd.Process.Signal(sig) }

// Wait waits for the process to exit and returns its error.
func (n *Node) Wait(ctx context.Context) error {
	select {
	case <-n.done:
		return n.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stop ends the process gracefully (SIGTERM), then by force after 10s.
func (n *Node) Stop() {
	select {
	case <-n.done:
		return
	default:
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
		n.cmd.Process.Kill()
		<-n.done
	}
}

// WriteConfig replaces the config file (for SIGHUP reload tests).
func (n *Node) WriteConfig(conf string) {
	n.t.Helper()
	if err := os.WriteFile(n.Config, []byte(strings.ReplaceAll(conf, "{{DIR}}", n.Dir)), 0o600); err != nil {
		n.t.Fatal(err)
	}
}

// WaitLog waits until the log contains s.
func (n *Node) WaitLog(s string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(n.Logs(), s) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// FreePort finds a TCP port free on every host.
func FreePort(t testing.TB, hosts []string) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", net.JoinHostPort(hosts[0], "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		ok := true
		var others []net.Listener
		for _, h := range hosts[1:] {
			o, err := net.Listen("tcp", net.JoinHostPort(h, fmt.Sprint(port)))
			if err != nil {
				ok = false
				break
			}
			others = append(others, o)
		}
		l.Close()
		for _, o := range others {
			o.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no free port on all hosts")
	return 0
}

// SyncBuffer collects a process's output and can be read while the
// process still writes to it.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
