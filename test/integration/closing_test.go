package integration

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/pdu"
)

// TestClosingPDUsCarrySequenceNumbers checks the PDUs a target sends as it
// ends a connection. Every target PDU carries StatSN, ExpCmdSN and MaxCmdSN
// (RFC 7143 11.19.2: an unsolicited NOP-In holds the next StatSN without
// advancing it), so a last NOP-In must not reset them to zero: an initiator
// whose CmdSN is far enough from 0 would read that as a closed window.
func TestClosingPDUsCarrySequenceNumbers(t *testing.T) {
	t.Parallel()
	n, _ := startGuideNode(t)

	cases := []struct {
		name string
		// end makes the target close the connection and returns the ITT of
		// the last status-carrying PDU before the close (the reserved tag
		// for a Reject).
		end func(t *testing.T, r *rawConn) uint32
	}{
		{"logout", func(t *testing.T, r *rawConn) uint32 {
			var h pdu.Header
			(&pdu.LogoutReq{Immediate: true, Reason: pdu.LogoutSession, ITT: 0x42, CmdSN: r.cmdSN, ExpStatSN: r.expStatSN}).Marshal(&h)
			if err := r.write(&h, nil); err != nil {
				t.Fatal(err)
			}
			return 0x42
		}},
		{"oversized PDU", func(t *testing.T, r *rawConn) uint32 {
			var h pdu.Header
			(&pdu.NOPOut{Immediate: true, DataLen: 1<<24 - 1, ITT: 0x43, TTT: pdu.ReservedTag, CmdSN: r.cmdSN}).Marshal(&h)
			if _, err := r.c.Write(h[:]); err != nil {
				t.Fatal(err)
			}
			return pdu.ReservedTag
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := rawDial(t, n.Addr())
			r.login(guideIQN, false, false)
			// Two non-immediate NOP-Outs move CmdSN and StatSN away from
			// their initial values.
			for itt := uint32(1); itt <= 2; itt++ {
				var h pdu.Header
				(&pdu.NOPOut{ITT: itt, TTT: pdu.ReservedTag, CmdSN: r.cmdSN, ExpStatSN: r.expStatSN}).Marshal(&h)
				if err := r.write(&h, nil); err != nil {
					t.Fatal(err)
				}
				r.cmdSN++
				if h, _, err := r.readNonPing(5 * time.Second); err != nil || h.Opcode() != pdu.OpNOPIn {
					t.Fatalf("NOP-Out answered with %v, %v", h.Opcode(), err)
				}
			}
			itt := tc.end(t, r)
			got := r.expectClosed(5 * time.Second)
			last := -1
			for i := range got {
				if got[i].ITT() == itt && (itt != pdu.ReservedTag || got[i].Opcode() == pdu.OpReject) {
					last = i
				}
			}
			if last < 0 {
				t.Fatalf("no response before the close: %v", opcodes(got))
			}
			sn := func(h *pdu.Header, off int) uint32 { return binary.BigEndian.Uint32(h[off:]) }
			final := &got[last]
			for i := last + 1; i < len(got); i++ {
				h := &got[i]
				if h.Opcode() != pdu.OpNOPIn {
					continue
				}
				if sn(h, 24) != sn(final, 24)+1 || sn(h, 28) != sn(final, 28) || sn(h, 32) != sn(final, 32) {
					t.Errorf("%v after the %v: StatSN %d ExpCmdSN %d MaxCmdSN %d; want %d, %d, %d",
						h.Opcode(), final.Opcode(), sn(h, 24), sn(h, 28), sn(h, 32), sn(final, 24)+1, sn(final, 28), sn(final, 32))
				}
			}
		})
	}
}
