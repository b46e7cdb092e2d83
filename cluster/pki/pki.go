// Package pki makes the certificates of a hatarget cluster, loads them
// back and builds the TLS configurations of the node-to-node channels.
//
// # Identities
//
// Every certificate the cluster CA issues names its holder in exactly one
// URI SAN:
//
//	hatarget://node/NAME      a node: server and client auth, since nodes dial each other
//	hatarget://operator/NAME  an operator's client: client auth only
//
// Peers check that URI, never the CN or an address: nodes dial each other
// by IP, an IP may move to another machine, and the URI is the one field
// whose scheme makes a certificate of another purpose, signed by the same
// CA by mistake, impossible to take for a hatarget node. The CN (NAME) and
// the OU (the role) repeat it for people reading openssl output. Node
// certificates also carry the node's addresses as IP SANs, and NAME as a
// DNS SAN when it is a host name, so that ordinary HTTPS clients (curl
// --cacert, the control commands' --ca-cert) verify a node's API by the
// address they dial.
//
// # Keys
//
// Keys are ECDSA P-256 in PKCS#8 PEM. Ed25519 would be as fast in Go, but
// P-256 is what every TLS stack and tool an operator points at a node
// accepts (curl on older OpenSSL, Java, browsers, HSMs); Go's P-256 is
// constant-time assembly, so nothing is lost on the nodes.
package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Role is what a certificate's holder is to the cluster.
type Role string

const (
	RoleNode     Role = "node"
	RoleOperator Role = "operator"
)

// uriScheme is the scheme of the identity URI SAN.
const uriScheme = "hatarget"

// maxNameLen is the CN limit of RFC 5280 (ub-common-name), as the name is
// also the CN.
const maxNameLen = 64

// Identity is who holds a certificate.
type Identity struct {
	Role Role
	Name string
}

// Node is the identity of the node NAME.
func Node(name string) Identity { return Identity{Role: RoleNode, Name: name} }

// Operator is the identity of the operator NAME.
func Operator(name string) Identity { return Identity{Role: RoleOperator, Name: name} }

func (id Identity) String() string { return string(id.Role) + " " + id.Name }

// URI is the SAN that carries the identity.
func (id Identity) URI() *url.URL {
	return &url.URL{Scheme: uriScheme, Host: string(id.Role), Path: "/" + id.Name}
}

func (id Identity) validate() error {
	if id.Role != RoleNode && id.Role != RoleOperator {
		return fmt.Errorf("unknown role %q: want %s or %s", id.Role, RoleNode, RoleOperator)
	}
	return ValidName(id.Name)
}

// ValidName checks a node or operator name: letters, digits, '.', '-' and
// '_', starting with a letter or digit. The set is that of host names (a
// node's name defaults to its host name) plus '_', and needs no escaping in
// the URI, the CN or a file name.
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name")
	case len(name) > maxNameLen:
		return fmt.Errorf("name %q is longer than %d characters", name, maxNameLen)
	case !isAlnum(rune(name[0])):
		return fmt.Errorf("name %q must start with a letter or digit", name)
	}
	for _, r := range name {
		if !isAlnum(r) && !strings.ContainsRune(".-_", r) {
			return fmt.Errorf("name %q: %q is not allowed (letters, digits, '.', '-' and '_')", name, r)
		}
	}
	return nil
}

func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

// isHostName reports whether a valid name is also a DNS name (RFC 1123
// labels), so that it can be a DNS SAN.
func isHostName(name string) bool {
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || strings.Contains(label, "_") ||
			strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") {
			return false
		}
	}
	return true
}

// IdentityOf reads the identity of a certificate. A certificate with no
// hatarget URI, or with more than one, has none: two would let the holder
// be whichever a checker happens to read.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	var found []*url.URL
	for _, u := range cert.URIs {
		if u.Scheme == uriScheme {
			found = append(found, u)
		}
	}
	switch len(found) {
	case 0:
		return Identity{}, fmt.Errorf("certificate %q has no %s:// identity: not issued by hatarget tls", cert.Subject.CommonName, uriScheme)
	case 1:
	default:
		return Identity{}, fmt.Errorf("certificate %q has %d %s:// identities; want one", cert.Subject.CommonName, len(found), uriScheme)
	}
	u := found[0]
	id := Identity{Role: Role(u.Host), Name: strings.TrimPrefix(u.Path, "/")}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return Identity{}, fmt.Errorf("certificate %q: malformed identity %s", cert.Subject.CommonName, u)
	}
	if err := id.validate(); err != nil {
		return Identity{}, fmt.Errorf("certificate %q: identity %s: %w", cert.Subject.CommonName, u, err)
	}
	return id, nil
}
