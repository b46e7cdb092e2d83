package security

import (
	"context"
	"crypto/tls"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/hatarget/hatarget/test/nodetest"
)

// TestJoinAndRemove: with TLS and an encrypted gossip, a fourth node with a
// certificate of the CA joins as a voter (gossip admits it to the node
// channels before Raft knows it); once removed, its own certificate is
// refused on every node channel, and the refusal logged.
func TestJoinAndRemove(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	key := newGossipKey(t)
	c := nodetest.StartCluster(t, 3, nodetest.ClusterOptions{TLS: true, Token: token, Args: []string{"--gossip-key", key}})
	c.WaitLeader(t, 20*time.Second)
	n4 := c.AddNode(t, "n4")
	if !nodetest.Poll(20*time.Second, 100*time.Millisecond, func() bool {
		st, err := c.Node(1).Client().Status(ctx)
		if err != nil {
			return false
		}
		for _, n := range st.Nodes {
			if n.Name == "n4" {
				return n.Voter
			}
		}
		return false
	}) {
		t.Fatal("n4 did not become a voter")
	}
	cert, err := tls.LoadX509KeyPair(n4.TLS.Cert, n4.TLS.Key)
	if err != nil {
		t.Fatal(err)
	}
	n4.Kill()
	if !nodetest.Poll(20*time.Second, 500*time.Millisecond, func() bool {
		_, err := c.CLI(t, 2, "cluster", "remove", "n4")
		return err == nil
	}) {
		t.Fatal("cluster remove n4 refused 20 s after the kill")
	}
	removed := rogue{name: "removed n4", cfg: &tls.Config{
		InsecureSkipVerify:   true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
	}}
	n1 := c.Node(1)
	for _, ch := range channels {
		addr := net.JoinHostPort(n1.IP, strconv.Itoa(ch.port(c.Ports)))
		var local string
		// Every node refreshes its member set within half a second of the
		// removal being applied.
		if !nodetest.Poll(5*time.Second, 200*time.Millisecond, func() bool {
			var answer []byte
			local, answer, err = attack(t, addr, removed, ch.command)
			return err != nil && len(answer) == 0
		}) {
			t.Errorf("the removed n4 still gets through on %s", ch.name)
			continue
		}
		if !nodetest.Poll(5*time.Second, 50*time.Millisecond, func() bool {
			return logHas(n1.Logs(), "remote="+local, "node n4 is not a member")
		}) {
			t.Errorf("n1 did not log the refusal of the removed n4 on %s", ch.name)
		}
	}
}
