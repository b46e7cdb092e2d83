package nodetest

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/hatarget/hatarget/cluster/pki"
)

// newTestCA makes a cluster CA in dir, as `hatarget tls ca create` does.
func newTestCA(t testing.TB, dir string) *pki.CA {
	t.Helper()
	ca, err := pki.CreateCA(dir, pki.CAOptions{}, false)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// IssueCert issues the node a new certificate of the cluster CA into its
// TLS directory, replacing the old one when force, and returns the files:
// a renewal, which the node takes on at its next Reload.
func (a *Agent) IssueCert(force bool) pki.Files {
	a.c.t.Helper()
	iss, err := a.c.CA.Issue(pki.CertRequest{Identity: pki.Node(a.Name), IPs: []net.IP{net.ParseIP(a.IP)}})
	if err != nil {
		a.c.t.Fatal(err)
	}
	files, err := iss.Write(filepath.Join(a.c.root, "tls", a.Name), force)
	if err != nil {
		a.c.t.Fatal(err)
	}
	return files
}

// Reload sends the node SIGHUP: it rereads its settings and certificates.
func (a *Agent) Reload() { a.signal(syscall.SIGHUP) }

// CACertFile is the cluster CA's certificate with ClusterOptions.TLS.
func (c *Cluster) CACertFile() string { return filepath.Join(c.root, "ca", pki.CACertFile) }

// clientTLS is an operator's HTTPS configuration: the cluster CA, no
// client certificate.
func (c *Cluster) clientTLS() *tls.Config {
	roots := x509.NewCertPool()
	roots.AddCert(c.CA.Cert)
	return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
}
