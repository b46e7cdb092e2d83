package backend

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

const mib = 1 << 20

// directDir returns a directory on a filesystem that accepts O_DIRECT, or
// skips: blockio cannot be tested without one.
func directDir(t testing.TB) string {
	t.Helper()
	tmp := t.TempDir()
	for _, dir := range []string{tmp, "/var/tmp"} {
		probe := filepath.Join(dir, fmt.Sprintf("odirect-probe-%d", rand.Int64()))
		f, err := os.OpenFile(probe, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_DIRECT, 0o600)
		if err == nil {
			f.Close()
			os.Remove(probe)
			if dir == tmp {
				return dir
			}
			sub, err := os.MkdirTemp(dir, "backend-test-")
			if err != nil {
				continue
			}
			t.Cleanup(func() { os.RemoveAll(sub) })
			return sub
		}
		os.Remove(probe)
	}
	t.Skip("no filesystem here accepts O_DIRECT; blockio untested")
	return ""
}

// dirFor gives file handlers a place for their backing file.
func dirFor(t testing.TB, h Handler) string {
	if h == BlockIO {
		return directDir(t)
	}
	return t.TempDir()
}

func mustOpen(t testing.TB, o Options) Device {
	t.Helper()
	d, err := Open(o)
	if err != nil {
		t.Fatalf("Open(%+v): %v", o, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func pattern(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

func writeFile(t testing.TB, path string, n int) {
	t.Helper()
	if err := os.WriteFile(path, pattern(n, 1), 0o600); err != nil {
		t.Fatal(err)
	}
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestFileSize(t *testing.T) {
	tests := []struct {
		name      string
		existing  int // -1: no file
		size      int64
		blockSize uint32
		readOnly  bool
		wantSize  int64 // 0: Open must fail
		wantFile  int64 // file size after Open
	}{
		{name: "from file", existing: mib, wantSize: mib, wantFile: mib},
		{name: "from file rounds down", existing: mib + 100, wantSize: mib, wantFile: mib + 100},
		{name: "from file rounds down 4k", existing: mib + 1024, blockSize: 4096, wantSize: mib, wantFile: mib + 1024},
		{name: "given smaller exposes prefix", existing: 2 * mib, size: mib, wantSize: mib, wantFile: 2 * mib},
		{name: "given equal", existing: mib, size: mib, wantSize: mib, wantFile: mib},
		{name: "extend sparse", existing: mib, size: 4 * mib, wantSize: 4 * mib, wantFile: 4 * mib},
		{name: "create", existing: -1, size: 2 * mib, wantSize: 2 * mib, wantFile: 2 * mib},
		{name: "missing without size", existing: -1},
		{name: "file below one block", existing: 100},
		{name: "size not block multiple", existing: mib, size: mib + 100},
		{name: "size not 4k multiple", existing: mib, size: mib + 512, blockSize: 4096},
		{name: "read-only cannot extend", existing: mib, size: 2 * mib, readOnly: true},
		{name: "read-only cannot create", existing: -1, size: mib, readOnly: true},
		{name: "read-only from file", existing: mib, readOnly: true, wantSize: mib, wantFile: mib},
	}
	for _, h := range []Handler{FileIO, BlockIO} {
		for _, tt := range tests {
			t.Run(string(h)+"/"+tt.name, func(t *testing.T) {
				path := filepath.Join(dirFor(t, h), "lun")
				if tt.existing >= 0 {
					writeFile(t, path, tt.existing)
				}
				d, err := Open(Options{Handler: h, Path: path, Size: tt.size, BlockSize: tt.blockSize, ReadOnly: tt.readOnly})
				if tt.wantSize == 0 {
					if err == nil {
						d.Close()
						t.Fatalf("Open succeeded with size %d, want error", d.Size())
					}
					if tt.existing < 0 {
						if _, serr := os.Stat(path); serr == nil {
							t.Errorf("failed Open left %s behind", path)
						}
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				defer d.Close()
				if d.Size() != tt.wantSize {
					t.Errorf("Size() = %d, want %d", d.Size(), tt.wantSize)
				}
				if got := fileSize(t, path); got != tt.wantFile {
					t.Errorf("file size = %d, want %d", got, tt.wantFile)
				}
			})
		}
	}
}

// loopDevice attaches a loop device over a fresh file of n bytes, or skips
// where that needs privileges the test does not have.
func loopDevice(t *testing.T, n int64) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, n); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Skipf("cannot attach a loop device: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "--detach", dev).Run() })
	return dev
}

func TestBlockDevice(t *testing.T) {
	const devSize = 4 * mib
	dev := loopDevice(t, devSize)
	for _, h := range []Handler{FileIO, BlockIO} {
		t.Run(string(h), func(t *testing.T) {
			d := mustOpen(t, Options{Handler: h, Path: dev})
			if d.Size() != devSize {
				t.Errorf("Size() = %d, want %d", d.Size(), devSize)
			}
			p := pattern(64<<10, 9)
			if err := d.WriteAt(p, devSize-int64(len(p)), true); err != nil {
				t.Fatal(err)
			}
			got := AlignedBuffer(len(p))
			if err := d.ReadAt(got, devSize-int64(len(p))); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, p) {
				t.Error("read back differs")
			}
			if err := d.Flush(); err != nil {
				t.Error(err)
			}
			if err := d.(Unmapper).Unmap(0, 64<<10); err != nil {
				t.Errorf("Unmap: %v", err)
			}
			if d, err := Open(Options{Handler: h, Path: dev, Size: 2 * devSize}); err == nil {
				d.Close()
				t.Error("Open beyond the device's capacity succeeded")
			}
			small := mustOpen(t, Options{Handler: h, Path: dev, Size: mib})
			if small.Size() != mib {
				t.Errorf("Size() = %d, want %d", small.Size(), mib)
			}
		})
	}
}

func TestNullSize(t *testing.T) {
	tests := []struct {
		size      int64
		blockSize uint32
		ok        bool
	}{
		{size: mib, ok: true},
		{size: 512, ok: true},
		{size: 4096, blockSize: 4096, ok: true},
		{size: 0},
		{size: -512},
		{size: 1000},
		{size: 512, blockSize: 4096},
	}
	for _, tt := range tests {
		d, err := Open(Options{Handler: NullIO, Size: tt.size, BlockSize: tt.blockSize})
		if (err == nil) != tt.ok {
			t.Errorf("size %d block %d: err %v, want ok=%v", tt.size, tt.blockSize, err, tt.ok)
		}
		if err == nil {
			if d.Size() != tt.size {
				t.Errorf("Size() = %d, want %d", d.Size(), tt.size)
			}
			d.Close()
		}
	}
}

func TestOpenRejects(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		o    Options
	}{
		{"bad block size", Options{Handler: NullIO, Size: mib, BlockSize: 1024}},
		{"unknown handler", Options{Handler: "vdisk_foo", Size: mib}},
		{"fileio without path", Options{Handler: FileIO, Size: mib}},
		{"char device", Options{Handler: FileIO, Path: "/dev/null"}},
		{"directory", Options{Handler: FileIO, Path: dir}},
	}
	for _, tt := range tests {
		if d, err := Open(tt.o); err == nil {
			d.Close()
			t.Errorf("%s: Open succeeded", tt.name)
		}
	}
}

// config is one way of opening a device, shared by the behaviour tests.
type config struct {
	name string
	o    Options
}

func configs(t *testing.T, size int64) []config {
	var cs []config
	for _, h := range []Handler{FileIO, BlockIO, NullIO} {
		for _, bs := range []uint32{512, 4096} {
			for _, mode := range []string{"writeback", "write_through", "nv_cache"} {
				o := Options{Handler: h, Size: size, BlockSize: bs, WriteThrough: mode == "write_through", NVCache: mode == "nv_cache"}
				cs = append(cs, config{name: fmt.Sprintf("%s/%d/%s", h, bs, mode), o: o})
			}
		}
	}
	return cs
}

func (c config) open(t *testing.T) Device {
	t.Helper()
	if c.o.Handler != NullIO {
		c.o.Path = filepath.Join(dirFor(t, c.o.Handler), "lun")
	}
	return mustOpen(t, c.o)
}

func TestReadAfterWrite(t *testing.T) {
	for _, c := range configs(t, 4*mib) {
		t.Run(c.name, func(t *testing.T) {
			d := c.open(t)
			bs := int64(c.o.BlockSize)
			writes := []struct {
				off     int64
				n       int
				durable bool
			}{
				{0, int(bs), false},
				{bs * 3, 8 * int(bs), true},
				{mib, 128 << 10, false},
				{d.Size() - bs, int(bs), true},
			}
			for i, w := range writes {
				p := pattern(w.n, uint64(i))
				if err := d.WriteAt(p, w.off, w.durable); err != nil {
					t.Fatal(err)
				}
				got := AlignedBuffer(w.n)
				if err := d.ReadAt(got, w.off); err != nil {
					t.Fatal(err)
				}
				want := p
				if c.o.Handler == NullIO {
					want = make([]byte, w.n)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("write %d: read back differs", i)
				}
			}
			if err := d.Flush(); err != nil {
				t.Fatalf("Flush: %v", err)
			}
			if d.NVCache() != c.o.NVCache {
				t.Errorf("NVCache() = %v", d.NVCache())
			}
		})
	}
}

func TestPersistsAcrossReopen(t *testing.T) {
	for _, h := range []Handler{FileIO, BlockIO} {
		t.Run(string(h), func(t *testing.T) {
			o := Options{Handler: h, Path: filepath.Join(dirFor(t, h), "lun"), Size: mib}
			d, err := Open(o)
			if err != nil {
				t.Fatal(err)
			}
			p := pattern(64<<10, 7)
			if err := d.WriteAt(p, 4096, false); err != nil {
				t.Fatal(err)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			o.Size, o.ReadOnly = 0, true
			d = mustOpen(t, o)
			got := make([]byte, len(p))
			if err := d.ReadAt(got, 4096); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, p) {
				t.Fatal("data lost across reopen")
			}
		})
	}
}

func TestReadOnly(t *testing.T) {
	for _, h := range []Handler{FileIO, BlockIO, NullIO} {
		t.Run(string(h), func(t *testing.T) {
			o := Options{Handler: h, Size: mib, ReadOnly: true}
			if h != NullIO {
				o.Path = filepath.Join(dirFor(t, h), "lun")
				writeFile(t, o.Path, mib)
				// Read-only data must not depend on write permission.
				if err := os.Chmod(o.Path, 0o400); err != nil {
					t.Fatal(err)
				}
			}
			d := mustOpen(t, o)
			if !d.ReadOnly() {
				t.Error("ReadOnly() = false")
			}
			buf := AlignedBuffer(4096)
			for _, durable := range []bool{false, true} {
				if err := d.WriteAt(buf, 0, durable); !errors.Is(err, ErrReadOnly) {
					t.Errorf("WriteAt(durable=%v) = %v, want ErrReadOnly", durable, err)
				}
			}
			if err := d.(Unmapper).Unmap(0, 4096); !errors.Is(err, ErrReadOnly) {
				t.Errorf("Unmap = %v, want ErrReadOnly", err)
			}
			if err := d.ReadAt(buf, 0); err != nil {
				t.Errorf("ReadAt: %v", err)
			}
			if h != NullIO && !bytes.Equal(buf, pattern(mib, 1)[:4096]) {
				t.Error("read-only read returned wrong data")
			}
			if err := d.Flush(); err != nil {
				t.Errorf("Flush: %v", err)
			}
		})
	}
}

func TestOutOfRange(t *testing.T) {
	const size = mib
	reqs := []struct {
		off int64
		n   int
		ok  bool
	}{
		{0, size, true},
		{size - 512, 512, true},
		{size, 0, true},
		{size, 512, false},
		{size - 512, 1024, false},
		{-512, 512, false},
		{size + 512, 0, false},
		{1 << 62, 512, false},
	}
	for _, h := range []Handler{FileIO, BlockIO, NullIO} {
		t.Run(string(h), func(t *testing.T) {
			o := Options{Handler: h, Size: size}
			if h != NullIO {
				o.Path = filepath.Join(dirFor(t, h), "lun")
			}
			d := mustOpen(t, o)
			for _, r := range reqs {
				buf := AlignedBuffer(r.n)
				errs := map[string]error{
					"ReadAt":  d.ReadAt(buf, r.off),
					"WriteAt": d.WriteAt(buf, r.off, false),
					"Unmap":   d.(Unmapper).Unmap(r.off, int64(r.n)),
				}
				for op, err := range errs {
					if r.ok && err != nil {
						t.Errorf("%s(%d bytes at %d): %v", op, r.n, r.off, err)
					}
					if !r.ok && !errors.Is(err, ErrOutOfRange) {
						t.Errorf("%s(%d bytes at %d) = %v, want ErrOutOfRange", op, r.n, r.off, err)
					}
				}
			}
			if err := d.(Unmapper).Unmap(0, -512); !errors.Is(err, ErrOutOfRange) {
				t.Errorf("Unmap negative length = %v, want ErrOutOfRange", err)
			}
		})
	}
}

// TestBlockIOBounce checks every kind of misalignment blockio must bounce
// against a model of the device's contents.
func TestBlockIOBounce(t *testing.T) {
	const size = 4 * mib
	for _, bs := range []uint32{512, 4096} {
		t.Run(fmt.Sprint(bs), func(t *testing.T) {
			d := mustOpen(t, Options{Handler: BlockIO, Path: filepath.Join(directDir(t), "lun"), Size: size, BlockSize: bs})
			model := make([]byte, size)
			reqs := []struct {
				name    string
				off     int64
				n       int
				bufSkew int // bytes the caller's buffer starts past an aligned address
			}{
				{"aligned", 8192, 8192, 0},
				{"unaligned buffer", 16384, 4096, 1},
				{"unaligned buffer by block", 32768, 8192, 512},
				{"unaligned offset", 100, 1000, 0},
				{"within one block", 70000, 3, 3},
				{"unaligned tail", 65536, 4097, 0},
				{"spans pieces", 12345, maxBounce*2 + 777, 5},
				{"last byte", size - 1, 1, 0},
			}
			for i, r := range reqs {
				p := AlignedBuffer(r.n + r.bufSkew)[r.bufSkew:]
				copy(p, pattern(r.n, uint64(100+i)))
				if err := d.WriteAt(p, r.off, i%2 == 0); err != nil {
					t.Fatalf("%s: WriteAt: %v", r.name, err)
				}
				copy(model[r.off:], p)
			}
			whole := AlignedBuffer(size)
			if err := d.ReadAt(whole, 0); err != nil {
				t.Fatal(err)
			}
			if i := firstDiff(whole, model); i >= 0 {
				t.Fatalf("device differs from model at byte %d", i)
			}
			for _, r := range reqs {
				got := AlignedBuffer(r.n + r.bufSkew + 1)[r.bufSkew+1:]
				if err := d.ReadAt(got, r.off); err != nil {
					t.Fatalf("%s: ReadAt: %v", r.name, err)
				}
				if i := firstDiff(got, model[r.off:r.off+int64(r.n)]); i >= 0 {
					t.Fatalf("%s: unaligned read differs at byte %d", r.name, i)
				}
			}
		})
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// TestConcurrentWriters runs under -race: writers of distinct ranges must not
// disturb each other, including blockio's read-modify-write of shared blocks.
func TestConcurrentWriters(t *testing.T) {
	const (
		writers = 8
		rounds  = 20
		chunk   = 64 << 10
	)
	cases := []struct {
		h      Handler
		stride int64 // distance between writers' ranges
		n      int
	}{
		{FileIO, chunk, chunk},
		{BlockIO, chunk, chunk},
		{BlockIO, 100, 100}, // unaligned neighbours share blocks
		{NullIO, chunk, chunk},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/%d", c.h, c.n), func(t *testing.T) {
			o := Options{Handler: c.h, Size: writers * chunk}
			if c.h != NullIO {
				o.Path = filepath.Join(dirFor(t, c.h), "lun")
			}
			d := mustOpen(t, o)
			var wg sync.WaitGroup
			errs := make(chan error, writers)
			for w := range writers {
				wg.Go(func() {
					off := int64(w) * c.stride
					got := make([]byte, c.n)
					for r := range rounds {
						p := pattern(c.n, uint64(w*rounds+r))
						if err := d.WriteAt(p, off, r%3 == 0); err != nil {
							errs <- err
							return
						}
						if err := d.ReadAt(got, off); err != nil {
							errs <- err
							return
						}
						if c.h != NullIO && !bytes.Equal(got, p) {
							errs <- fmt.Errorf("writer %d round %d: read back differs", w, r)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

func TestZeroAllocs(t *testing.T) {
	cases := []struct {
		h       Handler
		durable bool
	}{
		{FileIO, false},
		{FileIO, true},
		{BlockIO, false},
		{NullIO, false},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/durable=%v", c.h, c.durable), func(t *testing.T) {
			o := Options{Handler: c.h, Size: mib}
			if c.h != NullIO {
				o.Path = filepath.Join(dirFor(t, c.h), "lun")
			}
			d := mustOpen(t, o)
			buf := AlignedBuffer(4096)
			runs := 100
			if c.durable {
				runs = 5
			}
			if n := testing.AllocsPerRun(runs, func() { d.ReadAt(buf, 8192) }); n != 0 {
				t.Errorf("ReadAt: %v allocs", n)
			}
			if n := testing.AllocsPerRun(runs, func() { d.WriteAt(buf, 8192, c.durable) }); n != 0 {
				t.Errorf("WriteAt: %v allocs", n)
			}
		})
	}
}

func TestUnmap(t *testing.T) {
	for _, h := range []Handler{FileIO, BlockIO, NullIO} {
		t.Run(string(h), func(t *testing.T) {
			o := Options{Handler: h, Size: mib}
			if h != NullIO {
				o.Path = filepath.Join(dirFor(t, h), "lun")
			}
			d := mustOpen(t, o)
			p := pattern(256<<10, 3)
			if err := d.WriteAt(p, 0, false); err != nil {
				t.Fatal(err)
			}
			u, ok := d.(Unmapper)
			if !ok {
				t.Fatal("device does not implement Unmapper")
			}
			if err := u.Unmap(64<<10, 64<<10); errors.Is(err, syscall.EOPNOTSUPP) {
				t.Skipf("filesystem cannot punch holes: %v", err)
			} else if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(p))
			if err := d.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if h == NullIO {
				return
			}
			want := bytes.Clone(p)
			clear(want[64<<10 : 128<<10])
			if i := firstDiff(got, want); i >= 0 {
				t.Fatalf("after unmap, byte %d differs", i)
			}
		})
	}
}

func TestAlignedBuffer(t *testing.T) {
	for _, n := range []int{0, 1, 511, 512, 4096, 4097, 12288, 100000, 3 * mib} {
		b := AlignedBuffer(n)
		if len(b) != n {
			t.Errorf("AlignedBuffer(%d): len %d", n, len(b))
		}
		if n > 0 && !isAligned(b) {
			t.Errorf("AlignedBuffer(%d) not aligned", n)
		}
	}
}

func TestBounceClass(t *testing.T) {
	for _, tt := range []struct{ n, class int }{
		{1, 0}, {4096, 0}, {4097, 1}, {8192, 1}, {8193, 2}, {maxBounce, bounceClasses - 1},
	} {
		if got := bounceClass(tt.n); got != tt.class {
			t.Errorf("bounceClass(%d) = %d, want %d", tt.n, got, tt.class)
		}
		b := getAligned(tt.n)
		if len(*b) != tt.n || !isAligned(*b) {
			t.Errorf("getAligned(%d): len %d aligned %v", tt.n, len(*b), isAligned(*b))
		}
		putAligned(b)
	}
}

// TestBlockIOWithoutODirect checks the advice given where the filesystem
// refuses O_DIRECT. tmpfs refused it before Linux 6.6; where it no longer
// does, procfs stands in.
func TestBlockIOWithoutODirect(t *testing.T) {
	wantAdvice := func(err error) {
		t.Helper()
		if err == nil {
			t.Fatal("Open succeeded")
		}
		if !strings.Contains(err.Error(), "O_DIRECT") || !strings.Contains(err.Error(), string(FileIO)) {
			t.Errorf("error %q should name O_DIRECT and suggest %s", err, FileIO)
		}
	}
	if dir, err := os.MkdirTemp("/dev/shm", "backend-test-"); err == nil {
		defer os.RemoveAll(dir)
		path := filepath.Join(dir, "lun")
		d, err := Open(Options{Handler: BlockIO, Path: path, Size: mib})
		if err == nil {
			d.Close()
			t.Log("tmpfs accepts O_DIRECT on this kernel; trying procfs")
		} else {
			wantAdvice(err)
			if _, serr := os.Stat(path); serr == nil {
				t.Error("failed Open left the file it created behind")
			}
			return
		}
	}
	if _, err := os.Stat("/proc/version"); err != nil {
		t.Skipf("no filesystem here known to refuse O_DIRECT: %v", err)
	}
	_, err := Open(Options{Handler: BlockIO, Path: "/proc/version", ReadOnly: true})
	wantAdvice(err)
}

func BenchmarkFileIORead4K(b *testing.B) {
	d := mustOpen(b, Options{Handler: FileIO, Path: filepath.Join(b.TempDir(), "lun"), Size: 64 * mib})
	benchRead(b, d)
}

func BenchmarkBlockIORead4K(b *testing.B) {
	d := mustOpen(b, Options{Handler: BlockIO, Path: filepath.Join(directDir(b), "lun"), Size: 64 * mib})
	benchRead(b, d)
}

func BenchmarkNullRead4K(b *testing.B) {
	d := mustOpen(b, Options{Handler: NullIO, Size: 64 * mib})
	benchRead(b, d)
}

func benchRead(b *testing.B, d Device) {
	buf := AlignedBuffer(4096)
	blocks := d.Size() / 4096
	b.SetBytes(4096)
	b.ReportAllocs()
	var i int64
	for b.Loop() {
		if err := d.ReadAt(buf, (i%blocks)*4096); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkDurableWrite4K backs the choice of an O_DSYNC descriptor for FUA
// writes: with other dirty data in the file, "fdatasync" (pwrite then
// fdatasync, the alternative) writes it all back on every FUA write, while
// "fua" (what WriteAt does) syncs only its own 4 KiB.
func BenchmarkDurableWrite4K(b *testing.B) {
	for _, mode := range []string{"fua", "fdatasync"} {
		b.Run(mode, func(b *testing.B) {
			d := mustOpen(b, Options{Handler: FileIO, Path: filepath.Join(b.TempDir(), "lun"), Size: 64 * mib})
			dirty := make([]byte, 256<<10)
			buf := make([]byte, 4096)
			b.SetBytes(4096)
			b.ReportAllocs()
			var i int64
			for b.Loop() {
				// Other initiators' buffered writes, waiting in the page cache.
				if err := d.WriteAt(dirty, mib+(i%64)*int64(len(dirty)), false); err != nil {
					b.Fatal(err)
				}
				off := (i % 256) * 4096
				var err error
				if mode == "fua" {
					err = d.WriteAt(buf, off, true)
				} else if err = d.WriteAt(buf, off, false); err == nil {
					err = d.Flush()
				}
				if err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
