package target

import (
	"context"
	"encoding/binary"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/target/scsi"
)

const (
	metricsIQN  = "iqn.2024-01.io.hatarget.test:metrics"
	testBlocks  = 2048
	testBlockSz = 512
)

func nullDevice(name string) Device {
	return Device{Name: name, Backend: backend.Options{Handler: backend.NullIO, Size: testBlocks * testBlockSz, BlockSize: testBlockSz}}
}

// metricsConfig maps disk1 at LUN 0, disk1 read-only at LUN 1 (a second LU
// of the same device) and, when withDisk2, disk2 at LUN 2.
func metricsConfig(withDisk2 bool) Config {
	cfg := Config{
		Devices: []Device{nullDevice("disk1")},
		Targets: []Target{{Name: metricsIQN, LUNs: []LUN{
			{Number: 0, Device: "disk1"},
			{Number: 1, Device: "disk1", ReadOnly: true},
		}}},
	}
	if withDisk2 {
		cfg.Devices = append(cfg.Devices, nullDevice("disk2"))
		cfg.Targets[0].LUNs = append(cfg.Targets[0].LUNs, LUN{Number: 2, Device: "disk2"})
	}
	return cfg
}

// serve applies cfg on a new server with reg and logs in to it, with the
// unit attentions of a new nexus consumed on every LUN.
func serve(t *testing.T, reg prometheus.Registerer, cfg Config) (*Server, *initiator.Session) {
	t.Helper()
	srv := New(Options{Logger: slog.New(slog.DiscardHandler), Registerer: reg})
	if err := srv.Apply(cfg); err != nil {
		t.Fatal(err)
	}
	addr, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	ctx := testContext(t)
	s, err := initiator.Dial(ctx, initiator.Config{Addr: addr.String(), TargetName: metricsIQN})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Logout(context.Background()) })
	for _, l := range cfg.Targets[0].LUNs {
		if err := s.TestUnitReady(ctx, l.Number); err != nil {
			t.Fatal(err)
		}
	}
	return srv, s
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func rw10(op byte, lba uint32, blocks uint16) []byte {
	cdb := make([]byte, 10)
	cdb[0] = op
	binary.BigEndian.PutUint32(cdb[2:], lba)
	binary.BigEndian.PutUint16(cdb[7:], blocks)
	return cdb
}

const (
	opTestUnitReady = 0x00
	opInquiry       = 0x12
	opRead10        = 0x28
	opWrite10       = 0x2a
)

// lunSample is one device's series for one operation.
type lunSample struct {
	commands, bytes, errors float64
	latencyCount            uint64
}

func sampleLUN(t *testing.T, m *metrics, device, op string) lunSample {
	t.Helper()
	s := lunSample{
		commands: testutil.ToFloat64(m.commands.WithLabelValues(device, op)),
		errors:   testutil.ToFloat64(m.errors.WithLabelValues(device)),
	}
	if op == "other" {
		return s
	}
	s.bytes = testutil.ToFloat64(m.bytes.WithLabelValues(device, op))
	var pb dto.Metric
	if err := m.latency.WithLabelValues(device, op).(prometheus.Histogram).Write(&pb); err != nil {
		t.Fatal(err)
	}
	s.latencyCount = pb.GetHistogram().GetSampleCount()
	return s
}

// family returns the samples of one gathered metric family.
func family(t *testing.T, g prometheus.Gatherer, name string) []*dto.Metric {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()
		}
	}
	return nil
}

// byLabel indexes samples by the value of one label.
func byLabel(samples []*dto.Metric, label string) map[string]*dto.Metric {
	out := map[string]*dto.Metric{}
	for _, m := range samples {
		for _, l := range m.GetLabel() {
			if l.GetName() == label {
				out[l.GetValue()] = m
			}
		}
	}
	return out
}

// commandsTotal sums hatarget_lun_commands_total over every series.
func commandsTotal(t *testing.T, g prometheus.Gatherer) float64 {
	t.Helper()
	sum := 0.0
	for _, m := range family(t, g, "hatarget_lun_commands_total") {
		sum += m.GetCounter().GetValue()
	}
	return sum
}

func TestLUNMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv, s := serve(t, reg, metricsConfig(true))
	m := srv.metrics
	for _, tc := range []struct {
		name      string
		lun       uint64
		cdb       []byte
		out       []byte
		inLen     int
		device    string
		op        string
		bytes     float64
		errors    float64
		wantError bool
	}{
		{"read", 0, rw10(opRead10, 0, 4), nil, 2048, "disk1", "read", 2048, 0, false},
		{"write", 0, rw10(opWrite10, 8, 2), make([]byte, 1024), 0, "disk1", "write", 1024, 0, false},
		{"other", 0, []byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0, "disk1", "other", 0, 0, false},
		{"read-only mapping counts for its device", 1, rw10(opRead10, 0, 1), nil, 512, "disk1", "read", 512, 0, false},
		{"write refused by the read-only mapping", 1, rw10(opWrite10, 0, 1), make([]byte, 512), 0, "disk1", "write", 0, 1, true},
		{"read past the end", 0, rw10(opRead10, testBlocks, 1), nil, 512, "disk1", "read", 0, 1, true},
		{"second device", 2, []byte{opInquiry, 0, 0, 0, 96, 0}, nil, 96, "disk2", "other", 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := sampleLUN(t, m, tc.device, tc.op)
			total := commandsTotal(t, reg)
			resp, err := s.Do(testContext(t), tc.lun, tc.cdb, tc.out, make([]byte, tc.inLen))
			if err != nil {
				t.Fatal(err)
			}
			if failed := resp.Status == initiator.StatusCheckCondition; failed != tc.wantError {
				t.Fatalf("status %#x", resp.Status)
			}
			after := sampleLUN(t, m, tc.device, tc.op)
			if d := after.commands - before.commands; d != 1 {
				t.Errorf("commands{%s,%s} +%v, want +1", tc.device, tc.op, d)
			}
			if d := commandsTotal(t, reg) - total; d != 1 {
				t.Errorf("all commands +%v, want +1", d)
			}
			if d := after.bytes - before.bytes; d != tc.bytes {
				t.Errorf("bytes{%s,%s} +%v, want +%v", tc.device, tc.op, d, tc.bytes)
			}
			if d := after.errors - before.errors; d != tc.errors {
				t.Errorf("errors{%s} +%v, want +%v", tc.device, d, tc.errors)
			}
			wantObserved := uint64(1)
			if tc.op == "other" {
				wantObserved = 0
			}
			if d := after.latencyCount - before.latencyCount; d != wantObserved {
				t.Errorf("latency{%s,%s} +%d observations, want +%d", tc.device, tc.op, d, wantObserved)
			}
		})
	}
}

func TestSessionMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	serve(t, reg, metricsConfig(false))
	sessions := family(t, reg, "hatarget_target_sessions")
	if len(sessions) != 1 || byLabel(sessions, "target")[metricsIQN].GetGauge().GetValue() != 1 {
		t.Errorf("hatarget_target_sessions: %v, want 1 for %s", sessions, metricsIQN)
	}
	conns := family(t, reg, "hatarget_iscsi_connections")
	if len(conns) != 1 || conns[0].GetGauge().GetValue() != 1 {
		t.Errorf("hatarget_iscsi_connections: %v, want 1", conns)
	}
}

// TestRemovedDeviceMetrics checks that a device leaving the configuration
// takes its series along, and that a refused configuration leaves none.
func TestRemovedDeviceMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv, _ := serve(t, reg, metricsConfig(true))
	m := srv.metrics
	// Per device: commands for 3 ops, bytes and latency for 2, errors.
	checkSeries := func(devices int) {
		t.Helper()
		for _, c := range []struct {
			name   string
			c      prometheus.Collector
			perDev int
		}{
			{"commands", m.commands, 3}, {"bytes", m.bytes, 2}, {"latency", m.latency, 2}, {"errors", m.errors, 1},
		} {
			if n := testutil.CollectAndCount(c.c); n != c.perDev*devices {
				t.Errorf("%s: %d series, want %d", c.name, n, c.perDev*devices)
			}
		}
	}
	checkSeries(2)

	if err := srv.Apply(metricsConfig(false)); err != nil {
		t.Fatal(err)
	}
	checkSeries(1)
	if series := byLabel(family(t, reg, "hatarget_lun_commands_total"), "lun"); series["disk2"] != nil || series["disk1"] == nil {
		t.Errorf("after removing disk2, commands series for %v", series)
	}

	bad := metricsConfig(false)
	broken := nullDevice("broken")
	broken.Backend.Size = 0 // nullio needs a size: opening fails
	bad.Devices = append(bad.Devices, nullDevice("disk3"), broken)
	if err := srv.Apply(bad); err == nil {
		t.Fatal("configuration with a broken device applied")
	}
	checkSeries(1)
}

// TestNilRegisterer serves I/O without metrics: the LUs get no Stats at
// all (a nil interface, not a nil *lunMetrics), so nothing is timed.
func TestNilRegisterer(t *testing.T) {
	srv, s := serve(t, nil, metricsConfig(true))
	ctx := testContext(t)
	buf := make([]byte, 4*testBlockSz)
	if err := s.Write(ctx, 0, 0, 4, testBlockSz, buf); err != nil {
		t.Fatal(err)
	}
	if err := s.Read(ctx, 0, 0, 4, testBlockSz, buf); err != nil {
		t.Fatal(err)
	}
	if srv.metrics != nil {
		t.Fatal("metrics without a Registerer")
	}
	if st := srv.luConfig(nullDevice("disk1"), nil, unitKey{device: "disk1"}, nil, false).Stats; st != nil {
		t.Errorf("LU Stats %#v without a Registerer", st)
	}
}

// BenchmarkLUNMetrics is what metrics add to a 4 KiB read in the SCSI
// layer: the clock readings, the counters and the histogram.
func BenchmarkLUNMetrics(b *testing.B) {
	for _, bc := range []struct {
		name    string
		metrics bool
	}{{"none", false}, {"prometheus", true}} {
		b.Run(bc.name, func(b *testing.B) {
			dev, err := backend.Open(nullDevice("bench").Backend)
			if err != nil {
				b.Fatal(err)
			}
			var reg prometheus.Registerer
			if bc.metrics {
				reg = prometheus.NewRegistry() // per run: the benchmark runs more than once
			}
			m := newMetrics(reg, New(Options{}).ISCSI())
			lu, err := scsi.NewLU(scsi.LUConfig{Device: dev, Stats: m.stats("bench")})
			if err != nil {
				b.Fatal(err)
			}
			n := scsi.NewNexus("iqn.bench", [6]byte{0x80}, metricsIQN, 1, 1, 1)
			cmd := &scsi.Command{Nexus: n, CDB: []byte{opTestUnitReady, 0, 0, 0, 0, 0}, DataIn: make([]byte, 4096)}
			var res scsi.Result
			lu.Execute(cmd, &res) // consume POWER ON, RESET
			cmd.CDB = rw10(opRead10, 0, 8)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				binary.BigEndian.PutUint32(cmd.CDB[2:], uint32(i*8)%(testBlocks-8))
				lu.Execute(cmd, &res)
			}
		})
	}
}
