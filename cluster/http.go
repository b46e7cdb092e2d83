package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm"
)

// maxBody bounds request bodies (an scst.conf or a snapshot).
const maxBody = 16 << 20

func (n *Node) startAPI() error {
	ln, err := n.network.Listen(PortAPI, n.cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("cluster: API listener: %w", err)
	}
	n.apiLn = ln
	n.api = &http.Server{Handler: n.routes(), ReadHeaderTimeout: 10 * time.Second}
	return nil
}

func (n *Node) serveAPI() {
	if err := n.api.Serve(n.apiLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
		n.log.Error("management API stopped", "err", err)
	}
}

// routes serves every route behind the authorization guard (auth.go).
func (n *Node) routes() http.Handler {
	mux, table := n.apiMux()
	return n.guard(mux, table)
}

// apiMux registers the routes of routeTable, and the keyring's.
func (n *Node) apiMux() (*http.ServeMux, []apiRoute) {
	mux := http.NewServeMux()
	table := n.routeTable()
	for _, rt := range table {
		if rt.handler != nil {
			mux.Handle(rt.pattern, rt.handler)
		}
	}
	n.keyringRoutes(mux)
	return mux, table
}

// builder turns a request into a command, run on the leader only, and
// renders the command's result.
type builder func(r *http.Request) (fsm.Command, func(res any, gen uint64) any, error)

// write serves a change: on a follower the request goes to the leader
// untouched; on the leader it is built, proposed and answered.
func (n *Node) write(build builder) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !n.isLeader() {
			n.forwardToLeader(w, r)
			return
		}
		if err := n.settle(r.Context()); err != nil {
			writeErr(w, err)
			return
		}
		c, render, err := build(r)
		if err != nil {
			writeErr(w, err)
			return
		}
		before := n.fsm.State()
		res, gen, err := n.proposeAs(n.principalOf(r.Context()), c)
		if err != nil {
			writeErr(w, err)
			return
		}
		if c.Type() == fsm.TypeDeleteLUN || c.Type() == fsm.TypeDeleteTarget {
			n.removeCreatedFiles(before, n.fsm.State())
		}
		w.Header().Set(api.HeaderGeneration, strconv.FormatUint(gen, 10))
		writeJSON(w, http.StatusOK, render(res, gen))
	}
}

// read serves a query: linearizable through the leader unless ?stale=1.
func (n *Node) read(fn func(r *http.Request, s *fsm.State) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("stale") == "" {
			if !n.isLeader() {
				n.forwardToLeader(w, r)
				return
			}
			if err := n.barrier(r.Context()); err != nil {
				writeErr(w, err)
				return
			}
		}
		v, err := fn(r, n.fsm.State())
		if err != nil {
			writeErr(w, err)
			return
		}
		switch b := v.(type) {
		case []byte:
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = w.Write(b)
			return
		case text:
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = w.Write(b)
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

// text is a read answered as plain text rather than JSON.
type text []byte

// leaderOnly runs h on the leader, forwarding from followers.
func (n *Node) leaderOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !n.isLeader() {
			n.forwardToLeader(w, r)
			return
		}
		if err := n.settle(r.Context()); err != nil {
			writeErr(w, err)
			return
		}
		h(w, r)
	}
}

func (n *Node) isLeader() bool { return n.raft.State() == raft.Leader }

// forwardToLeader replays the request on the leader's API. A request that
// was already forwarded once is not forwarded again: leadership moved
// under it, and the client should retry.
func (n *Node) forwardToLeader(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(api.HeaderForwarded) != "" {
		writeError(w, http.StatusServiceUnavailable, api.CodeNoLeader, "Raft leadership changed while the request was forwarded; retry")
		return
	}
	name, addr := n.leader()
	if addr == "" {
		writeError(w, http.StatusServiceUnavailable, api.CodeNoLeader, n.noLeaderMessage())
		return
	}
	target := &url.URL{Scheme: "http", Host: addr}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = r.Host
			pr.Out.Header.Set(api.HeaderForwarded, n.cfg.Name)
			// The leader authenticates the caller's own token again; these
			// tell it what only this node saw (auth.go).
			p := n.principalOf(r.Context())
			pr.Out.Header.Set(headerClient, p.source)
			pr.Out.Header.Set(headerPrincipal, p.name)
		},
		Transport: n.forward.Transport,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			writeError(w, http.StatusServiceUnavailable, api.CodeNoLeader, fmt.Sprintf("cannot reach the leader %s at %s: %v", name, addr, err))
		},
	}
	proxy.ServeHTTP(w, r)
}

// noLeaderMessage explains why there is no leader in terms an operator
// can act on.
func (n *Node) noLeaderMessage() string {
	alive, total := 0, 0
	members := n.members()
	f := n.raft.GetConfiguration()
	if f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			total++
			if m, ok := members[string(s.ID)]; ok && m.State == memberlist.StateAlive {
				alive++
			}
		}
	}
	if total == 0 {
		return "this node is not part of a cluster yet: start the other nodes with the same --bootstrap-expect, or join it to a running cluster with --join"
	}
	return fmt.Sprintf("no Raft leader: %d of %d voters are reachable and a majority (%d) is needed; an election may be running, retry in a few seconds", alive, total, total/2+1)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, api.ErrorBody{Error: api.ErrorDetail{Code: code, Message: msg}})
}

// writeErr maps an error to its status and stable code.
func writeErr(w http.ResponseWriter, err error) {
	var fe *fsm.Error
	var ae *api.Error
	switch {
	case errors.As(err, &fe):
		status := map[fsm.Code]int{
			fsm.CodeInvalid: http.StatusBadRequest, fsm.CodeNotFound: http.StatusNotFound,
			fsm.CodeConflict: http.StatusConflict, fsm.CodeUnsupported: http.StatusUnprocessableEntity,
		}[fe.Code]
		if status == 0 {
			status = http.StatusInternalServerError
		}
		writeError(w, status, string(fe.Code), fe.Msg)
	case errors.As(err, &ae):
		writeError(w, ae.Status, ae.Code, ae.Message)
	case errors.Is(err, errOutcomeUnknown):
		writeError(w, http.StatusServiceUnavailable, api.CodeUnavailable, err.Error())
	case errors.Is(err, errNotLeader):
		writeError(w, http.StatusServiceUnavailable, api.CodeNoLeader, "Raft leadership changed during the request; retry")
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, raft.ErrEnqueueTimeout):
		writeError(w, http.StatusGatewayTimeout, api.CodeTimeout, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, api.CodeInternal, err.Error())
	}
}

func badRequest(format string, args ...any) error {
	return &api.Error{Status: http.StatusBadRequest, Code: api.CodeInvalid, Message: fmt.Sprintf(format, args...)}
}

// decodeBody reads a JSON request body strictly: a misspelt field is an
// error, not silently ignored.
func decodeBody(r *http.Request, v any) error {
	d := json.NewDecoder(io.LimitReader(r.Body, maxBody))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return badRequest("request body: %v", err)
	}
	return nil
}

func readRawBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, badRequest("request body: %v", err)
	}
	if len(b) > maxBody {
		return nil, badRequest("request body is larger than %d bytes", maxBody)
	}
	return b, nil
}

// resultOnly renders writes that answer with the generation only.
func resultOnly(_ any, gen uint64) any { return api.Result{Generation: gen} }

// fetchLocal asks another node for its own status over the node network.
func (n *Node) fetchLocal(ctx context.Context, addr string) (*api.LocalStatus, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/local", nil)
	if err != nil {
		return nil, err
	}
	if n.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+n.cfg.Token)
	}
	resp, err := n.forward.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	var s api.LocalStatus
	return &s, json.NewDecoder(resp.Body).Decode(&s)
}

func pathLUN(r *http.Request) (uint64, error) {
	s := r.PathValue("lun")
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > fsm.MaxLUN {
		return 0, badRequest("LUN %q: want a number from 0 to %d", s, fsm.MaxLUN)
	}
	return v, nil
}

func isTrue(s string) bool {
	switch strings.ToLower(s) {
	case "1", "true", "yes":
		return true
	}
	return false
}
