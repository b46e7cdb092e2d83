package cluster

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm"
)

// requestFor makes a request that the route pattern matches, with every
// path wildcard filled in.
func requestFor(pattern string) *http.Request {
	method, path, _ := strings.Cut(pattern, " ")
	path = regexp.MustCompile(`\{[^}]+\}`).ReplaceAllString(path, "x")
	return httptest.NewRequest(method, path, nil)
}

// Every route the mux serves is one of the table's, with a role; the
// internal routes, and only they, are for nodes.
func TestRouteTable(t *testing.T) {
	n := &Node{}
	mux, table := n.apiMux()
	seen := map[string]bool{}
	for _, rt := range table {
		if seen[rt.pattern] {
			t.Errorf("%s is in the table twice", rt.pattern)
		}
		seen[rt.pattern] = true
		if _, pattern := mux.Handler(requestFor(rt.pattern)); pattern != rt.pattern {
			t.Errorf("%s: the mux serves it with %q: not registered", rt.pattern, pattern)
		}
		if roleRank[rt.role] == 0 {
			t.Errorf("%s: unknown role %q", rt.pattern, rt.role)
		}
		internal := strings.Contains(rt.pattern, " /v1/internal/")
		if internal != (rt.role == api.RoleNode) {
			t.Errorf("%s: role %s; the internal routes, and only they, are for nodes", rt.pattern, rt.role)
		}
	}
	if got := len(Routes()); got != len(table) {
		t.Errorf("Routes lists %d routes, the table has %d", got, len(table))
	}
}

// A route registered without a table entry is refused to everyone, nodes
// included, rather than served without a check.
func TestGuardRefusesRouteWithoutRule(t *testing.T) {
	n := &Node{fsm: newRaftFSM(fsm.Env{}), network: NewNetwork()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/listed", func(w http.ResponseWriter, _ *http.Request) {})
	mux.HandleFunc("GET /v1/unlisted", func(w http.ResponseWriter, _ *http.Request) {})
	h := n.guard(mux, []apiRoute{{pattern: "GET /v1/listed", role: api.RoleReadOnly}})
	for path, want := range map[string]int{"/v1/listed": http.StatusOK, "/v1/unlisted": http.StatusForbidden, "/v1/none": http.StatusNotFound} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		if w.Code != want {
			t.Errorf("GET %s on an open cluster: %d, want %d", path, w.Code, want)
		}
	}
}

func tokenState(t *testing.T, tokens ...fsm.Token) *fsm.State {
	t.Helper()
	s := fsm.Empty()
	cmds := []fsm.Command{&fsm.SetClusterVersion{Version: fsm.ClusterVersionTokens}}
	for i, tok := range tokens {
		if i == 0 {
			cmds = append(cmds, &fsm.BootstrapTokens{Token: tok})
		} else {
			cmds = append(cmds, &fsm.CreateToken{Token: tok})
		}
	}
	for i, c := range cmds {
		var err error
		if s, _, err = s.ApplyCommand(uint64(i+1), c, fsm.Env{}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func TestAuthenticate(t *testing.T) {
	tokens := tokenState(t,
		fsm.Token{Name: "root", Role: fsm.RoleAdmin, Hash: fsm.HashSecret("root-secret")},
		fsm.Token{Name: "ops", Role: fsm.RoleOperator, Hash: fsm.HashSecret("ops-secret")})
	tokens.Nodes = map[string]*fsm.Node{"n2": {Name: "n2", APIAddr: "10.0.0.2:9260"}}
	for _, tc := range []struct {
		name      string
		secret    string // cluster secret
		state     *fsm.State
		bearer    string
		remote    string
		forwarded map[string]string
		want      principal
		err       string
	}{
		{name: "open cluster", state: fsm.Empty(), want: principal{name: "anonymous", role: api.RoleNode, source: "192.0.2.1:1234"}},
		{name: "open cluster ignores a token", state: fsm.Empty(), bearer: "whatever", want: principal{name: "anonymous", role: api.RoleNode, source: "192.0.2.1:1234"}},
		{name: "cluster secret needed", secret: "s", state: fsm.Empty(), err: "requires an API token"},
		{name: "wrong cluster secret", secret: "s", state: fsm.Empty(), bearer: "S", err: "not valid"},
		{name: "cluster secret from elsewhere", secret: "s", state: tokens, bearer: "s", want: principal{name: "node", role: api.RoleNode, source: "192.0.2.1:1234"}},
		{name: "cluster secret from a node", secret: "s", state: tokens, bearer: "s", remote: "10.0.0.2:5555", want: principal{name: "node:n2", role: api.RoleNode, source: "10.0.0.2:5555"}},
		{name: "token", secret: "s", state: tokens, bearer: "ops-secret", want: principal{name: "ops", role: api.RoleOperator, source: "192.0.2.1:1234"}},
		{name: "unknown token", secret: "s", state: tokens, bearer: "nope", err: "not valid"},
		{name: "no token once enabled", secret: "s", state: tokens, err: "requires an API token"},
		{name: "forwarded by a node keeps the caller", secret: "s", state: tokens, bearer: "ops-secret", remote: "10.0.0.2:5555",
			forwarded: map[string]string{api.HeaderForwarded: "n2", headerClient: "198.51.100.7:4000", headerPrincipal: "node:n2"},
			want:      principal{name: "ops", role: api.RoleOperator, source: "198.51.100.7:4000"}},
		{name: "forwarded headers from a non-node are ignored", secret: "s", state: tokens, bearer: "ops-secret",
			forwarded: map[string]string{api.HeaderForwarded: "n2", headerClient: "198.51.100.7:4000"},
			want:      principal{name: "ops", role: api.RoleOperator, source: "192.0.2.1:1234"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := &Node{cfg: Config{Token: tc.secret}, fsm: newRaftFSM(fsm.Env{}), network: NewNetwork()}
			n.fsm.state.Store(tc.state)
			r := httptest.NewRequest(http.MethodGet, "/v1/status", nil)
			r.RemoteAddr = "192.0.2.1:1234"
			if tc.remote != "" {
				r.RemoteAddr = tc.remote
			}
			if tc.bearer != "" {
				r.Header.Set("Authorization", "Bearer "+tc.bearer)
			}
			for k, v := range tc.forwarded {
				r.Header.Set(k, v)
			}
			got, err := n.authenticate(r)
			switch {
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("err = %v, want %q", err, tc.err)
			case tc.err == "" && err != nil:
				t.Fatal(err)
			case tc.err == "" && got != tc.want:
				t.Fatalf("principal %+v, want %+v", got, tc.want)
			}
			if err != nil && tc.bearer != "" && strings.Contains(err.Error(), tc.bearer) {
				t.Errorf("the error shows the token: %v", err)
			}
		})
	}
}

func TestGuardRoles(t *testing.T) {
	n := &Node{cfg: Config{Token: "s"}, fsm: newRaftFSM(fsm.Env{}), network: NewNetwork()}
	n.fsm.state.Store(tokenState(t,
		fsm.Token{Name: "root", Role: fsm.RoleAdmin, Hash: fsm.HashSecret("root-secret")},
		fsm.Token{Name: "ops", Role: fsm.RoleOperator, Hash: fsm.HashSecret("ops-secret")},
		fsm.Token{Name: "view", Role: fsm.RoleReadOnly, Hash: fsm.HashSecret("view-secret")}))
	mux := http.NewServeMux()
	table := []apiRoute{{"GET /r", api.RoleReadOnly, nil}, {"POST /o", api.RoleOperator, nil}, {"POST /a", api.RoleAdmin, nil}, {"POST /v1/internal/x", api.RoleNode, nil}}
	for _, rt := range table {
		mux.HandleFunc(rt.pattern, func(w http.ResponseWriter, r *http.Request) {})
	}
	h := n.guard(mux, table)
	allowed := map[string][]string{
		"view-secret": {"GET /r"},
		"ops-secret":  {"GET /r", "POST /o"},
		"root-secret": {"GET /r", "POST /o", "POST /a"},
		"s":           {"GET /r", "POST /o", "POST /a", "POST /v1/internal/x"},
	}
	for secret, ok := range allowed {
		for _, rt := range table {
			r := requestFor(rt.pattern)
			r.Header.Set("Authorization", "Bearer "+secret)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			want := http.StatusForbidden
			for _, p := range ok {
				if p == rt.pattern {
					want = http.StatusOK
				}
			}
			if w.Code != want {
				t.Errorf("%s with %s: %d, want %d", rt.pattern, secret[:2], w.Code, want)
			}
			if w.Code == http.StatusForbidden && (!strings.Contains(w.Body.String(), "needs the "+rt.role+" role") || strings.Contains(w.Body.String(), secret)) {
				t.Errorf("%s refused with %s", rt.pattern, w.Body.String())
			}
		}
	}
}

func TestMetricsPublic(t *testing.T) {
	n := &Node{cfg: Config{Token: "s", MetricsPublic: true}, fsm: newRaftFSM(fsm.Env{}), network: NewNetwork()}
	mux := http.NewServeMux()
	table := []apiRoute{{"GET /metrics", api.RoleReadOnly, nil}, {"GET /v1/status", api.RoleReadOnly, nil}}
	for _, rt := range table {
		mux.HandleFunc(rt.pattern, func(w http.ResponseWriter, r *http.Request) {})
	}
	h := n.guard(mux, table)
	for path, want := range map[string]int{"/metrics": http.StatusOK, "/v1/status": http.StatusUnauthorized} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		if w.Code != want {
			t.Errorf("GET %s without a token: %d, want %d", path, w.Code, want)
		}
	}
}

// docs/api.md lists every route with its role, as the table has them.
func TestRoutesDocumented(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "api.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]string{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([A-Z]+ /[^`]*)` \\| ([a-z-]+) \\|$").FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = m[2]
	}
	for _, rt := range Routes() {
		if documented[rt.Pattern] != rt.Role {
			t.Errorf("docs/api.md lists %s with role %q, want %q", rt.Pattern, documented[rt.Pattern], rt.Role)
		}
		delete(documented, rt.Pattern)
	}
	for pattern := range documented {
		t.Errorf("docs/api.md lists %s, which is no route", pattern)
	}
}
