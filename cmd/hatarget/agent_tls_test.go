package main

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hatarget/hatarget/cluster/pki"
)

func TestAgentTLSFilesAllOrNone(t *testing.T) {
	if _, ok, err := (agentOptions{}).tlsFiles(); ok || err != nil {
		t.Errorf("no --tls-*: ok %v, err %v", ok, err)
	}
	if _, ok, err := (agentOptions{tlsCA: "a", tlsCert: "b", tlsKey: "c"}).tlsFiles(); !ok || err != nil {
		t.Errorf("all three: ok %v, err %v", ok, err)
	}
	if _, _, err := (agentOptions{tlsCA: "a", tlsCert: "b"}).tlsFiles(); err == nil || !strings.Contains(err.Error(), "--tls-key") {
		t.Errorf("two of three: %v; want an error naming the settings", err)
	}
}

func TestAgentGossipKey(t *testing.T) {
	if k, err := (agentOptions{}).parseGossipKey(); k != nil || err != nil {
		t.Errorf("no key: %v, %v", k, err)
	}
	if _, err := (agentOptions{gossipKey: "c2hvcnQ="}).parseGossipKey(); err == nil || !strings.Contains(err.Error(), "--gossip-key") {
		t.Errorf("a 5-byte key: %v", err)
	}
}

// issueNode writes a certificate of node n1 into dir, replacing one.
func issueNode(t *testing.T, ca *pki.CA, dir string) pki.Files {
	t.Helper()
	iss, err := ca.Issue(pki.CertRequest{Identity: pki.Node("n1"), IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	files, err := iss.Write(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestAgentTLSReload: SIGHUP's reload takes a renewed certificate, and
// keeps the running one when the files do not load.
func TestAgentTLSReload(t *testing.T) {
	ca, err := pki.NewCA(pki.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := issueNode(t, ca, dir)
	o := agentOptions{name: "n1", tlsCA: files.CA, tlsCert: files.Cert, tlsKey: files.Key}
	log := slog.New(slog.DiscardHandler)
	r := &reloader{log: log}
	reg := prometheus.NewRegistry()
	if _, err := agentNetwork(o, log, reg, r); err != nil {
		t.Fatal(err)
	}
	first := r.tls.Leaf().SerialNumber
	issueNode(t, ca, dir)
	if err := r.reloadTLS(); err != nil {
		t.Fatal(err)
	}
	renewed := r.tls.Leaf().SerialNumber
	if renewed.Cmp(first) == 0 {
		t.Fatal("the reload kept the old certificate")
	}
	if err := os.WriteFile(filepath.Join(dir, "n1.key"), []byte("half a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.reloadTLS(); err == nil {
		t.Error("a broken key reloaded")
	}
	if r.tls.Leaf().SerialNumber.Cmp(renewed) != 0 {
		t.Error("a failed reload replaced the running certificate")
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 2 || mfs[0].GetName() != "hatarget_tls_cert_expiry_timestamp_seconds" ||
		int64(mfs[0].GetMetric()[0].GetGauge().GetValue()) != r.tls.Leaf().NotAfter.Unix() ||
		mfs[1].GetName() != "hatarget_tls_refused_connections_total" {
		t.Errorf("TLS metrics: %v, %v", mfs, err)
	}
}

func TestCtlTLSFlags(t *testing.T) {
	for _, args := range [][]string{
		{"cluster", "status", "--cert", "c.crt", "--key", "c.key"},
		{"cluster", "status", "--ca-cert", "/nonexistent/ca.crt"},
	} {
		root := newRootCommand()
		root.SetArgs(args)
		root.SetOut(new(strings.Builder))
		root.SetErr(new(strings.Builder))
		if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "--") {
			t.Errorf("%v: %v; want an error naming the flag", args, err)
		}
	}
}
