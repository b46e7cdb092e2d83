package nodetest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// A netns cluster runs every node in its own network namespace, attached
// by a veth pair to a bridge in the test's namespace: the test reaches
// every node, the nodes reach each other through the bridge, and a node's
// links to its peers can be cut (Isolate) while the test still reaches
// it, as when a storage node loses its cluster network but not its
// initiators. Needs root and iproute2 (`ip`), as on the CI machines.

// netnsPrefix names everything a netns cluster creates: namespaces
// hatns<pid>n<i>, bridge hb<pid>, host-side veths hv<pid>n<i>. The pid
// lets a later run remove what a killed run left behind.
const netnsPrefix = "hatns"

// network is the addressing of a netns cluster.
type network struct {
	id     int    // the test process's pid
	subnet string // 10.78.K: node i is .i, the test side .254
	hosts  []int  // the nodes given a namespace
}

// remove deletes the veths, the namespaces and the bridge, once the
// processes in them have stopped. The veths go first and explicitly: a
// namespace's are destroyed only when the kernel finally frees it, a
// while after `ip netns del`, and the next cluster of the same test
// process (go test -count) reuses their names.
func (nw *network) remove() {
	for _, i := range nw.hosts {
		_ = exec.Command("ip", "link", "del", nw.hostVeth(i)).Run()
		_ = exec.Command("ip", "netns", "del", nw.ns(i)).Run()
	}
	_ = exec.Command("ip", "link", "del", nw.bridge()).Run()
}

func (nw *network) ns(i int) string       { return fmt.Sprintf("%s%dn%d", netnsPrefix, nw.id, i) }
func (nw *network) bridge() string        { return fmt.Sprintf("hb%d", nw.id) }
func (nw *network) hostVeth(i int) string { return fmt.Sprintf("hv%dn%d", nw.id, i) }
func (nw *network) ip(i int) string       { return fmt.Sprintf("%s.%d", nw.subnet, i) }

// ipCmd runs ip with args, failing the test with its output on error.
func ipCmd(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newNetwork creates the bridge, after removing what dead runs left.
func newNetwork(t testing.TB) *network {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("a netns cluster needs root (network namespaces and veths)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("a netns cluster needs iproute2's ip: %v", err)
	}
	removeStaleNetworks()
	nw := &network{id: os.Getpid()}
	nw.subnet = freeSubnet(t, nw.id)
	ipCmd(t, "link", "add", nw.bridge(), "type", "bridge", "stp_state", "0", "forward_delay", "0")
	ipCmd(t, "addr", "add", nw.ip(254)+"/24", "dev", nw.bridge())
	ipCmd(t, "link", "set", nw.bridge(), "up")
	return nw
}

// freeSubnet picks a 10.78.K.0/24 no interface of this machine uses.
func freeSubnet(t testing.TB, seed int) string {
	out, err := exec.Command("ip", "-4", "-o", "addr", "show").Output()
	if err != nil {
		t.Fatalf("ip addr show: %v", err)
	}
	for k := range 250 {
		subnet := fmt.Sprintf("10.78.%d", (seed+k)%250+1)
		if !strings.Contains(string(out), " "+subnet+".") {
			return subnet
		}
	}
	t.Fatalf("no free 10.78.K.0/24 subnet")
	return ""
}

// addHost creates node i's namespace and its link to the bridge.
func (nw *network) addHost(t testing.TB, i int) {
	t.Helper()
	ns := nw.ns(i)
	ipCmd(t, "netns", "add", ns)
	nw.hosts = append(nw.hosts, i)
	ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	ipCmd(t, "link", "add", nw.hostVeth(i), "type", "veth", "peer", "name", "eth0", "netns", ns)
	ipCmd(t, "link", "set", nw.hostVeth(i), "master", nw.bridge(), "up")
	ipCmd(t, "-n", ns, "addr", "add", nw.ip(i)+"/24", "dev", "eth0")
	ipCmd(t, "-n", ns, "link", "set", "eth0", "up")
}

// command runs name with args inside node i's namespace. `ip netns exec`
// execs the program, so the process is the agent itself and signals reach
// it directly.
func (nw *network) command(i int, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", nw.ns(i), name}, args...)...)
}

// cut drops everything between nodes i and j, both ways, with blackhole
// routes in both namespaces; heal removes them.
func (nw *network) cut(t testing.TB, i, j int) {
	t.Helper()
	ipCmd(t, "-n", nw.ns(i), "route", "add", "blackhole", nw.ip(j)+"/32")
	ipCmd(t, "-n", nw.ns(j), "route", "add", "blackhole", nw.ip(i)+"/32")
}

func (nw *network) heal(t testing.TB, i, j int) {
	t.Helper()
	ipCmd(t, "-n", nw.ns(i), "route", "del", "blackhole", nw.ip(j)+"/32")
	ipCmd(t, "-n", nw.ns(j), "route", "del", "blackhole", nw.ip(i)+"/32")
}

// cutOneWay drops what node i sends to node j, and nothing j sends to
// i; healOneWay undoes it.
func (nw *network) cutOneWay(t testing.TB, i, j int) {
	t.Helper()
	ipCmd(t, "-n", nw.ns(i), "route", "add", "blackhole", nw.ip(j)+"/32")
}

func (nw *network) healOneWay(t testing.TB, i, j int) {
	t.Helper()
	ipCmd(t, "-n", nw.ns(i), "route", "del", "blackhole", nw.ip(j)+"/32")
}

// removeStaleNetworks deletes the namespaces and bridges of netns
// clusters whose test process is gone (a run killed before its cleanup).
func removeStaleNetworks() {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if pid, ok := stalePID(e.Name(), netnsPrefix, "n"); ok {
			_ = exec.Command("ip", "netns", "del", e.Name()).Run()
			_ = exec.Command("ip", "link", "del", fmt.Sprintf("hb%d", pid)).Run()
		}
	}
	links, _ := filepath.Glob("/sys/class/net/hb*")
	for _, l := range links {
		if pid, ok := stalePID(filepath.Base(l), "hb", ""); ok {
			_ = exec.Command("ip", "link", "del", fmt.Sprintf("hb%d", pid)).Run()
		}
	}
}

// stalePID parses <prefix><pid><sep>... and reports whether that process
// is gone.
func stalePID(name, prefix, sep string) (int, bool) {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return 0, false
	}
	if sep != "" {
		rest, _, ok = strings.Cut(rest, sep)
		if !ok {
			return 0, false
		}
	}
	pid, err := strconv.Atoi(rest)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, syscall.Kill(pid, 0) == syscall.ESRCH
}
