package replication

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/backend"
)

// BenchmarkServerWrite measures the replica side alone: a server on
// loopback TCP writing to a file device (on tmpfs when /dev/shm is
// writable), driven by a client in another process (this test binary,
// re-executed) that keeps QD writes in flight, the way a Peer does. So
// the process's rusage is the server's: cpu-µs/op is what the replica
// spends per write, allocs/op what it allocates; client-cpu-µs/op is the
// client's, for reference.
//
//	go test -run '^$' -bench BenchmarkServerWrite -benchtime 100000x -count 5 ./replication/
func BenchmarkServerWrite(b *testing.B) {
	for _, bc := range []struct {
		name string
		bs   int
		qd   int
		seq  bool
	}{
		{"rand4k-qd32", 4 << 10, 32, false},
		{"seq128k-qd8", 128 << 10, 8, true},
		{"seq128k-qd32", 128 << 10, 32, true},
	} {
		b.Run(bc.name, func(b *testing.B) { benchServerWrite(b, bc.bs, bc.qd, bc.seq) })
	}
}

const benchDevSize = 256 << 20

func benchServerWrite(b *testing.B, bs, qd int, seq bool) {
	dir := "/dev/shm"
	if f, err := os.CreateTemp(dir, "replbench"); err == nil {
		f.Close()
		os.Remove(f.Name())
		dir, err = os.MkdirTemp(dir, "replbench")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
	} else {
		dir = b.TempDir()
	}
	dev, err := backend.Open(backend.Options{Handler: backend.FileIO, Path: filepath.Join(dir, "lun.img"),
		Size: benchDevSize, BlockSize: 512})
	if err != nil {
		b.Fatal(err)
	}
	defer dev.Close()
	// Allocate every page before measuring.
	zero := make([]byte, 1<<20)
	for off := int64(0); off < benchDevSize; off += int64(len(zero)) {
		if err := dev.WriteAt(zero, off, false); err != nil {
			b.Fatal(err)
		}
	}
	srv := NewServer(ServerConfig{})
	defer srv.Close()
	srv.SetDevices(map[string]ReplicaDevice{"lun": {Device: dev, Owner: "a", Epoch: 1}})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)

	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchClientProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "REPL_BENCH_CLIENT="+l.Addr().String(),
		fmt.Sprintf("REPL_BENCH_ARGS=%d,%d,%d,%t", b.N, bs, qd, seq))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	br := bufio.NewReader(out)
	// The client says "go" once connected and "done" after b.N writes.
	if line, err := br.ReadString('\n'); err != nil || line != "go\n" {
		cmd.Wait()
		b.Fatalf("client: %q, %v", line, err)
	}
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	r0, w0 := procIO()
	b.ResetTimer()
	b.ReportAllocs()
	b.SetBytes(int64(bs))
	line, err := br.ReadString('\n')
	b.StopTimer()
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	r1, w1 := procIO()
	io.Copy(io.Discard, br)
	werr := cmd.Wait()
	if err != nil || line != "done\n" || werr != nil {
		b.Fatalf("client: %q, %v, %v", line, err, werr)
	}
	cpu := rusageCPU(&ru1) - rusageCPU(&ru0)
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
	client := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	b.ReportMetric(float64(client.Microseconds())/float64(b.N), "client-cpu-µs/op")
	nvcsw := (ru1.Nvcsw - ru0.Nvcsw) + (ru1.Nivcsw - ru0.Nivcsw)
	b.ReportMetric(float64(nvcsw)/float64(b.N), "ctxsw/op")
	// Each write is one pwrite; the rest are the answers' writev.
	b.ReportMetric(float64(w1-w0)/float64(b.N)-1, "writev/op")
	b.ReportMetric(float64(r1-r0)/float64(b.N), "read/op")
}

// procIO returns the read and write system calls of the process so far.
func procIO() (syscr, syscw int64) {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "syscr":
			syscr = n
		case "syscw":
			syscw = n
		}
	}
	return syscr, syscw
}

func rusageCPU(ru *syscall.Rusage) time.Duration {
	return time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime))
}

// TestBenchClientProcess is BenchmarkServerWrite's client, in its own
// process; it does nothing unless REPL_BENCH_CLIENT is set.
func TestBenchClientProcess(t *testing.T) {
	addr := os.Getenv("REPL_BENCH_CLIENT")
	if addr == "" {
		t.Skip("only BenchmarkServerWrite's client")
	}
	var n, bs, qd int
	var seq bool
	if _, err := fmt.Sscanf(os.Getenv("REPL_BENCH_ARGS"), "%d,%d,%d,%t", &n, &bs, &qd, &seq); err != nil {
		t.Fatal(err)
	}
	if err := benchClient(addr, n, bs, qd, seq); err != nil {
		t.Fatal(err)
	}
	fmt.Println("done")
}

func benchClient(addr string, n, bs, qd int, seq bool) error {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	name := []byte("a")
	ch, _ := AppendClientHello(nil, ClientHello{Version: Version, Name: name})
	if _, err := nc.Write(ch); err != nil {
		return err
	}
	br := bufio.NewReaderSize(nc, 64<<10)
	var sb [ServerHelloLen]byte
	if _, err := io.ReadFull(br, sb[:]); err != nil {
		return err
	}
	sh, err := DecodeServerHello(sb[:])
	if err != nil {
		return err
	}
	proof := ClientProof("", sh.Nonce, name)
	if _, err := nc.Write(proof[:]); err != nil {
		return err
	}
	var vb [VerdictLen]byte
	if _, err := io.ReadFull(br, vb[:]); err != nil {
		return err
	}
	if v, err := DecodeVerdict(vb[:]); err != nil || v.Status != VerdictOK {
		return fmt.Errorf("verdict %v, %v", v.Status, err)
	}
	fmt.Println("go")

	data := make([]byte, bs)
	for i := range data {
		data[i] = byte(i)
	}
	free := make(chan uint32, qd)
	for i := range qd {
		free <- uint32(i)
	}
	recvErr := make(chan error, 1)
	go func() {
		var hb [HeaderLen]byte
		var fb [responseFixed + MaxMessageLen]byte
		for i := 0; i < n; i++ {
			if _, err := io.ReadFull(br, hb[:]); err != nil {
				recvErr <- err
				return
			}
			h, err := DecodeHeader(hb[:])
			if err != nil || h.Type != FrameResponse || h.Length > uint32(len(fb)) {
				recvErr <- fmt.Errorf("response %+v, %v", h, err)
				return
			}
			if _, err := io.ReadFull(br, fb[:h.Length]); err != nil {
				recvErr <- err
				return
			}
			r, err := DecodeResponse(h, fb[:h.Length])
			if err != nil || r.Status != StatusOK {
				recvErr <- fmt.Errorf("response %+v, %v", r, err)
				return
			}
			free <- h.Tag
		}
		recvErr <- nil
	}()

	// The sender batches the writes it may send into one writev, as a
	// Peer's writer does under load.
	heads := make([][]byte, qd)
	var bufs, iov net.Buffers
	x := uint64(0x9e3779b97f4a7c15)
	blocks := int64(benchDevSize / bs)
	var off int64
	for sent := 0; sent < n; {
		batch := 0
		tag := <-free
		for {
			if seq {
				off = (off + int64(bs)) % benchDevSize
			} else {
				x ^= x << 13
				x ^= x >> 7
				x ^= x << 17
				off = int64(x%uint64(blocks)) * int64(bs)
			}
			heads[tag], err = AppendWrite(heads[tag][:0], Write{Tag: tag, Epoch: 1, Seq: uint64(sent + 1),
				Offset: off, Data: data}, "lun")
			if err != nil {
				return err
			}
			bufs = append(bufs, heads[tag], data)
			sent++
			batch++
			if sent == n {
				break
			}
			select {
			case tag = <-free:
				continue
			default:
			}
			break
		}
		iov = bufs
		if _, err := iov.WriteTo(nc); err != nil {
			return err
		}
		bufs = bufs[:0]
	}
	return <-recvErr
}
