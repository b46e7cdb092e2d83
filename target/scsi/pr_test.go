package scsi

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hatarget/hatarget/target/backend/backendtest"
)

// TestPROutServiceActions walks every PERSISTENT RESERVE OUT service action
// through its success and failure cases, checking PRgeneration after each.
func TestPROutServiceActions(t *testing.T) {
	h := newHarness(t, nil)
	a, b, c := prNexus(1, 1, 1), prNexus(2, 1, 1), prNexus(3, 1, 1)
	for _, n := range []*Nexus{a, b, c} {
		h.clearUA(n)
	}
	const ka, kb = 0xaaaa, 0xbbbb
	steps := []struct {
		name     string
		n        *Nexus
		sa       byte
		typ      PRType
		key, sak uint64
		flags    byte
		want     want
		gen      uint32 // increment of PRgeneration
		resKey   uint64 // expected reservation key afterwards, with resType
		resType  PRType
	}{
		{"register unregistered with a key", a, PRRegister, 0, 1, ka, 0, conflict, 0, 0, 0},
		{"unregister unregistered", a, PRRegister, 0, 0, 0, 0, good, 0, 0, 0},
		{"register", a, PRRegister, 0, 0, ka, 0, good, 1, 0, 0},
		{"register again without key", a, PRRegister, 0, 0, ka + 1, 0, conflict, 0, 0, 0},
		{"reregister new key", a, PRRegister, 0, ka, ka + 1, 0, good, 1, 0, 0},
		{"register and ignore", a, PRRegisterAndIgnore, 0, 0x1234, ka, 0, good, 1, 0, 0},
		{"register and ignore SPEC_I_PT", a, PRRegisterAndIgnore, 0, 0, ka, prSpecIPT, wantParam(20, 3), 0, 0, 0},
		{"register SPEC_I_PT without TransportIDs", a, PRRegister, 0, ka, ka, prSpecIPT, errParamLengthWant, 0, 0, 0},
		{"register b", b, PRRegister, 0, 0, kb, 0, good, 1, 0, 0},
		{"reserve wrong key", a, PRReserve, PRWriteExclusive, kb, 0, 0, conflict, 0, 0, 0},
		{"reserve unregistered", c, PRReserve, PRWriteExclusive, 0, 0, 0, conflict, 0, 0, 0},
		{"reserve bad type", a, PRReserve, 2, ka, 0, 0, wantCDB(2, -1), 0, 0, 0},
		{"reserve bad scope", a, PRReserve, 0x10 | PRWriteExclusive, ka, 0, 0, wantCDB(2, -1), 0, 0, 0},
		{"reserve", a, PRReserve, PRWriteExclusive, ka, 0, 0, good, 0, ka, PRWriteExclusive},
		{"reserve again", a, PRReserve, PRWriteExclusive, ka, 0, 0, good, 0, ka, PRWriteExclusive},
		{"reserve other type", a, PRReserve, PRExclusiveAccess, ka, 0, 0, conflict, 0, ka, PRWriteExclusive},
		{"reserve non-holder", b, PRReserve, PRWriteExclusive, kb, 0, 0, conflict, 0, ka, PRWriteExclusive},
		{"release non-holder", b, PRRelease, PRWriteExclusive, kb, 0, 0, good, 0, ka, PRWriteExclusive},
		{"release unregistered", c, PRRelease, PRWriteExclusive, 0, 0, 0, conflict, 0, ka, PRWriteExclusive},
		{"release wrong key", a, PRRelease, PRWriteExclusive, kb, 0, 0, conflict, 0, ka, PRWriteExclusive},
		{"release wrong type", a, PRRelease, PRExclusiveAccess, ka, 0, 0, wantSense(KeyIllegalRequest, ascInvalidRelease), 0, ka, PRWriteExclusive},
		{"release", a, PRRelease, PRWriteExclusive, ka, 0, 0, good, 0, 0, 0},
		{"release nothing", a, PRRelease, PRWriteExclusive, ka, 0, 0, good, 0, 0, 0},
		{"reserve EA", a, PRReserve, PRExclusiveAccess, ka, 0, 0, good, 0, ka, PRExclusiveAccess},
		{"preempt unregistered", c, PRPreempt, PRExclusiveAccess, 0, ka, 0, conflict, 0, ka, PRExclusiveAccess},
		{"preempt wrong key", b, PRPreempt, PRExclusiveAccess, ka, ka, 0, conflict, 0, ka, PRExclusiveAccess},
		{"preempt key 0", b, PRPreempt, PRExclusiveAccess, kb, 0, 0, wantParam(8, -1), 0, ka, PRExclusiveAccess},
		{"preempt unknown key", b, PRPreempt, PRExclusiveAccess, kb, 0xdead, 0, conflict, 0, ka, PRExclusiveAccess},
		{"preempt bad type", b, PRPreempt, 4, kb, ka, 0, wantCDB(2, -1), 0, ka, PRExclusiveAccess},
		{"preempt holder", b, PRPreempt, PRWriteExclusive, kb, ka, 0, good, 1, kb, PRWriteExclusive},
		{"preempted nexus is unregistered", a, PRReserve, PRWriteExclusive, ka, 0, 0, conflict, 0, kb, PRWriteExclusive},
		{"register a again", a, PRRegisterAndIgnore, 0, 0, ka, 0, good, 1, kb, PRWriteExclusive},
		{"preempt registration only", b, PRPreemptAndAbort, PRWriteExclusive, kb, ka, 0, good, 1, kb, PRWriteExclusive},
		{"register a once more", a, PRRegisterAndIgnore, 0, 0, ka, 0, good, 1, kb, PRWriteExclusive},
		{"clear unregistered", c, PRClear, 0, 0, 0, 0, conflict, 0, kb, PRWriteExclusive},
		{"clear wrong key", a, PRClear, 0, kb, 0, 0, conflict, 0, kb, PRWriteExclusive},
		{"clear", a, PRClear, 0, ka, 0, 0, good, 1, 0, 0},
		{"cleared", b, PRReserve, PRWriteExclusive, kb, 0, 0, conflict, 0, 0, 0},
		{"register and move without TransportID", a, PRRegisterAndMove, 0, ka, kb, 0, wantParam(24, -1), 0, 0, 0},
	}
	for _, s := range steps {
		gen := h.generation()
		res := h.prOut(s.n, s.sa, s.typ, s.key, s.sak, s.flags)
		for _, n := range []*Nexus{a, b, c} {
			h.clearUA(n) // unit attentions are TestPRUnitAttentions' business
		}
		t.Run(s.name, func(t *testing.T) {
			checkStatus(t, s.want, res)
			if got := h.generation(); got != gen+s.gen {
				t.Fatalf("PRgeneration %d, want %d", got, gen+s.gen)
			}
			k, ty, ok := h.readReservation(s.n)
			if ok != (s.resType != 0) || k != s.resKey || ty != s.resType {
				t.Fatalf("reservation %v %#x type %d, want %#x type %d", ok, k, ty, s.resKey, s.resType)
			}
		})
	}
	// Service actions 8-31 do not exist.
	for sa := byte(8); sa < 0x20; sa++ {
		p := prParams(0, 0, 0)
		wantCDB(1, 4).check(t, first(h.exec(a, cdbPROut(sa, 0, 24), p, 24)))
	}
}

var errParamLengthWant = wantSense(KeyIllegalRequest, ascParamListLengthError)

func TestPROutParameterList(t *testing.T) {
	h := newHarness(t, nil)
	a := prNexus(1, 1, 1)
	h.clearUA(a)
	p := prParams(0, 7, 0)
	for _, tc := range []struct {
		name string
		cdb  []byte
		data []byte
		want want
	}{
		{"short list", cdbPROut(PRRegister, 0, 23), p[:23], errParamLengthWant},
		{"long list", cdbPROut(PRRegister, 0, 28), append(p, 0, 0, 0, 0), errParamLengthWant},
		{"less data than announced", cdbPROut(PRRegister, 0, 24), p[:20], errParamLengthWant},
		{"APTPL without persister", cdbPROut(PRRegister, 0, 24), prParams(0, 7, prAPTPL), wantParam(20, 0)},
		{"reserved CDB bytes", append(cdbPROut(PRRegister, 0, 24)[:3], 1, 0, 0, 0, 0, 24, 0), p, wantCDB(3, 0)},
		{"ok", cdbPROut(PRRegister, 0, 24), p, good},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, _ := h.exec(a, tc.cdb, tc.data, len(tc.data))
			checkStatus(t, tc.want, res)
		})
	}
}

// accessCmd is a command for the access rule table: r conflicts under
// exclusive access reservations, w under write exclusive ones too.
type accessCmd struct {
	name  string
	cdb   []byte
	data  []byte
	edtl  int
	class byte // 'r', 'w' or '-'
}

func accessCmds() []accessCmd {
	return []accessCmd{
		{"READ(10)", cdbRW10(opRead10, 1, 1, 0), nil, 512, 'r'},
		{"WRITE(10)", cdbRW10(opWrite10, 1, 1, 0), make([]byte, 512), 512, 'w'},
		{"VERIFY(10)", cdbRW10(opVerify10, 1, 1, 0), nil, 0, 'r'},
		{"SYNCHRONIZE CACHE(10)", cdbRW10(opSyncCache10, 0, 0, 0), nil, 0, 'w'},
		{"MODE SENSE(6)", cdbModeSense6(true, 0, 0x08, 0, 255), nil, 255, 'r'},
		{"MODE SELECT(6)", cdbModeSelect6(true, false, 0), nil, 0, 'w'},
		{"REPORT SUPPORTED OPCODES", cdbMaintIn(saReportOpcodes, 0, 0, 0, 64), nil, 64, 'r'},
		{"START STOP UNIT stop", []byte{opStartStopUnit, 0, 0, 0, 0, 0}, nil, 0, 'w'},
		{"START STOP UNIT start", []byte{opStartStopUnit, 0, 0, 0, 1, 0}, nil, 0, '-'},
		{"PREVENT ALLOW 1", []byte{opPreventAllow, 0, 0, 0, 1, 0}, nil, 0, 'w'},
		{"PREVENT ALLOW 0", []byte{opPreventAllow, 0, 0, 0, 0, 0}, nil, 0, '-'},
		{"TEST UNIT READY", cdbTUR(), nil, 0, '-'},
		{"INQUIRY", cdbInquiry(false, 0, 96), nil, 96, '-'},
		{"READ CAPACITY(10)", []byte{opReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 8, '-'},
		{"REPORT LUNS", cdbReportLUNs(0, 64), nil, 64, '-'},
		{"REPORT TARGET PORT GROUPS", cdbMaintIn(saReportTPG, 0, 0, 0, 64), nil, 64, '-'},
		{"PERSISTENT RESERVE IN", cdbPRIn(saReadKeys, 64), nil, 64, '-'},
		{"REQUEST SENSE", []byte{opRequestSense, 0, 0, 0, 18, 0}, nil, 18, '-'},
	}
}

// TestPRAccessRules checks SPC-4 table 63 for every reservation type and
// for the holder, a registered I_T nexus and an unregistered one.
func TestPRAccessRules(t *testing.T) {
	types := []PRType{PRWriteExclusive, PRExclusiveAccess, PRWriteExclusiveRegistrantsOnly,
		PRExclusiveAccessRegistrantsOnly, PRWriteExclusiveAllRegistrants, PRExclusiveAccessAllRegistrants}
	for _, typ := range types {
		h := newHarness(t, nil)
		holder, reg, unreg := prNexus(1, 1, 1), prNexus(2, 1, 1), prNexus(3, 1, 1)
		for _, n := range []*Nexus{holder, reg, unreg} {
			h.clearUA(n)
		}
		h.register(holder, 0x11)
		h.register(reg, 0x22)
		h.prOutOK(holder, PRReserve, typ, 0x11, 0, 0)
		registrantsHaveAccess := typ.RegistrantsOnly() || typ.AllRegistrants()
		for _, who := range []struct {
			name   string
			n      *Nexus
			access bool
		}{
			{"holder", holder, true},
			{"registered", reg, registrantsHaveAccess},
			{"unregistered", unreg, false},
		} {
			for _, c := range accessCmds() {
				t.Run(typeName(typ)+"/"+who.name+"/"+c.name, func(t *testing.T) {
					wantConflict := !who.access && (c.class == 'w' || c.class == 'r' && typ.ExclusiveAccess())
					res, _ := h.exec(who.n, c.cdb, c.data, c.edtl)
					if got := res.Status == StatusReservationConflict; got != wantConflict {
						t.Fatalf("conflict %v, want %v (status %#x)", got, wantConflict, res.Status)
					}
				})
			}
		}
	}
}

func typeName(t PRType) string {
	return map[PRType]string{1: "WE", 3: "EA", 5: "WE-RO", 6: "EA-RO", 7: "WE-AR", 8: "EA-AR"}[t]
}

func TestPRUnitAttentions(t *testing.T) {
	setup := func(t *testing.T, typ PRType) (*harness, *Nexus, *Nexus, *Nexus) {
		h := newHarness(t, nil)
		a, b, c := prNexus(1, 1, 1), prNexus(2, 1, 1), prNexus(3, 1, 1)
		for _, n := range []*Nexus{a, b, c} {
			h.clearUA(n)
		}
		h.register(a, 0xa)
		h.register(b, 0xb)
		if typ != 0 {
			h.prOutOK(a, PRReserve, typ, 0xa, 0, 0)
		}
		return h, a, b, c
	}
	t.Run("release registrants only", func(t *testing.T) {
		h, a, b, c := setup(t, PRWriteExclusiveRegistrantsOnly)
		h.prOutOK(a, PRRelease, PRWriteExclusiveRegistrantsOnly, 0xa, 0, 0)
		h.wantUA(a)
		h.wantUA(b, ascReservationsReleased)
		h.wantUA(c) // not registered
	})
	t.Run("release all registrants", func(t *testing.T) {
		h, a, b, _ := setup(t, PRExclusiveAccessAllRegistrants)
		h.prOutOK(b, PRRelease, PRExclusiveAccessAllRegistrants, 0xb, 0, 0)
		h.wantUA(b)
		h.wantUA(a, ascReservationsReleased)
	})
	t.Run("release write exclusive", func(t *testing.T) {
		h, a, b, _ := setup(t, PRWriteExclusive)
		h.prOutOK(a, PRRelease, PRWriteExclusive, 0xa, 0, 0)
		h.wantUA(b)
	})
	t.Run("unregister registrants only holder", func(t *testing.T) {
		h, a, b, _ := setup(t, PRExclusiveAccessRegistrantsOnly)
		h.prOutOK(a, PRRegister, 0, 0xa, 0, 0)
		h.wantNoReservation(a)
		h.wantUA(a)
		h.wantUA(b, ascReservationsReleased)
	})
	t.Run("unregister exclusive access holder", func(t *testing.T) {
		h, a, b, _ := setup(t, PRExclusiveAccess)
		h.prOutOK(a, PRRegister, 0, 0xa, 0, 0)
		h.wantNoReservation(a) // no unit attention for a (libiscsi OwnershipEA)
		h.wantUA(b)
	})
	t.Run("unregister all registrants", func(t *testing.T) {
		h, a, b, _ := setup(t, PRWriteExclusiveAllRegistrants)
		h.prOutOK(a, PRRegister, 0, 0xa, 0, 0)
		h.wantReservation(b, 0, PRWriteExclusiveAllRegistrants) // b still holds it
		h.prOutOK(b, PRRegister, 0, 0xb, 0, 0)
		h.wantNoReservation(b)
		h.wantUA(a)
	})
	t.Run("clear", func(t *testing.T) {
		h, a, b, c := setup(t, PRWriteExclusive)
		h.prOutOK(b, PRClear, 0, 0xb, 0, 0)
		h.wantUA(b)
		h.wantUA(a, ascReservationsPreempted)
		h.wantUA(c)
	})
	t.Run("preempt holder", func(t *testing.T) {
		h, a, b, c := setup(t, PRWriteExclusive)
		h.register(c, 0xc)
		h.prOutOK(b, PRPreempt, PRWriteExclusive, 0xb, 0xa, 0)
		h.wantUA(a, ascRegistrationsPreempted)
		h.wantUA(b)
		h.wantUA(c) // same type: no RESERVATIONS RELEASED
		h.wantReservation(c, 0xb, PRWriteExclusive)
	})
	t.Run("preempt holder changing type", func(t *testing.T) {
		h, a, b, c := setup(t, PRWriteExclusive)
		h.register(c, 0xc)
		h.prOutOK(b, PRPreempt, PRExclusiveAccess, 0xb, 0xa, 0)
		h.wantUA(a, ascRegistrationsPreempted)
		h.wantUA(c, ascReservationsReleased)
		h.wantUA(b)
	})
	t.Run("preempt self changing type", func(t *testing.T) {
		h, a, b, _ := setup(t, PRWriteExclusive)
		h.prOutOK(a, PRPreempt, PRExclusiveAccess, 0xa, 0xa, 0)
		h.wantReservation(a, 0xa, PRExclusiveAccess)
		h.wantUA(a)
		h.wantUA(b, ascReservationsReleased)
		if _, keys := h.readKeys(a); len(keys) != 2 {
			t.Fatalf("keys %x", keys)
		}
	})
	t.Run("preempt all registrants with key 0", func(t *testing.T) {
		h, a, b, c := setup(t, PRWriteExclusiveAllRegistrants)
		h.register(c, 0xc)
		h.prOutOK(b, PRPreempt, PRExclusiveAccess, 0xb, 0, 0)
		h.wantReservation(b, 0xb, PRExclusiveAccess)
		h.wantUA(b)
		if _, keys := h.readKeys(b); !slices.Equal(keys, []uint64{0xb}) {
			t.Fatalf("keys %x", keys)
		}
		h.wantUA(a, ascRegistrationsPreempted)
		h.wantUA(c, ascRegistrationsPreempted)
	})
	t.Run("preempt all registrants by key", func(t *testing.T) {
		h, a, b, _ := setup(t, PRWriteExclusiveAllRegistrants)
		h.prOutOK(b, PRPreempt, PRExclusiveAccess, 0xb, 0xa, 0)
		h.wantReservation(b, 0, PRWriteExclusiveAllRegistrants) // unchanged
		h.wantUA(a, ascRegistrationsPreempted)
	})
	t.Run("preempt own registration", func(t *testing.T) {
		h, a, b, _ := setup(t, 0)
		h.prOutOK(a, PRPreempt, PRWriteExclusive, 0xa, 0xa, 0)
		h.wantUA(a)
		h.wantUA(b)
		if _, keys := h.readKeys(a); !slices.Equal(keys, []uint64{0xb}) {
			t.Fatalf("keys %x", keys)
		}
	})
	t.Run("nexus not seen yet", func(t *testing.T) {
		h, a, _, _ := setup(t, 0)
		// a registers e, which has never sent a command, then preempts it.
		e := prNexus(5, 9, 1)
		tid := AppendTransportID(nil, TransportIDFor(e.InitiatorPort))
		p := append(prParams(0, 0xa, prSpecIPT), 0, 0, 0, byte(len(tid)))
		p = append(p, tid...)
		h.prOutOK(a, PRRegister, 0, 0xa, 0, 0) // unregister first: SPEC_I_PT needs an unregistered nexus
		good.check(t, first(h.exec(a, cdbPROut(PRRegister, 0, uint32(len(p))), p, len(p))))
		h.prOutOK(a, PRReserve, PRWriteExclusive, 0xa, 0, 0)
		h.prOutOK(a, PRPreempt, PRWriteExclusive, 0xa, 0xa, 0) // a and e share key 0xa
		h.wantUA(e, ascPowerOnReset, ascRegistrationsPreempted)
		h.wantReservation(a, 0xa, PRWriteExclusive)
	})
}

// TestPreemptAndAbort checks the abort hook gets the preempted nexuses and
// the PREEMPT AND ABORT command to spare.
func TestPreemptAndAbort(t *testing.T) {
	ab := &fakeAborter{}
	h := newHarness(t, func(c *LUConfig) { c.Aborter = ab })
	a, b, c, d := prNexus(1, 1, 1), prNexus(2, 1, 1), prNexus(3, 1, 1), prNexus(4, 1, 1)
	for _, n := range []*Nexus{a, b, c, d} {
		h.clearUA(n)
	}
	h.register(a, 0xa)
	h.register(b, 0xb)
	h.register(c, 0xb)
	h.register(d, 0xd)
	h.prOutOK(b, PRReserve, PRExclusiveAccess, 0xb, 0, 0)

	// Plain PREEMPT aborts nothing.
	h.prOutOK(a, PRPreempt, PRExclusiveAccess, 0xa, 0xd, 0)
	if len(ab.calls) != 0 {
		t.Fatalf("PREEMPT called the aborter: %+v", ab.calls)
	}

	p := prParams(0xa, 0xb, 0)
	cmd := &Command{Nexus: a, CDB: cdbPROut(PRPreemptAndAbort, PRExclusiveAccess, 24), DataOut: p}
	res := &Result{}
	h.lu.Execute(cmd, res)
	good.check(t, res)
	if len(ab.calls) != 1 {
		t.Fatalf("%d AbortTasks calls", len(ab.calls))
	}
	call := ab.calls[0]
	slices.Sort(call.keys)
	want := []string{b.Key, c.Key}
	slices.Sort(want)
	if call.lu != h.lu || call.except != cmd || !slices.Equal(call.keys, want) {
		t.Fatalf("AbortTasks(%p, %q, %p), want (%p, %q, %p)", call.lu, call.keys, call.except, h.lu, want, cmd)
	}
	h.wantReservation(a, 0xa, PRExclusiveAccess)
	h.wantUA(b, ascRegistrationsPreempted)
	h.wantUA(c, ascRegistrationsPreempted)

	// A failing PREEMPT AND ABORT aborts nothing.
	checkStatus(t, conflict, h.prOut(a, PRPreemptAndAbort, PRExclusiveAccess, 0xa, 0x999, 0))
	if len(ab.calls) != 1 {
		t.Fatalf("failed PREEMPT AND ABORT called the aborter")
	}
}

func TestAPTPLRestart(t *testing.T) {
	for _, kind := range []string{"memory", "file"} {
		t.Run(kind, func(t *testing.T) {
			var p Persister = &memPersister{}
			path := filepath.Join(t.TempDir(), "pr.json")
			if kind == "file" {
				p = NewFilePersister(path)
			}
			dev := backendtest.NewMem(testBlocks * 512)
			mk := func() *harness {
				h := newHarness(t, func(c *LUConfig) { c.Device = dev; c.Persister = p })
				return h
			}
			h := mk()
			a, b, c := prNexus(1, 1, 1), prNexus(2, 1, 1), prNexus(3, 1, 1)
			for _, n := range []*Nexus{a, b, c} {
				h.clearUA(n)
			}
			h.prOutOK(a, PRRegisterAndIgnore, 0, 0, 0xa, prAPTPL)
			h.prOutOK(b, PRRegisterAndIgnore, 0, 0, 0xb, prAPTPL)
			h.prOutOK(a, PRReserve, PRExclusiveAccess, 0xa, 0, 0)
			caps := first(h.exec(a, cdbPRIn(saReportCapabilities, 8), nil, 8))
			good.check(t, caps)
			_, data := h.exec(a, cdbPRIn(saReportCapabilities, 8), nil, 8)
			if data[2]&0x01 == 0 || data[3]&0x01 == 0 {
				t.Fatalf("REPORT CAPABILITIES % x: want PTPL_C and PTPL_A", data)
			}
			h.prOutOK(a, PRRegisterAndIgnore, 0, 0, 0xa, prAPTPL) // the reservation stays
			if kind == "file" {
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != 0o600 {
					t.Fatalf("mode %v", fi.Mode())
				}
				b, _ := os.ReadFile(path)
				if !bytes.Contains(b, []byte(`"version":1`)) {
					t.Fatalf("saved %s", b)
				}
			}

			// Restart: a new LU from the same persister.
			h = mk()
			for _, n := range []*Nexus{a, b, c} {
				h.clearUA(n)
			}
			gen, keys := h.readKeys(a)
			if gen != 0 || !slices.Equal(keys, []uint64{0xa, 0xb}) {
				t.Fatalf("after restart: generation %d keys %x", gen, keys)
			}
			h.wantReservation(b, 0xa, PRExclusiveAccess)
			checkStatus(t, conflict, first(h.exec(b, cdbRW10(opRead10, 0, 1, 0), nil, 512)))
			good.check(t, first(h.exec(a, cdbRW10(opRead10, 0, 1, 0), nil, 512)))

			// APTPL cleared by the last registration: nothing survives.
			h.prOutOK(c, PRRegisterAndIgnore, 0, 0, 0xc, 0)
			h = mk()
			h.clearUA(a)
			if _, keys := h.readKeys(a); len(keys) != 0 {
				t.Fatalf("APTPL 0 restart kept keys %x", keys)
			}
			h.wantNoReservation(a)
		})
	}
}

func TestAPTPLSaveFailure(t *testing.T) {
	p := &memPersister{}
	h := newHarness(t, func(c *LUConfig) { c.Persister = p })
	a := prNexus(1, 1, 1)
	h.clearUA(a)
	h.prOutOK(a, PRRegisterAndIgnore, 0, 0, 0xa, prAPTPL)
	p.fail = errors.New("disk full")
	wantSense(KeyHardwareError, ascInternalTargetFailure).check(t, h.prOut(a, PRReserve, PRWriteExclusive, 0xa, 0, 0))
	h.wantNoReservation(a) // not applied
	p.fail = nil
	h.prOutOK(a, PRReserve, PRWriteExclusive, 0xa, 0, 0)
	if p.saves != 2 {
		t.Fatalf("%d saves", p.saves)
	}
}

func TestNewLUBadPersistedState(t *testing.T) {
	p := &memPersister{data: []byte(`{"version":99}`)}
	if _, err := NewLU(LUConfig{Device: backendtest.NewMem(4096), Persister: p}); err == nil {
		t.Fatal("NewLU accepted an unknown state version")
	}
}

func TestFilePersister(t *testing.T) {
	dir := t.TempDir()
	p := NewFilePersister(filepath.Join(dir, "state"))
	if b, err := p.Load(); b != nil || err != nil {
		t.Fatalf("Load of a missing file: %q %v", b, err)
	}
	for _, s := range []string{"one", "two"} {
		if err := p.Save([]byte(s)); err != nil {
			t.Fatal(err)
		}
		if b, err := p.Load(); string(b) != s || err != nil {
			t.Fatalf("Load %q %v, want %q", b, err, s)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("left temporary files: %v", ents)
	}
	if err := NewFilePersister(filepath.Join(dir, "no/such/dir/state")).Save([]byte("x")); err == nil {
		t.Fatal("Save into a missing directory succeeded")
	}
}

// moveParams builds a REGISTER AND MOVE parameter list.
func moveParams(key, saKey uint64, flags byte, relPort uint16, tid []byte) []byte {
	b := make([]byte, prParamLen, prParamLen+len(tid))
	putU64(b, key)
	putU64(b[8:], saKey)
	b[prMoveFlags] = flags
	putU16(b[prMoveRelPort:], relPort)
	putU32(b[prTIDLen:], uint32(len(tid)))
	return append(b, tid...)
}

func TestRegisterAndMove(t *testing.T) {
	h := newHarness(t, nil)
	a := prNexus(1, 1, 1) // relative port 11
	b := prNexus(2, 1, 2) // relative port 12
	for _, n := range []*Nexus{a, b} {
		h.clearUA(n)
	}
	h.register(a, 0xa)
	h.prOutOK(a, PRReserve, PRWriteExclusive, 0xa, 0, 0)
	tidB := AppendTransportID(nil, TransportIDFor(b.InitiatorPort))
	move := func(n *Nexus, key, saKey uint64, flags byte, rel uint16, tid []byte) *Result {
		p := moveParams(key, saKey, flags, rel, tid)
		res, _ := h.exec(n, cdbPROut(PRRegisterAndMove, PRWriteExclusive, uint32(len(p))), p, len(p))
		return res
	}
	for _, tc := range []struct {
		name string
		res  *Result
		want want
	}{
		{"unregistered", move(b, 0, 0xb, 0, 11, tidB), conflict},
		{"wrong key", move(a, 0xb, 0xb, 0, 12, tidB), conflict},
		{"key 0", move(a, 0xa, 0, 0, 12, tidB), wantParam(8, -1)},
		{"unknown port", move(a, 0xa, 0xb, 0, 99, tidB), wantParam(18, -1)},
		{"to itself", move(a, 0xa, 0xb, 0, 11, AppendTransportID(nil, TransportIDFor(a.InitiatorPort))), wantParam(24, -1)},
		{"bad TransportID", move(a, 0xa, 0xb, 0, 12, []byte{0x04, 0, 0, 4, 'a', 0, 0, 0}), wantParam(24, -1)},
		{"APTPL unsupported", move(a, 0xa, 0xb, prAPTPL, 12, tidB), wantParam(17, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) { checkStatus(t, tc.want, tc.res) })
	}
	p := moveParams(0xa, 0xb, 0, 12, tidB)
	checkStatus(t, errParamLengthWant, first(h.exec(a, cdbPROut(PRRegisterAndMove, 0, uint32(len(p)-4)), p[:len(p)-4], len(p)-4)))

	gen := h.generation()
	good.check(t, move(a, 0xa, 0xb, 0, 12, tidB))
	if h.generation() != gen+1 {
		t.Fatal("REGISTER AND MOVE did not bump PRgeneration")
	}
	h.wantReservation(a, 0xb, PRWriteExclusive)
	good.check(t, first(h.exec(b, cdbRW10(opWrite10, 0, 1, 0), make([]byte, 512), 512)))
	checkStatus(t, conflict, first(h.exec(a, cdbRW10(opWrite10, 0, 1, 0), make([]byte, 512), 512)))
	if _, keys := h.readKeys(a); !slices.Equal(keys, []uint64{0xa, 0xb}) {
		t.Fatalf("keys %x", keys)
	}
	checkStatus(t, conflict, move(a, 0xa, 0xc, 0, 12, tidB)) // no longer the holder

	// Back to a, which is registered already (its key stays), unregistering b.
	good.check(t, move(b, 0xb, 0xc, prMoveUnreg, 11, AppendTransportID(nil, TransportIDFor(a.InitiatorPort))))
	h.wantReservation(a, 0xa, PRWriteExclusive)
	if _, keys := h.readKeys(a); !slices.Equal(keys, []uint64{0xa}) {
		t.Fatalf("keys %x", keys)
	}

	// To a nexus that never sent a command, through a known port.
	e := prNexus(5, 3, 2)
	good.check(t, move(a, 0xa, 0xe, 0, 12, AppendTransportID(nil, TransportIDFor(e.InitiatorPort))))
	h.clearUA(e)
	h.wantReservation(e, 0xe, PRWriteExclusive)
	good.check(t, first(h.exec(e, cdbRW10(opWrite10, 0, 1, 0), make([]byte, 512), 512)))

	// Not with an all registrants reservation.
	h.prOutOK(e, PRRelease, PRWriteExclusive, 0xe, 0, 0)
	h.prOutOK(a, PRReserve, PRWriteExclusiveAllRegistrants, 0xa, 0, 0)
	checkStatus(t, conflict, move(a, 0xa, 0xb, 0, 12, tidB))
}

// specIPT builds a REGISTER parameter list with SPEC_I_PT and tids.
func specIPT(saKey uint64, flags byte, tids ...[]byte) []byte {
	var all []byte
	for _, t := range tids {
		all = append(all, t...)
	}
	p := prParams(0, saKey, flags|prSpecIPT)
	p = append(p, 0, 0, 0, 0)
	putU32(p[prParamLen:], uint32(len(all)))
	return append(p, all...)
}

func TestSpecIPT(t *testing.T) {
	h := newHarness(t, nil)
	a, b := prNexus(1, 1, 1), prNexus(2, 1, 1)
	c1, c2, cOther := prNexus(3, 1, 1), prNexus(3, 2, 1), prNexus(3, 1, 2)
	h.clearUA(a)
	tids := [][]byte{
		AppendTransportID(nil, TransportIDFor(b.InitiatorPort)),
		AppendTransportID(nil, TransportID{Name: "iqn.1994-05.com.example:pr3"}), // every ISID
		AppendTransportID(nil, TransportIDFor(a.InitiatorPort)),                  // itself: ignored
	}
	send := func(p []byte, plen int) *Result {
		res, _ := h.exec(a, cdbPROut(PRRegister, 0, uint32(plen)), p, len(p))
		return res
	}
	p := specIPT(0x77, 0, tids...)
	checkStatus(t, errParamLengthWant, send(p, len(p)-4))
	bad := specIPT(0x77, 0, []byte{0x04, 0, 0, 20, 'x'}, tids[0])
	bad = append(bad, make([]byte, 19)...)
	putU32(bad[prParamLen:], uint32(len(bad)-prParamLen-4))
	checkStatus(t, wantParam(28, -1), send(bad, len(bad)))

	gen := h.generation()
	good.check(t, send(p, len(p)))
	if h.generation() != gen+1 {
		t.Fatal("generation")
	}
	if _, keys := h.readKeys(a); !slices.Equal(keys, []uint64{0x77, 0x77, 0x77}) {
		t.Fatalf("keys %x", keys)
	}
	checkStatus(t, wantParam(20, 3), send(p, len(p))) // a is registered now
	for _, n := range []*Nexus{b, c1, c2, cOther} {
		h.clearUA(n)
	}
	// b and host3 with any ISID through the same port are registered.
	h.prOutOK(c2, PRReserve, PRExclusiveAccessRegistrantsOnly, 0x77, 0, 0)
	for _, n := range []*Nexus{a, b, c1, c2} {
		good.check(t, first(h.exec(n, cdbRW10(opRead10, 0, 1, 0), nil, 512)))
	}
	checkStatus(t, conflict, first(h.exec(cOther, cdbRW10(opRead10, 0, 1, 0), nil, 512)))

	// READ FULL STATUS: the bare-name registration holds the reservation
	// and shows a format 00b TransportID.
	res, data := h.exec(a, cdbPRIn(saReadFullStatus, 4096), nil, 4096)
	good.check(t, res)
	descs := parseFullStatus(t, data)
	if len(descs) != 3 {
		t.Fatalf("%d descriptors", len(descs))
	}
	wantPorts := []string{a.InitiatorPort, b.InitiatorPort, "iqn.1994-05.com.example:pr3"}
	for i, d := range descs {
		if d.port != wantPorts[i] || d.key != 0x77 || d.relPort != 11 || d.allTgPt {
			t.Fatalf("descriptor %d: %+v", i, d)
		}
		if d.holder != (i == 2) {
			t.Fatalf("descriptor %d holder %v", i, d.holder)
		}
	}
	if descs[2].format != 0 || descs[0].format != 1 || descs[2].typ != PRExclusiveAccessRegistrantsOnly {
		t.Fatalf("descriptors %+v", descs)
	}
}

type fullStatusDesc struct {
	key      uint64
	allTgPt  bool
	holder   bool
	typ      PRType
	relPort  uint16
	format   byte
	port     string
	rawTIDLn int
}

func parseFullStatus(t *testing.T, data []byte) []fullStatusDesc {
	t.Helper()
	if int(getU32(data[4:])) != len(data)-8 {
		t.Fatalf("ADDITIONAL LENGTH %d for %d bytes", getU32(data[4:]), len(data))
	}
	var out []fullStatusDesc
	for d := data[8:]; len(d) > 0; {
		n := int(getU32(d[20:]))
		tid, l, err := ParseTransportID(d[24 : 24+n])
		if err != nil || l != n || n%4 != 0 || n < 20 {
			t.Fatalf("TransportID % x: %v", d[24:24+n], err)
		}
		out = append(out, fullStatusDesc{key: getU64(d), allTgPt: d[12]&2 != 0, holder: d[12]&1 != 0,
			typ: PRType(d[13] & 0x0f), relPort: getU16(d[18:]), format: d[24] >> 6, port: tid.InitiatorPort(), rawTIDLn: n})
		d = d[24+n:]
	}
	return out
}

func TestAllTgPt(t *testing.T) {
	h := newHarness(t, nil)
	a1, a2 := prNexus(1, 1, 1), prNexus(1, 1, 2) // one initiator port, two target ports
	b1, b2 := prNexus(2, 1, 1), prNexus(2, 1, 2)
	for _, n := range []*Nexus{a1, a2, b1, b2} {
		h.clearUA(n)
	}
	h.prOutOK(a1, PRRegisterAndIgnore, 0, 0, 0xa, prAllTgPt)
	// a2 is registered through the same registration.
	h.prOutOK(a2, PRReserve, PRExclusiveAccess, 0xa, 0, 0)
	good.check(t, first(h.exec(a1, cdbRW10(opWrite10, 0, 1, 0), make([]byte, 512), 512)))
	checkStatus(t, conflict, first(h.exec(b1, cdbRW10(opRead10, 0, 1, 0), nil, 512)))
	_, data := h.exec(a1, cdbPRIn(saReadFullStatus, 4096), nil, 4096)
	d := parseFullStatus(t, data)
	if len(d) != 1 || !d[0].allTgPt || !d[0].holder || d[0].relPort != 0 || d[0].port != a1.InitiatorPort {
		t.Fatalf("READ FULL STATUS %+v", d)
	}
	// ALL_TG_PT for an initiator port registered through another port.
	h.register(b1, 0xb)
	checkStatus(t, conflict, h.prOut(b2, PRRegisterAndIgnore, 0, 0, 0xb, prAllTgPt))
	// Unregistering through either port removes the registration.
	h.prOutOK(a2, PRRegister, 0, 0xa, 0, 0)
	h.wantNoReservation(a1)
	if _, keys := h.readKeys(a1); !slices.Equal(keys, []uint64{0xb}) {
		t.Fatalf("keys %x", keys)
	}
}

func cdbReserve(op byte) []byte {
	if op == opReserve10 || op == opRelease10 {
		return []byte{op, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	}
	return []byte{op, 0, 0, 0, 0, 0}
}

func TestSPC2Reservations(t *testing.T) {
	h := newHarness(t, nil)
	a, b := prNexus(1, 1, 1), prNexus(2, 1, 1)
	h.clearUA(a)
	h.clearUA(b)
	run := func(n *Nexus, cdb []byte, data []byte, edtl int) *Result {
		res, _ := h.exec(n, cdb, data, edtl)
		return res
	}
	good.check(t, run(a, cdbReserve(opReserve6), nil, 0))
	good.check(t, run(a, cdbReserve(opReserve6), nil, 0)) // again
	checkStatus(t, conflict, run(b, cdbReserve(opReserve6), nil, 0))
	checkStatus(t, conflict, run(b, cdbReserve(opReserve10), nil, 0))
	good.check(t, run(b, cdbReserve(opRelease6), nil, 0)) // not held by b: no-op
	for _, c := range accessCmds() {
		allowed := c.name == "INQUIRY" || c.name == "REPORT LUNS" || c.name == "REQUEST SENSE" ||
			c.name == "REPORT TARGET PORT GROUPS" || c.name == "PREVENT ALLOW 0"
		res := run(b, c.cdb, c.data, c.edtl)
		if (res.Status == StatusReservationConflict) == allowed {
			t.Errorf("%s from another nexus: status %#x", c.name, res.Status)
		}
		if c.name == "PERSISTENT RESERVE IN" {
			allowed = false // regardless of initiator
		} else {
			allowed = true
		}
		if res := run(a, c.cdb, c.data, c.edtl); (res.Status == StatusReservationConflict) == allowed {
			t.Errorf("%s from the holder: status %#x", c.name, res.Status)
		}
	}
	checkStatus(t, conflict, h.prOut(a, PRRegister, 0, 0, 1, 0))
	checkStatus(t, conflict, h.prOut(b, PRRegister, 0, 0, 1, 0))
	wantCDB(1, 4).check(t, run(a, []byte{opReserve10, 0x10, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 0)) // 3RDPTY

	// RELEASE(10) by the holder, then reservations through the other CDBs.
	good.check(t, run(a, cdbReserve(opRelease10), nil, 0))
	good.check(t, run(b, cdbReserve(opReserve10), nil, 0))
	checkStatus(t, conflict, run(a, cdbRW10(opRead10, 0, 1, 0), nil, 512))

	// I_T nexus loss of the holder releases it.
	h.lu.NexusLoss(b)
	good.check(t, run(a, cdbRW10(opRead10, 0, 1, 0), nil, 512))
	good.check(t, run(a, cdbReserve(opReserve6), nil, 0))
	// The loss of another nexus does not.
	h.lu.NexusLoss(b)
	if h.lu.pr.State().SPC2Holder != a.Key {
		t.Fatal("another nexus's loss released the reservation")
	}
	// A logical unit reset does.
	h.lu.ResetLU(b)
	h.clearUA(a)
	h.clearUA(b)
	good.check(t, run(b, cdbRW10(opRead10, 0, 1, 0), nil, 512))

	// With a registration, RESERVE and RELEASE conflict for everyone.
	h.register(a, 0xa)
	for _, op := range []byte{opReserve6, opRelease6, opReserve10, opRelease10} {
		checkStatus(t, conflict, run(a, cdbReserve(op), nil, 0))
		checkStatus(t, conflict, run(b, cdbReserve(op), nil, 0))
	}
}

func TestReportCapabilities(t *testing.T) {
	h := newHarness(t, nil)
	a := prNexus(1, 1, 1)
	h.clearUA(a)
	res, data := h.exec(a, cdbPRIn(saReportCapabilities, 64), nil, 64)
	good.check(t, res)
	want := []byte{0, 8, 0x0c, 0xb0, 0xea, 0x01, 0, 0}
	if !bytes.Equal(data, want) {
		t.Fatalf("REPORT CAPABILITIES % x, want % x", data, want)
	}
}

func TestPRInData(t *testing.T) {
	h := newHarness(t, nil)
	a, b := prNexus(1, 1, 1), prNexus(2, 1, 1)
	h.clearUA(a)
	h.clearUA(b)
	res, data := h.exec(a, cdbPRIn(saReadReservation, 64), nil, 64)
	good.check(t, res)
	if !bytes.Equal(data, []byte{0, 0, 0, 0, 0, 0, 0, 0}) {
		t.Fatalf("READ RESERVATION % x", data)
	}
	h.register(a, 0x0102030405060708)
	h.register(b, 0x1112131415161718)
	// Truncated READ KEYS keeps the full ADDITIONAL LENGTH.
	res, data = h.exec(a, cdbPRIn(saReadKeys, 8), nil, 8)
	good.check(t, res)
	if !bytes.Equal(data, []byte{0, 0, 0, 2, 0, 0, 0, 16}) {
		t.Fatalf("READ KEYS truncated % x", data)
	}
	h.prOutOK(b, PRReserve, PRWriteExclusiveRegistrantsOnly, 0x1112131415161718, 0, 0)
	res, data = h.exec(a, cdbPRIn(saReadReservation, 64), nil, 64)
	good.check(t, res)
	want := []byte{0, 0, 0, 2, 0, 0, 0, 16, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0, 0, 0, 0, 0, 0x05, 0, 0}
	if !bytes.Equal(data, want) {
		t.Fatalf("READ RESERVATION % x", data)
	}
	// Unknown PERSISTENT RESERVE IN service actions.
	for sa := byte(4); sa < 0x20; sa++ {
		wantCDB(1, 4).check(t, first(h.exec(a, cdbPRIn(sa, 64), nil, 64)))
	}
	// REPORT SUPPORTED OPERATION CODES lists every service action.
	for _, c := range []struct {
		op  byte
		sas int
	}{{opPRIn, 4}, {opPROut, 8}} {
		for sa := 0; sa < c.sas; sa++ {
			_, one := h.exec(a, cdbMaintIn(saReportOpcodes, rsocOpcodeSA, c.op, uint16(sa), 64), nil, 64)
			if one[1]&0x07 != 3 || one[4] != c.op || int(one[5]) != sa {
				t.Fatalf("RSOC %#x/%d: % x", c.op, sa, one)
			}
		}
	}
}

func TestPRStateMarshal(t *testing.T) {
	s := &PRState{Generation: 7, APTPL: true, SPC2Holder: "x|y",
		Registrations: []Registration{
			{Key: 1, InitiatorPort: "iqn.a,i,0x800000000001", TargetPort: "iqn.t,t,0x0001", RelativePort: 3},
			{Key: 0xffffffffffffffff, InitiatorPort: "iqn.b", AllTgPt: true},
		},
		Reservation: &PRReservation{Type: PRExclusiveAccess, HolderInitiatorPort: "iqn.b", HolderAllTgPt: true},
	}
	b, err := MarshalPRState(s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnmarshalPRState(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := MarshalPRState(got)
	if !bytes.Equal(b, b2) || got.Registrations[1].Key != s.Registrations[1].Key || *got.Reservation != *s.Reservation {
		t.Fatalf("round trip: %s / %s", b, b2)
	}
	for _, bad := range []string{
		`{"version":2,"generation":1}`,
		`{"generation":1}`,
		`{"version":"1"}`,
		`not json`,
		`{"version":1,"registrations":[{"key":1,"initiator_port":"a","target_port":"t"},{"key":2,"initiator_port":"a","target_port":"t"}]}`,
		`{"version":1,"registrations":[{"key":0,"initiator_port":"a","target_port":"t"}]}`,
		`{"version":1,"registrations":[{"key":1,"initiator_port":"a","target_port":"t"}],"reservation":{"type":2}}`,
		`{"version":1,"registrations":[{"key":1,"initiator_port":"a","target_port":"t"}],"reservation":{"type":1,"holder_initiator_port":"b","holder_target_port":"t"}}`,
		`{"version":1,"reservation":{"type":7}}`,
	} {
		if _, err := UnmarshalPRState([]byte(bad)); err == nil {
			t.Errorf("UnmarshalPRState(%s) succeeded", bad)
		}
	}
	if _, err := UnmarshalPRState([]byte(`{"version":2}`)); err == nil || !strings.Contains(err.Error(), "version 2") {
		t.Errorf("unknown version error: %v", err)
	}
}

func TestTransportID(t *testing.T) {
	enc := func(format byte, s string, pad int) []byte {
		b := []byte{format<<6 | protocolIDiSCSI, 0, 0, 0}
		b = append(b, s...)
		b = append(b, make([]byte, pad)...)
		putU16(b[2:], uint16(len(b)-4))
		return b
	}
	for _, tc := range []struct {
		in   []byte
		want TransportID
		ok   bool
	}{
		{enc(0, "iqn.x:host", 2), TransportID{Name: "iqn.x:host"}, true},
		{enc(0, "IQN.X:Host", 2), TransportID{Name: "iqn.x:host"}, true},
		{enc(1, "iqn.x:host,i,0x80000000000a", 3), TransportID{Name: "iqn.x:host", ISID: "80000000000a"}, true},
		{enc(1, "iqn.x:host,I,0X23d", 1), TransportID{Name: "iqn.x:host", ISID: "00000000023d"}, true},
		{enc(1, "iqn.x:host,i,0x", 1), TransportID{}, false},
		{enc(1, "iqn.x:host,i,0x1234567890abc", 1), TransportID{}, false},
		{enc(1, "iqn.x:host,i,0xzz", 1), TransportID{}, false},
		{enc(1, "iqn.x:host", 2), TransportID{}, false},
		{enc(0, "iqn.x:host,i,0x1", 2), TransportID{}, false},
		{enc(0, "iqn x", 2), TransportID{}, false},
		{enc(1, "\xac\xac,i,0X0", 1), TransportID{}, false}, // non-ASCII before the separator (a fuzz crash)
		{enc(0, "", 4), TransportID{}, false},
		{enc(2, "iqn.x", 3), TransportID{}, false},
		{[]byte{0x04, 0, 0, 4, 'a', 0, 0, 0}, TransportID{}, false}, // FCP
		{[]byte{0x05, 0, 0, 8, 'a', 0, 0, 0}, TransportID{}, false}, // longer than the data
		{[]byte{0x05, 0}, TransportID{}, false},
	} {
		got, n, err := ParseTransportID(tc.in)
		if (err == nil) != tc.ok || got != tc.want || (tc.ok && n != len(tc.in)) {
			t.Errorf("ParseTransportID(% x) = %+v, %d, %v", tc.in, got, n, err)
		}
	}
	for _, id := range []TransportID{{Name: "iqn.a"}, {Name: "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test", ISID: "800000000001"}} {
		b := AppendTransportID(nil, id)
		if len(b)%4 != 0 || len(b) < 24 {
			t.Errorf("%+v: %d bytes", id, len(b))
		}
		got, n, err := ParseTransportID(b)
		if err != nil || got != id || n != len(b) {
			t.Errorf("round trip %+v: %+v %d %v", id, got, n, err)
		}
	}
}

// TestPRStateDeterministic applies one operation sequence to two copies of
// a state and expects identical results, as replicas applying a log must.
func TestPRStateDeterministic(t *testing.T) {
	ops := []PROp{
		{Kind: OpPROut, Nexus: NexusID{"i1,i,0x1", "t,t,0x1", 1}, ServiceAction: PRRegister, SAKey: 1, SpecIPT: true,
			TransportIDs: []TransportID{{Name: "i2", ISID: "000000000001"}, {Name: "i3"}}},
		{Kind: OpPROut, Nexus: NexusID{"i1,i,0x1", "t,t,0x1", 1}, ServiceAction: PRReserve, Type: PRExclusiveAccessRegistrantsOnly, Key: 1},
		{Kind: OpPROut, Nexus: NexusID{"i3,i,0x5", "t,t,0x1", 1}, ServiceAction: PRPreemptAndAbort, Type: PRWriteExclusive, Key: 1, SAKey: 1},
		{Kind: OpReserve, Nexus: NexusID{"i9,i,0x1", "t,t,0x1", 1}},
		{Kind: OpNexusLoss, Nexus: NexusID{"i9,i,0x1", "t,t,0x1", 1}},
	}
	var x, y *PRState
	for _, op := range ops {
		var ox, oy PROutcome
		x, ox = x.Apply(op)
		y, oy = y.Apply(op)
		bx, _ := MarshalPRState(x)
		by, _ := MarshalPRState(y)
		if !bytes.Equal(bx, by) || ox.Status != oy.Status || len(ox.Effects) != len(oy.Effects) {
			t.Fatalf("replicas diverge after %+v", op)
		}
		if err := x.validate(); err != nil {
			t.Fatal(err)
		}
	}
	if x.Reservation == nil || x.Reservation.HolderInitiatorPort != "i3" || len(x.Registrations) != 1 {
		t.Fatalf("final state %+v", x)
	}
}

// TestUnitAttentionForUnseenNexus checks that unit attentions for nexuses
// that never sent a command are held, and that the states created for them
// are forgotten like lost nexuses unless the nexus shows up.
func TestUnitAttentionForUnseenNexus(t *testing.T) {
	h := newHarness(t, nil)
	e := prNexus(5, 1, 1)
	h.lu.raiseOnKey(e.Key, ascRegistrationsPreempted)
	h.lu.raiseOnKey(e.Key, ascReservationsReleased)
	f := prNexus(6, 1, 1)
	h.lu.raiseOnKey(f.Key, ascRegistrationsPreempted)
	h.wantUA(f, ascPowerOnReset, ascRegistrationsPreempted) // f shows up
	for i := range maxLostNexuses + 10 {
		h.lu.raiseOnKey("ghost"+string(rune('a'+i%26))+strings.Repeat("x", i/26)+"|t", ascRegistrationsPreempted)
	}
	h.lu.mu.RLock()
	_, eKept := h.lu.nexuses[e.Key]
	_, fKept := h.lu.nexuses[f.Key]
	n := len(h.lu.nexuses)
	h.lu.mu.RUnlock()
	if eKept || !fKept || n > maxLostNexuses+3 {
		t.Fatalf("e kept %v, f kept %v, %d nexus states", eKept, fKept, n)
	}
}

// TestReservationsConcurrent runs I/O from several nexuses while others
// register, reserve, preempt and release, for the race detector.
func TestReservationsConcurrent(t *testing.T) {
	ab := &fakeAborter{}
	h := newHarness(t, func(c *LUConfig) { c.Aborter = ab })
	ns := []*Nexus{prNexus(1, 1, 1), prNexus(2, 1, 1), prNexus(3, 1, 2), prNexus(4, 1, 2)}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i, n := range ns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := uint64(i + 1)
			for j := range 600 {
				var cdb, data []byte
				switch j % 6 {
				case 0:
					cdb, data = cdbPROut(PRRegisterAndIgnore, 0, 24), prParams(0, key, 0)
				case 1:
					cdb, data = cdbPROut(PRReserve, PRType([]byte{1, 3, 5, 6, 7, 8}[j%6]), 24), prParams(key, 0, 0)
				case 2:
					cdb, data = cdbPROut(PRPreemptAndAbort, PRExclusiveAccess, 24), prParams(key, uint64((i+1)%4+1), 0)
				case 3:
					cdb, data = cdbRW10(opWrite10, uint32(i), 1, 0), make([]byte, 512)
				case 4:
					cdb = cdbPRIn(saReadFullStatus, 4096)
				default:
					cdb = []byte{opReserve6, 0, 0, 0, 0, 0}
				}
				buf := make([]byte, 4096)
				cmd := &Command{Nexus: n, CDB: cdb, DataOut: data, DataIn: buf}
				h.lu.Execute(cmd, &Result{})
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()
	for {
		select {
		case <-done:
			if err := h.lu.pr.State().validate(); err != nil {
				t.Fatal(err)
			}
			return
		default:
			h.lu.ResetLU(ns[0])
			h.lu.NexusLoss(ns[1])
		}
	}
}

// TestReservationCheckDoesNotAllocate: the access check on the I/O path
// allocates nothing, for an allowed and for a conflicting command.
func TestReservationCheckDoesNotAllocate(t *testing.T) {
	h := newHarness(t, nil)
	reg, other := prNexus(1, 1, 1), prNexus(2, 1, 1)
	h.clearUA(reg)
	h.clearUA(other)
	h.register(reg, 1)
	h.prOutOK(reg, PRReserve, PRExclusiveAccessRegistrantsOnly, 1, 0, 0)
	for _, tc := range []struct {
		n    *Nexus
		want Status
	}{{reg, StatusGood}, {other, StatusReservationConflict}} {
		cmd := &Command{Nexus: tc.n, CDB: cdbRW10(opRead10, 8, 8, 0), DataIn: make([]byte, 4096)}
		res := &Result{}
		allocs := testing.AllocsPerRun(200, func() {
			h.lu.Execute(cmd, res)
			if res.Status != tc.want {
				t.Fatalf("status %#x, want %#x", res.Status, tc.want)
			}
		})
		if allocs != 0 {
			t.Errorf("%v allocations per command", allocs)
		}
	}
}
