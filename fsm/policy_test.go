package fsm

import (
	"strings"
	"testing"
)

func TestCheckPolicy(t *testing.T) {
	const iqn = "iqn.2025-01.com.example:t"
	good, good2 := CHAPUser{User: "joe", Secret: "12charsecret"}, CHAPUser{User: "tgt", Secret: "other-secret-2"}
	short := CHAPUser{User: "joe", Secret: "short"}
	tests := []struct {
		name string
		c    Command
		want string // "" when allowed
	}{
		{"incoming and mutual", &SetCHAP{IQN: iqn, Incoming: []CHAPUser{good}, Mutual: &good2}, ""},
		{"clearing CHAP", &SetCHAP{IQN: iqn}, ""},
		{"short incoming", &SetCHAP{IQN: iqn, Incoming: []CHAPUser{good, short}}, "incoming CHAP secret is 5 bytes"},
		{"short mutual", &SetCHAP{IQN: iqn, Incoming: []CHAPUser{good}, Mutual: &CHAPUser{User: "tgt", Secret: "tiny"}}, "mutual CHAP secret is 4 bytes"},
		{"mutual equal to incoming", &SetCHAP{IQN: iqn, Incoming: []CHAPUser{good}, Mutual: &CHAPUser{User: "tgt", Secret: good.Secret}}, "equals an incoming one"},
		{"import, target", &Import{Targets: []Target{{IQN: iqn, IncomingUsers: []CHAPUser{short}}}}, "target " + iqn},
		{"import, discovery", &Import{DiscoveryUsers: []CHAPUser{short}}, "discovery"},
		{"import, good", &Import{Targets: []Target{{IQN: iqn, IncomingUsers: []CHAPUser{good}, OutgoingUser: &good2}}, DiscoveryUsers: []CHAPUser{good}}, ""},
		{"other commands", &CreateTarget{IQN: iqn}, ""},
	}
	for _, tt := range tests {
		err := CheckPolicy(tt.c)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: refused: %v", tt.name, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: error %v; want one saying %q", tt.name, err, tt.want)
		case err != nil && CodeOf(err) != CodeInvalid:
			t.Errorf("%s: error %v is not %s", tt.name, err, CodeInvalid)
		}
	}
}

// TestPolicyNotApplied: a command that breaks the policy, already in the
// log (written by a release without it), still applies.
func TestPolicyNotApplied(t *testing.T) {
	s := Empty()
	const iqn = "iqn.2025-01.com.example:t"
	s, _, err := s.ApplyCommand(1, &CreateTarget{IQN: iqn}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.ApplyCommand(2, &SetCHAP{IQN: iqn, Incoming: []CHAPUser{{User: "joe", Secret: "short"}}}, Env{}); err != nil {
		t.Fatalf("an old entry with a short secret no longer applies: %v", err)
	}
}
