package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Error is an error answer of the API.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// IsCode reports whether err is an API error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// IsRouteMissing reports whether err is a server's answer that it has no
// such route: a node of an older release, asked for something added since.
func IsRouteMissing(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound && e.Code == CodeInternal
}

// Client calls one node's management API.
type Client struct {
	// Base is the node's URL, e.g. http://127.0.0.1:9260.
	Base  string
	Token string
	HTTP  *http.Client
	// RetryNoLeader is how long calls are retried while the cluster has
	// no leader (an election, a leader that just went away). Such answers
	// come before anything was proposed, so a retry cannot apply a change
	// twice.
	RetryNoLeader time.Duration
}

// NewClient returns a client for addr (HOST[:PORT] or a URL); the port
// defaults to DefaultAPIPort.
func NewClient(addr, token string) *Client {
	base := addr
	if !strings.Contains(base, "://") {
		if _, _, err := net.SplitHostPort(base); err != nil {
			base = net.JoinHostPort(strings.Trim(base, "[]"), strconv.Itoa(DefaultAPIPort))
		}
		base = "http://" + base
	}
	return &Client{Base: strings.TrimRight(base, "/"), Token: token, HTTP: &http.Client{Timeout: 30 * time.Second}, RetryNoLeader: 15 * time.Second}
}

// UseTLS makes the client talk HTTPS with cfg (the cluster CA, and an
// operator's certificate if any). An http:// base becomes https://: a
// node with TLS answers nothing else.
func (c *Client) UseTLS(cfg *tls.Config) {
	if rest, ok := strings.CutPrefix(c.Base, "http://"); ok {
		c.Base = "https://" + rest
	}
	c.HTTP.Transport = &http.Transport{TLSClientConfig: cfg, Proxy: http.ProxyFromEnvironment}
}

// Do sends a request with an optional JSON body (raw bytes are sent as
// they are) and decodes a JSON answer into out (raw into *[]byte).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	contentType := "application/json"
	switch v := in.(type) {
	case nil:
	case []byte:
		body = v
		contentType = "application/octet-stream"
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		body = b
	}
	deadline := time.Now().Add(c.RetryNoLeader)
	for delay := 200 * time.Millisecond; ; delay = min(2*delay, 2*time.Second) {
		err := c.once(ctx, method, path, in != nil, body, contentType, out)
		if !IsCode(err, CodeNoLeader) || time.Now().Add(delay).After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
	}
}

func (c *Client) once(ctx context.Context, method, path string, hasBody bool, body []byte, contentType string, out any) error {
	var rd io.Reader
	if hasBody {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return err
	}
	if hasBody {
		req.Header.Set("Content-Type", contentType)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach %s: %w", c.Base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading answer of %s: %w", c.Base, err)
	}
	if resp.StatusCode >= 300 {
		return decodeError(resp.StatusCode, data)
	}
	switch o := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*o = data
		return nil
	default:
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decoding answer of %s %s: %w", method, path, err)
		}
		return nil
	}
}

func decodeError(status int, data []byte) error {
	var eb ErrorBody
	if json.Unmarshal(data, &eb) == nil && eb.Error.Message != "" {
		return &Error{Status: status, Code: eb.Error.Code, Message: eb.Error.Message}
	}
	msg := strings.TrimSpace(string(data))
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &Error{Status: status, Code: CodeInternal, Message: fmt.Sprintf("HTTP %d: %s", status, msg)}
}

func esc(s string) string { return url.PathEscape(s) }

// Status returns the cluster status; stale allows a node to answer from
// its own state without asking the leader.
func (c *Client) Status(ctx context.Context) (*ClusterStatus, error) {
	var s ClusterStatus
	return &s, c.Do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// Local returns the answering node's own status.
func (c *Client) Local(ctx context.Context) (*LocalStatus, error) {
	var s LocalStatus
	return &s, c.Do(ctx, http.MethodGet, "/v1/local", nil, &s)
}

// Members lists memberlist members.
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	var m []Member
	return m, c.Do(ctx, http.MethodGet, "/v1/members", nil, &m)
}

// RemoveNode removes a (dead) node from Raft and the configuration.
func (c *Client) RemoveNode(ctx context.Context, name string) (*Result, error) {
	var r Result
	return &r, c.Do(ctx, http.MethodDelete, "/v1/members/"+esc(name), nil, &r)
}

// TransferLeadership hands Raft leadership to another node.
func (c *Client) TransferLeadership(ctx context.Context, to string) (*LocalStatus, error) {
	var s LocalStatus
	return &s, c.Do(ctx, http.MethodPost, "/v1/leadership", TransferLeadership{To: to}, &s)
}

// SnapshotSave returns a snapshot of the replicated configuration.
func (c *Client) SnapshotSave(ctx context.Context) ([]byte, error) {
	var b []byte
	return b, c.Do(ctx, http.MethodGet, "/v1/snapshot", nil, &b)
}

// SnapshotRestore replaces the configuration with a saved snapshot.
func (c *Client) SnapshotRestore(ctx context.Context, snap []byte) (*Result, error) {
	var r Result
	return &r, c.Do(ctx, http.MethodPost, "/v1/snapshot", snap, &r)
}

// Targets lists targets.
func (c *Client) Targets(ctx context.Context) ([]Target, error) {
	var t []Target
	return t, c.Do(ctx, http.MethodGet, "/v1/targets", nil, &t)
}

// Target returns one target.
func (c *Client) Target(ctx context.Context, iqn string) (*Target, error) {
	var t Target
	return &t, c.Do(ctx, http.MethodGet, "/v1/targets/"+esc(iqn), nil, &t)
}

// CreateTarget adds a target.
func (c *Client) CreateTarget(ctx context.Context, req CreateTarget) (*Target, error) {
	var t Target
	return &t, c.Do(ctx, http.MethodPost, "/v1/targets", req, &t)
}

// DeleteTarget removes a target; force deletes its LUNs too.
func (c *Client) DeleteTarget(ctx context.Context, iqn string, force bool) (*Result, error) {
	var r Result
	path := "/v1/targets/" + esc(iqn)
	if force {
		path += "?force=1"
	}
	return &r, c.Do(ctx, http.MethodDelete, path, nil, &r)
}

// UpdateTarget changes alias, enabled flag and parameters.
func (c *Client) UpdateTarget(ctx context.Context, iqn string, req UpdateTarget) (*Target, error) {
	var t Target
	return &t, c.Do(ctx, http.MethodPatch, "/v1/targets/"+esc(iqn), req, &t)
}

// SetCHAP sets (or with an empty user clears) a target's CHAP.
func (c *Client) SetCHAP(ctx context.Context, iqn string, req SetCHAP) (*Result, error) {
	var r Result
	return &r, c.Do(ctx, http.MethodPut, "/v1/targets/"+esc(iqn)+"/chap", req, &r)
}

// AddACL allows an initiator to log in to a target.
func (c *Client) AddACL(ctx context.Context, iqn, initiator string) (*Result, error) {
	var r Result
	return &r, c.Do(ctx, http.MethodPost, "/v1/targets/"+esc(iqn)+"/acl", ACLEntry{Initiator: initiator}, &r)
}

// RemoveACL removes an initiator from a target's ACL.
func (c *Client) RemoveACL(ctx context.Context, iqn, initiator string) (*Result, error) {
	var r Result
	return &r, c.Do(ctx, http.MethodDelete, "/v1/targets/"+esc(iqn)+"/acl/"+esc(initiator), nil, &r)
}

// LUNs lists LUNs (devices).
func (c *Client) LUNs(ctx context.Context) ([]LUN, error) {
	var l []LUN
	return l, c.Do(ctx, http.MethodGet, "/v1/luns", nil, &l)
}

// LUN returns one LUN by name.
func (c *Client) LUN(ctx context.Context, name string) (*LUN, error) {
	var l LUN
	return &l, c.Do(ctx, http.MethodGet, "/v1/luns/"+esc(name), nil, &l)
}

// CreateLUN creates a LUN and maps it.
func (c *Client) CreateLUN(ctx context.Context, req CreateLUN) (*LUN, error) {
	var l LUN
	return &l, c.Do(ctx, http.MethodPost, "/v1/luns", req, &l)
}

// DeleteLUN unmaps LUN lun of target iqn (and deletes the LUN once
// unmapped everywhere).
func (c *Client) DeleteLUN(ctx context.Context, iqn string, lun uint64) (*Result, error) {
	var r Result
	return &r, c.Do(ctx, http.MethodDelete, "/v1/targets/"+esc(iqn)+"/luns/"+strconv.FormatUint(lun, 10), nil, &r)
}

// ResizeLUN grows a LUN.
func (c *Client) ResizeLUN(ctx context.Context, name string, size int64) (*LUN, error) {
	var l LUN
	return &l, c.Do(ctx, http.MethodPost, "/v1/luns/"+esc(name)+"/resize", Resize{Size: size}, &l)
}

// MoveLUN makes node to the owner of a LUN.
func (c *Client) MoveLUN(ctx context.Context, name, to string) (*LUN, error) {
	var l LUN
	return &l, c.Do(ctx, http.MethodPost, "/v1/luns/"+esc(name)+"/move", Move{To: to}, &l)
}

// ReplaceReplica replaces replica oldNode of a replicated LUN by newNode,
// which starts out of sync.
func (c *Client) ReplaceReplica(ctx context.Context, name, oldNode, newNode string) (*LUN, error) {
	var l LUN
	return &l, c.Do(ctx, http.MethodPost, "/v1/luns/"+esc(name)+"/replace-replica", ReplaceReplica{Old: oldNode, New: newNode}, &l)
}

// ForcePromote makes an out-of-sync replica the owner of a replicated LUN
// that has no live in-sync replica, or with req.DryRun says what that
// would override.
func (c *Client) ForcePromote(ctx context.Context, name string, req ForcePromote) (*ForcePromoteResult, error) {
	var r ForcePromoteResult
	return &r, c.Do(ctx, http.MethodPost, "/v1/luns/"+esc(name)+"/force-promote", req, &r)
}

// DrainNode marks a node drained and moves the LUNs it owns to others.
func (c *Client) DrainNode(ctx context.Context, name string) (*DrainResult, error) {
	return c.DrainNodeWith(ctx, name, Drain{})
}

// UndrainNode lets a node own LUNs again.
func (c *Client) UndrainNode(ctx context.Context, name string) (*Result, error) {
	var r Result
	return &r, c.Do(ctx, http.MethodPost, "/v1/nodes/"+esc(name)+"/undrain", nil, &r)
}

// ImportSCST applies an scst.conf as one atomic change.
func (c *Client) ImportSCST(ctx context.Context, conf []byte) (*ImportResult, error) {
	var r ImportResult
	return &r, c.Do(ctx, http.MethodPost, "/v1/import/scst", conf, &r)
}

// ExportSCST returns the configuration as an scst.conf.
func (c *Client) ExportSCST(ctx context.Context, showSecrets bool) ([]byte, error) {
	var b []byte
	path := "/v1/export/scst"
	if showSecrets {
		path += "?secrets=1"
	}
	return b, c.Do(ctx, http.MethodGet, path, nil, &b)
}
