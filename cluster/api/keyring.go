package api

import (
	"context"
	"net/http"
)

// Keyring operations: install a gossip key everywhere, make it the one
// that encrypts (use), remove an old one. A rotation runs them in that
// order, each on every member before the next, so that no node ever
// receives a message encrypted with a key it lacks.
const (
	KeyringInstall = "install"
	KeyringUse     = "use"
	KeyringRemove  = "remove"
)

// KeyringChange is the body of POST /v1/keyring (and of the per-node
// internal route the answering node fans it out with).
type KeyringChange struct {
	Op string `json:"op"`
	// Key is base64 of 16, 24 or 32 bytes.
	Key string `json:"key"`
}

// KeyringNode is one node's gossip keyring, or why the operation failed
// there.
type KeyringNode struct {
	Node string `json:"node"`
	// Primary encrypts what the node sends; Keys (the primary first)
	// decrypt what it receives.
	Primary string   `json:"primary,omitempty"`
	Keys    []string `json:"keys,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// KeyringResult is the answer of the keyring routes: every registered or
// live node, in name order.
type KeyringResult struct {
	Nodes []KeyringNode `json:"nodes"`
}

// Failed lists the nodes where the operation failed.
func (r *KeyringResult) Failed() []string {
	var out []string
	for _, n := range r.Nodes {
		if n.Error != "" {
			out = append(out, n.Node)
		}
	}
	return out
}

// Keyring lists every node's gossip keys.
func (c *Client) Keyring(ctx context.Context) (*KeyringResult, error) {
	var r KeyringResult
	return &r, c.Do(ctx, http.MethodGet, "/v1/keyring", nil, &r)
}

// ChangeKeyring runs a keyring operation on every node.
func (c *Client) ChangeKeyring(ctx context.Context, op, key string) (*KeyringResult, error) {
	var r KeyringResult
	return &r, c.Do(ctx, http.MethodPost, "/v1/keyring", KeyringChange{Op: op, Key: key}, &r)
}
