package replication

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"testing"

	"github.com/hatarget/hatarget/cluster/pki"
)

func nodeCert(t *testing.T, ca *pki.CA, name string) tls.Certificate {
	t.Helper()
	iss, err := ca.Issue(pki.CertRequest{Identity: pki.Node(name)})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(iss.CertPEM, iss.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// tlsPair connects a client holding node n2's certificate to a server
// holding n1's, as the node network does, over loopback TCP.
func tlsPair(t *testing.T) (server, client *tls.Conn) {
	t.Helper()
	ca, err := pki.NewCA(pki.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvCfg := &tls.Config{Certificates: []tls.Certificate{nodeCert(t, ca, "n1")}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: roots}
	done := make(chan *tls.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- nil
			return
		}
		sc := tls.Server(c, srvCfg)
		if sc.Handshake() != nil {
			done <- nil
			return
		}
		done <- sc
	}()
	cc, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{Certificates: []tls.Certificate{nodeCert(t, ca, "n2")}, InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	server = <-done
	if server == nil {
		t.Fatal("server handshake failed")
	}
	t.Cleanup(func() { server.Close(); cc.Close() })
	return server, cc
}

// TestCheckPeerName: over TLS the name a peer goes by must be its
// certificate's, on both sides; plain connections are not checked here.
func TestCheckPeerName(t *testing.T) {
	server, client := tlsPair(t)
	if err := checkPeerName(server, "n2"); err != nil {
		t.Errorf("server side, hello naming the certificate's node: %v", err)
	}
	if err := checkPeerName(server, "n3"); !errors.Is(err, ErrAuthentication) {
		t.Errorf("server side, hello naming another node: %v; want ErrAuthentication", err)
	}
	if err := checkPeerName(client, "n1"); err != nil {
		t.Errorf("client side, the replica it meant to reach: %v", err)
	}
	if err := checkPeerName(client, "n3"); !errors.Is(err, ErrAuthentication) {
		t.Errorf("client side, another replica answered: %v; want ErrAuthentication", err)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if err := checkPeerName(a, "anyone"); err != nil {
		t.Errorf("plain connection: %v", err)
	}
}
