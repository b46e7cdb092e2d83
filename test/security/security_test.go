// Package security tests the node channels' security with real binaries,
// each node its own process: mutual TLS on Raft, forwarding, replication
// and the API, gossip encryption, and certificate and gossip key rotation
// under I/O.
package security

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/cluster/pki"
	"github.com/hatarget/hatarget/replication"
	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/test/nodetest"
)

const (
	tgtIQN    = "iqn.2025-01.com.example:security"
	lunName   = "sec0"
	lunSize   = 4 << 20
	blockSize = 512
	token     = "security-test-token"
	// rogueIP is where every rogue connects from, so that the nodes' logs
	// can be searched for it.
	rogueIP = "127.0.0.99"
)

func newGossipKey(t *testing.T) string {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(key)
}

// secureCluster starts three nodes with TLS, an API token and an
// encrypted gossip, and a LUN replicated on all three.
func secureCluster(ctx context.Context, t *testing.T) (*nodetest.Cluster, string, api.LUN) {
	t.Helper()
	key := newGossipKey(t)
	c := nodetest.StartCluster(t, 3, nodetest.ClusterOptions{
		TLS: true, Token: token, PrivateStorage: true, Args: []string{"--gossip-key", key},
		ReadyTimeout: 30 * time.Second,
	})
	c.WaitLeader(t, 20*time.Second)
	mustCLI(t, c, 1, "target", "create", tgtIQN)
	mustCLI(t, c, 1, "lun", "create", tgtIQN, "0", "--name", lunName, "--size", strconv.Itoa(lunSize), "--replicas", "3")
	var l *api.LUN
	if !nodetest.Poll(20*time.Second, 100*time.Millisecond, func() bool {
		var err error
		l, err = c.Node(1).Client().LUN(ctx, lunName)
		return err == nil && l.Owner != ""
	}) {
		t.Fatalf("%s has no owner", lunName)
	}
	return c, key, *l
}

func mustCLI(t *testing.T, c *nodetest.Cluster, i int, args ...string) string {
	t.Helper()
	out, err := c.CLI(t, i, args...)
	if err != nil {
		t.Fatalf("hatarget %s (through n%d): %v\n%s", strings.Join(args, " "), i, err, out)
	}
	return out
}

// session logs in through addr once the node serves the LUN, and clears
// the power-on unit attention.
func session(ctx context.Context, t *testing.T, addr string) *initiator.Session {
	t.Helper()
	var last error
	for ctx.Err() == nil {
		s, err := initiator.Dial(ctx, initiator.Config{Addr: addr, TargetName: tgtIQN, Timeout: 5 * time.Second})
		if err == nil {
			buf := make([]byte, blockSize)
			for range 5 {
				if last = s.Read(ctx, 0, 0, 1, blockSize, buf); last == nil {
					return s
				}
			}
			s.Close()
		} else {
			last = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s never served %s: %v", addr, tgtIQN, last)
	return nil
}

// pattern is block i's content in write round n.
func pattern(i int, n uint64) []byte {
	b := bytes.Repeat([]byte{byte(i), byte(n), 0x5a, byte(i >> 8)}, blockSize/4)
	return b
}

// lunSum reads the whole LUN through addr.
func lunSum(ctx context.Context, t *testing.T, addr string) [32]byte {
	t.Helper()
	s := session(ctx, t, addr)
	defer s.Close()
	const chunk = 256 << 10
	h := sha256.New()
	buf := make([]byte, chunk)
	for off := 0; off < lunSize; off += chunk {
		if err := s.Read(ctx, 0, uint64(off/blockSize), chunk/blockSize, blockSize, buf); err != nil {
			t.Fatalf("reading %s through %s: %v", lunName, addr, err)
		}
		h.Write(buf)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// clusterState is what a rogue must not change.
type clusterState struct {
	Export  string
	Members []string
	LUNs    []string // name, owner, epoch, replicas
	Term    uint64
	Leader  string
	Data    [32]byte
}

func stateOf(ctx context.Context, t *testing.T, c *nodetest.Cluster, lunPortal string) clusterState {
	t.Helper()
	cl := c.Node(1).Client()
	var s clusterState
	export, err := cl.ExportSCST(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	s.Export = string(export)
	members, err := cl.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		s.Members = append(s.Members, m.Name)
	}
	slices.Sort(s.Members)
	luns, err := cl.LUNs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range luns {
		s.LUNs = append(s.LUNs, fmt.Sprintf("%s owner %s epoch %d replicas %v", l.Name, l.Owner, l.Epoch, l.Replicas))
	}
	ls, err := cl.Local(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Term, s.Leader = ls.Term, ls.Leader
	s.Data = lunSum(ctx, t, lunPortal)
	return s
}

// rogue is a TLS client configuration a rogue connects with; every one
// trusts any server, so that what is tested is the node's refusal.
type rogue struct {
	name string
	cfg  *tls.Config
}

func rogueWithCert(t *testing.T, name string, ca *pki.CA, id pki.Identity) rogue {
	t.Helper()
	iss, err := ca.Issue(pki.CertRequest{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(iss.CertPEM, iss.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	// GetClientCertificate, not Certificates: Go's client sends a
	// certificate only if the server asks for its issuer, and this one
	// must be judged by the server however it was issued.
	return rogue{name: name, cfg: &tls.Config{
		InsecureSkipVerify:   true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
	}}
}

func rogues(t *testing.T, c *nodetest.Cluster) []rogue {
	t.Helper()
	other, err := pki.NewCA(pki.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return []rogue{
		// A member's name, signed by another CA.
		rogueWithCert(t, "another CA", other, pki.Node("n2")),
		{name: "no certificate", cfg: &tls.Config{InsecureSkipVerify: true}},
		// The cluster's CA, a name that is no member.
		rogueWithCert(t, "not a member", c.CA, pki.Node("intruder")),
	}
}

// channel is a node port and the first bytes of its protocol: a rogue
// that got through would get an answer to them.
type channel struct {
	name    string
	port    func(nodetest.Ports) int
	command []byte
}

var channels = []channel{
	// A Raft AppendEntries RPC type byte and some msgpack.
	{"raft", func(p nodetest.Ports) int { return p.Raft }, []byte{0, 0x81, 0xa4, 'T', 'e', 'r', 'm', 0xcd, 0xff, 0xff}},
	{"forward", func(p nodetest.Ports) int { return p.Forward }, []byte("HTFW\x00\x02\x00\x00")},
	{"replication", func(p nodetest.Ports) int { return p.Replication }, append([]byte("HTRP\x00\x02\x00\x00"), make([]byte, 33)...)},
	// A write without the token: a rogue does not have it.
	{"api", func(p nodetest.Ports) int { return p.API }, []byte("POST /v1/targets HTTP/1.1\r\nHost: n1\r\n" +
		"Content-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"iqn\":\"iqn.2025-01.com.example:rogue\"}  ")},
}

// attack connects from rogueIP to addr with r's configuration, sends the
// command and returns the rogue's local address and what came back.
func attack(t *testing.T, addr string, r rogue, command []byte) (string, []byte, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(rogueIP)}, Timeout: 5 * time.Second}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("rogue cannot reach %s: %v", addr, err)
	}
	defer raw.Close()
	local := raw.LocalAddr().String()
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	c := tls.Client(raw, r.cfg)
	if err := c.Handshake(); err != nil {
		return local, nil, err
	}
	// In TLS 1.3 the client's handshake is over before the server has
	// judged its certificate: the refusal comes with the first read.
	if _, err := c.Write(command); err != nil {
		return local, nil, err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	return local, buf[:n], err
}

// TestRoguesRefused: on every channel of a node, a rogue with a
// certificate of another CA, one with none and one with a valid
// certificate for a name that is not a member are refused before they
// can send a command, each refusal is logged with the rogue's address,
// and gossip refuses members without the key. The cluster's state and
// the LUN's data are the same afterwards.
func TestRoguesRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, key, l := secureCluster(ctx, t)
	n1 := c.Node(1)
	// Through a node that does not own the LUN: its commands are
	// forwarded to the owner, over TLS.
	portal := c.Node(c.Index(l.Owner)%3 + 1).ISCSIAddr()
	writeBlocks(ctx, t, portal, 1)
	before := stateOf(ctx, t, c, portal)

	for _, ch := range channels {
		addr := net.JoinHostPort(n1.IP, strconv.Itoa(ch.port(c.Ports)))
		for _, r := range rogues(t, c) {
			t.Run(ch.name+"/"+r.name, func(t *testing.T) {
				local, answer, err := attack(t, addr, r, ch.command)
				if ch.name == "api" && r.name == "no certificate" {
					// Operators may call the API without a certificate,
					// with the token: without it, the call is refused.
					if !bytes.HasPrefix(answer, []byte("HTTP/1.1 401")) {
						t.Errorf("a caller without certificate or token got %q, %v; want 401", answer, err)
					}
					return
				}
				if err == nil || len(answer) > 0 {
					t.Fatalf("rogue %s got through to %s: answer %q, err %v", r.name, ch.name, answer, err)
				}
				needle := "remote=" + local
				if !nodetest.Poll(5*time.Second, 50*time.Millisecond, func() bool { return logHas(n1.Logs(), needle, "refused a connection") }) {
					t.Errorf("n1 did not log the refusal of %s on %s with its address %s", r.name, ch.name, local)
				}
			})
		}
	}
	t.Run("replication/member claiming another name", func(t *testing.T) {
		// n3's own certificate, a hello in n2's name: it would take over
		// n2's connection and have its writes counted as n2's copy.
		hello, err := replication.AppendClientHello(nil, replication.ClientHello{Version: replication.Version, Name: []byte("n2")})
		if err != nil {
			t.Fatal(err)
		}
		addr := net.JoinHostPort(n1.IP, strconv.Itoa(c.Ports.Replication))
		local, answer, err := attack(t, addr, rogueWithCert(t, "n3", c.CA, pki.Node("n3")), hello)
		if err == nil || len(answer) > 0 {
			t.Fatalf("n3 speaking as n2 got %q, %v", answer, err)
		}
		if !nodetest.Poll(5*time.Second, 50*time.Millisecond, func() bool {
			return logHas(n1.Logs(), "replication handshake failed", local, "names node n3, not n2")
		}) {
			t.Errorf("n1 did not log the impersonation from %s", local)
		}
	})
	t.Run("api/operator certificate", func(t *testing.T) {
		// The other side of the API's policy: an operator's certificate
		// of the CA is accepted (with the token, which decides the role).
		iss, err := c.CA.Issue(pki.CertRequest{Identity: pki.Operator("alice")})
		if err != nil {
			t.Fatal(err)
		}
		files, err := iss.Write(t.TempDir(), false)
		if err != nil {
			t.Fatal(err)
		}
		mustCLI(t, c, 1, "cluster", "status", "--cert", files.Cert, "--key", files.Key)
	})
	t.Run("gossip", func(t *testing.T) {
		gossipRogues(t, n1, net.JoinHostPort(n1.IP, strconv.Itoa(c.Ports.Gossip)), key)
	})

	after := stateOf(ctx, t, c, portal)
	if !equalState(before, after) {
		t.Errorf("the rogues changed the cluster:\nbefore %+v\nafter  %+v", before, after)
	}
}

func equalState(a, b clusterState) bool {
	return a.Export == b.Export && slices.Equal(a.Members, b.Members) && slices.Equal(a.LUNs, b.LUNs) &&
		a.Term == b.Term && a.Leader == b.Leader && a.Data == b.Data
}

func logHas(logs string, subs ...string) bool {
	for line := range strings.SplitSeq(logs, "\n") {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			return true
		}
	}
	return false
}

// writeBlocks writes the first 64 blocks through addr in round n.
func writeBlocks(ctx context.Context, t *testing.T, addr string, n uint64) {
	t.Helper()
	s := session(ctx, t, addr)
	defer s.Close()
	for i := range 64 {
		if err := s.Write(ctx, 0, uint64(i), 1, blockSize, pattern(i, n)); err != nil {
			t.Fatalf("write block %d through %s: %v", i, addr, err)
		}
	}
}

// nodeMembers lists the gossip members a node sees.
func nodeMembers(t *testing.T, a *nodetest.Agent) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ms, err := a.Client().Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range ms {
		names = append(names, m.Name)
	}
	return names
}

// keyringOf decodes `cluster keyring list -o json`.
func keyringOf(t *testing.T, c *nodetest.Cluster, i int) api.KeyringResult {
	t.Helper()
	var r api.KeyringResult
	if err := json.Unmarshal([]byte(mustCLI(t, c, i, "cluster", "keyring", "list", "-o", "json")), &r); err != nil {
		t.Fatal(err)
	}
	return r
}
