package backendtest_test

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/backend/backendtest"
)

var errInjected = errors.New("injected")

func TestMemIO(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*backendtest.Thin)
		// the operation and what it must return
		op   func(*backendtest.Thin) error
		want error
		// the counts after it, and whether the data changed
		counts  backendtest.Counts
		changed bool
	}{
		{"read", nil, func(d *backendtest.Thin) error { return d.ReadAt(make([]byte, 512), 512) },
			nil, backendtest.Counts{}, false},
		{"read to the end", nil, func(d *backendtest.Thin) error { return d.ReadAt(make([]byte, 512), 3584) },
			nil, backendtest.Counts{}, false},
		{"read beyond the end", nil, func(d *backendtest.Thin) error { return d.ReadAt(make([]byte, 512), 3585) },
			backend.ErrOutOfRange, backendtest.Counts{}, false},
		{"read before the start", nil, func(d *backendtest.Thin) error { return d.ReadAt(make([]byte, 1), -1) },
			backend.ErrOutOfRange, backendtest.Counts{}, false},
		{"read closed", func(d *backendtest.Thin) { d.Close() },
			func(d *backendtest.Thin) error { return d.ReadAt(make([]byte, 1), 0) }, os.ErrClosed, backendtest.Counts{}, false},
		{"read of a read-only device", func(d *backendtest.Thin) { d.SetReadOnly(true) },
			func(d *backendtest.Thin) error { return d.ReadAt(make([]byte, 1), 0) }, nil, backendtest.Counts{}, false},
		{"write", nil, func(d *backendtest.Thin) error { return d.WriteAt(bytes.Repeat([]byte{1}, 512), 512, false) },
			nil, backendtest.Counts{Writes: 1, Written: 512}, true},
		{"durable write", nil, func(d *backendtest.Thin) error { return d.WriteAt([]byte{1, 2}, 0, true) },
			nil, backendtest.Counts{Writes: 1, Durable: 1, Written: 2}, true},
		{"write beyond the end", nil, func(d *backendtest.Thin) error { return d.WriteAt([]byte{1, 2}, 4095, false) },
			backend.ErrOutOfRange, backendtest.Counts{}, false},
		{"write read-only", func(d *backendtest.Thin) { d.SetReadOnly(true) },
			func(d *backendtest.Thin) error { return d.WriteAt([]byte{1}, 0, false) }, backend.ErrReadOnly, backendtest.Counts{}, false},
		{"write closed", func(d *backendtest.Thin) { d.Close() },
			func(d *backendtest.Thin) error { return d.WriteAt([]byte{1}, 0, false) }, os.ErrClosed, backendtest.Counts{}, false},
		{"write failed", func(d *backendtest.Thin) { d.FailWrites(errInjected) },
			func(d *backendtest.Thin) error { return d.WriteAt([]byte{1}, 0, false) }, errInjected, backendtest.Counts{}, false},
		{"write failed out of range", func(d *backendtest.Thin) { d.FailWrites(errInjected) },
			func(d *backendtest.Thin) error { return d.WriteAt([]byte{1}, -1, false) }, errInjected, backendtest.Counts{}, false},
		{"write after failing", func(d *backendtest.Thin) { d.FailWrites(errInjected); d.FailWrites(nil) },
			func(d *backendtest.Thin) error { return d.WriteAt([]byte{1}, 0, false) }, nil, backendtest.Counts{Writes: 1, Written: 1}, true},
		{"flush", nil, func(d *backendtest.Thin) error { return d.Flush() }, nil, backendtest.Counts{Flushes: 1}, false},
		{"flush closed", func(d *backendtest.Thin) { d.Close() },
			func(d *backendtest.Thin) error { return d.Flush() }, nil, backendtest.Counts{Flushes: 1}, false},
		{"unmap", nil, func(d *backendtest.Thin) error { return d.Unmap(1024, 512) }, nil, backendtest.Counts{Unmaps: 1}, true},
		{"unmap beyond the end", nil, func(d *backendtest.Thin) error { return d.Unmap(4096, 1) },
			backend.ErrOutOfRange, backendtest.Counts{}, false},
		{"unmap negative", nil, func(d *backendtest.Thin) error { return d.Unmap(0, -1) },
			backend.ErrOutOfRange, backendtest.Counts{}, false},
		{"unmap read-only", func(d *backendtest.Thin) { d.SetReadOnly(true) },
			func(d *backendtest.Thin) error { return d.Unmap(0, 512) }, backend.ErrReadOnly, backendtest.Counts{}, false},
		{"unmap closed", func(d *backendtest.Thin) { d.Close() },
			func(d *backendtest.Thin) error { return d.Unmap(0, 512) }, os.ErrClosed, backendtest.Counts{}, false},
		{"unmap while writes fail", func(d *backendtest.Thin) { d.FailWrites(errInjected) },
			func(d *backendtest.Thin) error { return d.Unmap(0, 512) }, nil, backendtest.Counts{Unmaps: 1}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := backendtest.NewThin(4096)
			for i := range d.Bytes() {
				d.Bytes()[i] = byte(i)
			}
			before := d.Snapshot()
			if tc.setup != nil {
				tc.setup(d)
			}
			if err := tc.op(d); !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if got := d.Counts(); got != tc.counts {
				t.Fatalf("counts %+v, want %+v", got, tc.counts)
			}
			if changed := !bytes.Equal(d.Snapshot(), before); changed != tc.changed {
				t.Fatalf("data changed: %v, want %v", changed, tc.changed)
			}
		})
	}
}

func TestMemData(t *testing.T) {
	d := backendtest.NewThin(4096)
	if err := d.WriteAt(bytes.Repeat([]byte{7}, 1024), 512, false); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2048)
	if err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	want := append(append(make([]byte, 512), bytes.Repeat([]byte{7}, 1024)...), make([]byte, 512)...)
	if !bytes.Equal(got, want) || !bytes.Equal(d.Bytes()[:2048], want) {
		t.Fatal("ReadAt or Bytes does not return what WriteAt stored")
	}
	if err := d.Unmap(1024, 256); err != nil {
		t.Fatal(err)
	}
	clear(want[1024:1280])
	if !bytes.Equal(d.Snapshot()[:2048], want) || !bytes.Equal(d.SnapshotAt(1000, 300), want[1000:1300]) {
		t.Fatal("unmapped bytes do not read back as zeros")
	}
	// A snapshot is a copy; Bytes is the storage.
	d.Snapshot()[0] = 1
	d.Bytes()[1] = 2
	if err := d.ReadAt(got[:2], 0); err != nil || got[0] != 0 || got[1] != 2 {
		t.Fatalf("read % x, %v after changing a snapshot and Bytes", got[:2], err)
	}
	if err := d.Close(); err != nil || !d.Closed() {
		t.Fatal("not closed")
	}
	if s := d.Snapshot(); len(s) != 4096 || s[1] != 2 || d.SnapshotAt(1, 1)[0] != 2 {
		t.Fatal("no snapshot of a closed device")
	}
}

func TestMemFlags(t *testing.T) {
	d := backendtest.NewMem(512)
	if _, ok := backend.Device(d).(backend.Unmapper); ok {
		t.Fatal("Mem is an Unmapper")
	}
	if d.Size() != 512 || d.ReadOnly() || d.NVCache() || d.Closed() {
		t.Fatal("a new device is not a plain one")
	}
	d.SetReadOnly(true)
	d.SetNVCache(true)
	if !d.ReadOnly() || !d.NVCache() {
		t.Fatal("flags not set")
	}
	d.SetReadOnly(false)
	d.SetNVCache(false)
	if d.ReadOnly() || d.NVCache() {
		t.Fatal("flags not cleared")
	}
}

// done runs f on a goroutine and returns its outcome's channel.
func done(f func() error) <-chan error {
	c := make(chan error, 1)
	go func() { c <- f() }()
	return c
}

func TestMemHold(t *testing.T) {
	for _, tc := range []struct {
		name       string
		hold       func(*backendtest.Mem) (<-chan struct{}, func())
		readsWait  bool
		writesWait bool
	}{
		{"writes", (*backendtest.Mem).HoldWrites, false, true},
		{"io", (*backendtest.Mem).HoldIO, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := backendtest.NewMem(4096)
			entered, release := tc.hold(d)
			defer release()
			var held []<-chan error
			for _, op := range []struct {
				name  string
				waits bool
				f     func() error
			}{
				{"read", tc.readsWait, func() error { return d.ReadAt(make([]byte, 512), 0) }},
				{"write", tc.writesWait, func() error { return d.WriteAt(make([]byte, 512), 0, false) }},
				{"flush", false, d.Flush},
			} {
				c := done(op.f)
				if !op.waits {
					if err := <-c; err != nil {
						t.Fatalf("%s: %v", op.name, err)
					}
					continue
				}
				select {
				case <-entered:
				case <-time.After(5 * time.Second):
					t.Fatalf("%s did not reach the gate", op.name)
				}
				held = append(held, c)
			}
			time.Sleep(10 * time.Millisecond)
			for _, c := range held {
				select {
				case err := <-c:
					t.Fatalf("an I/O went through the gate (%v)", err)
				default:
				}
			}
			if n := d.Counts().Writes; n != 0 {
				t.Fatalf("%d writes while held", n)
			}
			release()
			release()
			for _, c := range held {
				if err := <-c; err != nil {
					t.Fatal(err)
				}
			}
			if err := d.WriteAt(make([]byte, 512), 0, false); err != nil || d.Counts().Writes != 2 {
				t.Fatalf("write after release: %v, %d writes", err, d.Counts().Writes)
			}
		})
	}
}

// TestMemHoldReplaced: releasing a gate a later Hold replaced leaves the
// later one closed.
func TestMemHoldReplaced(t *testing.T) {
	d := backendtest.NewMem(512)
	_, first := d.HoldWrites()
	entered, second := d.HoldWrites()
	defer second()
	first()
	c := done(func() error { return d.WriteAt([]byte{1}, 0, false) })
	<-entered
	select {
	case err := <-c:
		t.Fatalf("the write went through the later gate (%v)", err)
	case <-time.After(10 * time.Millisecond):
	}
	second()
	if err := <-c; err != nil {
		t.Fatal(err)
	}
}
