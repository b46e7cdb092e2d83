package robust

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hatarget/hatarget/test/nodetest"
)

// procProbe observes a running hatarget: goroutines through its
// /debug/pprof, open files and memory through /proc.
type procProbe struct {
	pid       int
	debugAddr string
	client    *http.Client
}

func newProbe(pid int, debugAddr string) *procProbe {
	return &procProbe{pid: pid, debugAddr: debugAddr, client: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DisableKeepAlives: true}, // leave no connection (fd, goroutine) behind in the target
	}}
}

// goroutines reads "goroutine profile: total N".
func (p *procProbe) goroutines() (int, error) {
	resp, err := p.client.Get("http://" + p.debugAddr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("goroutine profile: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	rest, ok := strings.CutPrefix(strings.TrimSpace(line), "goroutine profile: total ")
	if !ok {
		return 0, fmt.Errorf("goroutine profile starts with %q", line)
	}
	return strconv.Atoi(rest)
}

// goroutineDump is the full debug=1 profile, for failure reports.
func (p *procProbe) goroutineDump() string {
	resp, err := p.client.Get("http://" + p.debugAddr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func (p *procProbe) fds() (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.pid))
	return len(ents), err
}

func (p *procProbe) fdList() string {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.pid))
	var b strings.Builder
	for _, e := range ents {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", p.pid, e.Name()))
		fmt.Fprintf(&b, "  %s -> %s\n", e.Name(), l)
	}
	return b.String()
}

// rssKiB reads VmRSS from /proc/PID/status.
func (p *procProbe) rssKiB() (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		return 0, err
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := strings.Fields(string(v))
			if len(f) < 1 {
				break
			}
			return strconv.Atoi(f[0])
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", p.pid)
}

// sample takes goroutines and fds together.
func (p *procProbe) sample() (g, f int, err error) {
	if g, err = p.goroutines(); err != nil {
		return
	}
	f, err = p.fds()
	return
}

// settle waits until two samples 300ms apart agree (the target finishes
// tearing down connections asynchronously) and returns the last one.
func (p *procProbe) settle(t *testing.T, within time.Duration) (g, f int) {
	t.Helper()
	deadline := time.Now().Add(within)
	pg, pf := -1, -1
	for {
		g, f, err := p.sample()
		if err != nil {
			t.Fatalf("sampling the target: %v", err)
		}
		if (g == pg && f == pf) || time.Now().After(deadline) {
			return g, f
		}
		pg, pf = g, f
		time.Sleep(300 * time.Millisecond)
	}
}

func waitHTTP(t *testing.T, p *procProbe) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := p.goroutines()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("hatarget --debug-addr %s does not answer: %v", p.debugAddr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alive reports whether the node's process still runs.
func alive(n *nodetest.Node) bool {
	if n.Signal(syscall.Signal(0)) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n.PID()))
	if err != nil {
		return false
	}
	// pid (comm) state ...: a zombie has exited.
	if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] != 'Z'
	}
	return true
}
