package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/test/nodetest"
)

// Reservation commands, service actions and statuses (SPC-4 6.16, 6.17;
// SPC-2 7.21, 7.23).
const (
	opRequestSense = 0x03
	opInquiry      = 0x12
	opReserve6     = 0x16
	opRelease6     = 0x17
	opRead10       = 0x28
	opPRIn         = 0x5e
	opPROut        = 0x5f

	prInReadKeys        = 0x00
	prInReadReservation = 0x01

	prOutRegister        = 0x00
	prOutReserve         = 0x01
	prOutRelease         = 0x02
	prOutPreempt         = 0x04
	prOutPreemptAndAbort = 0x05

	prTypeWE = 0x01 // Write Exclusive

	statusReservationConflict = 0x18
)

// Unit attentions of reservations and nexus loss.
var (
	uaRegistrationsPreempted = senseCode{keyUnitAttention, 0x2a, 0x05}
	uaITNexusLoss            = senseCode{keyUnitAttention, 0x29, 0x07}
)

// prNode serves the guide's configuration (LUN 0 is disk01) on dataDir, so
// that a test can stop it and serve the same disks and state again.
func prNode(t *testing.T, disks map[string]string, dataDir string) *nodetest.Node {
	t.Helper()
	return nodetest.Start(t, fill(guideConf, disks), nodetest.Options{DataDir: dataDir})
}

// prInitiator is one I_T nexus: a fixed initiator name and ISID, so that a
// session opened again (after a restart, say) is the same nexus.
type prInitiator struct {
	name string
	isid [6]byte
}

func (p prInitiator) config(n *nodetest.Node) initiator.Config {
	return initiator.Config{Addr: n.Addr(), TargetName: guideIQN, InitiatorName: p.name, ISID: p.isid}
}

var (
	prA = prInitiator{"iqn.2024-01.io.hatarget:pr-a", [6]byte{0x80, 0x00, 0x0a, 0x0a, 0x00, 0x01}}
	prB = prInitiator{"iqn.2024-01.io.hatarget:pr-b", [6]byte{0x80, 0x00, 0x0b, 0x0b, 0x00, 0x01}}
)

// prRun sends one command and reissues it after unit attentions (at most
// 8), returning the final response and the unit attentions it met.
func prRun(ctx context.Context, s *initiator.Session, lun uint64, cdb, out, in []byte) (initiator.Response, []senseCode, error) {
	var uas []senseCode
	for range 8 {
		r, err := s.Do(ctx, lun, cdb, out, in)
		if err != nil {
			return r, uas, err
		}
		if sc := senseOf(r); r.Status == initiator.StatusCheckCondition && sc.key == keyUnitAttention {
			uas = append(uas, sc)
			continue
		}
		return r, uas, nil
	}
	return initiator.Response{}, uas, fmt.Errorf("command %#02x: still unit attention after %d tries: %v", cdb[0], len(uas), uas)
}

// describe renders a response's status for messages.
func describe(r initiator.Response) string {
	switch r.Status {
	case initiator.StatusGood:
		return "GOOD"
	case statusReservationConflict:
		return "RESERVATION CONFLICT"
	case initiator.StatusCheckCondition:
		return "CHECK CONDITION, " + senseOf(r).String()
	}
	return fmt.Sprintf("status %#02x", r.Status)
}

// prOutCDB builds PERSISTENT RESERVE OUT with the basic 24-byte parameter
// list: RESERVATION KEY, SERVICE ACTION RESERVATION KEY and the APTPL bit.
func prOutCDB(sa, typ byte, key, saKey uint64, aptpl bool) (cdb, param []byte) {
	param = make([]byte, 24)
	binary.BigEndian.PutUint64(param[0:], key)
	binary.BigEndian.PutUint64(param[8:], saKey)
	if aptpl {
		param[20] = 0x01
	}
	cdb = []byte{opPROut, sa, typ & 0x0f, 0, 0, 0, 0, 0, byte(len(param)), 0}
	return cdb, param
}

// prOut sends PERSISTENT RESERVE OUT and returns the response (after unit
// attentions).
func prOut(ctx context.Context, s *initiator.Session, sa, typ byte, key, saKey uint64, aptpl bool) (initiator.Response, error) {
	cdb, param := prOutCDB(sa, typ, key, saKey, aptpl)
	r, _, err := prRun(ctx, s, 0, cdb, param, nil)
	return r, err
}

// mustPROut fails the test unless PERSISTENT RESERVE OUT returns GOOD.
func mustPROut(t *testing.T, ctx context.Context, s *initiator.Session, what string, sa, typ byte, key, saKey uint64, aptpl bool) {
	t.Helper()
	r, err := prOut(ctx, s, sa, typ, key, saKey, aptpl)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if r.Status != initiator.StatusGood {
		t.Fatalf("%s: %s, want GOOD", what, describe(r))
	}
}

// prIn sends PERSISTENT RESERVE IN with service action sa.
func prIn(ctx context.Context, s *initiator.Session, sa byte) ([]byte, error) {
	buf := make([]byte, 1024)
	cdb := []byte{opPRIn, sa, 0, 0, 0, 0, 0, byte(len(buf) >> 8), byte(len(buf)), 0}
	r, _, err := prRun(ctx, s, 0, cdb, nil, buf)
	if err != nil {
		return nil, err
	}
	if r.Status != initiator.StatusGood {
		return nil, fmt.Errorf("PERSISTENT RESERVE IN service action %d: %s", sa, describe(r))
	}
	return buf[:r.DataInLen], nil
}

// prKeys is a decoded READ KEYS answer.
type prKeys struct {
	gen  uint32
	keys []uint64
}

func readKeys(ctx context.Context, s *initiator.Session) (prKeys, error) {
	b, err := prIn(ctx, s, prInReadKeys)
	if err != nil {
		return prKeys{}, err
	}
	if len(b) < 8 {
		return prKeys{}, fmt.Errorf("READ KEYS: %d bytes of data", len(b))
	}
	n := int(binary.BigEndian.Uint32(b[4:]))
	if n%8 != 0 || 8+n > len(b) {
		return prKeys{}, fmt.Errorf("READ KEYS: ADDITIONAL LENGTH %d in %d bytes", n, len(b))
	}
	k := prKeys{gen: binary.BigEndian.Uint32(b)}
	for off := 8; off < 8+n; off += 8 {
		k.keys = append(k.keys, binary.BigEndian.Uint64(b[off:]))
	}
	slices.Sort(k.keys)
	return k, nil
}

// prResv is a decoded READ RESERVATION answer; held is false when there is
// no persistent reservation.
type prResv struct {
	gen   uint32
	held  bool
	key   uint64
	scope byte
	typ   byte
}

func readReservation(ctx context.Context, s *initiator.Session) (prResv, error) {
	b, err := prIn(ctx, s, prInReadReservation)
	if err != nil {
		return prResv{}, err
	}
	if len(b) < 8 {
		return prResv{}, fmt.Errorf("READ RESERVATION: %d bytes of data", len(b))
	}
	r := prResv{gen: binary.BigEndian.Uint32(b)}
	switch n := binary.BigEndian.Uint32(b[4:]); {
	case n == 0:
		return r, nil
	case n != 16 || len(b) < 24:
		return prResv{}, fmt.Errorf("READ RESERVATION: ADDITIONAL LENGTH %d in %d bytes", n, len(b))
	}
	r.held, r.key, r.scope, r.typ = true, binary.BigEndian.Uint64(b[8:]), b[21]>>4, b[21]&0x0f
	return r, nil
}

// expectKeys checks READ KEYS: exactly want (in any order), and the
// PRgeneration when gen is not negative.
func expectKeys(t *testing.T, ctx context.Context, s *initiator.Session, what string, gen int64, want ...uint64) prKeys {
	t.Helper()
	k, err := readKeys(ctx, s)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	w := slices.Clone(want)
	slices.Sort(w)
	if !slices.Equal(k.keys, w) {
		t.Errorf("%s: READ KEYS lists %#x, want %#x", what, k.keys, w)
	}
	if gen >= 0 && int64(k.gen) != gen {
		t.Errorf("%s: READ KEYS PRgeneration %d, want %d", what, k.gen, gen)
	}
	return k
}

// expectReservation checks READ RESERVATION: a Write Exclusive reservation
// of LU scope held with key, or none when key is 0; and the PRgeneration
// when gen is not negative.
func expectReservation(t *testing.T, ctx context.Context, s *initiator.Session, what string, gen int64, key uint64) prResv {
	t.Helper()
	r, err := readReservation(ctx, s)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	switch {
	case key == 0 && r.held:
		t.Errorf("%s: READ RESERVATION reports key %#x type %d; want no reservation", what, r.key, r.typ)
	case key != 0 && !r.held:
		t.Errorf("%s: READ RESERVATION reports no reservation; want key %#x type Write Exclusive", what, key)
	case key != 0 && (r.key != key || r.typ != prTypeWE || r.scope != 0):
		t.Errorf("%s: READ RESERVATION reports key %#x scope %d type %d; want key %#x scope 0 (LU) type %d (Write Exclusive)",
			what, r.key, r.scope, r.typ, key, prTypeWE)
	}
	if gen >= 0 && int64(r.gen) != gen {
		t.Errorf("%s: READ RESERVATION PRgeneration %d, want %d", what, r.gen, gen)
	}
	return r
}

// write10CDB addresses blocks at lba.
func write10CDB(lba uint32, blocks int) []byte {
	return []byte{opWrite10, 0, byte(lba >> 24), byte(lba >> 16), byte(lba >> 8), byte(lba), 0, byte(blocks >> 8), byte(blocks), 0}
}

func read10CDB(lba uint32, blocks int) []byte {
	c := write10CDB(lba, blocks)
	c[0] = opRead10
	return c
}

// prWrite writes data at lba of LUN 0 (after unit attentions) and returns
// the response, so the caller can tell GOOD from RESERVATION CONFLICT.
func prWrite(ctx context.Context, s *initiator.Session, lba uint32, data []byte) (initiator.Response, error) {
	r, _, err := prRun(ctx, s, 0, write10CDB(lba, len(data)/blockSize), data, nil)
	return r, err
}

// expectWrite checks the status of a write to LUN 0.
func expectWrite(t *testing.T, ctx context.Context, s *initiator.Session, what string, lba uint32, data []byte, status byte) {
	t.Helper()
	r, err := prWrite(ctx, s, lba, data)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if r.Status != status {
		t.Fatalf("%s: %s, want %s", what, describe(r), describe(initiator.Response{Status: status}))
	}
}

// collectUAs drains the unit attentions queued for the session's nexus
// on LUN 0: TEST UNIT READY until it returns GOOD, then REQUEST SENSE must
// have nothing left to report.
func collectUAs(t *testing.T, ctx context.Context, s *initiator.Session) []senseCode {
	t.Helper()
	var uas []senseCode
	for range 16 {
		r, err := tur(ctx, s, 0)
		if err != nil {
			t.Fatalf("TEST UNIT READY: %v", err)
		}
		if r.Status == initiator.StatusGood {
			buf := make([]byte, 252)
			rs, err := s.Do(ctx, 0, []byte{opRequestSense, 0, 0, 0, byte(len(buf)), 0}, nil, buf)
			if err != nil || rs.Status != initiator.StatusGood {
				t.Fatalf("REQUEST SENSE: %s, %v", describe(rs), err)
			}
			if sc := senseOf(initiator.Response{Sense: buf[:rs.DataInLen]}); sc.key != 0 {
				t.Errorf("REQUEST SENSE after TEST UNIT READY returned GOOD reports %v", sc)
			}
			return uas
		}
		sc := senseOf(r)
		if r.Status != initiator.StatusCheckCondition || sc.key != keyUnitAttention {
			t.Fatalf("TEST UNIT READY: %s; want GOOD or a unit attention", describe(r))
		}
		uas = append(uas, sc)
	}
	t.Fatalf("TEST UNIT READY still reports unit attentions after %v", uas)
	return nil
}

// prDial logs in as p; the session is closed at the end of the test.
func prDial(t *testing.T, ctx context.Context, n *nodetest.Node, p prInitiator) *initiator.Session {
	t.Helper()
	return dial(t, ctx, p.config(n))
}

// stopNode sends SIGTERM and waits for a clean exit.
func stopNode(t *testing.T, n *nodetest.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n.Stop()
	if err := n.Wait(ctx); err != nil {
		t.Fatalf("hatarget after SIGTERM: %v; want exit status 0", err)
	}
}
