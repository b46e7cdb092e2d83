package forward

import (
	"context"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/backend/backendtest"
	"github.com/hatarget/hatarget/target/scsi"
)

func newLU(tb testing.TB, dev backend.Device) *scsi.LU {
	tb.Helper()
	lu, err := scsi.NewLU(scsi.LUConfig{Device: dev, BlockSize: 512, Serial: "fwd-serial", Name: "disk"})
	if err != nil {
		tb.Fatal(err)
	}
	return lu
}

func newMemLU(tb testing.TB, size int) *scsi.LU { return newLU(tb, backendtest.NewMem(size)) }

// rig is an owner (a Server over loopback TCP with one LU) and a client
// forwarding to it.
type rig struct {
	t     testing.TB
	dev   *backendtest.Mem
	lu    *scsi.LU
	srv   *Server
	cli   *Client
	fwd   *LUForwarder
	addr  string
	epoch atomic.Uint64 // the owner's epoch
	owns  atomic.Bool

	mu    sync.Mutex
	conns []net.Conn // every connection the client dialled
}

// rigOption changes the rig's LU or configuration before it starts.
type rigOption func(*rig, *ServerConfig, *ClientConfig)

func newRig(t testing.TB, opts ...rigOption) *rig {
	r := &rig{t: t, dev: backendtest.NewMem(2048 * 512)}
	r.lu = newLU(t, r.dev)
	r.epoch.Store(7)
	r.owns.Store(true)
	scfg := ServerConfig{Lookup: r.lookup}
	ccfg := ClientConfig{Dial: r.dial, PeerTimeout: 5 * time.Second}
	for _, o := range opts {
		o(r, &scfg, &ccfg)
	}
	var err error
	if r.srv, err = NewServer(scfg); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go r.srv.Serve(ln)
	r.addr = ln.Addr().String()
	ccfg.Addr = r.addr
	if r.cli, err = NewClient(ccfg); err != nil {
		t.Fatal(err)
	}
	r.fwd = r.cli.ForLU("disk", func() uint64 { return 7 })
	t.Cleanup(func() {
		r.cli.Close()
		r.srv.Close()
	})
	return r
}

func (r *rig) lookup(device string) (*scsi.LU, uint64, bool) {
	if device != "disk" {
		return nil, 0, false
	}
	return r.lu, r.epoch.Load(), r.owns.Load()
}

func (r *rig) dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		r.mu.Lock()
		r.conns = append(r.conns, nc)
		r.mu.Unlock()
	}
	return nc, err
}

func (r *rig) dialled() []net.Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]net.Conn(nil), r.conns...)
}

// forward runs cdb through the forwarder for nexus n.
func (r *rig) forward(n *scsi.Nexus, cdb, dataOut []byte, edtl int) (*scsi.Result, []byte) {
	cmd := &scsi.Command{Nexus: n, CDB: cdb, DataOut: dataOut, DataIn: make([]byte, edtl)}
	res := &scsi.Result{}
	r.fwd.Forward(cmd, res)
	return res, cmd.DataIn[:res.DataInLen]
}

// local runs cdb on the owner's LU directly, for comparison.
func (r *rig) local(n *scsi.Nexus, cdb, dataOut []byte, edtl int) (*scsi.Result, []byte) {
	cmd := &scsi.Command{Nexus: n, CDB: cdb, DataOut: dataOut, DataIn: make([]byte, edtl)}
	res := &scsi.Result{}
	r.lu.ExecuteLocal(cmd, res)
	return res, cmd.DataIn[:res.DataInLen]
}

// nexus returns a remote nexus: an initiator logged in to another node's
// port (its own port group and relative port).
func nexus(isid byte) *scsi.Nexus {
	return scsi.NewNexus("iqn.1994-05.com.example:host1", [6]byte{0x80, 0, 0, 0, 0, isid},
		"iqn.2024-01.org.hatarget:t1", 2, 9, 2)
}

func cdbRW10(op byte, lba uint32, blocks uint16) []byte {
	c := []byte{op, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint16(c[7:], blocks)
	return c
}

func cdbTUR() []byte { return []byte{0, 0, 0, 0, 0, 0} }

const (
	opRead10  = 0x28
	opWrite10 = 0x2a
)

// wantSense checks for CHECK CONDITION with the given key, ASC and ASCQ in
// fixed or descriptor format.
func wantSense(t testing.TB, res *scsi.Result, key, asc, ascq byte) {
	t.Helper()
	if res.Status != scsi.StatusCheckCondition || len(res.Sense) < 14 {
		t.Fatalf("status %#x sense %x, want CHECK CONDITION %x/%02x/%02x", res.Status, res.Sense, key, asc, ascq)
	}
	s := res.Sense
	k, a, q := s[2]&0xf, s[12], s[13]
	if s[0]&0x7f == 0x72 {
		k, a, q = s[1]&0xf, s[2], s[3]
	}
	if k != key || a != asc || q != ascq {
		t.Fatalf("sense %x/%02x/%02x, want %x/%02x/%02x", k, a, q, key, asc, ascq)
	}
}

func wantTransitioning(t testing.TB, res *scsi.Result) {
	t.Helper()
	wantSense(t, res, scsi.KeyNotReady, 0x04, 0x0a)
}

// eventually waits for cond, failing after a few seconds.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
