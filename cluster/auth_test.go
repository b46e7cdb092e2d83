package cluster_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/cluster/clustertest"
	"github.com/hatarget/hatarget/fsm"
)

// TestTokens: bootstrap once, roles through a follower (forwarded writes
// keep their caller), revocation seen by every node, and the audit log
// naming each change's token.
func TestTokens(t *testing.T) {
	c := clustertest.New(t, 3, clustertest.Options{Token: "cluster-secret"})
	ctx := t.Context()
	leader := c.Leader(t)
	follower := c.Followers(leader)[0]
	as := func(i int, secret string) *api.Client { return api.NewClient(c.Member(i).Config.APIAddr, secret) }
	// A new cluster starts at this release's cluster version, which its
	// first leader commits just after its election.
	if why := clustertest.Poll(5*time.Second, func() (bool, string) {
		v := c.Node(follower).State().ActiveVersion()
		return v >= fsm.ClusterVersionTokens, fmt.Sprintf("cluster version %d", v)
	}); why != "" {
		t.Fatal(why)
	}

	root, err := c.Client(follower).BootstrapTokens(ctx, "root")
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	if root.Role != api.RoleAdmin || !strings.HasPrefix(root.Secret, "hat_") {
		t.Fatalf("bootstrap answered %+v", root.Token)
	}
	_, err = as(follower, root.Secret).BootstrapTokens(ctx, "again")
	apiErr(t, err, api.CodeConflict, http.StatusConflict)
	ops, err := as(follower, root.Secret).CreateToken(ctx, api.CreateToken{Name: "ops", Role: api.RoleOperator})
	if err != nil {
		t.Fatal(err)
	}
	view, err := as(leader, root.Secret).CreateToken(ctx, api.CreateToken{Name: "view", Role: api.RoleReadOnly})
	if err != nil {
		t.Fatal(err)
	}

	iqn := iqnPrefix + "tokens"
	if _, err := as(follower, ops.Secret).CreateTarget(ctx, api.CreateTarget{IQN: iqn}); err != nil {
		t.Fatalf("operator creating a target through a follower: %v", err)
	}
	_, err = as(follower, view.Secret).CreateTarget(ctx, api.CreateTarget{IQN: iqn + "2"})
	apiErr(t, err, api.CodeForbidden, http.StatusForbidden)
	if _, err := as(follower, view.Secret).Targets(ctx); err != nil {
		t.Fatalf("read-only listing targets: %v", err)
	}
	_, err = as(follower, ops.Secret).Tokens(ctx)
	apiErr(t, err, api.CodeForbidden, http.StatusForbidden)
	_, err = as(follower, "").Targets(ctx)
	apiErr(t, err, api.CodeUnauthorized, http.StatusUnauthorized)
	_, err = as(follower, root.Secret).RevokeToken(ctx, "root")
	apiErr(t, err, api.CodeConflict, http.StatusConflict)

	list, err := as(leader, root.Secret).Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(list); strings.Contains(got, ops.Secret) || len(list) != 3 {
		t.Errorf("token list %s", got)
	}

	if _, err := as(leader, root.Secret).RevokeToken(ctx, "ops"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := 1; i <= 3; i++ {
		if msg := clustertest.Poll(time.Second-time.Since(start), func() (bool, string) {
			_, err := as(i, ops.Secret).Local(ctx)
			return api.IsCode(err, api.CodeUnauthorized), fmt.Sprintf("n%d: %v", i, err)
		}); msg != "" {
			t.Fatalf("the revoked token is still accepted a second after: %s", msg)
		}
	}

	recs, err := as(follower, root.Secret).Audit(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]string{}
	for _, r := range recs {
		by[r.Command] += r.Principal + " "
		if strings.Contains(fmt.Sprint(r.Body), root.Secret) {
			t.Errorf("record %d holds a secret", r.Index)
		}
	}
	for command, who := range map[string]string{"bootstrap_tokens": "node", "create_token": "root", "create_target": "ops", "revoke_token": "root", "register_node": "node:"} {
		if !strings.Contains(by[command], who) {
			t.Errorf("%s recorded by %q, want %s", command, by[command], who)
		}
	}
}

// TestTokensNeedNodeCredential: without a cluster secret, nodes could not
// tell each other from callers once tokens are on.
func TestTokensNeedNodeCredential(t *testing.T) {
	c := clustertest.New(t, 1, clustertest.Options{})
	_, err := c.Client(1).BootstrapTokens(t.Context(), "root")
	apiErr(t, err, api.CodeConflict, http.StatusConflict)
	if !strings.Contains(err.Error(), "--token") {
		t.Errorf("refusal does not say what to do: %v", err)
	}
}
