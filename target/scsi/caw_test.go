package scsi

import (
	"bytes"
	"encoding/binary"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/backend/backendtest"
)

func TestCompareAndWrite(t *testing.T) {
	const bs = 512
	lbaOOB := wantSense(KeyIllegalRequest, ascLBAOutOfRange)
	for _, tc := range []struct {
		name    string
		mod     func(*LUConfig)
		cdb     []byte
		out     []byte // nil: verify data = 'A' blocks, write data = 'B' blocks
		want    want
		info    int64 // MISCOMPARE INFORMATION, -1 for none
		written bool  // the 'B' data is on the medium afterwards
	}{
		{name: "one block", cdb: cdbCAW(10, 1, 0), want: good, info: -1, written: true},
		{name: "four blocks", cdb: cdbCAW(10, 4, 0), want: good, info: -1, written: true},
		{name: "last blocks", cdb: cdbCAW(testBlocks-2, 2, 0), want: good, info: -1, written: true},
		{name: "dpo fua", cdb: cdbCAW(10, 1, 0x18), want: good, info: -1, written: true},
		{name: "miscompare", cdb: cdbCAW(10, 2, 0), want: wantSense(KeyMiscompare, ascMiscompareDuringVerify), info: 700},
		{name: "zero blocks", cdb: cdbCAW(10, 0, 0), out: []byte{}, want: good, info: -1},
		{name: "past end", cdb: cdbCAW(testBlocks-1, 2, 0), want: lbaOOB, info: -1},
		{name: "lba -1", cdb: cdbCAW(^uint64(0), 1, 0), want: lbaOOB, info: -1},
		{name: "wrprotect", cdb: cdbCAW(10, 1, 0x20), want: wantCDB(1, 7), info: -1},
		{name: "too little data", cdb: cdbCAW(10, 1, 0), out: fill(4*bs, 'A'), want: wantCDB(13, -1), info: -1},
		{name: "too much data", cdb: cdbCAW(10, 3, 0), out: fill(4*bs, 'A'), want: wantCDB(13, -1), info: -1},
		{name: "zero blocks with data", cdb: cdbCAW(10, 0, 0), out: fill(2*bs, 'A'), want: wantCDB(13, -1), info: -1},
		{name: "read-only", mod: func(c *LUConfig) { c.ReadOnly = true }, cdb: cdbCAW(10, 1, 0),
			want: wantSense(KeyDataProtect, ascWriteProtected), info: -1},
		{name: "reserved byte 10", cdb: func() []byte { c := cdbCAW(10, 1, 0); c[10] = 1; return c }(), want: wantCDB(10, 0), info: -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.mod)
			n := int(tc.cdb[13])
			copy(h.dev.Bytes()[10*bs:], fill(8*bs, 'A'))
			copy(h.dev.Bytes()[(testBlocks-2)*bs:], fill(2*bs, 'A'))
			out := tc.out
			if out == nil {
				out = append(fill(n*bs, 'A'), fill(n*bs, 'B')...)
				if tc.info >= 0 {
					out[tc.info] = 'C'
				}
			}
			res, _ := h.run(tc.cdb, out, len(out))
			tc.want.check(t, res)
			if res.Status == StatusGood || tc.want.field != 10 {
				if res.Transfer != 2*n*bs {
					t.Fatalf("Transfer %d, want %d", res.Transfer, 2*n*bs)
				}
			}
			if false {
				t.Fatalf("Transfer %d, want %d", res.Transfer, 2*n*bs)
			}
			if tc.info >= 0 {
				p := mustSense(t, res)
				if !p.HasInfo || p.Info != uint64(tc.info) {
					t.Fatalf("INFORMATION %v %d, want %d", p.HasInfo, p.Info, tc.info)
				}
			}
			lba := getU64(tc.cdb[2:])
			if lba < testBlocks && n > 0 && int(lba)+n <= testBlocks {
				got := h.dev.Bytes()[int(lba)*bs : (int(lba)+n)*bs]
				wantByte := byte('A')
				if tc.written {
					wantByte = 'B'
				}
				if !bytes.Equal(got, fill(n*bs, wantByte)) {
					t.Fatalf("medium holds %q..., want %c", got[:4], wantByte)
				}
			}
		})
	}
}

func TestCompareAndWriteDurability(t *testing.T) {
	h := newHarness(t, nil) // write cache on
	out := append(fill(512, 0), fill(512, 1)...)
	durable0 := h.dev.Counts().Durable
	good.check(t, first(h.run(cdbCAW(0, 1, 0), out, len(out))))
	if d := h.dev.Counts().Durable; d != durable0 {
		t.Fatal("CAW without FUA wrote durably with WCE set")
	}
	out = append(fill(512, 1), fill(512, 2)...)
	good.check(t, first(h.run(cdbCAW(0, 1, bitFUA), out, len(out))))
	if d := h.dev.Counts().Durable; d != durable0+1 {
		t.Fatal("CAW with FUA did not write durably")
	}
}

// TestCompareAndWriteConcurrent has 32 writers increment one counter block
// with COMPARE AND WRITE through Execute on a real fileio device. Every CAW
// that succeeded must be reflected (no lost update), the final count must
// equal the number of successes, and no read may ever see a torn block.
// Plain WRITEs and READs of the neighbouring blocks run alongside.
func TestCompareAndWriteConcurrent(t *testing.T) {
	const (
		bs      = 512
		writers = 32
		target  = 40 // LBA of the counter
	)
	perWriter := 10
	if testing.Short() {
		perWriter = 5
	}
	dev, err := backend.Open(backend.Options{Handler: backend.FileIO, Path: filepath.Join(t.TempDir(), "lun"), Size: 1 << 20, BlockSize: bs})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	lu, err := NewLU(LUConfig{Device: dev, BlockSize: bs, WriteCache: true})
	if err != nil {
		t.Fatal(err)
	}
	v := testView{0: lu}
	// counterBlock fills a block with the counter in every 8-byte word, so
	// a torn block is one whose words differ.
	counterBlock := func(b []byte, c uint64) {
		for i := 0; i < len(b); i += 8 {
			binary.LittleEndian.PutUint64(b[i:], c)
		}
	}
	decode := func(b []byte) (uint64, bool) {
		c := binary.LittleEndian.Uint64(b)
		for i := 8; i < len(b); i += 8 {
			if binary.LittleEndian.Uint64(b[i:]) != c {
				return 0, false
			}
		}
		return c, true
	}
	exec := func(n *Nexus, cdb, out []byte, in []byte) *Result {
		res := &Result{}
		Execute(v, &Command{Nexus: n, CDB: cdb, DataOut: out, DataIn: in}, res)
		return res
	}

	var successes, miscompares atomic.Int64
	var torn atomic.Bool
	var wg sync.WaitGroup
	stop := make(chan struct{})
	// Noise: plain writes and reads of the blocks around the counter.
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := testNexus("iqn.noise", byte(100+i))
			exec(n, cdbTUR(), nil, nil)
			blk := make([]byte, 2*bs)
			for {
				select {
				case <-stop:
					return
				default:
				}
				exec(n, cdbRW10(opWrite10, target-2, 2, 0), blk, nil)
				exec(n, cdbRW10(opWrite10, target+1, 2, 0), blk, nil)
				exec(n, cdbRW10(opRead10, target-1, 3, 0), nil, make([]byte, 3*bs))
			}
		}()
	}
	var writersWG sync.WaitGroup
	for w := range writers {
		writersWG.Add(1)
		go func() {
			defer writersWG.Done()
			n := testNexus("iqn.caw", byte(w))
			exec(n, cdbTUR(), nil, nil) // POWER ON, RESET
			in := make([]byte, bs)
			out := make([]byte, 2*bs)
			for done := 0; done < perWriter; {
				res := exec(n, cdbRW10(opRead10, target, 1, 0), nil, in)
				if res.Status != StatusGood {
					t.Errorf("read: status %#x", res.Status)
					return
				}
				c, ok := decode(in)
				if !ok {
					torn.Store(true)
					return
				}
				counterBlock(out[:bs], c)
				counterBlock(out[bs:], c+1)
				res = exec(n, cdbCAW(target, 1, 0), out, nil)
				switch res.Status {
				case StatusGood:
					successes.Add(1)
					done++
				case StatusCheckCondition:
					p, err := parseSense(res.Sense)
					if err != nil || p.Key != KeyMiscompare {
						t.Errorf("CAW: sense %+v %v", p, err)
						return
					}
					miscompares.Add(1)
				default:
					t.Errorf("CAW: status %#x", res.Status)
					return
				}
			}
		}()
	}
	writersWG.Wait()
	close(stop)
	wg.Wait()
	if torn.Load() {
		t.Fatal("a read saw a torn counter block")
	}
	final := make([]byte, bs)
	if err := dev.ReadAt(final, target*bs); err != nil {
		t.Fatal(err)
	}
	c, ok := decode(final)
	if !ok {
		t.Fatal("final counter block is torn")
	}
	if c != uint64(successes.Load()) || c != writers*uint64(perWriter) {
		t.Fatalf("counter %d, successful CAWs %d, want %d", c, successes.Load(), writers*perWriter)
	}
	t.Logf("%d successful CAWs, %d miscompares", successes.Load(), miscompares.Load())
}

// TestCompareAndWriteExcludesWrites checks the lock directly: a WRITE to
// the CAW's range waits for an exclusive holder of that range, and a WRITE
// elsewhere does not.
func TestCompareAndWriteExcludesWrites(t *testing.T) {
	h := newHarness(t, func(c *LUConfig) { c.Device = backendtest.NewMem(8 << 20) })
	r := request{lu: h.lu, st: h.lu.state.Load()}
	hold := r.lockBlocks(100, 1, true)
	done := make(chan struct{})
	go func() {
		res := &Result{}
		h.lu.Execute(&Command{Nexus: h.n, CDB: cdbRW10(opWrite10, 100, 1, 0), DataOut: fill(512, 9)}, res)
		close(done)
	}()
	// A write far away is not held up.
	good.check(t, first(h.run(cdbRW10(opWrite10, 3*(1<<20)/512+7, 1, 0), fill(512, 1), 512)))
	select {
	case <-done:
		t.Fatal("WRITE ran inside an exclusively held range")
	case <-time.After(50 * time.Millisecond):
	}
	hold.release()
	<-done
	if h.dev.Bytes()[100*512] != 9 {
		t.Fatal("WRITE did not complete after the range was released")
	}
}

func TestORWrite(t *testing.T) {
	h := newHarness(t, nil)
	copy(h.dev.Bytes()[5*512:], fill(3*512, 0x0f))
	res, _ := h.run(cdbRW16(opORWrite16, 5, 3, 0x18), fill(3*512, 0xa0), 3*512)
	good.check(t, res)
	if !bytes.Equal(h.dev.Bytes()[5*512:8*512], fill(3*512, 0xaf)) || h.dev.Bytes()[8*512] != 0 {
		t.Fatal("ORWRITE did not OR the data in")
	}
	if res.Transfer != 3*512 {
		t.Fatalf("Transfer %d", res.Transfer)
	}
	// 200 blocks span several pooled chunks.
	res, _ = h.run(cdbRW16(opORWrite16, 100, 200, 0), fill(200*512, 0x01), 200*512)
	good.check(t, res)
	if !bytes.Equal(h.dev.Bytes()[100*512:300*512], fill(200*512, 0x01)) {
		t.Fatal("long ORWRITE")
	}
	lbaOOB := wantSense(KeyIllegalRequest, ascLBAOutOfRange)
	for _, tc := range []struct {
		name string
		cdb  []byte
		want want
	}{
		{"zero blocks", cdbRW16(opORWrite16, 0, 0, 0), good},
		{"zero blocks at end", cdbRW16(opORWrite16, testBlocks, 0, 0), good},
		{"zero blocks past end", cdbRW16(opORWrite16, testBlocks+1, 0, 0), lbaOOB},
		{"past end", cdbRW16(opORWrite16, testBlocks-1, 2, 0), lbaOOB},
		{"lba 2^63", cdbRW16(opORWrite16, 1<<63, 1, 0), lbaOOB},
		{"orprotect", cdbRW16(opORWrite16, 0, 1, 0x20), wantCDB(1, 7)},
		{"too long", cdbRW16(opORWrite16, 0, MaxTransferBytes/512+1, 0), lbaOOB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, _ := h.run(tc.cdb, fill(512, 1), 512)
			tc.want.check(t, res)
		})
	}
	ro := newHarness(t, func(c *LUConfig) { c.ReadOnly = true })
	wantSense(KeyDataProtect, ascWriteProtected).check(t, first(ro.run(cdbRW16(opORWrite16, 0, 1, 0), fill(512, 1), 512)))
}

func TestWriteAtomic(t *testing.T) {
	h := newHarness(t, nil)
	res, _ := h.run(cdbWriteAtomic(7, 4, 0x18), fill(4*512, 0x5a), 4*512)
	good.check(t, res)
	if !bytes.Equal(h.dev.Bytes()[7*512:11*512], fill(4*512, 0x5a)) || res.Transfer != 4*512 {
		t.Fatal("WRITE ATOMIC did not write")
	}
	lbaOOB := wantSense(KeyIllegalRequest, ascLBAOutOfRange)
	for _, tc := range []struct {
		name string
		cdb  []byte
		out  []byte
		want want
	}{
		{"zero blocks", cdbWriteAtomic(0, 0, 0), nil, good},
		{"zero blocks past end", cdbWriteAtomic(testBlocks+1, 0, 0), nil, lbaOOB},
		{"past end", cdbWriteAtomic(testBlocks-1, 2, 0), fill(1024, 1), lbaOOB},
		{"lba -1", cdbWriteAtomic(^uint64(0), 1, 0), fill(512, 1), lbaOOB},
		{"wrprotect", cdbWriteAtomic(0, 1, 0x40), fill(512, 1), wantCDB(1, 7)},
		{"atomic boundary", func() []byte { c := cdbWriteAtomic(0, 1, 0); c[11] = 1; return c }(), fill(512, 1), wantCDB(11, 0)},
		{"short data", cdbWriteAtomic(0, 2, 0), fill(512, 1), wantCDB(12, -1)},
		{"fua_nv reserved", cdbWriteAtomic(0, 1, 0x02), fill(512, 1), wantCDB(1, 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, _ := h.run(tc.cdb, tc.out, len(tc.out))
			tc.want.check(t, res)
		})
	}
	ro := newHarness(t, func(c *LUConfig) { c.ReadOnly = true })
	wantSense(KeyDataProtect, ascWriteProtected).check(t, first(ro.run(cdbWriteAtomic(0, 1, 0), fill(512, 1), 512)))
	// More than MAXIMUM ATOMIC TRANSFER LENGTH (with 512-byte blocks the
	// 16-bit field cannot exceed it, 4096-byte blocks can).
	big := newHarness(t, func(c *LUConfig) {
		c.Device = &sizedDevice{backendtest.NewMem(4096), 2 * maxAtomicBytes}
		c.BlockSize = 4096
	})
	wantCDB(12, -1).check(t, first(big.run(cdbWriteAtomic(0, maxAtomicBytes/4096+1, 0), nil, 0)))
}

func TestBlockLimitsAtomicFields(t *testing.T) {
	h := newHarness(t, nil)
	res, b := h.run(cdbInquiry(true, vpdBlockLimits, 255), nil, 255)
	good.check(t, res)
	if b[5] != maxCAWBlocks {
		t.Fatalf("MAXIMUM COMPARE AND WRITE LENGTH %d", b[5])
	}
	if got := getU32(b[44:]); got != MaxTransferBytes/512 || got > getU32(b[8:]) {
		t.Fatalf("MAXIMUM ATOMIC TRANSFER LENGTH %d", got)
	}
	if getU32(b[48:]) != 0 || getU32(b[52:]) != 0 || getU32(b[56:]) != 0 || getU32(b[60:]) != 0 {
		t.Fatalf("atomic alignment/granularity/boundary fields % x", b[48:64])
	}
	if b[4]&0x01 != 0 {
		t.Fatal("WSNZ set")
	}
	if getU64(b[36:]) != maxWriteSameBlocks {
		t.Fatalf("MAXIMUM WRITE SAME LENGTH %d", getU64(b[36:]))
	}
	// Not thin: no UNMAP limits.
	if getU32(b[20:]) != 0 || getU32(b[24:]) != 0 {
		t.Fatal("UNMAP limits on a fully provisioned LU")
	}
}

// BenchmarkRangeLockShared is what the READ/WRITE path pays for the range
// lock: one shared acquire and release of a 4 KiB range.
func BenchmarkRangeLockShared(b *testing.B) {
	var rl rangeLock
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h := rl.acquire(int64(i&1023)<<12, 4096, false)
		h.release()
	}
}
