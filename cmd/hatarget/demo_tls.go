package main

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/cluster/pki"
)

// demoSecurity is what secures the demo, made in its data dir on the
// first run and reused afterwards, as an operator would: a cluster CA
// (DATA-DIR/ca), a certificate per node (DATA-DIR/NODE/tls) and a gossip
// key (DATA-DIR/gossip.key).
type demoSecurity struct {
	ca        *pki.CA
	caFile    string
	gossipKey string
}

func prepareDemoSecurity(dataDir string) (*demoSecurity, error) {
	caDir := filepath.Join(dataDir, "ca")
	ca, err := pki.LoadCA(caDir)
	if errors.Is(err, fs.ErrNotExist) {
		ca, err = pki.CreateCA(caDir, pki.CAOptions{}, false)
	}
	if err != nil {
		return nil, fmt.Errorf("demo CA: %w", err)
	}
	key, err := demoGossipKey(filepath.Join(dataDir, "gossip.key"))
	if err != nil {
		return nil, err
	}
	return &demoSecurity{ca: ca, caFile: filepath.Join(caDir, pki.CACertFile), gossipKey: key}, nil
}

func demoGossipKey(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		return string(b), nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("demo gossip key: %w", err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return "", err
	}
	s := base64.StdEncoding.EncodeToString(key)
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		return "", fmt.Errorf("demo gossip key: %w", err)
	}
	return s, nil
}

// nodeArgs are a node's TLS flags; its certificate is issued on the
// first run.
func (s *demoSecurity) nodeArgs(n *demoNode, dir string) ([]string, error) {
	files := pki.FilesIn(filepath.Join(dir, "tls"), n.name)
	if _, err := os.Stat(files.Cert); errors.Is(err, fs.ErrNotExist) {
		iss, err := s.ca.Issue(pki.CertRequest{Identity: pki.Node(n.name), IPs: []net.IP{net.ParseIP(n.ip)}})
		if err != nil {
			return nil, err
		}
		if files, err = iss.Write(filepath.Join(dir, "tls"), false); err != nil {
			return nil, err
		}
	}
	return []string{"--tls-ca", files.CA, "--tls-cert", files.Cert, "--tls-key", files.Key}, nil
}

// env is the nodes' environment: the gossip key goes there rather than on
// the command line, which every user of the machine can read.
func (s *demoSecurity) env() []string {
	return append(os.Environ(), envName("gossip-key")+"="+s.gossipKey)
}

// client is an operator's client of a demo node: HTTPS with the demo CA.
func (s *demoSecurity) client(addr string) *api.Client {
	c := api.NewClient(addr, "")
	roots := x509.NewCertPool()
	roots.AddCert(s.ca.Cert)
	c.UseTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	return c
}
