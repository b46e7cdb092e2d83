package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
)

// Credentials are a node's certificate, key and cluster CA: the files they
// come from and their current contents. The TLS configurations built from
// them read the current contents at every handshake, so that Reload (on
// SIGHUP) applies to the next connection and leaves the established ones,
// and with them iSCSI sessions and Raft leadership, alone.
type Credentials struct {
	files Files
	node  string
	cur   atomic.Pointer[bundle]
}

// bundle is one loading of the files, swapped whole so that a handshake
// never mixes the certificate of one loading with the CA of another.
type bundle struct {
	cert  tls.Certificate
	leaf  *x509.Certificate
	roots *x509.CertPool
	id    Identity
}

// Load reads a node's credentials and checks them as a peer would, so that
// a mistake shows at start rather than as refused connections: the
// certificate must chain to the CA file, be a node certificate valid now,
// match the key and, unless node is empty, name node.
func Load(files Files, node string) (*Credentials, error) {
	b, err := loadBundle(files, node)
	if err != nil {
		return nil, fmt.Errorf("TLS credentials: %w", err)
	}
	c := &Credentials{files: files, node: node}
	c.cur.Store(b)
	return c, nil
}

// Reload rereads the files. When they do not load or check, the running
// credentials stay and the error says why: a half-copied renewal must not
// cut the node off its peers.
func (c *Credentials) Reload() error {
	b, err := loadBundle(c.files, c.node)
	if err != nil {
		return fmt.Errorf("reloading TLS credentials, keeping the running ones: %w", err)
	}
	c.cur.Store(b)
	return nil
}

// Identity is whom the current certificate names.
func (c *Credentials) Identity() Identity { return c.cur.Load().id }

// Leaf is the current certificate, for logging its serial and expiry.
func (c *Credentials) Leaf() *x509.Certificate { return c.cur.Load().leaf }

func loadBundle(files Files, node string) (*bundle, error) {
	roots, err := loadRoots(files.CA)
	if err != nil {
		return nil, err
	}
	keyPEM, err := readKeyFile(files.Key)
	if err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(files.Cert)
	if err != nil {
		return nil, fmt.Errorf("certificate file: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s with %s: %w", files.Cert, files.Key, err)
	}
	chain, err := parseChain(cert)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", files.Cert, err)
	}
	id, err := checkOwnCert(chain, roots, node)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", files.Cert, err)
	}
	return &bundle{cert: cert, leaf: chain[0], roots: roots, id: id}, nil
}

// LoadRoots reads a CA file into a pool: what an HTTPS client of the
// management API (the control commands' --ca-cert) trusts.
func LoadRoots(path string) (*x509.CertPool, error) {
	roots, err := loadRoots(path)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	return roots, nil
}

func loadRoots(path string) (*x509.CertPool, error) {
	cas, err := readCerts(path)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	for _, ca := range cas {
		if !ca.IsCA {
			// A node certificate given as the CA would make that one node
			// the only peer anyone trusts; say so instead.
			return nil, fmt.Errorf("%s: %q is not a CA certificate", path, ca.Subject.CommonName)
		}
		roots.AddCert(ca)
	}
	return roots, nil
}

// checkOwnCert checks a node's own certificate for both of the uses a node
// makes of it. Whom it names is checked first, as "the certificate of
// operator alice" says more than the key usage error it would also fail
// with.
func checkOwnCert(chain []*x509.Certificate, roots *x509.CertPool, node string) (Identity, error) {
	if len(chain) == 0 {
		return Identity{}, errors.New("no certificate")
	}
	id, err := IdentityOf(chain[0])
	switch {
	case err != nil:
		return Identity{}, err
	case id.Role != RoleNode:
		return Identity{}, fmt.Errorf("the certificate of %s, not of a node", id)
	case node != "" && id.Name != node:
		return Identity{}, fmt.Errorf("the certificate of node %s, not of this node, %s", id.Name, node)
	}
	for _, usage := range usages(RoleNode) {
		if _, err := verifyChain(chain, roots, usage); err != nil {
			return Identity{}, err
		}
	}
	return id, nil
}

// parseChain is the leaf and intermediates of a key pair.
func parseChain(cert tls.Certificate) ([]*x509.Certificate, error) {
	chain := make([]*x509.Certificate, 0, len(cert.Certificate))
	for _, der := range cert.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		chain = append(chain, c)
	}
	return chain, nil
}

// verifyChain verifies a chain (leaf first) against roots for one usage,
// at the current time, and returns the leaf's identity.
func verifyChain(chain []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage) (Identity, error) {
	if len(chain) == 0 {
		return Identity{}, errors.New("no certificate")
	}
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{usage}}
	if _, err := chain[0].Verify(opts); err != nil {
		return Identity{}, fmt.Errorf("certificate %q: %w", chain[0].Subject.CommonName, err)
	}
	return IdentityOf(chain[0])
}
