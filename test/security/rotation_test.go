package security

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/test/nodetest"
)

// writer writes 64 blocks from base, over and over, through one iSCSI
// session until stopped; any error is a dropped session or a failed
// write.
type writer struct {
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	writes int
	err    error
}

func startWriter(ctx context.Context, t *testing.T, addr string, base int) *writer {
	t.Helper()
	s := session(ctx, t, addr)
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer s.Close()
		for round := uint64(2); ; round++ {
			for i := range 64 {
				select {
				case <-w.stop:
					return
				default:
				}
				wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := s.Write(wctx, 0, uint64(base+i), 1, blockSize, pattern(base+i, round))
				cancel()
				w.mu.Lock()
				w.writes++
				if err != nil {
					w.err = err
				}
				w.mu.Unlock()
				if err != nil {
					return
				}
			}
		}
	}()
	return w
}

func (w *writer) finish() (int, error) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writes, w.err
}

// servedSerial is the serial of the certificate a node's API presents to
// a new connection.
func servedSerial(t *testing.T, c *nodetest.Cluster, a *nodetest.Agent) *big.Int {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(c.CA.Cert)
	conn, err := tls.Dial("tcp", a.APIAddr(), &tls.Config{RootCAs: roots})
	if err != nil {
		t.Fatalf("TLS to %s: %v", a.Name, err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}

// TestRotation: new certificates on each node in turn, each followed by
// SIGHUP, then a gossip key rotation (install, use, remove), all while a
// client writes through iSCSI. No write fails and the session stays up,
// the Raft term and leader do not change, no LUN changes epoch (no
// failover), and gossip never suspects a member.
func TestRotation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, oldKey, l := secureCluster(ctx, t)
	leader := c.WaitLeader(t, 10*time.Second)
	before := termOf(ctx, t, c.ByName(leader))
	// One client on the owner, one on a node that forwards to it.
	owner := c.ByName(l.Owner)
	writers := []*writer{
		startWriter(ctx, t, owner.ISCSIAddr(), 0),
		startWriter(ctx, t, c.Node(c.Index(l.Owner)%3+1).ISCSIAddr(), 64),
	}

	for _, a := range c.Nodes() {
		old := servedSerial(t, c, a)
		files := a.IssueCert(true)
		a.Reload()
		if !nodetest.Poll(10*time.Second, 50*time.Millisecond, func() bool { return servedSerial(t, c, a).Cmp(old) != 0 }) {
			t.Fatalf("%s still serves its old certificate (%s) after SIGHUP", a.Name, files.Cert)
		}
		// New node-to-node connections, made with the new certificate: a
		// write through this node reaches the leader, which commits it
		// through Raft.
		mustCLI(t, c, c.Index(a.Name), "target", "set", tgtIQN, "alias=rotated-"+a.Name)
		time.Sleep(300 * time.Millisecond)
	}

	newKey := newGossipKey(t)
	for _, step := range [][2]string{{"install", newKey}, {"use", newKey}, {"remove", oldKey}} {
		mustCLI(t, c, 2, "cluster", "keyring", step[0], step[1])
		time.Sleep(500 * time.Millisecond) // gossip runs a few rounds with every step
	}
	for _, n := range keyringOf(t, c, 3).Nodes {
		if n.Primary != newKey || !slices.Equal(n.Keys, []string{newKey}) || n.Error != "" {
			t.Errorf("%s's keyring after the rotation: %+v; want only the new key", n.Node, n)
		}
	}
	time.Sleep(time.Second) // writes and gossip under the new key only

	var writes []int
	for i, w := range writers {
		n, err := w.finish()
		if err != nil {
			t.Errorf("iSCSI session %d failed during the rotation after %d writes: %v", i, n, err)
		}
		if n < 100 {
			t.Errorf("only %d writes through session %d during the rotation", n, i)
		}
		writes = append(writes, n)
	}
	after := termOf(ctx, t, c.ByName(leader))
	if after.Term != before.Term || after.Leader != leader {
		t.Errorf("Raft changed: term %d leader %s before, term %d leader %s after", before.Term, leader, after.Term, after.Leader)
	}
	now, err := c.Node(1).Client().LUN(ctx, lunName)
	if err != nil {
		t.Fatal(err)
	}
	if now.Epoch != l.Epoch || now.Owner != l.Owner {
		t.Errorf("%s failed over: owner %s epoch %d before, %s epoch %d after", lunName, l.Owner, l.Epoch, now.Owner, now.Epoch)
	}
	for _, a := range c.Nodes() {
		logs := a.Logs()
		if !strings.Contains(logs, "TLS credentials reloaded") {
			t.Errorf("%s did not log the reload of its credentials", a.Name)
		}
		for _, bad := range []string{"Suspect", "as failed", "refused a connection"} {
			if logHas(logs, bad) {
				t.Errorf("%s logged %q during the rotation", a.Name, bad)
			}
		}
	}
	t.Logf("%v writes through the owner %s and a forwarding node during the rotation of 3 certificates and the gossip key; term %d, %s leads, %s epoch %d",
		writes, l.Owner, after.Term, leader, lunName, now.Epoch)
	restartKeepsKeyring(t, c, leader, l.Owner, newKey)
}

func termOf(ctx context.Context, t *testing.T, a *nodetest.Agent) *api.LocalStatus {
	t.Helper()
	ls, err := a.Client().Local(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// restartKeepsKeyring restarts a node that neither leads nor owns the LUN,
// with the --gossip-key it was first started with: it comes back with the
// keyring it saved, the new key, and rejoins.
func restartKeepsKeyring(t *testing.T, c *nodetest.Cluster, leader, owner, newKey string) {
	t.Helper()
	var a *nodetest.Agent
	for _, n := range c.Nodes() {
		if n.Name != leader && n.Name != owner {
			a = n
			break
		}
	}
	a.Stop()
	a.Start()
	if !nodetest.Poll(20*time.Second, 100*time.Millisecond, func() bool {
		ms, err := c.ByName(leader).Client().Members(context.Background())
		if err != nil {
			return false
		}
		for _, m := range ms {
			if m.Name == a.Name {
				ls, err := a.Local()
				return err == nil && ls.Ready
			}
		}
		return false
	}) {
		t.Fatalf("%s did not rejoin after a restart with the rotated keyring", a.Name)
	}
	if !strings.Contains(a.Logs(), "--gossip-key is not in the keyring this node saved") {
		t.Errorf("%s did not say it kept its saved keyring over --gossip-key", a.Name)
	}
	if n := keyringOf(t, c, c.Index(a.Name)); !slices.ContainsFunc(n.Nodes, func(k api.KeyringNode) bool {
		return k.Node == a.Name && k.Primary == newKey
	}) {
		t.Errorf("%s's keyring after its restart: %+v", a.Name, n)
	}
}
