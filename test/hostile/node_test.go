package hostile

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/test/nodetest"
)

const (
	openIQN   = "iqn.2024-01.io.hatarget.hostile:open"
	capsIQN   = "iqn.2024-01.io.hatarget.hostile:caps"
	chapIQN   = "iqn.2024-01.io.hatarget.hostile:chap"
	mutualIQN = "iqn.2024-01.io.hatarget.hostile:mutual"

	goodIQN = "iqn.2024-01.io.hatarget.hostile:good"
	alice   = "iqn.2024-01.io.hatarget.hostile:alice"
	bob     = "iqn.2024-01.io.hatarget.hostile:bob"

	chapUser     = "joe"
	chapSecret   = "12charsecret"
	discUser     = "disco"
	discSecret   = "12chardiscosecret"
	targetUser   = "tgt"
	targetSecret = "12chartgtsecret"

	blockSize = 512
	diskSize  = 64 << 20
	// The good writer uses the first half of the disk, hostile writes the
	// second.
	hostileLBA = diskSize / 2 / blockSize
)

// conf serves an open target (the good writer's, and the hostile sessions'
// data path), a target for the session caps, CHAP and mutual CHAP
// targets, all on one disk, and requires CHAP for discovery.
const conf = `HANDLER vdisk_fileio {
    DEVICE disk {
        filename {{disk}}
        nv_cache 1
    }
}

TARGET_DRIVER iscsi {
    enabled 1
    IncomingUser "` + discUser + ` ` + discSecret + `"
    TARGET ` + openIQN + ` {
        LUN 0 disk
        enabled 1
    }
    TARGET ` + capsIQN + ` {
        LUN 0 disk
        enabled 1
    }
    TARGET ` + chapIQN + ` {
        IncomingUser "` + chapUser + ` ` + chapSecret + `"
        LUN 0 disk
        enabled 1
    }
    TARGET ` + mutualIQN + ` {
        IncomingUser "` + chapUser + ` ` + chapSecret + `"
        OutgoingUser "` + targetUser + ` ` + targetSecret + `"
        LUN 0 disk
        enabled 1
    }
}
`

// node is a running `hatarget serve` with its profiling endpoint.
type node struct {
	*nodetest.Node
	debug string // host:port of /debug/pprof
	disk  string
}

func startNode(t *testing.T) *node {
	t.Helper()
	disk := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(diskSize); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	debug := net.JoinHostPort("127.0.0.1", strconv.Itoa(nodetest.FreePort(t, []string{"127.0.0.1"})))
	n := nodetest.Start(t, strings.ReplaceAll(conf, "{{disk}}", disk), nodetest.Options{Args: []string{"--debug-addr", debug}})
	return &node{Node: n, debug: debug, disk: disk}
}

// needFiles skips the test unless both the node and this process may open
// n more descriptors: a default soft limit of 1024 cannot fill the node's
// connection limit.
func (n *node) needFiles(t *testing.T, files int) {
	t.Helper()
	if files == 0 {
		return
	}
	for _, pid := range []string{strconv.Itoa(n.PID()), "self"} {
		if limit := openFilesLimit(t, pid); limit < files+256 {
			t.Skipf("needs %d open files; the limit of process %s is %d (raise it with ulimit -n)", files, pid, limit)
		}
	}
}

// openFilesLimit reads the soft limit on open files of process pid.
func openFilesLimit(t *testing.T, pid string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + pid + "/limits")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			soft := strings.Fields(rest)[0]
			if soft == "unlimited" {
				return math.MaxInt
			}
			v, err := strconv.Atoi(soft)
			if err != nil {
				t.Fatalf("open files limit %q: %v", soft, err)
			}
			return v
		}
	}
	t.Fatalf("no open files limit for process %s", pid)
	return 0
}

// usage is what the node holds: it must come back to its baseline once
// the hostile connections are gone.
type usage struct {
	goroutines, fds int
	heapInuse       int64
}

func (u usage) String() string {
	return fmt.Sprintf("%d goroutines, %d fds, %d MiB heap in use", u.goroutines, u.fds, u.heapInuse>>20)
}

// noKeepAlive fetches profiles without leaving a connection (and its
// goroutines and descriptor) open on the node.
var noKeepAlive = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func (n *node) usage(t *testing.T) usage {
	t.Helper()
	var u usage
	g := n.profile(t, "goroutine?debug=1")
	if _, err := fmt.Sscanf(g, "goroutine profile: total %d", &u.goroutines); err != nil {
		t.Fatalf("goroutine profile %.80q: %v", g, err)
	}
	// gc=1 collects first, so that the figure is what is live.
	h := n.profile(t, "heap?gc=1&debug=1")
	for sc := bufio.NewScanner(strings.NewReader(h)); sc.Scan(); {
		if v, ok := strings.CutPrefix(sc.Text(), "# HeapInuse = "); ok {
			u.heapInuse, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	if u.heapInuse == 0 {
		t.Fatal("no HeapInuse in the heap profile")
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", n.PID()))
	if err != nil {
		t.Fatal(err)
	}
	u.fds = len(fds)
	return u
}

func (n *node) profile(t *testing.T, name string) string {
	t.Helper()
	resp, err := noKeepAlive.Get("http://" + n.debug + "/debug/pprof/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %s %v", name, resp.Status, err)
	}
	return string(b)
}

// Slack allowed over the baseline: the good session may have started a
// worker or two more, the profiler's own request runs, and the heap
// holds pooled buffers.
const (
	goroutineSlack = 8
	fdSlack        = 2
	heapSlack      = 32 << 20
)

// waitBaseline waits until the node's usage is back within the slack of
// base.
func (n *node) waitBaseline(t *testing.T, base usage) {
	t.Helper()
	var now usage
	ok := nodetest.Poll(15*time.Second, 250*time.Millisecond, func() bool {
		now = n.usage(t)
		return now.goroutines <= base.goroutines+goroutineSlack && now.fds <= base.fds+fdSlack &&
			now.heapInuse <= base.heapInuse+heapSlack
	})
	if !ok {
		t.Fatalf("the node holds %s; the baseline was %s", now, base)
	}
	t.Logf("baseline %s; after the hostile cases %s", base, now)
}

// writer writes random data through a well-behaved session and reads
// every write back, until stopped.
type writer struct {
	s      *initiator.Session
	rounds atomic.Int64
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	err    error
}

func startWriter(t *testing.T, ctx context.Context, addr string) *writer {
	t.Helper()
	s, err := initiator.Dial(ctx, initiator.Config{Addr: addr, TargetName: openIQN, InitiatorName: goodIQN})
	if err != nil {
		t.Fatal(err)
	}
	w := &writer{s: s, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run(ctx)
	t.Cleanup(func() { w.finish(); s.Close() })
	return w
}

func (w *writer) run(ctx context.Context) {
	defer close(w.done)
	const blocks = 128 // 64 KiB
	data, got := make([]byte, blocks*blockSize), make([]byte, blocks*blockSize)
	for i := uint64(0); ; i++ {
		select {
		case <-w.stop:
			return
		default:
		}
		lba := (i * blocks) % (hostileLBA - blocks)
		_, _ = rand.Read(data)
		err := w.s.Write(ctx, 0, lba, blocks, blockSize, data)
		if err == nil {
			err = w.s.Read(ctx, 0, lba, blocks, blockSize, got)
		}
		if err == nil && !bytes.Equal(data, got) {
			err = fmt.Errorf("LBA %d: read back differs from what was written", lba)
		}
		if err != nil {
			w.mu.Lock()
			w.err = fmt.Errorf("round %d: %w", i, err)
			w.mu.Unlock()
			return
		}
		w.rounds.Add(1)
	}
}

// progress waits until the writer has verified n more rounds, failing the
// test if it stopped on an error.
func (w *writer) progress(t *testing.T, n int64) {
	t.Helper()
	want := w.rounds.Load() + n
	ok := nodetest.Poll(20*time.Second, 10*time.Millisecond, func() bool {
		return w.rounds.Load() >= want || w.failed() != nil
	})
	if err := w.failed(); err != nil {
		t.Fatalf("the good session failed: %v", err)
	}
	if !ok {
		t.Fatalf("the good session made no progress (%d rounds)", w.rounds.Load())
	}
}

func (w *writer) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *writer) finish() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}
