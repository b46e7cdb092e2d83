package scsi

import (
	"bytes"
	"testing"

	"github.com/hatarget/hatarget/target/backend/backendtest"
)

// prScript encodes fuzz steps: nexus selector (bit 7: use small keys; bit
// 6: announce a parameter list length other than the data's),
// service action, scope/type byte, parameter list length, parameter list.
func prScript(steps ...[]byte) []byte {
	var b []byte
	for _, s := range steps {
		b = append(b, s...)
	}
	return b
}

func prStep(nexus, sa byte, typ PRType, params []byte) []byte {
	return append([]byte{nexus, sa, byte(typ), byte(len(params))}, params...)
}

// FuzzPROut runs scripts of PERSISTENT RESERVE OUT commands with arbitrary
// parameter lists (and RESERVE/RELEASE, nexus losses, resets, reads and PR
// IN) from four I_T nexuses on two target ports. Whatever arrives, nothing
// panics, every result is well formed, PRgeneration never goes down, the
// state keeps its invariants and survives a Marshal/Unmarshal round trip.
func FuzzPROut(f *testing.F) {
	tidOf := func(n *Nexus) []byte { return AppendTransportID(nil, TransportIDFor(n.InitiatorPort)) }
	n2 := prNexus(2, 1, 1)
	spec := append(prParams(0, 2, prSpecIPT), 0, 0, 0, 24)
	spec = append(spec, tidOf(n2)...)
	move := moveParams(1, 3, 0, 12, tidOf(prNexus(4, 1, 2)))
	f.Add(prScript(
		prStep(0x80, PRRegisterAndIgnore, 0, prParams(0, 1, 0)),
		prStep(0x81, PRRegister, 0, prParams(0, 2, prAllTgPt)),
		prStep(0x80, PRReserve, PRExclusiveAccess, prParams(1, 0, 0)),
		prStep(0x81, PRPreemptAndAbort, PRWriteExclusive, prParams(2, 1, 0)),
		prStep(0x82, 13, 0, nil),
		prStep(0x81, PRRelease, PRWriteExclusive, prParams(2, 0, 0)),
		prStep(0x81, PRClear, 0, prParams(2, 0, 0)),
	))
	f.Add(prScript(
		prStep(0x80, PRRegister, 0, spec),
		prStep(0x80, PRReserve, PRWriteExclusiveRegistrantsOnly, prParams(1, 0, 0)),
		prStep(0x80, PRRegisterAndMove, 0, move),
		prStep(0x83, 12, 0, nil),
		prStep(0x80, PRRegister, 0, prParams(1, 0, prAPTPL)),
	))
	f.Add(prScript(
		prStep(0, 8, 0, nil), prStep(1, 8, 0, nil), prStep(1, PRRegister, 0, prParams(0, 5, 0)),
		prStep(0, 10, 0, nil), prStep(0, 9, 0, nil), prStep(2, 8, 0, nil), prStep(3, 11, 0, nil),
	))
	f.Add(prScript(prStep(0x80, PRRegisterAndIgnore, 0, prParams(0, 3, 0)),
		prStep(0x81, PRRegisterAndIgnore, 0, prParams(0, 3, 0)),
		prStep(0x80, PRReserve, PRExclusiveAccessAllRegistrants, prParams(3, 0, 0)),
		prStep(0x81, PRPreempt, PRWriteExclusive, prParams(3, 0, 0)),
		prStep(0x80, PRRegister, 0, prParams(3, 0, 0))))
	f.Fuzz(func(t *testing.T, script []byte) {
		ab := &fakeAborter{}
		p := &memPersister{}
		lu, err := NewLU(LUConfig{Device: backendtest.NewMem(64 * 512), Persister: p, Aborter: ab})
		if err != nil {
			t.Fatal(err)
		}
		nexuses := []*Nexus{prNexus(1, 1, 1), prNexus(2, 1, 1), prNexus(3, 1, 2), prNexus(1, 1, 2)}
		exec := func(n *Nexus, cdb, data []byte, edtl int) *Result {
			buf := make([]byte, edtl+64)
			for i := edtl; i < len(buf); i++ {
				buf[i] = 0xa5
			}
			cmd := &Command{Nexus: n, CDB: cdb, DataOut: data, DataIn: buf[:edtl]}
			res := &Result{}
			lu.Execute(cmd, res)
			checkResult(t, cmd, res, buf, edtl)
			return res
		}
		for _, n := range nexuses {
			exec(n, cdbTUR(), nil, 0) // ports become known
		}
		var gen uint32
		for steps := 0; len(script) >= 4 && steps < 64; steps++ {
			n := nexuses[script[0]&3]
			small, lie := script[0]&0x80 != 0, script[0]&0x40 != 0
			sa, typ := script[1], script[2]
			take := min(int(script[3]), len(script)-4)
			data := append([]byte(nil), script[4:4+take]...)
			script = script[4+take:]
			if small && len(data) >= 16 {
				// Keys from a small set, so that they match registrations.
				putU64(data, uint64(data[7]&3))
				putU64(data[8:], uint64(data[15]&3))
			}
			switch sa {
			case 8, 9:
				op := []byte{opReserve6, opRelease6}[sa-8]
				exec(n, []byte{op, 0, 0, 0, 0, 0}, nil, 0)
			case 10:
				lu.NexusLoss(n)
			case 11:
				lu.ResetLU(n)
			case 12:
				exec(n, cdbPRIn(typ&3, 4096), nil, int(typ)<<4)
			case 13:
				exec(n, cdbRW10(opWrite10, 0, 1, 0), make([]byte, 512), 512)
			default:
				cdb := cdbPROut(sa, PRType(typ), uint32(len(data)))
				if lie {
					cdb[8] = typ // the announced length may lie
				}
				exec(n, cdb, data, len(data))
			}
			s := lu.pr.State()
			if s.Generation < gen {
				t.Fatalf("PRgeneration went from %d to %d", gen, s.Generation)
			}
			gen = s.Generation
			if err := s.validate(); err != nil {
				t.Fatal(err)
			}
			b, err := MarshalPRState(s)
			if err != nil {
				t.Fatal(err)
			}
			s2, err := UnmarshalPRState(b)
			if err != nil {
				t.Fatalf("%v: %s", err, b)
			}
			if b2, _ := MarshalPRState(s2); !bytes.Equal(b, b2) {
				t.Fatalf("round trip:\n%s\n%s", b, b2)
			}
		}
		// A restart from what was saved is a valid state too.
		if _, err := NewLU(LUConfig{Device: backendtest.NewMem(4096), Persister: p}); err != nil {
			t.Fatal(err)
		}
	})
}
