package forward

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/hatarget/hatarget/target/backend/backendtest"
	"github.com/hatarget/hatarget/target/scsi"
)

// nonOwnerLU is the non-owner node's LU of the rig's device: on storage of
// its own, forwarding everything to the rig's owner.
func (r *rig) nonOwnerLU() (*scsi.LU, *backendtest.Mem) {
	dev := backendtest.NewMem(2048 * 512)
	lu := newLU(r.t, dev)
	lu.SetForwarder(r.fwd)
	return lu, dev
}

// run executes cdb on lu (Execute: forwarded when lu forwards) for n.
func run(lu *scsi.LU, n *scsi.Nexus, cdb, dataOut []byte, edtl int) *scsi.Result {
	res := &scsi.Result{}
	lu.Execute(&scsi.Command{Nexus: n, CDB: cdb, DataOut: dataOut, DataIn: make([]byte, edtl)}, res)
	return res
}

func wantGood(t testing.TB, what string, res *scsi.Result) {
	t.Helper()
	if res.Status != scsi.StatusGood {
		t.Fatalf("%s: status %#x sense %x, want GOOD", what, res.Status, res.Sense)
	}
}

// ownerNexus is a nexus of an initiator logged in to the owner's own port.
func ownerNexus(isid byte) *scsi.Nexus {
	return scsi.NewNexus("iqn.1994-05.com.example:host2", [6]byte{0x80, 0, 0, 0, 0, isid},
		"iqn.2024-01.org.hatarget:t1", 1, 1, 1)
}

// A LUN RESET received by the non-owner is the owner's: every nexus the
// owner knows sees BUS DEVICE RESET FUNCTION OCCURRED, the requester, the
// other remote nexuses and the owner's own alike (SCSI.MultipathIO.Reset
// of libiscsi through the non-owner path).
func TestResetThroughNonOwnerReachesEveryNexus(t *testing.T) {
	r := newRig(t)
	nonOwner, _ := r.nonOwnerLU()
	requester, otherRemote, local := nexus(20), nexus(21), ownerNexus(22)
	// Everyone consumes the POWER ON of its first command.
	wantSense(t, run(nonOwner, requester, cdbTUR(), nil, 0), scsi.KeyUnitAttention, 0x29, 0x00)
	wantSense(t, run(nonOwner, otherRemote, cdbTUR(), nil, 0), scsi.KeyUnitAttention, 0x29, 0x00)
	res, _ := r.local(local, cdbTUR(), nil, 0)
	wantSense(t, res, scsi.KeyUnitAttention, 0x29, 0x00)
	// The non-owner's own LU state, which no command uses: a nexus
	// executing there directly has consumed its POWER ON too.
	probe := nexus(23)
	res = &scsi.Result{}
	nonOwner.ExecuteLocal(&scsi.Command{Nexus: probe, CDB: cdbTUR()}, res)
	wantSense(t, res, scsi.KeyUnitAttention, 0x29, 0x00)

	if err := nonOwner.ResetLU(requester); err != nil {
		t.Fatalf("forwarded reset: %v", err)
	}
	for _, n := range []*scsi.Nexus{requester, otherRemote} {
		wantSense(t, run(nonOwner, n, cdbTUR(), nil, 0), scsi.KeyUnitAttention, 0x29, 0x03)
		wantGood(t, "TUR after the reset's unit attention", run(nonOwner, n, cdbTUR(), nil, 0))
	}
	res, _ = r.local(local, cdbTUR(), nil, 0)
	wantSense(t, res, scsi.KeyUnitAttention, 0x29, 0x03)
	// Through the other path of the same initiator as well: a remote nexus
	// forwarded by the rig's client directly.
	wantGood(t, "remote TUR", func() *scsi.Result { res, _ := r.forward(otherRemote, cdbTUR(), nil, 0); return res }())

	// Nothing happened on the non-owner's LU.
	res = &scsi.Result{}
	nonOwner.ExecuteLocal(&scsi.Command{Nexus: probe, CDB: cdbTUR()}, res)
	wantGood(t, "the non-owner's LU after a forwarded reset", res)
}

// The reset also releases the SPC-2 reservation, at the owner, where it
// lives: a RESERVE(6) of one remote nexus stops conflicting for the other.
func TestForwardedResetReleasesTheReservation(t *testing.T) {
	r := newRig(t)
	nonOwner, _ := r.nonOwnerLU()
	holder, other := nexus(24), nexus(25)
	for _, n := range []*scsi.Nexus{holder, other} {
		run(nonOwner, n, cdbTUR(), nil, 0) // POWER ON
	}
	wantGood(t, "RESERVE(6)", run(nonOwner, holder, []byte{0x16, 0, 0, 0, 0, 0}, nil, 0))
	write := cdbRW10(opWrite10, 1, 1)
	if res := run(nonOwner, other, write, make([]byte, 512), 0); res.Status != scsi.StatusReservationConflict {
		t.Fatalf("write of another nexus under RESERVE(6): status %#x, want RESERVATION CONFLICT", res.Status)
	}
	if err := nonOwner.ResetLU(other); err != nil {
		t.Fatal(err)
	}
	run(nonOwner, other, cdbTUR(), nil, 0) // BUS DEVICE RESET
	wantGood(t, "write after the reset", run(nonOwner, other, write, make([]byte, 512), 0))
}

// A reset the owner refuses is not performed, and ResetLU says why.
func TestForwardedResetRefused(t *testing.T) {
	r := newRig(t)
	nonOwner, _ := r.nonOwnerLU()
	n := nexus(26)
	run(nonOwner, n, cdbTUR(), nil, 0) // POWER ON

	r.epoch.Store(8) // the owner moved on to a new epoch
	err := nonOwner.ResetLU(n)
	var refused *RefusedError
	if !errors.As(err, &refused) || refused.Code != ErrNotOwner || refused.Epoch != 8 {
		t.Fatalf("reset in a stale epoch: %v, want a refusal: not owner, epoch 8", err)
	}
	r.epoch.Store(7)
	r.owns.Store(false)
	if err := nonOwner.NexusLoss(n); !errors.As(err, &refused) || refused.Code != ErrNotOwner {
		t.Fatalf("nexus loss at a node that does not own the LU: %v", err)
	}
	r.owns.Store(true)
	unknown := newMemLU(t, 1<<20)
	unknown.SetForwarder(r.cli.ForLU("not-yet-here", func() uint64 { return 7 }))
	if err := unknown.ResetLU(n); !errors.As(err, &refused) || refused.Code != ErrUnknownDevice {
		t.Fatalf("reset of a device the owner does not have: %v", err)
	}
	// None of them reached the LU, and the connection survived them.
	wantGood(t, "TUR after refused resets", run(nonOwner, n, cdbTUR(), nil, 0))
	if len(r.dialled()) != 1 {
		t.Fatalf("%d connections, refusals must not cost the connection", len(r.dialled()))
	}
}

func TestForwardedResetWithoutOwner(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var d net.Dialer
	cli, err := NewClient(ClientConfig{Addr: addr, Dial: func(ctx context.Context, addr string) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	lu := newMemLU(t, 1<<20)
	lu.SetForwarder(cli.ForLU("disk", func() uint64 { return 1 }))
	if err := lu.ResetLU(nexus(27)); !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("reset with the owner unreachable: %v, want ErrNoAnswer", err)
	}
	if err := lu.NexusLoss(nexus(27)); !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("nexus loss with the owner unreachable: %v, want ErrNoAnswer", err)
	}
}

// The loss of a remote nexus is the owner's: its SPC-2 reservation goes,
// and it sees I_T NEXUS LOSS OCCURRED when it comes back, while the other
// nexuses see nothing.
func TestNexusLossThroughNonOwner(t *testing.T) {
	r := newRig(t)
	nonOwner, _ := r.nonOwnerLU()
	lost, other, local := nexus(28), nexus(29), ownerNexus(30)
	for _, n := range []*scsi.Nexus{lost, other} {
		run(nonOwner, n, cdbTUR(), nil, 0) // POWER ON
	}
	r.local(local, cdbTUR(), nil, 0)
	wantGood(t, "RESERVE(6)", run(nonOwner, lost, []byte{0x16, 0, 0, 0, 0, 0}, nil, 0))
	write := cdbRW10(opWrite10, 2, 1)
	if res, _ := r.local(local, write, make([]byte, 512), 0); res.Status != scsi.StatusReservationConflict {
		t.Fatalf("write of the owner's nexus under RESERVE(6): status %#x", res.Status)
	}

	if err := nonOwner.NexusLoss(lost); err != nil {
		t.Fatalf("forwarded nexus loss: %v", err)
	}
	res, _ := r.local(local, write, make([]byte, 512), 0)
	wantGood(t, "write once the holder's nexus is lost", res)
	wantGood(t, "another remote nexus", run(nonOwner, other, cdbTUR(), nil, 0))
	wantSense(t, run(nonOwner, lost, cdbTUR(), nil, 0), scsi.KeyUnitAttention, 0x29, 0x07)
}

// ABORT TASK of a command the LU forwards reaches the owner: queued there,
// it never runs.
func TestAbortForwardedThroughTheLU(t *testing.T) {
	r := newRig(t, func(_ *rig, s *ServerConfig, _ *ClientConfig) { s.Workers = 1 })
	nonOwner, _ := r.nonOwnerLU()
	n := nexus(31)
	run(nonOwner, n, cdbTUR(), nil, 0) // POWER ON
	entered, release := r.dev.HoldIO()
	t.Cleanup(release) // a failure must not leave the owner's Close waiting for the device
	results := make(chan *scsi.Result, 2)
	write := func(tag, lba uint32) {
		res := &scsi.Result{}
		nonOwner.Execute(&scsi.Command{Nexus: n, TaskTag: tag, CDB: cdbRW10(opWrite10, lba, 1), DataOut: make([]byte, 512)}, res)
		results <- res
	}
	go write(1, 10)
	<-entered // tag 1 runs on the only worker
	go write(2, 11)
	eventually(t, "tag 2 queued at the owner", func() bool {
		return connHolds(r.srv, func(sc *serverConn) bool { return len(sc.tasks) == 2 })
	})
	if got := nonOwner.AbortForwarded(n, 2); got != 1 {
		t.Fatalf("abort sent for %d commands, want 1", got)
	}
	eventually(t, "tag 2 marked aborted at the owner", func() bool {
		return connHolds(r.srv, func(sc *serverConn) bool {
			for _, task := range sc.tasks {
				if task.aborted.Load() {
					return true
				}
			}
			return false
		})
	})
	release()
	var good, aborted int
	for range 2 {
		switch res := <-results; res.Status {
		case scsi.StatusGood:
			good++
		case scsi.StatusTaskAborted:
			aborted++
		default:
			t.Fatalf("status %#x sense %x", res.Status, res.Sense)
		}
	}
	if good != 1 || aborted != 1 || r.dev.Counts().Writes != 1 {
		t.Fatalf("%d good, %d aborted, %d writes; want 1 each", good, aborted, r.dev.Counts().Writes)
	}
	if got := r.lu.AbortForwarded(n, 1); got != 0 {
		t.Fatalf("an LU that does not forward asked about %d commands", got)
	}
}
