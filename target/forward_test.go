package target

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/target/scsi"
)

const forwardIQN = "iqn.2024-01.io.hatarget.test:forward"

// fwdNode is one node of a two-node cluster in one process: a Server with
// an iSCSI portal and a forwarding listener.
type fwdNode struct {
	srv     *Server
	portal  string
	fwdAddr string
	dialer  *trackingDialer
}

func newFwdNode(t *testing.T) *fwdNode {
	t.Helper()
	d := &trackingDialer{}
	srv := New(Options{
		Logger:      slog.New(slog.DiscardHandler),
		StateDir:    t.TempDir(),
		Registerer:  prometheus.NewRegistry(),
		ForwardDial: d.DialContext,
	})
	portal, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeForward(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("ServeForward after Shutdown: %v", err)
		}
	})
	return &fwdNode{srv: srv, portal: portal.String(), fwdAddr: l.Addr().String(), dialer: d}
}

// apply serves disk1, at LUN 0 when mapped, with owner.
func (n *fwdNode) apply(t *testing.T, path string, mapped bool, owner Owner) {
	t.Helper()
	cfg := Config{
		Devices: []Device{{Name: "disk1", Backend: backend.Options{Handler: backend.FileIO, Path: path,
			Size: testBlocks * testBlockSz, BlockSize: testBlockSz}}},
		Targets: []Target{{Name: forwardIQN}},
		Owners:  map[string]Owner{"disk1": owner},
	}
	if mapped {
		cfg.Targets[0].LUNs = []LUN{{Number: 0, Device: "disk1"}}
	}
	if err := n.srv.Apply(cfg); err != nil {
		t.Fatal(err)
	}
}

func (n *fwdNode) login(t *testing.T) *initiator.Session {
	t.Helper()
	s, err := initiator.Dial(testContext(t), initiator.Config{Addr: n.portal, TargetName: forwardIQN})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Logout(context.Background()) })
	return s
}

// writes is how many WRITEs disk1 executed on this node: forwarded
// commands count where they execute.
func (n *fwdNode) writes(t *testing.T) float64 {
	return sampleLUN(t, n.srv.metrics, "disk1", "write").commands
}

// trackingDialer dials TCP and remembers the connections, to see that a
// closed client closes them.
type trackingDialer struct {
	mu    sync.Mutex
	conns []*trackedConn
}

type trackedConn struct {
	net.Conn
	closed atomic.Bool
}

func (c *trackedConn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

func (d *trackingDialer) DialContext(ctx context.Context, addr string) (net.Conn, error) {
	var nd net.Dialer
	nc, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &trackedConn{Conn: nc}
	d.mu.Lock()
	d.conns = append(d.conns, c)
	d.mu.Unlock()
	return c, nil
}

func (d *trackingDialer) open() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, c := range d.conns {
		if !c.closed.Load() {
			n++
		}
	}
	return n
}

// TestForwarding runs two nodes on one backing file: the non-owner
// forwards, a move swaps the roles, a stale epoch is refused with the
// retryable sense, and removing the device closes the forward client.
func TestForwarding(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk1.img")
	a, b := newFwdNode(t), newFwdNode(t)
	a.apply(t, path, true, Owner{Epoch: 1})
	b.apply(t, path, true, Owner{Addr: a.fwdAddr, Epoch: 1})
	sa, sb := a.login(t), b.login(t)
	ctx := testContext(t)
	ready := func() {
		t.Helper()
		for _, s := range []*initiator.Session{sa, sb} {
			if err := s.TestUnitReady(ctx, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	// write writes a block through from and checks that it executed on
	// owner only and that both nodes read it back.
	write := func(from *initiator.Session, owner, other *fwdNode, lba uint64, fill byte) {
		t.Helper()
		ready() // unit attentions first, so they do not count as writes
		ownerWrites, otherWrites := owner.writes(t), other.writes(t)
		block := bytes.Repeat([]byte{fill}, testBlockSz)
		if err := from.Write(ctx, 0, lba, 1, testBlockSz, block); err != nil {
			t.Fatal(err)
		}
		if d := owner.writes(t) - ownerWrites; d != 1 {
			t.Errorf("owner executed %v writes, want 1", d)
		}
		if d := other.writes(t) - otherWrites; d != 0 {
			t.Errorf("non-owner executed %v writes, want 0", d)
		}
		for i, s := range []*initiator.Session{sa, sb} {
			got := make([]byte, testBlockSz)
			if err := s.Read(ctx, 0, lba, 1, testBlockSz, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, block) {
				t.Errorf("session %d reads %#x..., want %#x", i, got[0], fill)
			}
		}
	}

	write(sb, a, b, 3, 0xb1)
	write(sa, a, b, 4, 0xa1)

	// A moves the LU to itself in epoch 2 before B learns of it: B's
	// commands in epoch 1 are refused with a sense initiators retry.
	a.apply(t, path, true, Owner{Epoch: 2})
	resp, err := sb.Do(ctx, 0, rw10(opRead10, 3, 1), nil, make([]byte, testBlockSz))
	if err != nil {
		t.Fatal(err)
	}
	serr := &initiator.SCSIError{Status: resp.Status, Sense: resp.Sense}
	if key, asc, ascq := serr.SenseKey(); resp.Status != initiator.StatusCheckCondition || key != scsi.KeyNotReady || asc != 0x04 || ascq != 0x0a {
		t.Fatalf("stale epoch: %v, want NOT READY 04/0A", serr)
	}
	// The same owner address in the new epoch: the forwarder stays and
	// sends the new epoch.
	b.apply(t, path, true, Owner{Addr: a.fwdAddr, Epoch: 2})
	write(sb, a, b, 5, 0xb2)

	// The move to B in epoch 3: the new owner first, as a cluster does.
	b.apply(t, path, true, Owner{Epoch: 3})
	a.apply(t, path, true, Owner{Addr: b.fwdAddr, Epoch: 3})
	// Unused clients close once idle, in the background.
	if len(b.srv.clients) != 0 || !eventually(func() bool { return b.dialer.open() == 0 }) {
		t.Errorf("B owns every device and keeps %d clients, %d connections", len(b.srv.clients), b.dialer.open())
	}
	write(sa, b, a, 6, 0xa3)
	write(sb, b, a, 7, 0xb3)

	// Removing the device (unmapped first) closes A's client to B.
	a.apply(t, path, false, Owner{Addr: b.fwdAddr, Epoch: 3})
	if a.dialer.open() != 1 {
		t.Fatalf("%d connections to B while a device is owned there, want 1", a.dialer.open())
	}
	if err := a.srv.Apply(Config{Targets: []Target{{Name: forwardIQN}}}); err != nil {
		t.Fatal(err)
	}
	if len(a.srv.clients) != 0 || !eventually(func() bool { return a.dialer.open() == 0 }) {
		t.Errorf("device removed: %d clients, %d connections left", len(a.srv.clients), a.dialer.open())
	}
	if lu, _, _ := a.srv.lookup("disk1"); lu != nil {
		t.Error("a removed device is still looked up")
	}
}

// TestOwnersApplyErrors checks that a configuration that cannot forward is
// refused before anything changes.
func TestOwnersApplyErrors(t *testing.T) {
	srv := New(Options{Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	good := Config{Devices: []Device{nullDevice("disk1")}}
	if err := srv.Apply(good); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, addr, want string
	}{
		{"no ForwardDial", "192.0.2.1:3261", "no ForwardDial"},
		{"no port", "192.0.2.1", "missing port"},
		{"no host", ":3261", "no host"},
	} {
		cfg := Config{Devices: []Device{nullDevice("disk1"), nullDevice("disk2")},
			Owners: map[string]Owner{"disk1": {Addr: tc.addr, Epoch: 1}}}
		if err := srv.Apply(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Apply = %v, want an error about %q", tc.name, err, tc.want)
		}
	}
	if len(srv.units) != 1 || len(srv.clients) != 0 {
		t.Errorf("refused configurations left %d units, %d clients", len(srv.units), len(srv.clients))
	}
	if _, epoch, owner := srv.lookup("disk1"); !owner || epoch != 0 {
		t.Errorf("disk1 without an Owners entry: owner %v epoch %d, want owned here", owner, epoch)
	}
}

// eventually polls cond for up to 5 s.
func eventually(cond func() bool) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}
