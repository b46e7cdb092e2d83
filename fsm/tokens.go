package fsm

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"regexp"
)

// API tokens (protocol 6): once an operator bootstraps them, every API call
// names a token, and the token's role bounds what the call may do. The
// state keeps each token's SHA-256 only: the proposer generates the secret,
// hands it to the caller once and puts only its hash in the command, so
// neither the log, snapshots nor backups hold a usable credential.

// ProtocolTokens is the command protocol that introduced API tokens:
// bootstrap_tokens, create_token, revoke_token and the state's tokens.
const ProtocolTokens uint16 = 6

// ClusterVersionTokens is the cluster version from which token commands
// are accepted: v0.1.0, which a cluster below it may still go back to,
// cannot decode them.
const ClusterVersionTokens uint16 = 2

// Role bounds what a token may do; each role may do everything the lower
// ones may.
type Role string

const (
	// RoleReadOnly sees status, lists and metrics.
	RoleReadOnly Role = "read-only"
	// RoleOperator manages targets, LUNs, ACLs and moves.
	RoleOperator Role = "operator"
	// RoleAdmin also manages membership, tokens, snapshots and upgrades.
	RoleAdmin Role = "admin"
)

// Roles lists the token roles from the least to the most privileged.
var Roles = []Role{RoleReadOnly, RoleOperator, RoleAdmin}

// Valid reports whether r is one of Roles.
func (r Role) Valid() bool {
	for _, v := range Roles {
		if r == v {
			return true
		}
	}
	return false
}

// Token is one API token as the state keeps it.
type Token struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
	// Hash is HashSecret of the token's secret, in hex.
	Hash string `json:"hash"`
	// Index is the Raft index of the entry that created the token.
	Index uint64 `json:"index"`
}

// HashSecret returns the hex SHA-256 of a token secret: what the state
// keeps. A plain hash is enough because secrets are 256 random bits, not
// passwords: there is nothing to brute-force.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// TokensEnabled reports whether tokens were bootstrapped: from then on
// every API call needs one.
func (s *State) TokensEnabled() bool { return s.TokensSince != 0 }

// TokenBySecret returns the token whose secret is secret, or nil. It
// compares with every token in constant time, so that the answer's timing
// tells nothing about which hash was close.
func (s *State) TokenBySecret(secret string) *Token {
	want := []byte(HashSecret(secret))
	var found *Token
	for _, name := range SortedKeys(s.Tokens) {
		t := s.Tokens[name]
		if subtle.ConstantTimeCompare([]byte(t.Hash), want) == 1 {
			found = t
		}
	}
	return found
}

var (
	tokenNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)
	tokenHashRe = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

func (t *Token) check() error {
	if !tokenNameRe.MatchString(t.Name) {
		return errorf(CodeInvalid, "token name %q: want 1 to 64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit", t.Name)
	}
	if !t.Role.Valid() {
		return errorf(CodeInvalid, "token %s: role %q: want one of %v", t.Name, t.Role, Roles)
	}
	if !tokenHashRe.MatchString(t.Hash) {
		return errorf(CodeInvalid, "token %s: the hash must be a hex SHA-256", t.Name)
	}
	if t.Index != 0 {
		return errorf(CodeInvalid, "token %s: the index is set when the token is created", t.Name)
	}
	return nil
}

// addToken files t under its name with the index of the entry that
// creates it; s is the command's copy of the state.
func (s *State) addToken(t Token) (*Token, error) {
	if s.Tokens[t.Name] != nil {
		return nil, errorf(CodeConflict, "a token named %q exists already", t.Name)
	}
	for _, name := range SortedKeys(s.Tokens) {
		if s.Tokens[name].Hash == t.Hash {
			return nil, errorf(CodeConflict, "token %s: its secret is already another token's", t.Name)
		}
	}
	t.Index = s.Index
	s.Tokens = cloneTokens(s.Tokens)
	s.Tokens[t.Name] = &t
	return &t, nil
}

func cloneTokens(m map[string]*Token) map[string]*Token {
	c := make(map[string]*Token, len(m)+1)
	for k, v := range m {
		c[k] = v
	}
	return c
}

// TypeBootstrapTokens enables tokens with a first admin token.
const TypeBootstrapTokens CommandType = "bootstrap_tokens"

// BootstrapTokens turns tokens on, creating the first admin token. It
// succeeds once per cluster: afterwards only an admin token creates
// tokens, so a second bootstrap is refused rather than handing out
// another admin token to whoever asks.
type BootstrapTokens struct {
	Token Token `json:"token"`
}

func (*BootstrapTokens) Type() CommandType { return TypeBootstrapTokens }

func (c *BootstrapTokens) check() error {
	if err := c.Token.check(); err != nil {
		return err
	}
	if c.Token.Role != RoleAdmin {
		return errorf(CodeInvalid, "the bootstrap token must be an admin token, not %s", c.Token.Role)
	}
	return nil
}

func (c *BootstrapTokens) apply(s *State, _ Env) (any, error) {
	if s.TokensEnabled() {
		return nil, errorf(CodeConflict, "tokens were bootstrapped already (at index %d): ask an admin for a token (token create)", s.TokensSince)
	}
	t, err := s.addToken(c.Token)
	if err != nil {
		return nil, err
	}
	s.TokensSince = s.Index
	return t, nil
}

// TypeCreateToken adds a token.
const TypeCreateToken CommandType = "create_token"

// CreateToken adds a token once tokens are enabled.
type CreateToken struct {
	Token Token `json:"token"`
}

func (*CreateToken) Type() CommandType { return TypeCreateToken }

func (c *CreateToken) check() error { return c.Token.check() }

func (c *CreateToken) apply(s *State, _ Env) (any, error) {
	if !s.TokensEnabled() {
		return nil, errorf(CodeConflict, "tokens are not enabled: run token bootstrap first")
	}
	return s.addToken(c.Token)
}

// TypeRevokeToken removes a token.
const TypeRevokeToken CommandType = "revoke_token"

// RevokeToken removes a token: every node refuses it once it has applied
// the entry. The last admin token cannot be revoked, since bootstrap runs
// only once: without one, nobody could manage tokens again.
type RevokeToken struct {
	Name string `json:"name"`
}

func (*RevokeToken) Type() CommandType { return TypeRevokeToken }

func (c *RevokeToken) check() error {
	if c.Name == "" {
		return errorf(CodeInvalid, "revoke_token needs a token name")
	}
	return nil
}

func (c *RevokeToken) apply(s *State, _ Env) (any, error) {
	t := s.Tokens[c.Name]
	if t == nil {
		return nil, errorf(CodeNotFound, "no token named %q", c.Name)
	}
	if t.Role == RoleAdmin && s.countRole(RoleAdmin) == 1 {
		return nil, errorf(CodeConflict, "token %s is the last admin token: create another admin token before revoking it", c.Name)
	}
	s.Tokens = cloneTokens(s.Tokens)
	delete(s.Tokens, c.Name)
	return nil, nil
}

func (s *State) countRole(r Role) int {
	n := 0
	for _, t := range s.Tokens {
		if t.Role == r {
			n++
		}
	}
	return n
}

// checkStoredTokens refuses a loaded state whose tokens could not have
// been created by the commands above, so that authentication never meets
// a nil or misfiled token.
func (s *State) checkStoredTokens() error {
	for _, name := range SortedKeys(s.Tokens) {
		t := s.Tokens[name]
		if t == nil || t.Name != name {
			return errorf(CodeInvalid, "snapshot: token entry %q does not hold token %q", name, name)
		}
		stored := *t
		stored.Index = 0
		if err := stored.check(); err != nil {
			return errorf(CodeInvalid, "snapshot: %v", err)
		}
	}
	if len(s.Tokens) > 0 && !s.TokensEnabled() {
		return errorf(CodeInvalid, "snapshot: tokens without a bootstrap index")
	}
	return nil
}
