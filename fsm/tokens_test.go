package fsm

import (
	"strings"
	"testing"
)

func tok(name string, role Role) Token {
	return Token{Name: name, Role: role, Hash: HashSecret(name + "-secret")}
}

func hasToken(name string, role Role, index uint64) func(t *testing.T, s *State, _ any) {
	return func(t *testing.T, s *State, _ any) {
		t.Helper()
		got := s.Tokens[name]
		if got == nil || got.Role != role || got.Index != index || got.Hash != HashSecret(name+"-secret") {
			t.Fatalf("token %s = %+v, want role %s at index %d", name, got, role, index)
		}
	}
}

func noToken(name string) func(t *testing.T, s *State, _ any) {
	return func(t *testing.T, s *State, _ any) {
		t.Helper()
		if s.Tokens[name] != nil {
			t.Fatalf("token %s is still there", name)
		}
	}
}

func TestTokens(t *testing.T) {
	start := build(t, &SetClusterVersion{Version: ClusterVersionTokens})
	bad := tok("x", RoleAdmin)
	bad.Hash = "not-hex"
	withIndex := tok("x", RoleAdmin)
	withIndex.Index = 9
	runScript(t, start, []step{
		{name: "create before bootstrap", cmd: &CreateToken{Token: tok("early", RoleAdmin)}, code: CodeConflict},
		{name: "bootstrap with an operator token", cmd: &BootstrapTokens{Token: tok("root", RoleOperator)}, code: CodeInvalid},
		{name: "bootstrap with a bad hash", cmd: &BootstrapTokens{Token: bad}, code: CodeInvalid},
		{name: "bootstrap with an index", cmd: &BootstrapTokens{Token: withIndex}, code: CodeInvalid},
		{name: "bootstrap with a bad name", cmd: &BootstrapTokens{Token: tok("-root", RoleAdmin)}, code: CodeInvalid},
		{name: "bootstrap", cmd: &BootstrapTokens{Token: tok("root", RoleAdmin)}, check: func(t *testing.T, s *State, res any) {
			hasToken("root", RoleAdmin, 7)(t, s, res)
			if s.TokensSince != 7 || !s.TokensEnabled() {
				t.Fatalf("TokensSince = %d, want 7", s.TokensSince)
			}
		}},
		{name: "second bootstrap", cmd: &BootstrapTokens{Token: tok("root2", RoleAdmin)}, code: CodeConflict},
		{name: "create", cmd: &CreateToken{Token: tok("ops", RoleOperator)}, check: hasToken("ops", RoleOperator, 9)},
		{name: "create read-only", cmd: &CreateToken{Token: tok("viewer", RoleReadOnly)}, check: hasToken("viewer", RoleReadOnly, 10)},
		{name: "same name", cmd: &CreateToken{Token: tok("ops", RoleAdmin)}, code: CodeConflict},
		{name: "same secret", cmd: &CreateToken{Token: Token{Name: "twin", Role: RoleAdmin, Hash: HashSecret("ops-secret")}}, code: CodeConflict},
		{name: "unknown role", cmd: &CreateToken{Token: tok("odd", "superuser")}, code: CodeInvalid},
		{name: "revoke the last admin", cmd: &RevokeToken{Name: "root"}, code: CodeConflict},
		{name: "revoke unknown", cmd: &RevokeToken{Name: "nobody"}, code: CodeNotFound},
		{name: "revoke", cmd: &RevokeToken{Name: "ops"}, check: noToken("ops")},
		{name: "second admin", cmd: &CreateToken{Token: tok("root2", RoleAdmin)}, check: hasToken("root2", RoleAdmin, 17)},
		{name: "revoke the first admin", cmd: &RevokeToken{Name: "root"}, check: noToken("root")},
		{name: "revoked name reused", cmd: &CreateToken{Token: tok("ops", RoleReadOnly)}, check: hasToken("ops", RoleReadOnly, 19)},
	})
}

// Token commands are refused, on every node alike, while the cluster may
// still go back to a release that cannot decode them.
func TestTokensNeedClusterVersion(t *testing.T) {
	for _, typ := range []CommandType{TypeBootstrapTokens, TypeCreateToken, TypeRevokeToken} {
		if got := commands[typ].ClusterVersion; got != ClusterVersionTokens {
			t.Errorf("%s: needs cluster version %d, want %d", typ, got, ClusterVersionTokens)
		}
		next, _, err := Empty().ApplyCommand(3, sampleCommand(typ), fakeEnv)
		if CodeOf(err) != CodeUnsupported || !strings.Contains(err.Error(), "finalize") {
			t.Errorf("%s below cluster version %d: %v, want an unsupported error saying to finalize", typ, ClusterVersionTokens, err)
		}
		if next.Index != 3 || next.TokensEnabled() {
			t.Errorf("%s: a refused command changed the state", typ)
		}
	}
	// Older types need no cluster version: a cluster in the middle of an
	// upgrade keeps working.
	for typ, spec := range commands {
		if spec.Since < ProtocolTokens && spec.ClusterVersion != 0 {
			t.Errorf("%s (protocol %d) needs cluster version %d", typ, spec.Since, spec.ClusterVersion)
		}
	}
}

func TestTokenProtocolGate(t *testing.T) {
	peers := []Peer{{Name: "n1", Protocol: Protocol}, {Name: "old", Protocol: ProtocolClusterVersion}}
	err := CheckCommand(sampleCommand(TypeCreateToken), peers)
	if CodeOf(err) != CodeUnsupported || !strings.Contains(err.Error(), "old (protocol 5)") {
		t.Fatalf("create_token with a protocol-5 voter: %v", err)
	}
	withTokens := sampleState()
	withTokens.Tokens = map[string]*Token{"root": {Name: "root", Role: RoleAdmin, Hash: HashSecret("x"), Index: 3}}
	withTokens.TokensSince = 3
	if got := RequiredProtocol(&Restore{State: withTokens}); got != ProtocolTokens {
		t.Errorf("restore of a state with tokens needs protocol %d, want %d", got, ProtocolTokens)
	}
	if got := RequiredProtocol(&Restore{State: sampleState()}); got >= ProtocolTokens {
		t.Errorf("restore of a state without tokens needs protocol %d", got)
	}
}

// A restore brings back the configuration, not the tokens: an old backup
// must neither reopen the API nor revive revoked tokens.
func TestRestoreKeepsTokens(t *testing.T) {
	s := build(t, &SetClusterVersion{Version: ClusterVersionTokens}, &BootstrapTokens{Token: tok("root", RoleAdmin)})
	backup := sampleState()
	backup.Tokens = map[string]*Token{"old": {Name: "old", Role: RoleAdmin, Hash: HashSecret("old"), Index: 1}}
	backup.TokensSince = 1
	next, _, err := s.ApplyCommand(10, &Restore{State: backup}, fakeEnv)
	if err != nil {
		t.Fatal(err)
	}
	if next.Tokens["old"] != nil || next.Tokens["root"] == nil || next.TokensSince != 2 {
		t.Fatalf("tokens after restore: %v since %d, want root since 2", SortedKeys(next.Tokens), next.TokensSince)
	}
}

func TestTokenBySecret(t *testing.T) {
	s := build(t, &SetClusterVersion{Version: ClusterVersionTokens},
		&BootstrapTokens{Token: tok("root", RoleAdmin)}, &CreateToken{Token: tok("ops", RoleOperator)})
	if got := s.TokenBySecret("ops-secret"); got == nil || got.Name != "ops" {
		t.Errorf("ops-secret finds %+v", got)
	}
	for _, wrong := range []string{"", "ops", "ops-secret ", HashSecret("ops-secret")} {
		if got := s.TokenBySecret(wrong); got != nil {
			t.Errorf("%q finds token %s", wrong, got.Name)
		}
	}
}

func TestSnapshotTokens(t *testing.T) {
	s := build(t, &SetClusterVersion{Version: ClusterVersionTokens}, &BootstrapTokens{Token: tok("root", RoleAdmin)})
	b, err := MarshalSnapshot(s)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "root-secret") {
		t.Fatal("the snapshot holds a token secret")
	}
	back, err := UnmarshalSnapshot(b)
	if err != nil {
		t.Fatal(err)
	}
	if back.TokenBySecret("root-secret") == nil || back.TokensSince != s.TokensSince {
		t.Fatalf("tokens lost in the snapshot: %s", b)
	}
	if strings.Contains(string(remarshal(t, Empty())), "tokens") {
		t.Error("a state without tokens encodes them: older releases would refuse its snapshots")
	}
	for name, bad := range map[string]string{
		"nil token":     `{"root":null}`,
		"misfiled":      `{"x":{"name":"root","role":"admin","hash":"` + HashSecret("a") + `","index":2}}`,
		"unknown role":  `{"root":{"name":"root","role":"god","hash":"` + HashSecret("a") + `","index":2}}`,
		"no bootstrap":  `{"root":{"name":"root","role":"admin","hash":"` + HashSecret("a") + `","index":2}}`,
		"unknown field": `{"root":{"name":"root","role":"admin","hash":"` + HashSecret("a") + `","index":2,"secret":"x"}}`,
	} {
		since := `,"tokens_since":2`
		if name == "no bootstrap" {
			since = ""
		}
		snap := `{"format":1,"protocol":6,"state":{"index":7,"nodes":{},"devices":{},"targets":{},"tokens":` + bad + since + `}}`
		if _, err := UnmarshalSnapshot([]byte(snap)); err == nil {
			t.Errorf("%s: snapshot accepted", name)
		}
	}
}
