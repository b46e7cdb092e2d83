package pki

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func newTestCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA(CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *CA, req CertRequest) *Issued {
	t.Helper()
	iss, err := ca.Issue(req)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// memCreds are credentials held in memory, unchecked, so that tests can
// hand a peer the expired or operator certificates Load refuses.
func memCreds(t *testing.T, ca *CA, iss *Issued) *Credentials {
	t.Helper()
	cert, err := tls.X509KeyPair(iss.CertPEM, iss.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	c := &Credentials{}
	c.cur.Store(&bundle{cert: cert, leaf: iss.Cert, roots: roots, id: iss.Identity})
	return c
}

func nodeCreds(t *testing.T, ca *CA, name string) *Credentials {
	t.Helper()
	return memCreds(t, ca, issue(t, ca, CertRequest{Identity: Node(name), IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}))
}

func members(names ...string) Membership {
	return func(name string) bool { return slices.Contains(names, name) }
}

// command stands for the first bytes of a channel's protocol.
const command = "RAFT APPEND"

// result is what each side of a connection saw.
type result struct {
	serverErr, clientErr error
	gotCommand           bool     // the server read the client's command
	peer                 Identity // whom the server's verified client certificate names
	peerOK               bool
	serverSerial         *big.Int // the serial of the certificate the client was shown
}

// handshake connects a client to a server over loopback TCP, where the
// kernel buffers what net.Pipe would block on (TLS 1.3 clients finish
// their handshake before the server has judged their certificate). The
// client then sends a command and the server answers it.
func handshake(t *testing.T, server, client *tls.Config) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan result, 1)
	go func() { served <- serve(ctx, ln, server) }()
	r := dial(ctx, ln.Addr().String(), client)
	s := <-served
	r.serverErr, r.gotCommand, r.peer, r.peerOK = s.serverErr, s.gotCommand, s.peer, s.peerOK
	return r
}

func serve(ctx context.Context, ln net.Listener, cfg *tls.Config) (r result) {
	conn, err := ln.Accept()
	if err != nil {
		return result{serverErr: err}
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	tc := tls.Server(conn, cfg)
	if r.serverErr = tc.HandshakeContext(ctx); r.serverErr != nil {
		return r
	}
	cs := tc.ConnectionState()
	r.peer, r.peerOK = PeerIdentity(&cs)
	buf := make([]byte, len(command))
	if _, r.serverErr = io.ReadFull(tc, buf); r.serverErr != nil {
		return r
	}
	r.gotCommand = string(buf) == command
	_, r.serverErr = tc.Write([]byte("ok"))
	return r
}

func dial(ctx context.Context, addr string, cfg *tls.Config) (r result) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return result{clientErr: err}
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	tc := tls.Client(conn, cfg)
	if r.clientErr = tc.HandshakeContext(ctx); r.clientErr != nil {
		return r
	}
	if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
		r.serverSerial = certs[0].SerialNumber
	}
	if _, r.clientErr = tc.Write([]byte(command)); r.clientErr != nil {
		return r
	}
	// A server that refused the client's certificate answers with an
	// alert, which surfaces here.
	_, r.clientErr = io.ReadFull(tc, make([]byte, 2))
	return r
}

func checkErr(t *testing.T, side string, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("%s: %v", side, err)
	case want != "" && err == nil:
		t.Errorf("%s accepted the connection; want an error with %q", side, want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("%s: %v; want an error with %q", side, err, want)
	}
}

func TestPKIHandshakes(t *testing.T) {
	ca, otherCA := newTestCA(t), newTestCA(t)
	n1, n2 := nodeCreds(t, ca, "n1"), nodeCreds(t, ca, "n2")
	stranger := nodeCreds(t, ca, "n9")
	impostor := nodeCreds(t, otherCA, "n2")
	// The CA certificate is public: an impostor can trust the cluster's
	// servers, only not get a certificate of its CA.
	impostorClient := memCreds(t, ca, issue(t, otherCA, CertRequest{Identity: Node("n2")}))
	alice := memCreds(t, ca, issue(t, ca, CertRequest{Identity: Operator("alice")}))
	past := time.Now().Add(-2 * DefaultCertValidity)
	expired := memCreds(t, ca, issue(t, ca, CertRequest{Identity: Node("n2"), Now: past}))
	expiredServer := memCreds(t, ca, issue(t, ca, CertRequest{Identity: Node("n1"), Now: past}))
	cluster := members("n1", "n2")
	noCert := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}

	tests := []struct {
		name           string
		server, client *tls.Config
		wantServer     string // part of the server's error; "" for none
		wantClient     string
		wantPeer       Identity // whom the server sees, when it accepts a certificate
		anonymous      bool
	}{
		{name: "member node", server: n1.ServerConfig(cluster), client: n2.ClientConfig(cluster), wantPeer: Node("n2")},
		{name: "client of another CA", server: n1.ServerConfig(cluster), client: impostorClient.ClientConfig(members("n1")),
			wantServer: "unknown authority", wantClient: "unknown certificate authority"},
		{name: "no client certificate", server: n1.ServerConfig(cluster), client: noCert,
			wantServer: "didn't provide a certificate", wantClient: "certificate required"},
		{name: "node that is not a member", server: n1.ServerConfig(cluster), client: stranger.ClientConfig(cluster),
			wantServer: "node n9 is not a member", wantClient: "bad certificate"},
		{name: "operator on a node channel", server: n1.ServerConfig(cluster), client: alice.ClientConfig(cluster),
			wantServer: "operator alice: only nodes", wantClient: "bad certificate"},
		{name: "expired client", server: n1.ServerConfig(cluster), client: expired.ClientConfig(cluster),
			wantServer: "expired", wantClient: "expired"},
		{name: "no membership fails closed", server: n1.ServerConfig(nil), client: n2.ClientConfig(cluster),
			wantServer: "no membership", wantClient: "bad certificate"},
		{name: "server of another CA", server: impostor.ServerConfig(members("n1")), client: n1.ClientConfig(cluster),
			wantServer: "bad certificate", wantClient: "unknown authority"},
		{name: "server that is not a member", server: stranger.ServerConfig(cluster), client: n1.ClientConfig(cluster),
			wantServer: "bad certificate", wantClient: "node n9 is not a member"},
		{name: "expired server", server: expiredServer.ServerConfig(cluster), client: n2.ClientConfig(cluster),
			wantServer: "bad certificate", wantClient: "expired"},
		{name: "server other than the one dialed", server: n2.ServerConfig(cluster), client: n1.ClientConfig(members("n3")),
			wantServer: "bad certificate", wantClient: "node n2 is not a member"},
		{name: "API: operator", server: n1.APIServerConfig(cluster), client: alice.ClientConfig(cluster), wantPeer: Operator("alice")},
		{name: "API: member node", server: n1.APIServerConfig(cluster), client: n2.ClientConfig(cluster), wantPeer: Node("n2")},
		{name: "API: no client certificate", server: n1.APIServerConfig(cluster), client: noCert, anonymous: true},
		{name: "API: node that is not a member", server: n1.APIServerConfig(cluster), client: stranger.ClientConfig(cluster),
			wantServer: "node n9 is not a member", wantClient: "bad certificate"},
		{name: "API: client of another CA", server: n1.APIServerConfig(cluster), client: impostorClient.ClientConfig(members("n1")),
			wantServer: "unknown authority", wantClient: "unknown certificate authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := handshake(t, tt.server, tt.client)
			checkErr(t, "server", r.serverErr, tt.wantServer)
			checkErr(t, "client", r.clientErr, tt.wantClient)
			if tt.wantServer != "" || tt.wantClient != "" {
				if r.gotCommand {
					t.Error("the server read the command of a peer it refused")
				}
				return
			}
			if !r.gotCommand {
				t.Error("the server did not read the command")
			}
			if r.peerOK == tt.anonymous || r.peer != tt.wantPeer {
				t.Errorf("server saw peer %v (%v); want %v", r.peer, r.peerOK, tt.wantPeer)
			}
		})
	}
}

// TestPKIReload checks that a reload switches the certificate new
// handshakes use, on both sides, and leaves an established connection
// alone, and that credentials that do not load leave the running ones.
func TestPKIReload(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	first := writeNode(t, ca, dir, "n1")
	creds, err := Load(FilesIn(dir, "n1"), "n1")
	if err != nil {
		t.Fatal(err)
	}
	// The node dials itself, so that its credentials are on both sides.
	server, client := creds.ServerConfig(members("n1")), creds.ClientConfig(members("n1"))
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go echo(ln)
	before := dialSerials(t, ln.Addr().String(), client)
	if before.server.Cmp(first.Cert.SerialNumber) != 0 || before.client.Cmp(first.Cert.SerialNumber) != 0 {
		t.Fatalf("before the reload: serials %v; want %v", before, first.Cert.SerialNumber)
	}
	second := writeNode(t, ca, dir, "n1")
	if err := creds.Reload(); err != nil {
		t.Fatal(err)
	}
	after := dialSerials(t, ln.Addr().String(), client)
	if after.server.Cmp(second.Cert.SerialNumber) != 0 || after.client.Cmp(second.Cert.SerialNumber) != 0 {
		t.Errorf("after the reload: serials %v; want %v", after, second.Cert.SerialNumber)
	}
	if got := creds.Leaf().SerialNumber; got.Cmp(second.Cert.SerialNumber) != 0 {
		t.Errorf("Leaf after the reload: serial %v; want %v", got, second.Cert.SerialNumber)
	}
	// The connection made before the reload still carries data.
	if _, err := before.conn.Write([]byte("x")); err != nil {
		t.Errorf("connection made before the reload: %v", err)
	} else if _, err := io.ReadFull(before.conn, make([]byte, 1)); err != nil {
		t.Errorf("connection made before the reload: %v", err)
	}

	if err := os.Chmod(filepath.Join(dir, "n1.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := creds.Reload(); err == nil || !strings.Contains(err.Error(), "keeping the running ones") {
		t.Errorf("reload of a key others can read: %v; want it refused", err)
	}
	if got := dialSerials(t, ln.Addr().String(), client); got.server.Cmp(second.Cert.SerialNumber) != 0 {
		t.Errorf("after a failed reload: server serial %v; want the running %v", got.server, second.Cert.SerialNumber)
	}
}

func writeNode(t *testing.T, ca *CA, dir, name string) *Issued {
	t.Helper()
	iss := issue(t, ca, CertRequest{Identity: Node(name), IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if _, err := iss.Write(dir, true); err != nil {
		t.Fatal(err)
	}
	return iss
}

// echo answers every connection with the serial of the client's
// certificate, then echoes.
func echo(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			tc := conn.(*tls.Conn)
			if tc.Handshake() != nil {
				return
			}
			serial := tc.ConnectionState().PeerCertificates[0].SerialNumber.Bytes()
			if _, err := tc.Write(append([]byte{byte(len(serial))}, serial...)); err != nil {
				return
			}
			_, _ = io.Copy(tc, tc)
		}()
	}
}

type serials struct {
	server, client *big.Int
	conn           *tls.Conn
}

func dialSerials(t *testing.T, addr string, cfg *tls.Config) serials {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	n := make([]byte, 1)
	if _, err := io.ReadFull(conn, n); err != nil {
		t.Fatal(err)
	}
	serial := make([]byte, n[0])
	if _, err := io.ReadFull(conn, serial); err != nil {
		t.Fatal(err)
	}
	return serials{
		server: conn.ConnectionState().PeerCertificates[0].SerialNumber,
		client: new(big.Int).SetBytes(serial),
		conn:   conn,
	}
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return info.Mode().Perm()
}

func TestPKIFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := CreateCA(dir, CAOptions{}, false)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, CAKeyFile): 0o600, filepath.Join(dir, CACertFile): 0o644} {
		if got := fileMode(t, path); got != want {
			t.Errorf("%s: mode %04o; want %04o", path, got, want)
		}
	}
	if _, err := CreateCA(dir, CAOptions{}, false); err == nil || !strings.Contains(err.Error(), "without --force") {
		t.Errorf("second CA in the same directory: %v; want it refused", err)
	}
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) {
		t.Error("LoadCA read another certificate than CreateCA wrote")
	}

	out := filepath.Join(t.TempDir(), "n1")
	iss := issue(t, loaded, CertRequest{Identity: Node("n1"), IPs: []net.IP{net.IPv4(10, 0, 0, 1)}})
	files, err := iss.Write(out, false)
	if err != nil {
		t.Fatal(err)
	}
	if files != FilesIn(out, "n1") {
		t.Errorf("wrote %+v; want %+v", files, FilesIn(out, "n1"))
	}
	for path, want := range map[string]os.FileMode{out: 0o700, files.Key: 0o600, files.Cert: 0o644, files.CA: 0o644} {
		if got := fileMode(t, path); got != want {
			t.Errorf("%s: mode %04o; want %04o", path, got, want)
		}
	}
	if _, err := Load(files, "n1"); err != nil {
		t.Errorf("loading what Write wrote: %v", err)
	}
	if _, err := iss.Write(out, false); err == nil || !strings.Contains(err.Error(), "without --force") {
		t.Errorf("second certificate in the same place: %v; want it refused", err)
	}
	// Another certificate of the same CA into the same directory: the CA
	// copy is the same, so only the node's own files need --force.
	if _, err := issue(t, loaded, CertRequest{Identity: Node("n2")}).Write(out, false); err != nil {
		t.Errorf("a second node's certificate beside the first: %v", err)
	}
	if _, err := issue(t, newTestCA(t), CertRequest{Identity: Node("n3")}).Write(out, false); err == nil || !strings.Contains(err.Error(), "another CA") {
		t.Errorf("a certificate of another CA beside them: %v; want it refused", err)
	}

	for _, mode := range []os.FileMode{0o640, 0o604, 0o660} {
		if err := os.Chmod(files.Key, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(files, "n1"); err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("key with mode %04o: %v; want it refused", mode, err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, CAKeyFile), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("CA key with mode 0640: %v; want it refused", err)
	}
	if _, err := CreateCA(dir, CAOptions{}, true); err != nil {
		t.Errorf("CA with force: %v", err)
	}
	if reloaded, err := LoadCA(dir); err != nil || reloaded.Cert.Equal(ca.Cert) {
		t.Errorf("after a forced CreateCA: %v; want a new CA", err)
	}
}

func TestPKILoadRefuses(t *testing.T) {
	ca := newTestCA(t)
	write := func(t *testing.T, iss *Issued) Files {
		t.Helper()
		files, err := iss.Write(t.TempDir(), false)
		if err != nil {
			t.Fatal(err)
		}
		return files
	}
	n1 := func(t *testing.T) Files { return write(t, issue(t, ca, CertRequest{Identity: Node("n1")})) }
	tests := []struct {
		name  string
		files func(t *testing.T) Files
		node  string
		want  string
	}{
		{name: "another node's certificate", files: n1, node: "n2", want: "node n1, not of this node, n2"},
		{name: "operator certificate", node: "alice", want: "operator alice, not of a node",
			files: func(t *testing.T) Files { return write(t, issue(t, ca, CertRequest{Identity: Operator("alice")})) }},
		{name: "expired", node: "n1", want: "expired",
			files: func(t *testing.T) Files {
				return write(t, issue(t, ca, CertRequest{Identity: Node("n1"), Now: time.Now().Add(-2 * DefaultCertValidity)}))
			}},
		{name: "CA file of another CA", node: "n1", want: "unknown authority",
			files: func(t *testing.T) Files {
				f := n1(t)
				f.CA = write(t, issue(t, newTestCA(t), CertRequest{Identity: Node("x")})).CA
				return f
			}},
		{name: "node certificate as the CA", node: "n1", want: "not a CA certificate",
			files: func(t *testing.T) Files { f := n1(t); f.CA = f.Cert; return f }},
		{name: "key of another certificate", node: "n1", want: "private key does not match",
			files: func(t *testing.T) Files {
				f := n1(t)
				f.Key = write(t, issue(t, ca, CertRequest{Identity: Node("n2")})).Key
				return f
			}},
		{name: "missing key", node: "n1", want: "no such file",
			files: func(t *testing.T) Files { f := n1(t); f.Key += ".missing"; return f }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.files(t), tt.node)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Load: %v; want an error with %q", err, tt.want)
			}
		})
	}
}

func TestPKIIssue(t *testing.T) {
	ca := newTestCA(t)
	node := issue(t, ca, CertRequest{Identity: Node("n1.example.com"), IPs: []net.IP{net.ParseIP("10.0.0.1"), net.ParseIP("fd00::1")}})
	c := node.Cert
	if c.Subject.CommonName != "n1.example.com" || !slices.Equal(c.Subject.OrganizationalUnit, []string{"node"}) {
		t.Errorf("node subject %v", c.Subject)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "hatarget://node/n1.example.com" {
		t.Errorf("node URIs %v", c.URIs)
	}
	if !slices.Equal(c.DNSNames, []string{"n1.example.com"}) || len(c.IPAddresses) != 2 {
		t.Errorf("node SANs: DNS %v, IP %v", c.DNSNames, c.IPAddresses)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("node key usages %v", c.ExtKeyUsage)
	}
	if d := c.NotAfter.Sub(c.NotBefore) - clockSkew; d != DefaultCertValidity {
		t.Errorf("node certificate valid for %s; want %s", d, DefaultCertValidity)
	}
	op := issue(t, ca, CertRequest{Identity: Operator("ops_alice")}).Cert
	if len(op.URIs) != 1 || op.URIs[0].String() != "hatarget://operator/ops_alice" || len(op.DNSNames) != 0 ||
		!slices.Equal(op.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("operator certificate: URIs %v, DNS %v, usages %v", op.URIs, op.DNSNames, op.ExtKeyUsage)
	}
	if n := issue(t, ca, CertRequest{Identity: Node("db_1")}).Cert; len(n.DNSNames) != 0 {
		t.Errorf("node db_1: DNS SANs %v; want none, '_' is no host name character", n.DNSNames)
	}
	if !ca.Cert.IsCA || !ca.Cert.MaxPathLenZero || ca.Cert.NotAfter.Sub(ca.Cert.NotBefore)-clockSkew != DefaultCAValidity {
		t.Errorf("CA: IsCA %v, MaxPathLenZero %v, valid %s..%s", ca.Cert.IsCA, ca.Cert.MaxPathLenZero, ca.Cert.NotBefore, ca.Cert.NotAfter)
	}

	for _, tt := range []struct {
		name string
		req  CertRequest
		want string
	}{
		{name: "operator with addresses", req: CertRequest{Identity: Operator("alice"), IPs: []net.IP{net.IPv4(10, 0, 0, 1)}}, want: "carry no addresses"},
		{name: "outliving the CA", req: CertRequest{Identity: Node("n1"), Validity: 2 * DefaultCAValidity}, want: "outlive the CA"},
		{name: "negative validity", req: CertRequest{Identity: Node("n1"), Validity: -time.Hour}, want: "positive"},
		{name: "empty name", req: CertRequest{Identity: Node("")}, want: "empty name"},
		{name: "slash in the name", req: CertRequest{Identity: Node("a/b")}, want: "not allowed"},
		{name: "leading dash", req: CertRequest{Identity: Operator("-x")}, want: "start with a letter or digit"},
		{name: "long name", req: CertRequest{Identity: Node(strings.Repeat("n", 65))}, want: "longer than 64"},
		{name: "unknown role", req: CertRequest{Identity: Identity{Role: "admin", Name: "x"}}, want: "unknown role"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ca.Issue(tt.req); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Issue: %v; want an error with %q", err, tt.want)
			}
		})
	}
}

// TestPKIIdentityOf checks certificates hatarget tls would not issue:
// an identity is read from exactly one well-formed URI.
func TestPKIIdentityOf(t *testing.T) {
	ca := newTestCA(t)
	uris := func(s ...string) []*url.URL {
		var us []*url.URL
		for _, raw := range s {
			u, err := url.Parse(raw)
			if err != nil {
				t.Fatal(err)
			}
			us = append(us, u)
		}
		return us
	}
	for _, tt := range []struct {
		name string
		uris []*url.URL
		want string // "" for the identity node n1
	}{
		{name: "node", uris: uris("spiffe://example.org/x", "hatarget://node/n1")},
		{name: "none", uris: uris("spiffe://example.org/x"), want: "no hatarget:// identity"},
		{name: "two", uris: uris("hatarget://node/n1", "hatarget://operator/n1"), want: "2 hatarget:// identities"},
		{name: "query", uris: uris("hatarget://node/n1?admin=1"), want: "malformed"},
		{name: "unknown role", uris: uris("hatarget://root/n1"), want: "unknown role"},
		{name: "path in the name", uris: uris("hatarget://node/n1/x"), want: "not allowed"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"},
				NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), URIs: tt.uris}
			der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, ca.Cert.PublicKey, ca.key)
			if err != nil {
				t.Fatal(err)
			}
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			id, err := IdentityOf(cert)
			if tt.want == "" {
				if err != nil || id != Node("n1") {
					t.Errorf("IdentityOf: %v, %v; want node n1", id, err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("IdentityOf: %v, %v; want an error with %q", id, err, tt.want)
			}
		})
	}
}
