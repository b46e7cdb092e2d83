package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// Membership reports whether a node name is a current member of the
// cluster. The cluster package provides it; taking a function keeps pki
// free of the cluster's types.
type Membership func(name string) bool

// ServerConfig is the TLS configuration of a node channel's listener
// (Raft, I/O forwarding, replication): the peer must present a node
// certificate of the cluster CA naming a member, or the handshake fails
// before the peer can send a byte of the channel's protocol.
func (c *Credentials) ServerConfig(members Membership) *tls.Config {
	return c.serverConfig(tls.VersionTLS13, tls.RequireAndVerifyClientCert, policy{members: members})
}

// APIServerConfig is the TLS configuration of the management API, which
// nodes (leader forwarding) and operators both call. A client certificate
// is optional, as operators may authenticate with the API token alone; one
// that is presented must be of the CA and name a member node or an
// operator. Handlers tell who called with PeerIdentity. TLS 1.2 is allowed
// for the tools operators point at the API.
func (c *Credentials) APIServerConfig(members Membership) *tls.Config {
	return c.serverConfig(tls.VersionTLS12, tls.VerifyClientCertIfGiven, policy{members: members, operators: true})
}

// ClientConfig is the TLS configuration a node dials other nodes with: it
// presents the node's certificate and accepts a server whose certificate
// is a node certificate of the cluster CA naming a member. The name, not
// the address, is checked: nodes dial IP addresses, and an address says
// less than a name the CA signed. members may check for one node, when the
// dialer knows which it means to reach.
func (c *Credentials) ClientConfig(members Membership) *tls.Config {
	accept := policy{members: members}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Go's own verification would check the address against the
		// certificate's names; VerifyConnection verifies the chain
		// instead, by name, against the CA of the moment.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert := c.cur.Load().cert
			return &cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := accept.verifyServer(cs, c.cur.Load().roots); err != nil {
				return fmt.Errorf("refusing the server: %w", err)
			}
			return nil
		},
	}
}

// serverConfig builds, at every handshake, a configuration from the
// credentials of the moment, so that a handshake uses one loading
// throughout and a reload applies to the next one.
func (c *Credentials) serverConfig(minVersion uint16, auth tls.ClientAuthType, accept policy) *tls.Config {
	return &tls.Config{
		MinVersion: minVersion,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			b := c.cur.Load()
			return &tls.Config{
				MinVersion:   minVersion,
				Certificates: []tls.Certificate{b.cert},
				ClientAuth:   auth,
				ClientCAs:    b.roots,
				// Every connection is verified in full against the current
				// CA and membership; node channels are long-lived, so
				// resumption would save little and could let a session
				// outlive a removed member or a replaced CA.
				SessionTicketsDisabled: true,
				VerifyConnection:       accept.verifyClient,
			}, nil
		},
	}
}

// policy is whom a channel accepts once the chain checks out.
type policy struct {
	members   Membership
	operators bool
}

// verifyClient runs after Go verified the client's chain against the CA
// (ClientCAs) for client auth; it checks whom the certificate names.
func (p policy) verifyClient(cs tls.ConnectionState) error {
	switch {
	case len(cs.PeerCertificates) == 0:
		return nil // possible only where the certificate is optional
	case len(cs.VerifiedChains) == 0:
		return errors.New("refusing the client: certificate not verified")
	}
	id, err := IdentityOf(cs.VerifiedChains[0][0])
	if err == nil {
		err = p.check(id)
	}
	if err != nil {
		return fmt.Errorf("refusing the client: %w", err)
	}
	return nil
}

// verifyServer verifies a server's chain against roots for server auth,
// then checks whom the certificate names.
func (p policy) verifyServer(cs tls.ConnectionState, roots *x509.CertPool) error {
	id, err := verifyChain(cs.PeerCertificates, roots, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return err
	}
	return p.check(id)
}

func (p policy) check(id Identity) error {
	switch {
	case id.Role == RoleOperator && p.operators:
		return nil
	case id.Role != RoleNode:
		return fmt.Errorf("%s: only nodes may use this channel", id)
	case p.members == nil:
		return fmt.Errorf("%s: no membership to check the name against", id) // fail closed
	case !p.members(id.Name):
		return fmt.Errorf("%s is not a member of this cluster", id)
	}
	return nil
}

// PeerIdentity is whom the verified client certificate of a connection
// accepted with ServerConfig or APIServerConfig names (http.Request.TLS,
// tls.Conn.ConnectionState). It reports false when the client presented
// none.
func PeerIdentity(cs *tls.ConnectionState) (Identity, bool) {
	if cs == nil || len(cs.VerifiedChains) == 0 {
		return Identity{}, false
	}
	id, err := IdentityOf(cs.VerifiedChains[0][0])
	return id, err == nil
}
