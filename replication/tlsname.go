package replication

import (
	"crypto/tls"
	"fmt"
	"net"

	"github.com/hatarget/hatarget/cluster/pki"
)

// checkPeerName binds the node name a peer goes by on the replication
// protocol to the one its TLS certificate carries, when the node network
// is TLS: a member node's certificate must not let it speak as another
// node (take over that node's connections, or have its writes counted as
// that replica's). On plain TCP there is no certificate and the cluster
// secret alone authenticates.
//
// The certificate was verified in the TLS handshake, against the CA and
// the membership, by the node network's configuration: on the server by
// Go (VerifiedChains), on the client by its own VerifyConnection, which
// leaves VerifiedChains empty, hence the leaf is read directly there.
func checkPeerName(nc net.Conn, claimed string) error {
	tc, ok := nc.(interface{ ConnectionState() tls.ConnectionState })
	if !ok {
		return nil
	}
	cs := tc.ConnectionState()
	id, ok := pki.PeerIdentity(&cs)
	if !ok && len(cs.PeerCertificates) > 0 {
		var err error
		if id, err = pki.IdentityOf(cs.PeerCertificates[0]); err == nil {
			ok = true
		}
	}
	switch {
	case !ok:
		return protoErr("TLS connection without a node certificate")
	case id.Role != pki.RoleNode:
		return protoErr("the certificate of %s, not of a node", id)
	case id.Name != claimed:
		return fmt.Errorf("%w: the peer's certificate names node %s, not %s", ErrAuthentication, id.Name, claimed)
	}
	return nil
}
