package scsi

import (
	"bytes"
	"testing"
	"time"
)

func sanitizeHarness(t *testing.T, mod func(*LUConfig)) (*harness, *thinDevice) {
	return newThinHarness(t, func(c *LUConfig) {
		c.SanitizeAllowed = true
		if mod != nil {
			mod(c)
		}
	})
}

func TestSanitizeNotAllowed(t *testing.T) {
	h, _ := newThinHarness(t, nil)
	for _, sa := range []byte{saSanitizeOverwrite, saSanitizeBlockErase, saSanitizeCryptoErase, saSanitizeExitFail} {
		wantSense(KeyIllegalRequest, ascInvalidOpcode).check(t, first(h.run(cdbSanitize(sa, false, 0), nil, 0)))
		_, one := h.run(cdbMaintIn(saReportOpcodes, rsocOpcodeSA, opSanitize, uint16(sa), 64), nil, 64)
		if !bytes.Equal(one, []byte{0, 1, 0, 0}) {
			t.Fatalf("SANITIZE %#x reported without the opt-in: % x", sa, one)
		}
	}
	_, b1 := h.run(cdbInquiry(true, vpdBlockDevCharacts, 64), nil, 64)
	if b1[7] != 0 {
		t.Fatalf("WABEREQ without SANITIZE: %#x", b1[7])
	}
	// Block erase needs thin provisioning; overwrite does not.
	full := newHarness(t, func(c *LUConfig) { c.SanitizeAllowed = true })
	wantSense(KeyIllegalRequest, ascInvalidOpcode).check(t, first(full.run(cdbSanitize(saSanitizeBlockErase, false, 0), nil, 0)))
	p := owParams(1, fill(512, 0x5a))
	good.check(t, first(full.run(cdbSanitize(saSanitizeOverwrite, false, uint16(len(p))), p, len(p))))
	if !bytes.Equal(full.dev.Bytes(), fill(len(full.dev.Bytes()), 0x5a)) {
		t.Fatal("OVERWRITE on a fully provisioned LU")
	}
}

func TestSanitizeOverwrite(t *testing.T) {
	h, dev := sanitizeHarness(t, nil)
	copy(dev.Bytes(), fill(len(dev.Bytes()), 'a'))
	// A 4-byte pattern repeated through every block.
	p := owParams(1, []byte{1, 2, 3, 4})
	good.check(t, first(h.run(cdbSanitize(saSanitizeOverwrite, false, uint16(len(p))), p, len(p))))
	if !bytes.Equal(dev.Bytes(), bytes.Repeat([]byte{1, 2, 3, 4}, len(dev.Bytes())/4)) {
		t.Fatal("OVERWRITE pattern not on the medium")
	}
	// Two passes with INVERT: the last pass is inverted.
	p = owParams(0x80|2, fill(512, 0x0f))
	good.check(t, first(h.run(cdbSanitize(saSanitizeOverwrite, false, uint16(len(p))), p, len(p))))
	if !bytes.Equal(dev.Bytes(), fill(len(dev.Bytes()), 0xf0)) {
		t.Fatal("INVERT not applied on the second pass")
	}
	// The LU serves I/O again afterwards.
	good.check(t, first(h.run(cdbRW10(opRead10, 0, 1, 0), nil, 512)))

	bad := func(b []byte) []byte { return b }
	for _, tc := range []struct {
		name string
		cdb  []byte
		out  []byte
		want want
	}{
		{"no parameter list", cdbSanitize(saSanitizeOverwrite, false, 0), nil, wantCDB(7, -1)},
		{"four bytes", cdbSanitize(saSanitizeOverwrite, false, 4), make([]byte, 4), wantCDB(7, -1)},
		{"block size + 5", cdbSanitize(saSanitizeOverwrite, false, 517), make([]byte, 517), wantCDB(7, -1)},
		{"overwrite count 0", cdbSanitize(saSanitizeOverwrite, false, 516), owParams(0, fill(512, 1)), wantParam(0, 4)},
		{"pattern length 0", cdbSanitize(saSanitizeOverwrite, false, 516), bad(func() []byte { b := owParams(1, fill(512, 1)); putU16(b[2:], 0); return b }()), wantParam(2, -1)},
		{"pattern longer than a block", cdbSanitize(saSanitizeOverwrite, false, 516), bad(func() []byte { b := owParams(1, fill(512, 1)); putU16(b[2:], 516); return b }()), wantParam(2, -1)},
		{"test field", cdbSanitize(saSanitizeOverwrite, false, 516), owParams(0x21, fill(512, 1)), wantParam(0, 6)},
		{"reserved bit", func() []byte { c := cdbSanitize(saSanitizeOverwrite, false, 516); c[1] |= 0x40; return c }(), owParams(1, fill(512, 1)), wantCDB(1, 6)},
		{"reserved byte", func() []byte { c := cdbSanitize(saSanitizeOverwrite, false, 516); c[3] = 3; return c }(), owParams(1, fill(512, 1)), wantCDB(3, 1)},
		{"crypto erase with a parameter list", cdbSanitize(saSanitizeCryptoErase, false, 8), make([]byte, 8), wantCDB(7, -1)},
		{"service action 0", cdbSanitize(0x00, false, 0), nil, wantCDB(1, 4)},
		{"exit failure mode with data", cdbSanitize(saSanitizeExitFail, false, 8), make([]byte, 8), wantCDB(7, -1)},
		{"block erase with data", cdbSanitize(saSanitizeBlockErase, false, 8), make([]byte, 8), wantCDB(7, -1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, _ := h.run(tc.cdb, tc.out, len(tc.out))
			tc.want.check(t, res)
		})
	}
	ro, _ := sanitizeHarness(t, func(c *LUConfig) { c.ReadOnly = true })
	p = owParams(1, fill(512, 1))
	wantSense(KeyDataProtect, ascWriteProtected).check(t, first(ro.run(cdbSanitize(saSanitizeOverwrite, false, 516), p, 516)))
	wantSense(KeyDataProtect, ascWriteProtected).check(t, first(ro.run(cdbSanitize(saSanitizeBlockErase, false, 0), nil, 0)))
}

func TestSanitizeBlockErase(t *testing.T) {
	h, dev := sanitizeHarness(t, nil)
	good.check(t, first(h.run(cdbRW10(opWrite10, 0, 256, 0), fill(256*512, 'a'), 256*512)))
	good.check(t, first(h.run(cdbSanitize(saSanitizeBlockErase, false, 0), nil, 0)))
	if !bytes.Equal(dev.Bytes(), make([]byte, len(dev.Bytes()))) {
		t.Fatal("BLOCK ERASE left data")
	}
	_, data := h.run(cdbGetLBAStatus(0, 256), nil, 256)
	if got := parseLBAStatus(t, data); len(got) != 1 || got[0] != (lbaDesc{0, testBlocks, lbaDeallocated}) {
		t.Fatalf("after BLOCK ERASE: %v", got)
	}
	_, b1 := h.run(cdbInquiry(true, vpdBlockDevCharacts, 64), nil, 64)
	if b1[7]>>6 != 1 {
		t.Fatalf("WABEREQ %d, want 1", b1[7]>>6)
	}
	_, rsoc := h.run(cdbMaintIn(saReportOpcodes, rsocOpcodeSA, opSanitize, saSanitizeBlockErase, 64), nil, 64)
	if rsoc[1]&0x07 != 3 {
		t.Fatalf("BLOCK ERASE not reported: % x", rsoc)
	}
}

// TestSanitizeInProgress holds the job in the device and checks what the
// LU answers meanwhile, that the job outlives a LUN reset, and IMMED.
func TestSanitizeInProgress(t *testing.T) {
	h, dev := sanitizeHarness(t, nil)
	other := testNexus("iqn.other", 9)
	h.clearUA(other)
	_, release := dev.HoldWrites()
	p := owParams(1, fill(512, 0x33))
	good.check(t, first(h.run(cdbSanitize(saSanitizeOverwrite, true, uint16(len(p))), p, len(p)))) // IMMED
	inProgress := wantSense(KeyNotReady, ascSanitizeInProgress)
	for _, n := range []*Nexus{h.n, other} {
		res, _ := h.exec(n, cdbTUR(), nil, 0)
		inProgress.check(t, res)
		if s := mustSense(t, res); !s.HasField { // SKSV: the progress indication
			t.Fatal("no progress indication")
		}
		inProgress.check(t, first(h.exec(n, cdbRW16(opRead16, 0, 1, 0), nil, 512)))
		inProgress.check(t, first(h.exec(n, []byte{opStartStopUnit, 0, 0, 0, 1, 0}, nil, 0)))
		good.check(t, first(h.exec(n, cdbInquiry(false, 0, 96), nil, 96)))
		res, data := h.exec(n, []byte{opRequestSense, 0, 0, 0, 252, 0}, nil, 252)
		good.check(t, res)
		if s, err := parseSense(data); err != nil || s.Key != KeyNotReady || s.code() != ascSanitizeInProgress || !s.HasField && data[15]&0x80 == 0 {
			t.Fatalf("REQUEST SENSE during sanitize: % x", data)
		}
	}
	// Another SANITIZE is refused too.
	inProgress.check(t, first(h.run(cdbSanitize(saSanitizeOverwrite, false, uint16(len(p))), p, len(p))))
	// A LUN reset does not stop it.
	h.lu.ResetLU(h.n)
	wantSense(KeyUnitAttention, ascBusDeviceReset).check(t, first(h.run(cdbTUR(), nil, 0)))
	inProgress.check(t, first(h.run(cdbTUR(), nil, 0)))

	release()
	deadline := time.Now().Add(5 * time.Second)
	for first(h.run(cdbTUR(), nil, 0)).Status != StatusGood {
		if time.Now().After(deadline) {
			t.Fatal("sanitize did not finish")
		}
		time.Sleep(time.Millisecond)
	}
	if !bytes.Equal(dev.Bytes(), fill(len(dev.Bytes()), 0x33)) {
		t.Fatal("sanitize did not overwrite")
	}
}

func TestSanitizeFailureMode(t *testing.T) {
	h, dev := sanitizeHarness(t, nil)
	dev.FailWrites(errShort)
	p := owParams(1, fill(512, 1))
	failed := wantSense(KeyMediumError, ascSanitizeFailed)
	failed.check(t, first(h.run(cdbSanitize(saSanitizeOverwrite, false, uint16(len(p))), p, len(p))))
	failed.check(t, first(h.run(cdbRW10(opRead10, 0, 1, 0), nil, 512)))
	good.check(t, first(h.run(cdbInquiry(false, 0, 96), nil, 96)))
	good.check(t, first(h.run(cdbTUR(), nil, 0)))
	good.check(t, first(h.run(cdbSanitize(saSanitizeExitFail, false, 0), nil, 0)))
	good.check(t, first(h.run(cdbRW10(opRead10, 0, 1, 0), nil, 512)))

	// A successful sanitize also leaves failure mode.
	failed.check(t, first(h.run(cdbSanitize(saSanitizeOverwrite, false, uint16(len(p))), p, len(p))))
	dev.FailWrites(nil)
	good.check(t, first(h.run(cdbSanitize(saSanitizeOverwrite, false, uint16(len(p))), p, len(p))))
	good.check(t, first(h.run(cdbRW10(opRead10, 0, 1, 0), nil, 512)))
}

func TestReadDefectData(t *testing.T) {
	h := newHarness(t, nil)
	res, data := h.run([]byte{opReadDefect10, 0, 0x18 | 0x03, 0, 0, 0, 0, 0, 32, 0}, nil, 32)
	good.check(t, res)
	if !bytes.Equal(data, []byte{0, 0x1b, 0, 0}) || res.Transfer != 4 {
		t.Fatalf("READ DEFECT DATA(10): % x", data)
	}
	res, data = h.run([]byte{opReadDefect12, 0x05, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0}, nil, 64)
	good.check(t, res)
	if !bytes.Equal(data, []byte{0, 0x05, 0, 0, 0, 0, 0, 0}) {
		t.Fatalf("READ DEFECT DATA(12): % x", data)
	}
	res, data = h.run([]byte{opReadDefect10, 0, 0, 0, 0, 0, 0, 0, 2, 0}, nil, 2)
	good.check(t, res)
	if len(data) != 2 || res.Transfer != 2 {
		t.Fatalf("truncated: % x", data)
	}
	wantCDB(2, 2).check(t, first(h.run([]byte{opReadDefect10, 0, 0x07, 0, 0, 0, 0, 0, 32, 0}, nil, 32)))
	wantCDB(1, 2).check(t, first(h.run([]byte{opReadDefect12, 0x07, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0}, nil, 64)))
	wantCDB(1, 0).check(t, first(h.run([]byte{opReadDefect10, 1, 0, 0, 0, 0, 0, 0, 32, 0}, nil, 32)))
}

func TestStripeMask(t *testing.T) {
	for _, tc := range []struct {
		off, n int64
		want   uint64
	}{
		{0, 0, 0},
		{0, 1, 1},
		{0, 1 << 20, 1},
		{1<<20 - 1, 2, 3},
		{5 << 20, 4096, 1 << 5},
		{63 << 20, 2 << 20, 1<<63 | 1},
		{64 << 20, 1, 1},
		{0, 64 << 20, ^uint64(0)},
		{3 << 20, 100 << 20, ^uint64(0)},
	} {
		if got := stripeMask(tc.off, tc.n); got != tc.want {
			t.Errorf("stripeMask(%d, %d) = %#x, want %#x", tc.off, tc.n, got, tc.want)
		}
	}
}

// CRYPTOGRAPHIC ERASE destroys the data itself (there is no key): punched
// on a thin LU, zeroed on a fully provisioned one, readable afterwards
// (WACEREQ 01b).
func TestSanitizeCryptoErase(t *testing.T) {
	thin, dev := sanitizeHarness(t, nil)
	copy(dev.Bytes(), fill(len(dev.Bytes()), 'a'))
	good.check(t, first(thin.run(cdbSanitize(saSanitizeCryptoErase, false, 0), nil, 0)))
	if !bytes.Equal(dev.Bytes(), make([]byte, len(dev.Bytes()))) {
		t.Fatal("CRYPTO ERASE left data on a thin LU")
	}
	good.check(t, first(thin.run(cdbRW10(opRead10, 0, 1, 0), nil, 512)))
	_, b1 := thin.run(cdbInquiry(true, vpdBlockDevCharacts, 64), nil, 64)
	if b1[7]&0x30 != 0x10 {
		t.Fatalf("WACEREQ = %d, want 1", b1[7]>>4&3)
	}
	full := newHarness(t, func(c *LUConfig) { c.SanitizeAllowed = true })
	copy(full.dev.Bytes(), fill(len(full.dev.Bytes()), 'a'))
	good.check(t, first(full.run(cdbSanitize(saSanitizeCryptoErase, false, 0), nil, 0)))
	if !bytes.Equal(full.dev.Bytes(), make([]byte, len(full.dev.Bytes()))) {
		t.Fatal("CRYPTO ERASE left data on a fully provisioned LU")
	}
}
