package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Default validities. The CA outlives many certificate renewals; a node
// certificate is renewed yearly, which an expiry alert can remind of.
const (
	DefaultCAValidity   = 10 * 365 * 24 * time.Hour
	DefaultCertValidity = 365 * 24 * time.Hour
)

// clockSkew backdates certificates so that a node whose clock lags a
// little behind the issuer's accepts a certificate issued just now.
const clockSkew = 5 * time.Minute

// organization is the O of every subject, for people reading openssl
// output; nothing checks it.
const organization = "hatarget"

// CA is the cluster's certificate authority: it signs node and operator
// certificates.
type CA struct {
	Cert *x509.Certificate
	key  crypto.Signer
}

// CAOptions are the settings of a new CA.
type CAOptions struct {
	Validity time.Duration // zero: DefaultCAValidity
	Now      time.Time     // zero: the current time
}

// NewCA makes a self-signed CA in memory.
func NewCA(opts CAOptions) (*CA, error) {
	now, validity, err := window(opts.Now, opts.Validity, DefaultCAValidity)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The serial in the name tells two clusters' CAs apart in logs.
		Subject:   pkix.Name{Organization: []string{organization}, CommonName: "hatarget cluster CA " + shortHex(serial)},
		NotBefore: now.Add(-clockSkew),
		NotAfter:  now.Add(validity),
		KeyUsage:  x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		// Path length zero: the CA signs node and operator certificates,
		// never another CA, so a stolen node key cannot mint identities.
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	return &CA{Cert: cert, key: key}, nil
}

// CreateCA makes a CA and writes it into dir: ca.crt (0644) and ca.key
// (0600), dir created 0700. It refuses to replace an existing CA unless
// force: every certificate it issued would stop being trusted.
func CreateCA(dir string, opts CAOptions, force bool) (*CA, error) {
	ca, err := NewCA(opts)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(ca.key)
	if err != nil {
		return nil, err
	}
	err = writeFiles(dir, force,
		pendingFile{path: filepath.Join(dir, CAKeyFile), data: keyPEM, mode: keyMode},
		pendingFile{path: filepath.Join(dir, CACertFile), data: ca.CertPEM(), mode: certMode})
	if err != nil {
		return nil, fmt.Errorf("CA in %s: %w", dir, err)
	}
	return ca, nil
}

// LoadCA reads the CA that CreateCA wrote into dir.
func LoadCA(dir string) (*CA, error) {
	certs, err := readCerts(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("CA in %s: %w", dir, err)
	}
	keyPath := filepath.Join(dir, CAKeyFile)
	data, err := readKeyFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("CA in %s: %w", dir, err)
	}
	key, err := parseKey(keyPath, data)
	if err != nil {
		return nil, fmt.Errorf("CA in %s: %w", dir, err)
	}
	cert := certs[0]
	if !cert.IsCA {
		return nil, fmt.Errorf("CA in %s: %s is not a CA certificate", dir, CACertFile)
	}
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("CA in %s: %s is not the key of %s", dir, CAKeyFile, CACertFile)
	}
	return &CA{Cert: cert, key: key}, nil
}

// CertPEM is the CA certificate as PEM.
func (ca *CA) CertPEM() []byte { return encodeCert(ca.Cert) }

// CertRequest is what a certificate is for.
type CertRequest struct {
	Identity Identity
	// IPs are a node's addresses: its --bind, so that HTTPS clients
	// dialing the address verify the node. Operators have none.
	IPs      []net.IP
	Validity time.Duration // zero: DefaultCertValidity
	Now      time.Time     // zero: the current time
}

// Issued is a certificate the CA signed, with its new key.
type Issued struct {
	Identity Identity
	Cert     *x509.Certificate
	CertPEM  []byte
	KeyPEM   []byte
	caPEM    []byte
}

// Issue makes a key and signs a certificate for req.
func (ca *CA) Issue(req CertRequest) (*Issued, error) {
	tmpl, err := ca.template(req)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("key of %s: %w", req.Identity, err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("certificate of %s: %w", req.Identity, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certificate of %s: %w", req.Identity, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &Issued{Identity: req.Identity, Cert: cert, CertPEM: encodeCert(cert), KeyPEM: keyPEM, caPEM: ca.CertPEM()}, nil
}

// template checks req and turns it into the certificate to sign.
func (ca *CA) template(req CertRequest) (*x509.Certificate, error) {
	id := req.Identity
	if err := id.validate(); err != nil {
		return nil, err
	}
	if id.Role == RoleOperator && len(req.IPs) > 0 {
		return nil, fmt.Errorf("%s: operator certificates carry no addresses", id)
	}
	now, validity, err := window(req.Now, req.Validity, DefaultCertValidity)
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(validity)
	if now.After(ca.Cert.NotAfter) {
		return nil, fmt.Errorf("the CA expired on %s: make a new one", ca.Cert.NotAfter.Format(time.DateOnly))
	}
	if notAfter.After(ca.Cert.NotAfter) {
		// A certificate cannot be trusted past its CA; issuing one that
		// claims to be would hide the real expiry date.
		return nil, fmt.Errorf("%s: a certificate valid until %s would outlive the CA (valid until %s): ask for a shorter validity",
			id, notAfter.Format(time.DateOnly), ca.Cert.NotAfter.Format(time.DateOnly))
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{organization}, OrganizationalUnit: []string{string(id.Role)}, CommonName: id.Name},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           usages(id.Role),
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URI()},
		IPAddresses:           req.IPs,
	}
	if id.Role == RoleNode && isHostName(id.Name) {
		tmpl.DNSNames = []string{id.Name}
	}
	return tmpl, nil
}

// usages are the extended key usages of a role: nodes both accept and
// make connections, operators only make them.
func usages(r Role) []x509.ExtKeyUsage {
	if r == RoleNode {
		return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	return []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
}

// Write writes the certificate, its key and a copy of the CA certificate
// into dir, named as FilesIn says, and returns their names. Existing files
// are replaced only with force, except a CA copy identical to the one to
// write.
func (iss *Issued) Write(dir string, force bool) (Files, error) {
	names := FilesIn(dir, iss.Identity.Name)
	files := []pendingFile{
		{path: names.Key, data: iss.KeyPEM, mode: keyMode},
		{path: names.Cert, data: iss.CertPEM, mode: certMode},
	}
	switch old, err := os.ReadFile(names.CA); {
	case err == nil && bytes.Equal(old, iss.caPEM):
	case err == nil && !force:
		return Files{}, fmt.Errorf("%s holds another CA's certificate; not overwriting it without --force", names.CA)
	case err == nil || errors.Is(err, fs.ErrNotExist):
		files = append(files, pendingFile{path: names.CA, data: iss.caPEM, mode: certMode})
	default:
		return Files{}, err
	}
	if err := writeFiles(dir, force, files...); err != nil {
		return Files{}, fmt.Errorf("certificate of %s: %w", iss.Identity, err)
	}
	return names, nil
}

// window resolves the start and length of a validity period.
func window(now time.Time, validity, def time.Duration) (time.Time, time.Duration, error) {
	if now.IsZero() {
		now = time.Now()
	}
	switch {
	case validity == 0:
		validity = def
	case validity < 0:
		return time.Time{}, 0, fmt.Errorf("validity %s: want a positive duration", validity)
	}
	return now, validity, nil
}

// newSerial is a random 128-bit serial: unique without a counter to keep,
// as RFC 5280 asks of a CA.
func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
	}
	return serial, nil
}

func shortHex(n *big.Int) string {
	s := n.Text(16)
	return s[:min(len(s), 8)]
}

func encodeCert(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding the key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
