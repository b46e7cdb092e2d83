// Package deploy runs the scripts of deploy/ against fakes.
//
// rolling_upgrade_test.go runs deploy/rolling-upgrade.sh for real, with a
// fake ssh first in PATH: it records every command line it is given and
// runs it with sh on this machine, where hatarget, systemctl, dpkg,
// dpkg-deb and sudo are shell functions answering from canned files (cat,
// mktemp, install and the rest are the real ones). Each fake host has its
// own directory holding the binary its unit's ExecStart names. The script
// needs jq; shellcheck checks it when installed (CI must install both).
package deploy

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The cluster of the fakes: n2 leads, so the plan's order is n1, n3, n2.
// The hosts are named as an operator might: by node name, by API address,
// with a user.
var hostsArgs = []string{"n1", "10.0.0.2", "root@n3"}

// wantOrder is hostsArgs in the order of the plan, the leader last.
var wantOrder = []string{"n1", "root@n3", "10.0.0.2"}

const statusJSON = `{
  "leader": "n2", "term": 3, "commit_index": 40, "generation": 30, "cluster_version": 1, "mixed_versions": false,
  "nodes": [
    {"name": "n1", "address": "10.0.0.1:9260", "raft_role": "follower", "voter": true, "healthy": true, "ready": true, "gossip": "alive", "version": "v0.2.0", "protocol": 5},
    {"name": "n2", "address": "10.0.0.2:9260", "raft_role": "leader", "voter": true, "healthy": true, "ready": true, "gossip": "alive", "version": "v0.2.0", "protocol": 5},
    {"name": "n3", "address": "10.0.0.3:9260", "raft_role": "follower", "voter": true, "healthy": true, "ready": true, "gossip": "alive", "version": "v0.2.0", "protocol": 5}
  ]
}
`

// planJSON is `cluster upgrade plan -o json` as cmd/hatarget/upgrade_plan.go
// writes it. It is canned, so it says the same before and after a drain:
// every node safe and idle.
func planJSON(n3Safety string) string {
	return `{
  "cluster_version": 1, "mixed_versions": false, "target_release": "v0.2.0",
  "nodes": [
    {"name": "n1", "release": "v0.1.0", "protocol": 5, "upgraded": false, "healthy": true, "owns": ["db0"],
     "safety": {"node": "n1", "safe": true, "idle": true}},
    {"name": "n3", "release": "v0.1.0", "protocol": 5, "upgraded": false, "healthy": true, "copies": ["db0 (in-sync)"],
     "safety": ` + n3Safety + `},
    {"name": "n2", "release": "v0.1.0", "protocol": 5, "upgraded": false, "leader": true, "healthy": true,
     "safety": {"node": "n2", "safe": true, "idle": true}}
  ],
  "next": "n1"
}
`
}

const (
	safeIdle = `{"node": "n3", "safe": true, "idle": true}`
	blocked  = `{"node": "n3", "safe": false, "blocked": true, "idle": false,
	  "reasons": ["LUN db0: n3 holds its only in-sync copy and no resync of another copy runs"]}`
	// unknown is what a v0.1.0 node answering the plan gives: no safety.
	unknown = `null, "safety_error": "the answering node's release has no stop-safety check"`
)

// The fakes. ssh runs the command line as a remote shell would (sh, eval
// rather than sh -c to spare a process), with the "remote" commands first
// in PATH; FAKE_FAIL_HOST and FAKE_FAIL_CMD make one command fail.
var fakes = map[string]string{
	"bin/ssh": `#!/bin/sh
host=$1
shift
printf '%s\t%s\n' "$host" "$*" >>"$FAKE/ssh.log"
if [ -n "${FAKE_FAIL_HOST:-}" ] && [ "$host" = "$FAKE_FAIL_HOST" ]; then
	case "$*" in *"$FAKE_FAIL_CMD"*) echo "fake ssh: '$*' fails on $host" >&2; exit 1 ;; esac
fi
FAKE_HOST=$host
. "$FAKE/remote.sh"
eval "$*"
`,
	// The commands of the fake hosts, as functions: a process less for
	// every command.
	"remote.sh": `
hatarget() {
	if [ "${HATARGET_TOKEN:-}" != "${FAKE_TOKEN:-}" ]; then
		echo "fake hatarget: token '${HATARGET_TOKEN:-}', want '${FAKE_TOKEN:-}'" >&2
		return 1
	fi
	json=false
	case " $* " in *" -o json "*) json=true ;; esac
	case "$1 $2" in
	"cluster status") if $json; then cat "$FAKE/status.json"; else echo "fake cluster status"; fi ;;
	"cluster upgrade")
		case $3 in
		plan) if $json; then cat "$FAKE/plan.json"; else echo "fake upgrade plan"; fi ;;
		status) echo "fake upgrade status" ;;
		finalize) echo "fake finalize" ;;
		*) return 2 ;;
		esac ;;
	"node drain" | "node undrain") echo "fake: $2 $3" ;;
	*) echo "fake hatarget: unexpected: $*" >&2; return 2 ;;
	esac
}
systemctl() {
	exe=$FAKE/hosts/$FAKE_HOST/usr/bin/hatarget
	case $1 in
	show)
		echo "ExecStart={ path=$exe ; argv[]=$exe agent ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }"
		echo "ActiveState=active"
		echo "SubState=running" ;;
	stop | start | daemon-reload) ;;
	*) echo "fake systemctl: unexpected: $*" >&2; return 2 ;;
	esac
}
dpkg() {
	case " $* " in *" -i "*) ;; *) echo "fake dpkg: unexpected: $*" >&2; return 2 ;; esac
	cp "$FAKE/new-hatarget" "$FAKE/hosts/$FAKE_HOST/usr/bin/hatarget"
}
dpkg_deb() {
	case $1 in
	--field) printf 'Package: hatarget\nVersion: 0.2.0\nArchitecture: amd64\n' ;;
	-x) mkdir -p "$3/usr/bin" && cp "$FAKE/new-hatarget" "$3/usr/bin/hatarget" ;;
	*) echo "fake dpkg-deb: unexpected: $*" >&2; return 2 ;;
	esac
}
alias dpkg-deb=dpkg_deb
sudo() {
	[ "$1" = -n ] && shift
	"$@"
}
`,
	"new-hatarget": `#!/bin/sh
echo '{"version": "v0.2.0"}'
`,
	"old-hatarget": `#!/bin/sh
echo '{"version": "v0.1.0"}'
`,
}

type fakeCluster struct {
	dir    string
	script string
	env    []string
}

func newFakeCluster(t *testing.T, plan string) *fakeCluster {
	t.Helper()
	if _, err := exec.LookPath("jq"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("jq not found: rolling-upgrade.sh needs it (apt-get install jq)")
		}
		t.Skip("jq not found: rolling-upgrade.sh needs it (apt-get install jq)")
	}
	dir := t.TempDir()
	files := map[string]string{"status.json": statusJSON, "plan.json": plan, "hatarget_0.2.0_amd64.deb": "not really a package\n"}
	for name, text := range fakes {
		files[name] = text
	}
	for _, h := range hostsArgs {
		files["hosts/"+h+"/usr/bin/hatarget"] = fakes["old-hatarget"]
	}
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "tmp"), 0o755); err != nil {
		t.Fatal(err)
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HATARGET_") && !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "TMPDIR=") {
			env = append(env, kv)
		}
	}
	env = append(env, "PATH="+filepath.Join(dir, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"),
		"FAKE="+dir, "TMPDIR="+filepath.Join(dir, "tmp"), "HATARGET_UPGRADE_INTERVAL=0")
	return &fakeCluster{dir: dir, script: filepath.Join(repoRoot(t), "deploy", "rolling-upgrade.sh"), env: env}
}

// run runs the script with args then the hosts; it returns its output
// (stdout and stderr) and exit code.
func (f *fakeCluster) run(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command("bash", append(append([]string{f.script}, args...), hostsArgs...)...)
	cmd.Env = append(slices.Clone(f.env), env...)
	cmd.Dir = f.dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &exit):
		return out.String(), exit.ExitCode()
	}
	t.Fatalf("running %s: %v", f.script, err)
	return "", 0
}

type call struct{ host, cmd string }

// calls are the command lines the fake ssh was given, in order.
func (f *fakeCluster) calls(t *testing.T) []call {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, "ssh.log"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		t.Fatal(err)
	}
	var cs []call
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		host, cmd, _ := strings.Cut(line, "\t")
		cs = append(cs, call{host, cmd})
	}
	return cs
}

// step names a command that changes something, "" for one that only reads.
func step(cmd string) string {
	for _, s := range []struct{ in, step string }{
		{"cat >", "copy"},
		{"hatarget node drain", "drain"},
		{"systemctl stop", "stop"},
		{"dpkg --force-confdef --force-confold -i", "install"},
		{"install -m 0755", "install"},
		{"systemctl daemon-reload", "reload"},
		{"systemctl start", "start"},
		{"hatarget node undrain", "undrain"},
		{"cluster upgrade finalize", "finalize"},
	} {
		if strings.Contains(cmd, s.in) {
			return s.step
		}
	}
	return ""
}

// changes lists "host step" for every command that changes something.
func changes(cs []call) []string {
	var out []string
	for _, c := range cs {
		if s := step(c.cmd); s != "" {
			out = append(out, c.host+" "+s)
		}
	}
	return out
}

func wantChanges(hosts ...string) []string {
	var out []string
	for _, h := range hosts {
		for _, s := range []string{"copy", "drain", "stop", "install", "reload", "start", "undrain"} {
			out = append(out, h+" "+s)
		}
	}
	return out
}

func (f *fakeCluster) binary(t *testing.T, host string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, "hosts", host, "usr/bin/hatarget"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// indexOf is the index of the first call at or after from on host (any
// host for "") whose command contains s, or -1.
func indexOf(cs []call, from int, host, s string) int {
	for i := max(from, 0); i < len(cs); i++ {
		if (host == "" || cs[i].host == host) && strings.Contains(cs[i].cmd, s) {
			return i
		}
	}
	return -1
}

// TestUpgradeScript: (a) the hosts in the plan's order, the leader last,
// each through every step in order, with the safety checks between them.
func TestUpgradeScript(t *testing.T) {
	t.Parallel()
	f := newFakeCluster(t, planJSON(safeIdle))
	out, code := f.run(t, []string{"FAKE_TOKEN=s3cret"}, "--binary", "new-hatarget", "--token", "s3cret", "--finalize")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	cs := f.calls(t)
	want := append(wantChanges(wantOrder...), wantOrder[len(wantOrder)-1]+" finalize")
	if got := changes(cs); !slices.Equal(got, want) {
		t.Errorf("changes:\n  %s\nwant:\n  %s\noutput:\n%s", strings.Join(got, "\n  "), strings.Join(want, "\n  "), out)
	}
	// The checks: a plan before the drain (asked on any host) and one on
	// the host between the drain and the stop; the node's health after
	// the start and before the undrain.
	prev := 0
	for _, h := range wantOrder {
		drain := indexOf(cs, prev, h, "node drain")
		if plan := indexOf(cs, prev, "", "cluster upgrade plan -o json"); plan < 0 || plan > drain {
			t.Errorf("%s: no upgrade plan before the drain", h)
		}
		if plan, stop := indexOf(cs, drain, h, "cluster upgrade plan -o json"), indexOf(cs, drain, h, "systemctl stop"); plan < 0 || plan > stop {
			t.Errorf("%s: no upgrade plan between drain and stop", h)
		}
		start, undrain := indexOf(cs, drain, h, "systemctl start"), indexOf(cs, drain, h, "node undrain")
		if health := indexOf(cs, start, h, "cluster status -o json"); health < 0 || health > undrain {
			t.Errorf("%s: no cluster status between start and undrain", h)
		}
		prev = undrain
	}
	// Each host's commands go to its node's API address.
	if i := indexOf(cs, 0, "root@n3", "node drain n3 --wait --timeout 1800s --addr 10.0.0.3:9260"); i < 0 {
		t.Errorf("root@n3: no drain of n3 through its API 10.0.0.3:9260")
	}
	for _, h := range hostsArgs {
		if got := f.binary(t, h); got != fakes["new-hatarget"] {
			t.Errorf("%s: installed binary is\n%s", h, got)
		}
	}
	for _, c := range cs {
		if strings.Contains(c.cmd, "s3cret") {
			t.Errorf("the token is on a command line: %s: %s", c.host, c.cmd)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(f.dir, "tmp", "hatarget-upgrade.*")); len(left) > 0 {
		t.Errorf("copies left behind: %v", left)
	}
}

// TestUpgradeScriptStops: (b) the script stops at the first failing step
// with a non-zero exit, names the host and the step, and changes nothing
// on the hosts after it. The second case also runs --deb with --sudo.
func TestUpgradeScriptStops(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, plan string
		env, args  []string
		// The failure, what it says, and the changes made.
		failed, why string
		said        []string
		changes     []string
	}{
		// n3's check fails, after n1 is upgraded.
		{"safety check", planJSON(blocked), nil, []string{"--binary", "new-hatarget"},
			"FAILED on host root@n3 (node n3), step: safety check before drain", "n3 holds its only in-sync copy",
			[]string{"upgraded: n1", "not touched: 10.0.0.2"},
			wantChanges("n1")},
		// The first host's start fails; --deb with --sudo.
		{"start", planJSON(safeIdle), []string{"FAKE_FAIL_HOST=n1", "FAKE_FAIL_CMD=systemctl start"},
			[]string{"--deb", "hatarget_0.2.0_amd64.deb", "--sudo"},
			"FAILED on host n1 (node n1), step: start", "systemctl start hatarget failed",
			[]string{"n1: drained, new release installed", "not touched: 10.0.0.2 root@n3"},
			[]string{"n1 copy", "n1 drain", "n1 stop", "n1 install", "n1 reload", "n1 start"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFakeCluster(t, tc.plan)
			out, code := f.run(t, tc.env, tc.args...)
			if code != 1 {
				t.Fatalf("exit %d, want 1:\n%s", code, out)
			}
			for _, s := range append([]string{tc.failed, tc.why}, tc.said...) {
				if !strings.Contains(out, s) {
					t.Errorf("output does not say %q:\n%s", s, out)
				}
			}
			cs := f.calls(t)
			if got := changes(cs); !slices.Equal(got, tc.changes) {
				t.Errorf("changes:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.changes, "\n  "))
			}
			if got := f.binary(t, "n1"); got != fakes["new-hatarget"] {
				t.Errorf("n1 was not upgraded")
			}
			for _, h := range []string{"10.0.0.2", "root@n3"} {
				if got := f.binary(t, h); got != fakes["old-hatarget"] {
					t.Errorf("%s was upgraded", h)
				}
			}
			if slices.Contains(tc.args, "--sudo") && indexOf(cs, 0, "n1", "sudo -n dpkg --force-confdef --force-confold -i") < 0 {
				t.Errorf("--sudo --deb: no sudo -n dpkg -i on n1")
			}
		})
	}
}

func TestUpgradeScriptUnknownHost(t *testing.T) {
	t.Parallel()
	f := newFakeCluster(t, planJSON(safeIdle))
	out, code := f.run(t, nil, "--binary", "new-hatarget", "n9") // then the three known hosts
	if code != 1 || !strings.Contains(out, "no node of the cluster has the name or API address of host n9") {
		t.Errorf("exit %d, output:\n%s", code, out)
	}
	if got := changes(f.calls(t)); len(got) > 0 {
		t.Errorf("changed: %v", got)
	}
}

// TestUpgradeScriptDryRun: (c) --dry-run reads the cluster, prints the
// commands in the order it would run them, and changes nothing. The plan
// cannot say whether n3 can stop (a v0.1.0 node answered): the script
// says so and leaves it to drain --wait.
func TestUpgradeScriptDryRun(t *testing.T) {
	t.Parallel()
	f := newFakeCluster(t, planJSON(unknown))
	out, code := f.run(t, nil, "--deb", "hatarget_0.2.0_amd64.deb", "--dry-run", "--finalize")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if got := changes(f.calls(t)); len(got) > 0 {
		t.Errorf("dry run changed: %v", got)
	}
	for _, h := range hostsArgs {
		if got := f.binary(t, h); got != fakes["old-hatarget"] {
			t.Errorf("dry run installed on %s", h)
		}
	}
	var drains []string
	for _, line := range strings.Split(out, "\n") {
		if _, cmd, ok := strings.Cut(line, "would run: ssh "); ok && strings.Contains(cmd, "node drain") {
			drains = append(drains, strings.Fields(cmd)[0])
		}
	}
	if !slices.Equal(drains, wantOrder) {
		t.Errorf("dry run drains %v, want %v:\n%s", drains, wantOrder, out)
	}
	for _, s := range []string{
		"would run: ssh 10.0.0.2 hatarget cluster upgrade finalize",
		"[root@n3] safety check: the cluster cannot say whether n3 can be stopped (the answering node's release has no stop-safety check); node drain --wait checks",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("dry run does not say %q:\n%s", s, out)
		}
	}
}

func TestUpgradeScriptShellcheck(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("shellcheck"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("shellcheck not found (apt-get install shellcheck)")
		}
		t.Skip("shellcheck not found, deploy/rolling-upgrade.sh NOT checked (apt-get install shellcheck)")
	}
	cmd := exec.Command("shellcheck", "deploy/rolling-upgrade.sh")
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("shellcheck deploy/rolling-upgrade.sh: %v\n%s", err, out)
	}
}

// repoRoot is the directory holding go.mod, above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}
