package robust

import (
	"context"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/target/iscsi/pdu"
	"github.com/hatarget/hatarget/test/nodetest"
)

const abortConf = `HANDLER vdisk_fileio {
	DEVICE d0 {
		filename {{DIR}}/d0.img
		size_mb 16
		nv_cache 1
	}
}

TARGET_DRIVER iscsi {
	enabled 1
	TARGET ` + soakTarget + ` {
		LUN 0 d0
		enabled 1
	}
}
`

// TestAbortTaskAfterForeignLUNReset: a WRITE waiting for solicited data
// (R2T sent, no Data-Out yet) is aborted by a LUN RESET from another
// session, then by an ABORT TASK from its own session. Once the ABORT TASK
// answers "function complete" the initiator owes the target nothing for
// that task, so the target must release it: its CmdSN window slot, its
// buffer, its ITT. Repeated more times than the queue depth, a target that
// keeps such tasks closes the session's command window for good.
func TestAbortTaskAfterForeignLUNReset(t *testing.T) {
	const queueDepth = 8
	node := nodetest.Start(t, abortConf, nodetest.Options{Args: []string{"--queue-depth", "8"}})
	ctx := t.Context()
	a, err := initiator.Dial(ctx, initiator.Config{Addr: node.Addr(), TargetName: soakTarget})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Logout(ctx)
	// Every byte of B's writes waits for an R2T.
	b, err := initiator.Dial(ctx, initiator.Config{Addr: node.Addr(), TargetName: soakTarget,
		ImmediateData: initiator.No, InitialR2T: initiator.Yes})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, s := range []*initiator.Session{a, b} {
		if err := s.TestUnitReady(ctx, 0); err != nil {
			t.Fatal(err)
		}
	}
	data := make([]byte, 4096)
	for i := range queueDepth + 2 {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		// Start sends the command; the R2T it gets is left unanswered
		// (Wait would answer it), as by an initiator that has not got
		// round to sending the data yet.
		call, err := b.Start(sctx, initiator.Command{LUN: 0, CDB: []byte{0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0}, DataOut: data})
		cancel()
		if err != nil {
			t.Fatalf("round %d: the target no longer opens session B's command window (%d rounds after ABORT TASK on tasks a foreign LUN RESET had aborted; queue depth %d): %v",
				i, i, queueDepth, err)
		}
		time.Sleep(20 * time.Millisecond) // the target has registered the task and sent its R2T
		if code, err := a.TaskMgmt(ctx, pdu.TMFLUNReset, 0, 0); err != nil || code != pdu.TMFRespComplete {
			t.Fatalf("round %d: LUN RESET from session A: response %d, %v", i, code, err)
		}
		code, err := b.TaskMgmt(ctx, pdu.TMFAbortTask, 0, call.ITT())
		if err != nil || (code != pdu.TMFRespComplete && code != pdu.TMFRespNoTask) {
			t.Fatalf("round %d: ABORT TASK from session B: response %d, %v", i, code, err)
		}
		// The initiator is done with the task: it sends no Data-Out for it
		// (Wait is never called, so the R2T stays unanswered).
		tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = b.TestUnitReady(tctx, 0) // also consumes the reset's unit attention
		cancel()
		if err != nil {
			t.Fatalf("round %d: session B cannot run a command after ABORT TASK (queue depth %d): %v", i, queueDepth, err)
		}
	}
}
