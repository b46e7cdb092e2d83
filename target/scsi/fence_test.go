package scsi

import (
	"bytes"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/backend/backendtest"
)

// Points of a command where takeover ends the lease.
const (
	never          int32 = iota
	afterAdmission       // checkALUA let the command in, no device call yet
	duringRead           // a ReadAt is in the device
)

// takeover ends a lease at a chosen point of the next command, as if the
// node froze there (SIGSTOP) while another node took the LU over.
type takeover struct {
	lease *Lease
	at    atomic.Int32
}

func (k *takeover) reach(point int32) {
	if k.at.CompareAndSwap(point, never) {
		k.lease.until.Store(0) // Extend never moves the deadline back
	}
}

// takeoverStore is asked for the reservation state by every command right
// after checkALUA admitted it: that is afterAdmission.
type takeoverStore struct {
	ReservationStore
	k *takeover
}

func (s takeoverStore) State() *PRState {
	s.k.reach(afterAdmission)
	return s.ReservationStore.State()
}

// takeoverDevice is a thinDevice (so also an Unmapper and a Mapper) whose
// reads end the lease when armed with duringRead.
type takeoverDevice struct {
	*thinDevice
	k *takeover
}

func (d takeoverDevice) ReadAt(p []byte, off int64) error {
	err := d.thinDevice.ReadAt(p, off)
	d.k.reach(duringRead)
	return err
}

const leaseSerial = "serial-lease"

// newLeaseHarness is a thin LU whose first 64 blocks hold 'a', under a
// valid lease when leased is set.
func newLeaseHarness(t *testing.T, leased bool) (*harness, *thinDevice, *takeover) {
	t.Helper()
	k := &takeover{lease: NewLease()}
	k.lease.Extend(time.Now().Add(time.Hour))
	dev := takeoverDevice{newThinDevice(testBlocks * 512), k}
	if err := dev.WriteAt(fill(64*512, 'a'), 0, false); err != nil {
		t.Fatal(err)
	}
	store, err := NewMemoryReservations(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := LUConfig{
		Device: dev, BlockSize: 512, Serial: leaseSerial, WriteCache: true,
		Thin: true, SanitizeAllowed: true, Reservations: takeoverStore{store, k},
	}
	if leased {
		cfg.Lease = k.lease
	}
	lu, err := NewLU(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, lu: lu, dev: dev.Mem, n: testNexus("iqn.1994-05.com.example:host1", 1)}
	h.clearUA(h.n)
	return h, dev.thinDevice, k
}

// deviceState is everything a command could change on a thinDevice.
type deviceState struct {
	data   []byte
	alloc  []bool
	counts backendtest.Counts
}

func stateOf(d *thinDevice) deviceState {
	d.mu.Lock()
	defer d.mu.Unlock()
	return deviceState{d.Snapshot(), slices.Clone(d.alloc), d.Counts()}
}

func (a deviceState) equal(b deviceState) bool {
	return bytes.Equal(a.data, b.data) && slices.Equal(a.alloc, b.alloc) && a.counts == b.counts
}

// TestLeaseFencesDeviceIO: a command admitted while the lease was valid
// does not touch the device once it ran out, and a read that ends after it
// ran out is not returned; both get NOT READY, ASYMMETRIC ACCESS STATE
// TRANSITION. Without a lease the same commands succeed.
func TestLeaseFencesDeviceIO(t *testing.T) {
	naa := deriveNAA(leaseSerial)
	xcopy := xcParams{
		cscds: [][]byte{cscdDesig(codeBinary, assocLU<<4|typeNAA, naa[:], 512)},
		segs:  [][]byte{segB2B(0, 0, 16, 0, 100)},
	}.bytes()
	unmapList := unmapParams([2]uint64{0, 32})
	overwrite := owParams(1, fill(4, 0x5a))
	for _, tc := range []struct {
		name string
		at   int32
		cdb  []byte
		out  []byte
		edtl int
	}{
		{"WRITE(10)", afterAdmission, cdbRW10(opWrite10, 8, 2, 0), fill(1024, 'b'), 0},
		{"WRITE(16) FUA", afterAdmission, cdbRW16(opWrite16, 8, 2, bitFUA), fill(1024, 'b'), 0},
		{"READ(10) outlasting the lease", duringRead, cdbRW10(opRead10, 8, 2, 0), nil, 1024},
		{"READ(10)", afterAdmission, cdbRW10(opRead10, 8, 2, 0), nil, 1024},
		{"VERIFY(10) BYTCHK", duringRead, cdbRW10(opVerify10, 8, 1, 0x02), fill(512, 'a'), 0},
		{"COMPARE AND WRITE", afterAdmission, cdbCAW(8, 1, 0), append(fill(512, 'a'), fill(512, 'b')...), 0},
		{"WRITE SAME(16)", afterAdmission, cdbWS16(8, 16, 0), fill(512, 'b'), 0},
		{"WRITE SAME(16) UNMAP", afterAdmission, cdbWS16(0, 32, wsUnmap), make([]byte, 512), 0},
		{"UNMAP", afterAdmission, cdbUnmap(false, uint16(len(unmapList))), unmapList, 0},
		{"SYNCHRONIZE CACHE(10)", afterAdmission, cdbRW10(opSyncCache10, 0, 0, 0), nil, 0},
		{"GET LBA STATUS", afterAdmission, cdbGetLBAStatus(0, 64), nil, 64},
		{"SANITIZE OVERWRITE", afterAdmission, cdbSanitize(saSanitizeOverwrite, false, uint16(len(overwrite))), overwrite, 0},
		{"EXTENDED COPY", afterAdmission, cdbXCopy(uint32(len(xcopy))), xcopy, 0},
	} {
		for _, leased := range []bool{true, false} {
			name := tc.name + "/no lease"
			if leased {
				name = tc.name + "/lease runs out"
			}
			t.Run(name, func(t *testing.T) {
				h, dev, k := newLeaseHarness(t, leased)
				before := stateOf(dev)
				k.at.Store(tc.at)
				res, _ := h.run(tc.cdb, tc.out, tc.edtl)
				if k.at.Load() != never {
					t.Fatal("the command never got to where the lease runs out")
				}
				if !leased {
					good.check(t, res)
					return
				}
				wantSense(KeyNotReady, ascALUATransition).check(t, res)
				if !stateOf(dev).equal(before) {
					t.Fatal("the device changed after the lease ran out")
				}
			})
		}
	}
}

type unmapOnly struct{ *backendtest.Mem }

func (unmapOnly) Unmap(off, length int64) error { return nil }

type extentsOnly struct{ *backendtest.Mem }

func (d extentsOnly) Extent(off int64) (bool, int64, error) { return true, d.Size() - off, nil }

// TestFenceKeepsOptionalInterfaces: the LU decides thin provisioning by
// asserting for Unmapper and Mapper on its device, so the fence implements
// them exactly when the device does; without a lease there is no wrapper.
func TestFenceKeepsOptionalInterfaces(t *testing.T) {
	file, err := backend.Open(backend.Options{Handler: backend.FileIO, Path: filepath.Join(t.TempDir(), "disk"), Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	null, err := backend.Open(backend.Options{Handler: backend.NullIO, Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	lease := NewLease()
	lease.Extend(time.Now().Add(time.Hour))
	for _, tc := range []struct {
		name             string
		dev              backend.Device
		unmapper, mapper bool
	}{
		{"fileio", file, true, true},
		{"nullio", null, true, true},
		{"neither", backendtest.NewMem(1 << 20), false, false},
		{"unmapper only", unmapOnly{backendtest.NewMem(1 << 20)}, true, false},
		{"mapper only", extentsOnly{backendtest.NewMem(1 << 20)}, false, true},
	} {
		for _, l := range []*Lease{nil, lease} {
			lu, err := NewLU(LUConfig{Device: tc.dev, Serial: "s", Thin: true, Lease: l})
			if err != nil {
				t.Fatal(err)
			}
			st := lu.state.Load()
			_, u := st.dev.(backend.Unmapper)
			_, m := st.dev.(backend.Mapper)
			if u != tc.unmapper || m != tc.mapper || st.thin != tc.unmapper {
				t.Errorf("%s, lease %v: Unmapper %v, Mapper %v, thin %v; want %v, %v, %v",
					tc.name, l != nil, u, m, st.thin, tc.unmapper, tc.mapper, tc.unmapper)
			}
			if wrapped := st.dev != tc.dev; wrapped != (l != nil) {
				t.Errorf("%s, lease %v: device wrapped %v", tc.name, l != nil, wrapped)
			}
		}
	}
}
