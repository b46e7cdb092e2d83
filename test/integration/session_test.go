package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/target/iscsi/pdu"
	"github.com/hatarget/hatarget/test/nodetest"
)

// TestCommandWindow configures QueuedCommands 4: the login must open a
// window of exactly four commands, and a burst of many more concurrent
// commands must still complete as the window moves.
func TestCommandWindow(t *testing.T) {
	t.Parallel()
	disks := makeDisks(t, "disk01")
	n := nodetest.Start(t, handlerBlock(disks, "disk01")+`
TARGET_DRIVER iscsi {
    enabled 1
    TARGET `+guideIQN+` {
        LUN 0 disk01
        QueuedCommands 4
        enabled 1
    }
}
`, nodetest.Options{})
	ctx := testCtx(t, 60*time.Second)

	r := rawDial(t, n.Addr())
	resp := r.login(guideIQN, false, false)
	if got := resp.MaxCmdSN - resp.ExpCmdSN + 1; got != 4 {
		t.Errorf("login opened a window of %d commands (ExpCmdSN %d, MaxCmdSN %d), want 4", got, resp.ExpCmdSN, resp.MaxCmdSN)
	}

	s := dial(t, ctx, initiator.Config{Addr: n.Addr(), TargetName: guideIQN})
	concurrent(t, ctx, s, disks["disk01"], 0, 64, 4096)
}

// TestTargetPing runs a node that pings idle connections every 200ms: the
// ping must carry the next StatSN without consuming it, an answered ping
// keeps the connection, and an idle Go initiator session stays usable.
func TestTargetPing(t *testing.T) {
	t.Parallel()
	disks := makeDisks(t, "disk01", "disk02")
	n := nodetest.Start(t, fill(guideConf, disks), nodetest.Options{Args: []string{"--nop-in-interval", "200ms"}})
	ctx := testCtx(t, 60*time.Second)

	s := dial(t, ctx, initiator.Config{Addr: n.Addr(), TargetName: guideIQN})
	r := rawDial(t, n.Addr())
	r.login(guideIQN, false, false)
	for i := range 3 {
		h, _, err := r.read(5 * time.Second)
		if err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
		var nop pdu.NOPIn
		nop.Unmarshal(&h)
		if h.Opcode() != pdu.OpNOPIn || nop.ITT != pdu.ReservedTag || nop.TTT == pdu.ReservedTag {
			t.Fatalf("ping %d: got %v ITT %#x TTT %#x, want a NOP-In ping", i, h.Opcode(), nop.ITT, nop.TTT)
		}
		if nop.StatSN != r.expStatSN {
			t.Errorf("ping %d carries StatSN %d, want the next StatSN %d", i, nop.StatSN, r.expStatSN)
		}
		var out pdu.Header
		(&pdu.NOPOut{Immediate: true, LUN: nop.LUN, ITT: pdu.ReservedTag, TTT: nop.TTT, CmdSN: r.cmdSN, ExpStatSN: r.expStatSN}).Marshal(&out)
		if err := r.write(&out, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.nop(0x55); err != nil {
		t.Fatalf("after answering pings: %v", err)
	}
	if err := s.TestUnitReady(ctx, 0); err != nil {
		t.Fatalf("idle initiator session: %v", err)
	}
	if strings.Contains(n.Logs(), "no answer to NOP-In") {
		t.Errorf("the node dropped a connection that answers pings:\n%s", n.Logs())
	}
}

// TestDiscoverySessionIsolation logs in a discovery session and tries to
// use it for SCSI: it must be rejected and never reach a LUN.
func TestDiscoverySessionIsolation(t *testing.T) {
	t.Parallel()
	n, _ := startGuideNode(t)
	r := rawDial(t, n.Addr())
	r.login("", false, false)

	var h pdu.Header
	cmd := pdu.SCSICommand{Final: true, Read: true, ITT: 0x77, EDTL: 4096, CmdSN: r.cmdSN, ExpStatSN: r.expStatSN}
	cmd.CDB[0], cmd.CDB[8] = 0x28, 8
	cmd.Marshal(&h)
	if err := r.write(&h, nil); err != nil {
		t.Fatal(err)
	}
	got, _, err := r.readNonPing(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got.Opcode() != pdu.OpReject {
		t.Fatalf("SCSI Command in a discovery session answered with %v, want Reject", got.Opcode())
	}
	if reason := got[2]; reason != pdu.RejectProtocolError {
		t.Errorf("Reject reason %#x, want %#x (protocol error)", reason, pdu.RejectProtocolError)
	}
	// SendTargets still works on the same connection.
	var text pdu.Header
	data := pdu.AppendText(nil, "SendTargets", "All")
	(&pdu.TextReq{Immediate: true, Final: true, DataLen: len(data), ITT: 0x78, TTT: pdu.ReservedTag, CmdSN: r.cmdSN, ExpStatSN: r.expStatSN}).Marshal(&text)
	if err := r.write(&text, data); err != nil {
		t.Fatal(err)
	}
	resp, body, err := r.readNonPing(5 * time.Second)
	if err != nil || resp.Opcode() != pdu.OpTextResp || !strings.Contains(string(body), "TargetName="+guideIQN) {
		t.Fatalf("SendTargets after the rejected command: %v %q, %v", resp.Opcode(), body, err)
	}
}
