package authz_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hatarget/hatarget/cluster"
	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/test/nodetest"
)

// clusterSecret is the agents' shared --token: the nodes' credential.
const clusterSecret = "authz-cluster-secret"

// rank orders the roles as the API does.
var rank = map[string]int{api.RoleReadOnly: 1, api.RoleOperator: 2, api.RoleAdmin: 3, api.RoleNode: 4}

// fixture is a running cluster with a token per role.
type fixture struct {
	c        *nodetest.Cluster
	bin      string
	follower *nodetest.Agent
	secrets  map[string]string // role -> secret; RoleNode is the cluster secret
	names    map[string]string // role -> token name
	made     []string          // every secret the test was shown
}

func TestAuthorization(t *testing.T) {
	f := start(t)
	t.Run("routes", f.testRoutes)
	t.Run("revocation", f.testRevocation)
	t.Run("audit", f.testAudit)
}

func start(t *testing.T) *fixture {
	c := nodetest.StartCluster(t, 3, nodetest.ClusterOptions{Token: clusterSecret, Args: []string{"--metrics-public"}})
	leader := c.WaitLeader(t, 15*time.Second)
	f := &fixture{c: c, bin: nodetest.Binary(t), secrets: map[string]string{api.RoleNode: clusterSecret}, names: map[string]string{}}
	for _, a := range c.Nodes() {
		if a.Name != leader {
			f.follower = a
			break
		}
	}
	// A new cluster starts at this release's cluster version, which its
	// first leader commits just after its election; tokens need it.
	ok := nodetest.Poll(10*time.Second, 50*time.Millisecond, func() bool {
		var st api.ClusterStatus
		err := f.follower.Client().Do(context.Background(), http.MethodGet, "/v1/status", nil, &st)
		return err == nil && st.ClusterVersion >= 2
	})
	if !ok {
		t.Fatal("the new cluster did not reach cluster version 2")
	}
	var boot api.NewToken
	f.cliJSON(t, f.follower, clusterSecret, &boot, "token", "bootstrap", "--name", "root")
	f.made = append(f.made, boot.Secret)
	if boot.Role != api.RoleAdmin || boot.Secret == "" {
		t.Fatalf("bootstrap answered %+v", boot.Token)
	}
	f.secrets[api.RoleAdmin], f.names[api.RoleAdmin] = boot.Secret, "root"
	if out, err := f.cli(f.follower, boot.Secret, "token", "bootstrap"); err == nil || !strings.Contains(out, "bootstrapped already") {
		t.Fatalf("a second bootstrap: %v\n%s", err, out)
	}
	for role, name := range map[string]string{api.RoleOperator: "ops", api.RoleReadOnly: "viewer"} {
		f.secrets[role], f.names[role] = f.createToken(t, name, role), name
	}
	return f
}

// cli runs the hatarget CLI against a node with a token.
func (f *fixture) cli(a *nodetest.Agent, token string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, f.bin, append(args, "--addr", a.APIAddr(), "--token", token)...)
	cmd.Env = append(os.Environ(), "HATARGET_TOKEN=", "HATARGET_ADDR=")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (f *fixture) cliJSON(t *testing.T, a *nodetest.Agent, token string, v any, args ...string) {
	t.Helper()
	out, err := f.cli(a, token, append(args, "-o", "json")...)
	if err != nil {
		t.Fatalf("hatarget %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("hatarget %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (f *fixture) createToken(t *testing.T, name, role string) string {
	t.Helper()
	var tok api.NewToken
	f.cliJSON(t, f.follower, f.secrets[api.RoleAdmin], &tok, "token", "create", "--name", name, "--role", role)
	if tok.Name != name || tok.Role != role || tok.Secret == "" {
		t.Fatalf("token create answered %+v", tok.Token)
	}
	f.made = append(f.made, tok.Secret)
	return tok.Secret
}

// call makes one API request to a node, without the client's retries.
func call(t *testing.T, a *nodetest.Agent, method, path, token string, body []byte) (int, api.ErrorBody) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+a.APIAddr()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e api.ErrorBody
	_ = json.Unmarshal(b, &e)
	return resp.StatusCode, e
}

// wildcard fills a route's path wildcards with names nothing has, so that
// an allowed call changes nothing.
var wildcard = regexp.MustCompile(`\{[^}]+\}`)

// harmless is every test request's body: a valid request for the
// leadership route (to a voter that does not exist) and an unknown field,
// or not an scst.conf nor a snapshot, for every other route.
var harmless = []byte(`{"to":"authz-nobody"}`)

// testRoutes calls every route of the router through a follower as each
// role: refused with 403 naming the needed role exactly when the role is
// below it, never refused otherwise; without a token, 401 except /metrics
// (--metrics-public).
func (f *fixture) testRoutes(t *testing.T) {
	routes := cluster.Routes()
	if len(routes) < 40 {
		t.Fatalf("the router lists %d routes", len(routes))
	}
	for _, rt := range routes {
		method, path, _ := strings.Cut(rt.Pattern, " ")
		path = wildcard.ReplaceAllString(path, "authz-nobody")
		if _, ok := rank[rt.Role]; !ok {
			t.Errorf("%s: unknown role %q", rt.Pattern, rt.Role)
			continue
		}
		for role, secret := range f.secrets {
			status, e := call(t, f.follower, method, path, secret, harmless)
			switch refused := rank[role] < rank[rt.Role]; {
			case refused && (status != http.StatusForbidden || e.Error.Code != api.CodeForbidden ||
				!strings.Contains(e.Error.Message, "needs the "+rt.Role+" role")):
				t.Errorf("%s as %s: %d %+v, want 403 naming the %s role", rt.Pattern, role, status, e.Error, rt.Role)
			case !refused && (status == http.StatusForbidden || status == http.StatusUnauthorized):
				t.Errorf("%s as %s: refused (%d %s), but %s may call it", rt.Pattern, role, status, e.Error.Message, role)
			}
		}
		status, _ := call(t, f.follower, method, path, "", harmless)
		if want := http.StatusUnauthorized; rt.Pattern == "GET /metrics" {
			if status != http.StatusOK {
				t.Errorf("GET /metrics without a token on a --metrics-public node: %d", status)
			}
		} else if status != want {
			t.Errorf("%s without a token: %d, want %d", rt.Pattern, status, want)
		}
	}
}

// testRevocation revokes a token every node accepts and checks that all
// three refuse it within a second of the revocation's answer.
func (f *fixture) testRevocation(t *testing.T) {
	secret := f.createToken(t, "temp", api.RoleOperator)
	nodes := f.c.Nodes()
	for _, a := range nodes {
		ok := nodetest.Poll(2*time.Second, 20*time.Millisecond, func() bool {
			status, _ := call(t, a, http.MethodGet, "/v1/targets?stale=1", secret, nil)
			return status == http.StatusOK
		})
		if !ok {
			t.Fatalf("%s does not accept the new token", a.Name)
		}
	}
	if out, err := f.cli(f.follower, f.secrets[api.RoleAdmin], "token", "revoke", "temp"); err != nil {
		t.Fatalf("token revoke: %v\n%s", err, out)
	}
	revoked := time.Now()
	var wg sync.WaitGroup
	took := make([]time.Duration, len(nodes))
	for i, a := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodetest.Poll(3*time.Second, 10*time.Millisecond, func() bool {
				status, _ := call(t, a, http.MethodGet, "/v1/targets?stale=1", secret, nil)
				took[i] = time.Since(revoked)
				return status == http.StatusUnauthorized
			})
		}()
	}
	wg.Wait()
	for i, a := range nodes {
		t.Logf("%s refuses the revoked token %v after the revocation answered", a.Name, took[i].Round(time.Millisecond))
		if took[i] > time.Second {
			t.Errorf("%s still accepted the revoked token %v after the revocation", a.Name, took[i])
		}
	}
}

// testAudit makes changes with each writing role and checks that the
// audit log, through the CLI and in every node's file, names their token,
// and that no token secret is in any log, audit file or listing.
func (f *fixture) testAudit(t *testing.T) {
	const iqn = "iqn.2025-01.com.example:authz"
	ops := f.secrets[api.RoleOperator]
	for _, args := range [][]string{
		{"target", "create", iqn},
		{"target", "acl", "add", iqn, "iqn.1994-05.com.redhat:authz"},
		{"target", "chap", iqn, "--user", "authz", "--secret", "authz-chap-secret"},
	} {
		if out, err := f.cli(f.follower, ops, args...); err != nil {
			t.Fatalf("hatarget %s as operator: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if out, err := f.cli(f.follower, f.secrets[api.RoleReadOnly], "target", "delete", iqn); err == nil || !strings.Contains(out, "needs the operator role") {
		t.Fatalf("target delete as read-only: %v\n%s", err, out)
	}

	var recs []api.AuditRecord
	f.cliJSON(t, f.follower, f.secrets[api.RoleAdmin], &recs, "audit", "--since", "10m")
	want := map[string]string{ // command -> principal, for the changes this test made
		"bootstrap_tokens": "node:", "create_token": "root", "revoke_token": "root",
		"create_target": "ops", "set_acl": "ops", "set_chap": "ops",
	}
	got := map[string][]string{}
	for _, r := range recs {
		got[r.Command] = append(got[r.Command], r.Principal)
		if r.Principal == "unknown" || r.Principal == "anonymous" || r.Time.IsZero() {
			t.Errorf("record %d (%s) has no author or time: %+v", r.Index, r.Command, r)
		}
	}
	for command, who := range want {
		if !strings.Contains(strings.Join(got[command], " "), who) {
			t.Errorf("audit: %s by %v, want %s", command, got[command], who)
		}
	}
	if n := len(got["create_token"]); n != 3 {
		t.Errorf("audit: %d create_token records, want 3 (ops, viewer, temp)", n)
	}

	// Every node keeps its own file, and logs each change.
	last := recs[len(recs)-1].Index
	for _, a := range f.c.Nodes() {
		path := filepath.Join(a.DataDir, "audit.jsonl")
		ok := nodetest.Poll(2*time.Second, 20*time.Millisecond, func() bool {
			b, _ := os.ReadFile(path)
			return bytes.Contains(b, fmt.Appendf(nil, `"index":%d,`, last))
		})
		if !ok {
			t.Errorf("%s: %s lacks index %d", a.Name, path, last)
		}
		if st, err := os.Stat(path); err == nil && st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %s has mode %v, want 0600", a.Name, path, st.Mode().Perm())
		}
		if !strings.Contains(a.Logs(), `msg=audit`) || !strings.Contains(a.Logs(), "principal=ops") {
			t.Errorf("%s does not log the changes", a.Name)
		}
	}

	var list []api.Token
	f.cliJSON(t, f.follower, f.secrets[api.RoleAdmin], &list, "token", "list")
	listing, _ := json.Marshal(list)
	secrets := append(append([]string{}, f.made...), "authz-chap-secret")
	for _, a := range f.c.Nodes() {
		audit, _ := os.ReadFile(filepath.Join(a.DataDir, "audit.jsonl"))
		for _, s := range secrets {
			for what, text := range map[string]string{"logs": a.Logs(), "audit file": string(audit), "token list": string(listing)} {
				if strings.Contains(text, s) {
					t.Errorf("%s: a secret is in the %s", a.Name, what)
				}
			}
		}
	}
}
