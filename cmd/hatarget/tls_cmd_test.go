package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hatarget/hatarget/cluster/pki"
)

// createTestCA runs tls ca create into a new directory and returns it.
func createTestCA(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	if _, err := runCLI(t, "", "tls", "ca", "create", "--dir", dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestTLSCACreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	out, err := runCLI(t, "", "tls", "ca", "create", "--dir", dir, "--days", "30")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`created the cluster CA "hatarget cluster CA `,
		filepath.Join(dir, "ca.crt") + "  CA certificate: give it to every node (--tls-ca) and operator (--ca-cert)\n",
		filepath.Join(dir, "ca.key") + "  CA key: issues certificates; keep it off the nodes\n",
		"next, for each node: hatarget tls cert create --ca " + dir + " --node NAME --addr IP --out DIR\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Until(ca.Cert.NotAfter); left < 29*24*time.Hour || left > 30*24*time.Hour {
		t.Errorf("CA valid for %s more; want 30 days", left)
	}
	if info, err := os.Stat(dir); err != nil || info.Mode().Perm() != 0o700 {
		t.Errorf("CA directory: %v, %v; want mode 0700", info.Mode(), err)
	}
	if _, err := runCLI(t, "", "tls", "ca", "create", "--dir", dir); err == nil || !strings.Contains(err.Error(), "exists; not overwriting it without --force") {
		t.Errorf("second CA: %v; want it refused", err)
	}
	out, err = runCLI(t, "", "tls", "ca", "create", "--dir", dir, "--force", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var written tlsWritten
	if err := json.Unmarshal([]byte(out), &written); err != nil {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	if written.Kind != "ca" || written.CACert != filepath.Join(dir, "ca.crt") || written.Key != filepath.Join(dir, "ca.key") ||
		!strings.HasPrefix(written.Subject, "hatarget cluster CA ") {
		t.Errorf("-o json: %+v", written)
	}
}

func TestTLSCertCreate(t *testing.T) {
	caDir := createTestCA(t)
	out := filepath.Join(t.TempDir(), "n1")
	text, err := runCLI(t, "", "tls", "cert", "create", "--ca", caDir, "--node", "n1", "--addr", "10.0.0.1", "--addr", "[fd00::1]", "--out", out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"issued the certificate of node n1 (hatarget://node/n1) for 10.0.0.1, fd00::1, valid until ",
		filepath.Join(out, "ca.crt") + "  CA certificate      agent --tls-ca\n",
		filepath.Join(out, "n1.crt") + "  node certificate    agent --tls-cert\n",
		filepath.Join(out, "n1.key") + "  private key (0600)  agent --tls-key\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	creds, err := pki.Load(pki.FilesIn(out, "n1"), "n1")
	if err != nil {
		t.Fatalf("loading what tls cert create wrote: %v", err)
	}
	if ips := creds.Leaf().IPAddresses; len(ips) != 2 || ips[0].String() != "10.0.0.1" || ips[1].String() != "fd00::1" {
		t.Errorf("IP SANs %v", ips)
	}
	if _, err := runCLI(t, "", "tls", "cert", "create", "--ca", caDir, "--node", "n1", "--addr", "10.0.0.1", "--out", out); err == nil ||
		!strings.Contains(err.Error(), "not overwriting it without --force") {
		t.Errorf("second certificate of n1: %v; want it refused", err)
	}
	if _, err := runCLI(t, "", "tls", "cert", "create", "--ca", caDir, "--node", "n1", "--addr", "10.0.0.1", "--out", out, "--force"); err != nil {
		t.Errorf("renewal with --force: %v", err)
	}

	text, err = runCLI(t, "", "tls", "cert", "create", "--ca", caDir, "--client", "alice", "--out", out, "--days", "7", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var written tlsWritten
	if err := json.Unmarshal([]byte(text), &written); err != nil {
		t.Fatalf("-o json: %v\n%s", err, text)
	}
	if written.Kind != "operator" || written.Name != "alice" || written.Identity != "hatarget://operator/alice" ||
		written.Cert != filepath.Join(out, "alice.crt") || written.Key != filepath.Join(out, "alice.key") || len(written.Addresses) != 0 {
		t.Errorf("-o json: %+v", written)
	}
	if left := time.Until(written.NotAfter); left < 6*24*time.Hour || left > 7*24*time.Hour {
		t.Errorf("operator certificate valid for %s more; want 7 days", left)
	}
	if info, err := os.Stat(written.Key); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("operator key: %v, %v; want mode 0600", info.Mode(), err)
	}
}

func TestTLSCertCreateRefuses(t *testing.T) {
	caDir := createTestCA(t)
	exposedCA := createTestCA(t)
	if err := os.Chmod(filepath.Join(exposedCA, "ca.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "node and client", args: []string{"--node", "n1", "--client", "alice", "--addr", "10.0.0.1"}, want: "[client node] were all set"},
		{name: "neither node nor client", args: []string{"--addr", "10.0.0.1"}, want: "at least one of the flags in the group [node client]"},
		{name: "client with an address", args: []string{"--client", "alice", "--addr", "10.0.0.1"}, want: "--addr is for --node"},
		{name: "node without an address", args: []string{"--node", "n1"}, want: "--node n1 needs --addr"},
		{name: "host name as the address", args: []string{"--node", "n1", "--addr", "n1.example.com"}, want: `--addr "n1.example.com" is not an IP address`},
		{name: "bad node name", args: []string{"--node", "n1/x", "--addr", "10.0.0.1"}, want: "--node: name \"n1/x\""},
		{name: "bad operator name", args: []string{"--client", "-alice"}, want: "--client: name \"-alice\" must start with a letter or digit"},
		{name: "no days", args: []string{"--client", "alice", "--days", "0"}, want: "--days 0: want 1 to"},
		{name: "longer than the CA", args: []string{"--client", "alice", "--days", "4000"}, want: "would outlive the CA"},
		{name: "CA key others can read", args: []string{"--client", "alice", "--ca", exposedCA}, want: "chmod 600"},
		{name: "no CA", args: []string{"--client", "alice", "--ca", filepath.Join(caDir, "missing")}, want: "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			args := append([]string{"tls", "cert", "create", "--ca", caDir, "--out", out}, tt.args...)
			if _, err := runCLI(t, "", args...); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%v: %v; want an error with %q", tt.args, err, tt.want)
			}
			if _, err := os.Stat(out); err == nil {
				t.Errorf("%v: %s created by a refused command", tt.args, out)
			}
		})
	}
	if _, err := runCLI(t, "", "tls", "cert", "create", "--node", "n1", "--addr", "10.0.0.1"); err == nil || !strings.Contains(err.Error(), `required flag(s) "ca", "out" not set`) {
		t.Errorf("without --ca and --out: %v", err)
	}
}
