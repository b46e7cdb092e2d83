package scsi

import (
	"testing"

	"github.com/hatarget/hatarget/target/backend/backendtest"
)

// FuzzCDB executes arbitrary CDBs with arbitrary Data-Out and Data-In sizes
// against a small LU. Whatever arrives, Execute must not panic, must not
// write outside DataIn, and must return GOOD or CHECK CONDITION with valid
// sense data.
func FuzzCDB(f *testing.F) {
	seeds := [][]byte{
		cdbTUR(),
		cdbInquiry(false, 0, 255), cdbInquiry(true, 0x83, 255), cdbInquiry(true, 0xb0, 64),
		cdbRW6(opRead6, 1, 0), cdbRW10(opRead10, 2, 3, 0x18), cdbRW12(opWrite12, 60, 4, 0), cdbRW16(opRead16, 0, 64, 0),
		cdbRW10(opVerify10, 0, 2, 0x02), cdbRW10(opVerify10, 0, 2, 0x06), cdbRW16(opWriteVerify16, 1, 1, 0x02),
		cdbRW10(opSyncCache10, 0, 0, 0), cdbRW16(opPrefetch16, 0, 1, 0),
		cdbModeSense6(false, pcCurrent, allPages, 0, 255), cdbModeSense10(0x10, pcChangeable, 0x0a, 0, 300),
		cdbModeSelect6(true, false, 16), {opModeSelect10, 0x10, 0, 0, 0, 0, 0, 0, 36, 0},
		{opStartStopUnit, 0, 0, 0, 0x02, 0}, {opPreventAllow, 0, 0, 0, 1, 0},
		{opRequestSense, 1, 0, 0, 252, 0},
		{opReadCapacity10, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		append([]byte{opServiceActionIn16, saReadCapacity16}, make([]byte, 14)...),
		cdbReportLUNs(0, 64), cdbMaintIn(saReportOpcodes, 0x80, 0, 0, 4096), cdbMaintIn(saReportOpcodes, 2, 0x9e, 0x10, 64),
		cdbMaintIn(saReportTMFunction, 0x80, 0, 0, 16), cdbMaintIn(saReportTPG|0x20, 0, 0, 0, 64),
		// Atomic writes, thin provisioning, SANITIZE, READ DEFECT DATA; mode
		// bit 7 makes the LU thin with SANITIZE allowed.
		cdbCAW(1, 1, 0x08), cdbCAW(63, 2, 0), cdbRW16(opORWrite16, 2, 2, 0x10), cdbWriteAtomic(3, 1, 0),
		cdbWS10(0, 0, 0), cdbWS10(4, 4, wsUnmap), cdbWS16(8, 8, wsUnmap|wsNDOB), cdbWS16(1, 2, wsAnchor),
		cdbUnmap(false, 24), cdbGetLBAStatus(0, 64), cdbGetLBAStatus(10, 8),
		cdbSanitize(saSanitizeOverwrite, false, 8), cdbSanitize(saSanitizeBlockErase, true, 0), cdbSanitize(saSanitizeExitFail, false, 0),
		{opReadDefect10, 0, 0x1b, 0, 0, 0, 0, 0, 8, 0}, {opReadDefect12, 0x05, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0},
	}
	ctl := []byte{0, 0, 0, 0, 0x0a, 0x0a, 0x04, 0x10, 0x08, 0, 0, 0, 0xff, 0xff, 0, 0}
	for i, s := range seeds {
		f.Add(s, ctl, uint16(512*(i%5)), byte(i))
		f.Add(s, append(unmapParams([2]uint64{2, 4}), owParams(1, []byte{1, 2, 3, 4})...), uint16(1024), byte(0x80|i&0x1f))
	}
	f.Fuzz(func(t *testing.T, cdb, dataOut []byte, edtl uint16, mode byte) {
		cfg := LUConfig{Device: backendtest.NewMem(64 * 512), Removable: mode&1 != 0, ReadOnly: mode&2 != 0, WriteCache: mode&4 != 0}
		if mode&0x80 != 0 {
			cfg.Device, cfg.Thin, cfg.SanitizeAllowed = newThinDevice(64*512), true, true
		}
		lu, err := NewLU(cfg)
		if err != nil {
			t.Fatal(err)
		}
		v := testView{0: lu, 2: lu}
		n := testNexus("iqn.fuzz", 1)
		if mode&8 != 0 {
			n = nil
		}
		if mode&16 != 0 {
			lu.dsense.Store(true)
		}
		lun := uint64(mode>>5) & 3
		buf := make([]byte, int(edtl)+64)
		for i := int(edtl); i < len(buf); i++ {
			buf[i] = 0xa5
		}
		// Twice: the first command usually reports POWER ON, RESET.
		for range 2 {
			cmd := &Command{Nexus: n, LUN: lun, CDB: cdb, DataOut: dataOut, DataIn: buf[:edtl]}
			res := &Result{}
			Execute(v, cmd, res)
			checkResult(t, cmd, res, buf, int(edtl))
		}
	})
}
