package cluster

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm"
)

// Authorization: every route of the management API is in routeTable with
// the least role it needs, and the API serves a request only once the
// caller's principal holds that role. The check looks the role up by the
// pattern the mux matched, so a route registered without an entry (here or
// by another file's registration function) is refused to everyone rather
// than left open.

// apiRoute is one route: its mux pattern, the least role it needs and its
// handler (nil for routes another file registers on the mux).
type apiRoute struct {
	pattern string
	role    string
	handler http.Handler
}

// routeTable is every route of the management API. Roles follow the
// operator's model: read-only sees status, lists and metrics; operator
// manages targets, LUNs, ACLs and where LUNs run (moves, drains,
// rebalance, replicas); admin alone touches membership, tokens,
// snapshots, upgrades, the gossip keyring and the audit log; the internal
// routes are for the cluster's own nodes.
func (n *Node) routeTable() []apiRoute {
	h := func(f http.HandlerFunc) http.Handler { return f }
	return []apiRoute{
		{"GET /metrics", api.RoleReadOnly, h(n.serveMetrics)},
		{"GET /v1/local", api.RoleReadOnly, h(n.handleLocal)},
		{"GET /v1/status", api.RoleReadOnly, n.read(n.readStatus)},
		{"GET /v1/members", api.RoleReadOnly, h(n.handleMembers)},
		{"DELETE /v1/members/{name}", api.RoleAdmin, n.leaderOnly(n.handleRemoveNode)},
		{"POST /v1/leadership", api.RoleAdmin, n.leaderOnly(n.handleTransferLeadership)},
		{"GET /v1/snapshot", api.RoleAdmin, n.read(n.readSnapshot)},
		{"POST /v1/snapshot", api.RoleAdmin, n.write(n.buildRestore)},
		{"GET /v1/targets", api.RoleReadOnly, n.read(n.readTargets)},
		{"POST /v1/targets", api.RoleOperator, n.write(n.buildCreateTarget)},
		{"GET /v1/targets/{iqn}", api.RoleReadOnly, n.read(n.readTarget)},
		{"PATCH /v1/targets/{iqn}", api.RoleOperator, n.write(n.buildUpdateTarget)},
		{"DELETE /v1/targets/{iqn}", api.RoleOperator, n.write(n.buildDeleteTarget)},
		{"PUT /v1/targets/{iqn}/chap", api.RoleOperator, n.write(n.buildSetCHAP)},
		{"POST /v1/targets/{iqn}/acl", api.RoleOperator, n.write(n.buildAddACL)},
		{"DELETE /v1/targets/{iqn}/acl/{initiator}", api.RoleOperator, n.write(n.buildRemoveACL)},
		{"DELETE /v1/targets/{iqn}/luns/{lun}", api.RoleOperator, n.write(n.buildDeleteLUN)},
		{"GET /v1/luns", api.RoleReadOnly, n.read(n.readLUNs)},
		{"POST /v1/luns", api.RoleOperator, n.write(n.buildCreateLUN)},
		{"GET /v1/luns/{name}", api.RoleReadOnly, n.read(n.readLUN)},
		{"POST /v1/luns/{name}/resize", api.RoleOperator, n.write(n.buildResize)},
		{"POST /v1/luns/{name}/move", api.RoleOperator, n.write(n.buildMove)},
		{"POST /v1/luns/{name}/replace-replica", api.RoleOperator, n.write(n.buildReplaceReplica)},
		{"POST /v1/luns/{name}/force-promote", api.RoleOperator, n.leaderOnly(n.handleForcePromote)},
		{"POST /v1/nodes/{name}/drain", api.RoleOperator, n.leaderOnly(n.handleDrain)},
		{"POST /v1/nodes/{name}/undrain", api.RoleOperator, n.write(n.buildUndrain)},
		{"GET /v1/nodes/{name}/safety", api.RoleReadOnly, n.read(n.readStopSafety)},
		{"POST /v1/rebalance", api.RoleOperator, n.leaderOnly(n.handleRebalance)},
		{"POST /v1/upgrade/finalize", api.RoleAdmin, n.write(n.buildFinalize)},
		{"POST /v1/import/scst", api.RoleOperator, n.write(n.buildImport)},
		// The export holds CHAP secrets: whoever may set them may read them.
		{"GET /v1/export/scst", api.RoleOperator, n.read(n.readExport)},
		{"POST /v1/tokens/bootstrap", api.RoleAdmin, n.write(n.buildBootstrapTokens)},
		{"POST /v1/tokens", api.RoleAdmin, n.write(n.buildCreateToken)},
		{"GET /v1/tokens", api.RoleAdmin, n.read(n.readTokens)},
		{"DELETE /v1/tokens/{name}", api.RoleAdmin, n.write(n.buildRevokeToken)},
		{"GET /v1/audit", api.RoleAdmin, n.read(n.readAudit)},
		{"POST /v1/internal/reservation", api.RoleNode, n.write(n.buildReservation)},
		{"POST /v1/internal/lease", api.RoleNode, h(n.handleLease)},
		{"POST /v1/internal/in-sync", api.RoleNode, n.write(n.buildSetInSync)},
		{"GET /v1/internal/resync", api.RoleNode, h(n.handleResync)},
		// keyring.go registers these.
		{"GET /v1/keyring", api.RoleAdmin, nil},
		{"POST /v1/keyring", api.RoleAdmin, nil},
		{"GET /v1/internal/keyring", api.RoleNode, nil},
		{"POST /v1/internal/keyring", api.RoleNode, nil},
	}
}

// Routes lists every route of the management API with the role it needs,
// sorted by pattern: what docs/api.md documents and the authorization
// tests walk.
func Routes() []api.Route {
	var out []api.Route
	for _, rt := range (&Node{}).routeTable() {
		out = append(out, api.Route{Pattern: rt.pattern, Role: rt.role})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pattern < out[j].Pattern })
	return out
}

// serveMetrics serves /metrics; the handler is made per scrape so that the
// route table can be built without a registry (Routes).
func (n *Node) serveMetrics(w http.ResponseWriter, r *http.Request) {
	promhttp.HandlerFor(n.cfg.Registry, promhttp.HandlerOpts{}).ServeHTTP(w, r)
}

// roleRank orders the roles; a principal may call a route when its rank
// is at least the route's.
var roleRank = map[string]int{api.RoleReadOnly: 1, api.RoleOperator: 2, api.RoleAdmin: 3, api.RoleNode: 4}

// principal is who made a request, as the node that serves it
// authenticated them.
type principal struct {
	// name is the token's name, "node:NAME" (or "node" when the cluster
	// secret comes from an address no node has), or "anonymous" on a
	// cluster without tokens or secret.
	name string
	role string
	// source is the caller's address: for a request a follower forwarded,
	// the address the follower saw.
	source string
}

// Principals of a cluster without credentials, and of changes the node
// makes by itself.
const (
	anonymousName = "anonymous"
	nodePrefix    = "node:"
)

type principalKey struct{}

func withPrincipal(ctx context.Context, p principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// principalOf returns the request's principal; a request that never went
// through the API middleware is the node's own doing.
func (n *Node) principalOf(ctx context.Context) principal {
	if p, ok := ctx.Value(principalKey{}).(principal); ok {
		return p
	}
	return n.self()
}

// self is the principal of the changes this node makes on its own.
func (n *Node) self() principal {
	return principal{name: nodePrefix + n.cfg.Name, role: api.RoleNode}
}

// Headers a follower adds to the requests it forwards, which the leader
// believes only from a node: the address of the caller the follower
// served, and the caller's principal.
const (
	headerClient    = "X-Hatarget-Client"
	headerPrincipal = "X-Hatarget-Principal"
)

// guard authenticates every request and authorizes it against the role
// its route needs, then serves it with the principal in its context.
func (n *Node) guard(mux *http.ServeMux, table []apiRoute) http.Handler {
	need := make(map[string]string, len(table))
	for _, rt := range table {
		need[rt.pattern] = rt.role
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pattern := mux.Handler(r)
		role, known := need[pattern]
		if pattern == "GET /metrics" && n.cfg.MetricsPublic {
			n.serve(mux, w, r, principal{name: anonymousName, source: r.RemoteAddr})
			return
		}
		p, err := n.authenticateCaughtUp(r)
		if err != nil {
			writeError(w, http.StatusUnauthorized, api.CodeUnauthorized, err.Error())
			return
		}
		switch {
		case pattern == "":
			// No route: the mux answers 404 or 405 to an authenticated caller.
		case !known:
			writeError(w, http.StatusForbidden, api.CodeForbidden, fmt.Sprintf("%s has no authorization rule: refused to everyone", pattern))
			return
		case roleRank[p.role] < roleRank[role]:
			writeError(w, http.StatusForbidden, api.CodeForbidden, fmt.Sprintf("%s needs the %s role; %s has %s", pattern, role, p.name, p.role))
			return
		}
		n.serve(mux, w, r, p)
	})
}

func (n *Node) serve(mux *http.ServeMux, w http.ResponseWriter, r *http.Request, p principal) {
	w.Header().Set(api.HeaderGeneration, fmt.Sprint(n.fsm.State().Index))
	mux.ServeHTTP(w, r.WithContext(withPrincipal(r.Context(), p)))
}

// authenticate finds the request's principal. A bearer token is checked
// before certificates, so that a request a follower forwards with its
// caller's token stays that caller's although the follower's certificate
// names a node; tokens are checked against this node's applied state, so
// a revoked token is refused here as soon as the revocation is applied.
func (n *Node) authenticate(r *http.Request) (principal, error) {
	source := n.sourceOf(r)
	secret, hasBearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	state := n.fsm.State()
	open := n.cfg.Token == "" && !state.TokensEnabled()
	switch {
	case hasBearer && n.cfg.Token != "" && subtle.ConstantTimeCompare([]byte(secret), []byte(n.cfg.Token)) == 1:
		return n.nodePrincipal(state, source, ""), nil
	case hasBearer && state.TokensEnabled():
		if t := state.TokenBySecret(secret); t != nil {
			return principal{name: t.Name, role: string(t.Role), source: source}, nil
		}
		return principal{}, errUnknownToken
	}
	if name, ok := n.certNode(r); ok {
		return n.nodePrincipal(state, source, name), nil
	}
	switch {
	case open:
		// No credentials configured: the API is open, as before tokens.
		return principal{name: anonymousName, role: api.RoleNode, source: source}, nil
	case hasBearer:
		return principal{}, errUnknownToken
	}
	return principal{}, errors.New("this cluster requires an API token: pass --token or set HATARGET_TOKEN")
}

// errUnknownToken: the bearer token is neither the cluster secret nor a
// token this node knows. It never shows the token.
var errUnknownToken = errors.New("the API token is not valid here (revoked, or not one of this cluster)")

// tokenCatchUp bounds how long a follower waits to learn of a token it
// does not know, so that a caller that created a token and uses it at once
// on another node is not refused: the leader tells followers of a commit
// within Raft's CommitTimeout (50 ms). It also delays the refusal of a
// revoked or wrong token on followers, so it stays well below the second
// within which every node must refuse a revoked token.
const tokenCatchUp = 200 * time.Millisecond

// authenticateCaughtUp is authenticate, retried on a follower as it
// applies entries while the token is unknown there, for up to
// tokenCatchUp. The leader has applied every change it answered, so it
// answers at once.
func (n *Node) authenticateCaughtUp(r *http.Request) (principal, error) {
	deadline := time.NewTimer(tokenCatchUp)
	defer deadline.Stop()
	for {
		changed := n.fsm.Changed()
		p, err := n.authenticate(r)
		if !errors.Is(err, errUnknownToken) || n.raft == nil || n.isLeader() {
			return p, err
		}
		select {
		case <-changed:
		case <-deadline.C:
			return p, err
		case <-r.Context().Done():
			return p, err
		}
	}
}

// certNode is the node a request comes from by its certificate. A request
// a node forwarded without a bearer token is its caller's, not the
// forwarder's: it is a node's only when the forwarder says the caller was
// one (headerPrincipal, set by forwardToLeader).
func (n *Node) certNode(r *http.Request) (string, bool) {
	name, ok := n.peerNode(r)
	if !ok || r.Header.Get(api.HeaderForwarded) == "" {
		return name, ok
	}
	caller, isNode := strings.CutPrefix(r.Header.Get(headerPrincipal), nodePrefix)
	return caller, isNode
}

// nodePrincipal names a caller holding a node credential: by its
// certificate when it has one, else by the node whose host it calls from.
func (n *Node) nodePrincipal(state *fsm.State, source, certName string) principal {
	name := certName
	if name == "" {
		name = nodeAt(state, hostOf(source))
	}
	if name == "" {
		return principal{name: "node", role: api.RoleNode, source: source}
	}
	return principal{name: nodePrefix + name, role: api.RoleNode, source: source}
}

// sourceOf is the caller's address: the connection's peer, or, on a
// request a node forwarded, the address that node served.
func (n *Node) sourceOf(r *http.Request) string {
	client := r.Header.Get(headerClient)
	if client == "" || r.Header.Get(api.HeaderForwarded) == "" {
		return r.RemoteAddr
	}
	if _, ok := n.peerNode(r); ok || nodeAt(n.fsm.State(), hostOf(r.RemoteAddr)) != "" {
		return client
	}
	return r.RemoteAddr
}

// nodeAt returns the node whose API listens on host, or "" when none or
// several do (nodes sharing a host cannot be told apart by address).
func nodeAt(s *fsm.State, host string) string {
	found := ""
	for _, name := range fsm.SortedKeys(s.Nodes) {
		if hostOf(s.Nodes[name].APIAddr) != host {
			continue
		}
		if found != "" {
			return ""
		}
		found = name
	}
	return found
}

func hostOf(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// nodeCredential reports whether the nodes can tell each other from other
// callers: by the cluster secret (--token) or by their certificates. Tokens
// need one, or the internal routes would be open to every caller.
func (n *Node) nodeCredential() bool { return n.cfg.Token != "" || n.network.TLS() }

// tokenPrefix marks hatarget token secrets, so that secret scanners and
// people recognise one.
const tokenPrefix = "hat_"

// newTokenSecret makes a secret of 256 random bits. The leader makes it
// and puts only its hash in the command, so the secret exists only in
// the answer to the caller.
func newTokenSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating a token: %w", err)
	}
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// tokenBuilder turns a token request into the command that stores the
// token's hash, and renders its result with the secret, once.
func tokenBuilder(mk func(fsm.Token) fsm.Command, name, role string) (fsm.Command, func(any, uint64) any, error) {
	secret, err := newTokenSecret()
	if err != nil {
		return nil, nil, err
	}
	c := mk(fsm.Token{Name: name, Role: fsm.Role(role), Hash: fsm.HashSecret(secret)})
	render := func(res any, gen uint64) any {
		t, _ := res.(*fsm.Token)
		if t == nil {
			return api.Result{Generation: gen}
		}
		return api.NewToken{Token: apiToken(t), Secret: secret, Generation: gen}
	}
	return c, render, nil
}

func (n *Node) buildBootstrapTokens(r *http.Request) (fsm.Command, func(any, uint64) any, error) {
	var req api.CreateToken
	if err := decodeBody(r, &req); err != nil {
		return nil, nil, err
	}
	if req.Role != "" && req.Role != api.RoleAdmin {
		return nil, nil, badRequest("the bootstrap token is an admin token, not %s", req.Role)
	}
	if !n.nodeCredential() {
		return nil, nil, &api.Error{Status: http.StatusConflict, Code: api.CodeConflict, Message: "tokens need the nodes to " +
			"authenticate each other, or every caller could use the internal routes: start every agent with the same " +
			"--token (the cluster secret) or with TLS certificates first"}
	}
	if req.Name == "" {
		req.Name = "bootstrap"
	}
	return tokenBuilder(func(t fsm.Token) fsm.Command { return &fsm.BootstrapTokens{Token: t} }, req.Name, api.RoleAdmin)
}

func (n *Node) buildCreateToken(r *http.Request) (fsm.Command, func(any, uint64) any, error) {
	var req api.CreateToken
	if err := decodeBody(r, &req); err != nil {
		return nil, nil, err
	}
	return tokenBuilder(func(t fsm.Token) fsm.Command { return &fsm.CreateToken{Token: t} }, req.Name, req.Role)
}

func (n *Node) buildRevokeToken(r *http.Request) (fsm.Command, func(any, uint64) any, error) {
	return &fsm.RevokeToken{Name: r.PathValue("name")}, resultOnly, nil
}

func (n *Node) readTokens(_ *http.Request, s *fsm.State) (any, error) {
	out := []api.Token{}
	for _, name := range fsm.SortedKeys(s.Tokens) {
		out = append(out, apiToken(s.Tokens[name]))
	}
	return out, nil
}

func apiToken(t *fsm.Token) api.Token {
	return api.Token{Name: t.Name, Role: string(t.Role), Index: t.Index}
}
