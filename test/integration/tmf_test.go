package integration

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/target/iscsi/pdu"
	"github.com/hatarget/hatarget/test/nodetest"
)

// Reset unit attentions: BUS DEVICE RESET FUNCTION OCCURRED, or the
// generic POWER ON, RESET, OR BUS DEVICE RESET OCCURRED.
var (
	uaBusDeviceReset = senseCode{keyUnitAttention, 0x29, 0x03}
	uaPowerOnReset   = senseCode{keyUnitAttention, 0x29, 0x00}
)

// r2tSession logs in with InitialR2T=Yes and ImmediateData=No, so a write
// sends nothing but its command until the target asks for the data: such a
// write stays in the target's task table until we answer.
func r2tSession(t *testing.T, ctx context.Context, n *nodetest.Node, name string) *initiator.Session {
	t.Helper()
	return dial(t, ctx, initiator.Config{Addr: n.Addr(), TargetName: guideIQN, InitiatorName: name,
		InitialR2T: initiator.Yes, ImmediateData: initiator.No})
}

// startWrite10 starts a WRITE(10) of data at lba without waiting for it.
func startWrite10(t *testing.T, ctx context.Context, s *initiator.Session, lun uint64, lba uint32, data []byte) initiator.Call {
	t.Helper()
	blocks := len(data) / blockSize
	cdb := []byte{opWrite10, 0, byte(lba >> 24), byte(lba >> 16), byte(lba >> 8), byte(lba), 0, byte(blocks >> 8), byte(blocks), 0}
	call, err := s.Start(ctx, initiator.Command{LUN: lun, CDB: cdb, DataOut: data})
	if err != nil {
		t.Fatal(err)
	}
	return call
}

// expectUntouched checks that an aborted write left no trace on the medium.
func expectUntouched(t *testing.T, path string, lba uint32, n int) {
	t.Helper()
	onDisk, err := readFileAt(path, int64(lba)*blockSize, n)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, make([]byte, n)) {
		t.Errorf("an aborted write reached the backing file at LBA %d", lba)
	}
}

// TestAbortTask aborts a write that is waiting for its R2T, then asks to
// abort tasks that do not exist.
func TestAbortTask(t *testing.T) {
	t.Parallel()
	n, disks := startGuideNode(t)
	ctx := testCtx(t, 60*time.Second)
	s := r2tSession(t, ctx, n, "iqn.2024-01.io.hatarget:abort")
	if err := s.TestUnitReady(ctx, 1); err != nil {
		t.Fatal(err)
	}

	const lba = 2048
	call := startWrite10(t, ctx, s, 1, lba, bytes.Repeat([]byte{0xee}, 256<<10))
	// The command went out before the ABORT TASK on the same connection,
	// and the target cannot finish it without our data: it is in flight.
	resp, err := s.TaskMgmt(ctx, pdu.TMFAbortTask, 1, call.ITT())
	if err != nil {
		t.Fatal(err)
	}
	if resp != pdu.TMFRespComplete {
		t.Fatalf("ABORT TASK of a write waiting for data: response %d, want %d (function complete)", resp, pdu.TMFRespComplete)
	}
	if _, err := call.Wait(ctx); !errors.Is(err, initiator.ErrTaskAborted) {
		t.Fatalf("aborted write: %v, want ErrTaskAborted", err)
	}
	expectUntouched(t, disks["disk02"], lba, 256<<10)

	// A task that completed, and one that never existed.
	done := startWrite10(t, ctx, s, 1, lba, make([]byte, 4096))
	if r, err := done.Wait(ctx); err != nil || r.Status != initiator.StatusGood {
		t.Fatalf("write: %+v, %v", r, err)
	}
	for _, itt := range []uint32{done.ITT(), 0x0bad0bad} {
		resp, err := s.TaskMgmt(ctx, pdu.TMFAbortTask, 1, itt)
		if err != nil {
			t.Fatal(err)
		}
		if resp != pdu.TMFRespNoTask {
			t.Errorf("ABORT TASK of ITT %#x, which is not in the target: response %d, want %d (task does not exist)", itt, resp, pdu.TMFRespNoTask)
		}
	}
	if err := writeVerify(ctx, s, 1, lba, randomBytes(t, 256<<10), disks["disk02"]); err != nil {
		t.Fatalf("after the aborts: %v", err)
	}
}

// TestLUNReset resets a LUN with a write in flight: the write is aborted,
// every nexus using the LUN gets a reset unit attention, the other LUN is
// left alone, and a LUN that does not exist is refused.
func TestLUNReset(t *testing.T) {
	t.Parallel()
	n, disks := startGuideNode(t)
	ctx := testCtx(t, 60*time.Second)
	s := r2tSession(t, ctx, n, "iqn.2024-01.io.hatarget:reset")
	other := dial(t, ctx, initiator.Config{Addr: n.Addr(), TargetName: guideIQN, InitiatorName: "iqn.2024-01.io.hatarget:bystander"})
	for _, sess := range []*initiator.Session{s, other} {
		for _, lun := range []uint64{0, 1} {
			if err := sess.TestUnitReady(ctx, lun); err != nil {
				t.Fatal(err)
			}
		}
	}

	const lba = 4096
	call := startWrite10(t, ctx, s, 0, lba, bytes.Repeat([]byte{0x77}, 64<<10))
	resp, err := s.TaskMgmt(ctx, pdu.TMFLUNReset, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if resp != pdu.TMFRespComplete {
		t.Fatalf("LUN RESET: response %d, want %d", resp, pdu.TMFRespComplete)
	}
	if _, err := call.Wait(ctx); !errors.Is(err, initiator.ErrTaskAborted) {
		t.Fatalf("write in flight during LUN RESET: %v, want ErrTaskAborted", err)
	}
	expectUntouched(t, disks["disk01"], lba, 64<<10)

	expectSense(t, ctx, s, 0, uaBusDeviceReset, uaPowerOnReset)
	expectSense(t, ctx, other, 0, uaBusDeviceReset, uaPowerOnReset)
	for _, sess := range []*initiator.Session{s, other} {
		if r, err := tur(ctx, sess, 1); err != nil || r.Status != initiator.StatusGood {
			t.Errorf("LUN 1 after a reset of LUN 0: status %#x %v, %v", r.Status, senseOf(r), err)
		}
		if r, err := tur(ctx, sess, 0); err != nil || r.Status != initiator.StatusGood {
			t.Errorf("LUN 0 after its unit attention: status %#x %v, %v", r.Status, senseOf(r), err)
		}
	}

	resp, err = s.TaskMgmt(ctx, pdu.TMFLUNReset, 7, 0)
	if err != nil {
		t.Fatal(err)
	}
	if resp != pdu.TMFRespNoLUN {
		t.Errorf("LUN RESET of unmapped LUN 7: response %d, want %d (LUN does not exist)", resp, pdu.TMFRespNoLUN)
	}
	if err := writeVerify(ctx, s, 0, lba, randomBytes(t, 64<<10), disks["disk01"]); err != nil {
		t.Fatalf("after the reset: %v", err)
	}
}

// TestTargetWarmReset resets the whole target: the session survives, and
// each of its LUNs reports the reset once.
func TestTargetWarmReset(t *testing.T) {
	t.Parallel()
	n, disks := startGuideNode(t)
	ctx := testCtx(t, 60*time.Second)
	s := r2tSession(t, ctx, n, "iqn.2024-01.io.hatarget:warm")
	for _, lun := range []uint64{0, 1} {
		if err := s.TestUnitReady(ctx, lun); err != nil {
			t.Fatal(err)
		}
	}
	const lba = 8192
	call := startWrite10(t, ctx, s, 1, lba, bytes.Repeat([]byte{0x99}, 64<<10))
	resp, err := s.TaskMgmt(ctx, pdu.TMFTargetWarmReset, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if resp != pdu.TMFRespComplete {
		t.Fatalf("TARGET WARM RESET: response %d, want %d", resp, pdu.TMFRespComplete)
	}
	if _, err := call.Wait(ctx); !errors.Is(err, initiator.ErrTaskAborted) {
		t.Fatalf("write in flight during TARGET WARM RESET: %v, want ErrTaskAborted", err)
	}
	expectUntouched(t, disks["disk02"], lba, 64<<10)
	for _, lun := range []uint64{0, 1} {
		expectSense(t, ctx, s, lun, uaBusDeviceReset, uaPowerOnReset)
		if r, err := tur(ctx, s, lun); err != nil || r.Status != initiator.StatusGood {
			t.Errorf("LUN %d after its unit attention: status %#x %v, %v", lun, r.Status, senseOf(r), err)
		}
	}
	if err := s.NOP(ctx); err != nil {
		t.Fatalf("session after TARGET WARM RESET: %v", err)
	}
}

// TestSessionReinstatement logs in twice with the same initiator name and
// ISID: the target closes the first session and serves the second. The
// same ISID under another initiator name is another I_T nexus and is left
// alone.
func TestSessionReinstatement(t *testing.T) {
	t.Parallel()
	n, disks := startGuideNode(t)
	ctx := testCtx(t, 60*time.Second)
	isid := [6]byte{0x80, 0x12, 0x34, 0x56, 0x00, 0x01}
	cfg := initiator.Config{Addr: n.Addr(), TargetName: guideIQN, InitiatorName: "iqn.2024-01.io.hatarget:reinstate", ISID: isid}

	first := dial(t, ctx, cfg)
	if err := first.TestUnitReady(ctx, 0); err != nil {
		t.Fatal(err)
	}
	otherCfg := cfg
	otherCfg.InitiatorName = "iqn.2024-01.io.hatarget:same-isid-other-name"
	other := dial(t, ctx, otherCfg)

	second := dial(t, ctx, cfg)
	waitDone(t, first, 10*time.Second, "first session after reinstatement")
	if err := first.Err(); err == nil {
		t.Error("first session went down without an error")
	}
	if err := first.TestUnitReady(ctx, 0); err == nil {
		t.Error("the replaced session still runs commands")
	}
	if err := writeVerify(ctx, second, 0, 0, randomBytes(t, 128<<10), disks["disk01"]); err != nil {
		t.Fatalf("reinstated session: %v", err)
	}
	if err := other.NOP(ctx); err != nil {
		t.Errorf("session of another initiator with the same ISID: %v", err)
	}
	if err := second.Logout(ctx); err != nil {
		t.Fatal(err)
	}
}
