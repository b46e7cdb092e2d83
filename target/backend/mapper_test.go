package backend

import (
	"errors"
	"path/filepath"
	"syscall"
	"testing"
)

// TestExtent maps a sparse file through SEEK_DATA/SEEK_HOLE: data written,
// a hole punched into it, and the never-written tail.
func TestExtent(t *testing.T) {
	const kib = 1 << 10
	for _, h := range []Handler{FileIO, BlockIO} {
		t.Run(string(h), func(t *testing.T) {
			d := mustOpen(t, Options{Handler: h, Path: filepath.Join(dirFor(t, h), "lun"), Size: mib})
			m, ok := d.(Mapper)
			if !ok {
				t.Fatal("device does not implement Mapper")
			}
			if err := d.WriteAt(pattern(256*kib, 5), 0, false); err != nil {
				t.Fatal(err)
			}
			if err := d.(Unmapper).Unmap(64*kib, 64*kib); errors.Is(err, syscall.EOPNOTSUPP) {
				t.Skipf("filesystem cannot punch holes: %v", err)
			} else if err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				off    int64
				mapped bool
				n      int64
			}{
				{0, true, 64 * kib},
				{4 * kib, true, 60 * kib},
				{64 * kib, false, 64 * kib},
				{100 * kib, false, 28 * kib},
				{128 * kib, true, 128 * kib},
				{256 * kib, false, mib - 256*kib},
				{mib - 4*kib, false, 4 * kib},
			} {
				mapped, n, err := m.Extent(tc.off)
				if err != nil {
					t.Fatal(err)
				}
				if mapped != tc.mapped || n != tc.n {
					t.Errorf("Extent(%d) = %v, %d; want %v, %d", tc.off, mapped, n, tc.mapped, tc.n)
				}
			}
			for _, off := range []int64{-1, mib} {
				if _, _, err := m.Extent(off); !errors.Is(err, ErrOutOfRange) {
					t.Errorf("Extent(%d) = %v, want ErrOutOfRange", off, err)
				}
			}
		})
	}
}

// TestExtentSmallerSize: a file larger than the exported size never reports
// extents past it.
func TestExtentSmallerSize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lun")
	big := mustOpen(t, Options{Handler: FileIO, Path: path, Size: 2 * mib})
	if err := big.WriteAt(pattern(4096, 1), 2*mib-4096, false); err != nil {
		t.Fatal(err)
	}
	d := mustOpen(t, Options{Handler: FileIO, Path: path, Size: mib})
	mapped, n, err := d.(Mapper).Extent(0)
	if err != nil || mapped || n != mib {
		t.Fatalf("Extent(0) = %v, %d, %v; want a hole of %d", mapped, n, err, mib)
	}
}

func TestExtentNull(t *testing.T) {
	d := mustOpen(t, Options{Handler: NullIO, Size: mib})
	mapped, n, err := d.(Mapper).Extent(4096)
	if err != nil || !mapped || n != mib-4096 {
		t.Fatalf("nullio Extent = %v, %d, %v", mapped, n, err)
	}
	if _, _, err := d.(Mapper).Extent(mib); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("nullio Extent past end = %v", err)
	}
}
