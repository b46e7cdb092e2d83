package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"net/http/httptest"
	"testing"

	"github.com/hatarget/hatarget/cluster/pki"
)

// TestPeerNode: only a verified node certificate naming a current member
// makes a caller a node.
func TestPeerNode(t *testing.T) {
	ca := newTestCA(t)
	cert := func(id pki.Identity) *tls.ConnectionState {
		iss, err := ca.Issue(pki.CertRequest{Identity: id})
		if err != nil {
			t.Fatal(err)
		}
		return &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{iss.Cert, ca.Cert}}}
	}
	n := &Node{network: NewTLSNetwork(testCreds(t, ca, "n1"), nil)}
	n.network.setMembers(map[string]struct{}{"n1": {}, "n2": {}})
	for _, tc := range []struct {
		name string
		cs   *tls.ConnectionState
		want string
	}{
		{"member node", cert(pki.Node("n2")), "n2"},
		{"removed node", cert(pki.Node("n3")), ""},
		{"operator", cert(pki.Operator("n2")), ""},
		{"no certificate", &tls.ConnectionState{}, ""},
		{"plain HTTP", nil, ""},
	} {
		r := httptest.NewRequest("GET", "/v1/internal/keyring", nil)
		r.TLS = tc.cs
		if got, ok := n.peerNode(r); got != tc.want || ok != (tc.want != "") {
			t.Errorf("%s: peerNode = %q, %v; want %q", tc.name, got, ok, tc.want)
		}
	}
}
