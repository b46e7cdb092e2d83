package scsi

import (
	"sync"
	"testing"
)

// Helpers for the reservation tests.

const prTarget = "iqn.2024-01.org.hatarget:t1"

// prNexus is initiator host<i> with ISID ending in isid, through target
// port group tag tpgt (relative port 10+tpgt).
func prNexus(i, isid byte, tpgt uint16) *Nexus {
	name := "iqn.1994-05.com.example:pr" + string('0'+i)
	return NewNexus(name, [6]byte{0x80, 0, 0, 0, 0, isid}, prTarget, tpgt, 10+tpgt, 1)
}

func cdbPRIn(sa byte, alloc uint16) []byte {
	c := []byte{opPRIn, sa, 0, 0, 0, 0, 0, 0, 0, 0}
	putU16(c[7:], alloc)
	return c
}

func cdbPROut(sa byte, typ PRType, plen uint32) []byte {
	c := []byte{opPROut, sa, byte(typ), 0, 0, 0, 0, 0, 0, 0}
	putU32(c[5:], plen)
	return c
}

// prParams is a basic PR OUT parameter list.
func prParams(key, saKey uint64, flags byte) []byte {
	b := make([]byte, prParamLen)
	putU64(b, key)
	putU64(b[8:], saKey)
	b[prFlagsByte] = flags
	return b
}

// prOut sends PERSISTENT RESERVE OUT with a basic parameter list.
func (h *harness) prOut(n *Nexus, sa byte, typ PRType, key, saKey uint64, flags byte) *Result {
	h.t.Helper()
	p := prParams(key, saKey, flags)
	res, _ := h.exec(n, cdbPROut(sa, typ, uint32(len(p))), p, len(p))
	return res
}

// prOutOK is prOut that must succeed.
func (h *harness) prOutOK(n *Nexus, sa byte, typ PRType, key, saKey uint64, flags byte) {
	h.t.Helper()
	good.check(h.t, h.prOut(n, sa, typ, key, saKey, flags))
}

func (h *harness) register(n *Nexus, key uint64) {
	h.t.Helper()
	h.prOutOK(n, PRRegisterAndIgnore, 0, 0, key, 0)
}

// readKeys returns PRgeneration and the registered keys.
func (h *harness) readKeys(n *Nexus) (uint32, []uint64) {
	h.t.Helper()
	res, data := h.exec(n, cdbPRIn(saReadKeys, 8192), nil, 8192)
	good.check(h.t, res)
	if len(data) < 8 || int(getU32(data[4:])) != len(data)-8 {
		h.t.Fatalf("READ KEYS data % x", data)
	}
	var keys []uint64
	for d := data[8:]; len(d) >= 8; d = d[8:] {
		keys = append(keys, getU64(d))
	}
	return getU32(data), keys
}

func (h *harness) generation() uint32 { return h.lu.pr.State().Generation }

// readReservation returns the reservation key and type, ok false when
// there is no reservation.
func (h *harness) readReservation(n *Nexus) (key uint64, typ PRType, ok bool) {
	h.t.Helper()
	res, data := h.exec(n, cdbPRIn(saReadReservation, 100), nil, 100)
	good.check(h.t, res)
	switch getU32(data[4:]) {
	case 0:
		return 0, 0, false
	case 16:
		if data[21]>>4 != 0 {
			h.t.Fatalf("scope %d", data[21]>>4)
		}
		return getU64(data[8:]), PRType(data[21] & 0x0f), true
	}
	h.t.Fatalf("READ RESERVATION data % x", data)
	return
}

func (h *harness) wantReservation(n *Nexus, key uint64, typ PRType) {
	h.t.Helper()
	k, ty, ok := h.readReservation(n)
	if !ok || k != key || ty != typ {
		h.t.Fatalf("reservation %v key %#x type %d, want key %#x type %d", ok, k, ty, key, typ)
	}
}

func (h *harness) wantNoReservation(n *Nexus) {
	h.t.Helper()
	if k, ty, ok := h.readReservation(n); ok {
		h.t.Fatalf("reserved with key %#x type %d", k, ty)
	}
}

// wantUA checks that n's next command reports exactly the unit attentions
// codes, in order, and then none.
func (h *harness) wantUA(n *Nexus, codes ...uint16) {
	h.t.Helper()
	for _, c := range codes {
		res, _ := h.exec(n, cdbTUR(), nil, 0)
		wantSense(KeyUnitAttention, c).check(h.t, res)
	}
	good.check(h.t, first(h.exec(n, cdbTUR(), nil, 0)))
}

var conflict = want{key: 0xff} // RESERVATION CONFLICT

func checkStatus(t testing.TB, w want, res *Result) {
	t.Helper()
	if w.key == 0xff {
		if res.Status != StatusReservationConflict {
			p, _ := parseSense(res.Sense)
			t.Fatalf("status %#x sense %x/%04x, want RESERVATION CONFLICT", res.Status, p.Key, p.code())
		}
		return
	}
	if res.Status == StatusReservationConflict {
		t.Fatalf("RESERVATION CONFLICT, want %x/%04x", w.key, w.code)
	}
	w.check(t, res)
}

// fakeAborter records AbortTasks calls.
type fakeAborter struct {
	mu    sync.Mutex
	calls []abortCall
}

type abortCall struct {
	lu     *LU
	keys   []string
	except *Command
}

func (a *fakeAborter) AbortTasks(lu *LU, keys []string, except *Command) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, abortCall{lu, append([]string(nil), keys...), except})
}

// memPersister is a Persister in memory.
type memPersister struct {
	mu    sync.Mutex
	data  []byte
	saves int
	fail  error
}

func (p *memPersister) Save(b []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return p.fail
	}
	p.data = append([]byte(nil), b...)
	p.saves++
	return nil
}

func (p *memPersister) Load() ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.data, nil
}
