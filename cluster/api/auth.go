package api

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// CodeForbidden answers 403: the caller is known, its role too low.
const CodeForbidden = "forbidden"

// Roles, from the least to the most privileged: each may do what the
// lower ones may. Tokens carry one of the first three; RoleNode is the
// cluster's own nodes (the agents' shared --token), the only ones allowed
// on /v1/internal/ routes.
const (
	RoleReadOnly = "read-only"
	RoleOperator = "operator"
	RoleAdmin    = "admin"
	RoleNode     = "node"
)

// Route is one route of the management API with the least role it needs.
type Route struct {
	// Pattern is the net/http ServeMux pattern: "METHOD /path/{name}".
	Pattern string `json:"pattern"`
	Role    string `json:"role"`
}

// Token is an API token as listed: never its secret.
type Token struct {
	Name string `json:"name"`
	Role string `json:"role"`
	// Index is the Raft index (generation) of the change that created it.
	Index uint64 `json:"index"`
}

// CreateToken is the body of POST /v1/tokens and /v1/tokens/bootstrap
// (which takes the name only and makes an admin token).
type CreateToken struct {
	Name string `json:"name"`
	Role string `json:"role,omitempty"`
}

// NewToken answers the creation of a token: the only answer that ever
// holds its secret.
type NewToken struct {
	Token
	Secret     string `json:"secret"`
	Generation uint64 `json:"generation"`
}

// AuditRecord is one committed change as a node's audit log keeps it.
type AuditRecord struct {
	// Index is the change's Raft index.
	Index uint64 `json:"index"`
	// Time is when the leader proposed it (zero for entries written
	// without audit data: "unknown" principal).
	Time time.Time `json:"time"`
	// Principal is the token name, "node:NAME" for the cluster's own
	// nodes, "anonymous" on a cluster without tokens, or "unknown".
	Principal string `json:"principal"`
	Role      string `json:"role,omitempty"`
	// Source is the caller's address as the node it called saw it.
	Source  string `json:"source,omitempty"`
	Command string `json:"command"`
	// Body is the command with secrets (CHAP secrets, token hashes)
	// redacted.
	Body any `json:"body,omitempty"`
}

// BootstrapTokens enables tokens and returns the first admin token.
func (c *Client) BootstrapTokens(ctx context.Context, name string) (*NewToken, error) {
	var t NewToken
	return &t, c.Do(ctx, http.MethodPost, "/v1/tokens/bootstrap", CreateToken{Name: name}, &t)
}

// CreateToken makes a token and returns it with its secret.
func (c *Client) CreateToken(ctx context.Context, req CreateToken) (*NewToken, error) {
	var t NewToken
	return &t, c.Do(ctx, http.MethodPost, "/v1/tokens", req, &t)
}

// Tokens lists the tokens, sorted by name.
func (c *Client) Tokens(ctx context.Context) ([]Token, error) {
	var ts []Token
	return ts, c.Do(ctx, http.MethodGet, "/v1/tokens", nil, &ts)
}

// RevokeToken removes a token.
func (c *Client) RevokeToken(ctx context.Context, name string) (*Result, error) {
	var r Result
	return &r, c.Do(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(name), nil, &r)
}

// Audit returns the audit records since a time (zero: all), oldest first.
func (c *Client) Audit(ctx context.Context, since time.Time) ([]AuditRecord, error) {
	path := "/v1/audit"
	if !since.IsZero() {
		path += "?since=" + url.QueryEscape(since.UTC().Format(time.RFC3339Nano))
	}
	var rs []AuditRecord
	return rs, c.Do(ctx, http.MethodGet, path, nil, &rs)
}
