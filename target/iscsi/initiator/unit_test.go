package initiator

import (
	"bytes"
	"encoding/hex"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/pdu"
)

// Expected values computed independently (Python hashlib).
func TestCHAPResponseVectors(t *testing.T) {
	seq := make([]byte, 16)
	for i := range seq {
		seq[i] = byte(i)
	}
	for _, tc := range []struct {
		alg       int
		id        byte
		secret    string
		challenge []byte
		want      string
	}{
		{CHAPMD5, 1, "secret", seq, "740e86463bda3a4d7017d6e0fba0699d"},
		{CHAPMD5, 0, "", nil, "93b885adfe0da089cdf634904fd59f71"},
		{CHAPSHA256, 0xff, "0123456789ab", []byte("challenge"), "776f2166dcaeb1aa0f1ae1518971da5137b2857ddc1e3ad0e069b0e9f588c9c0"},
	} {
		got, err := chapResponse(tc.alg, tc.id, tc.secret, tc.challenge)
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(got) != tc.want {
			t.Errorf("alg %d id %d: %x, want %s", tc.alg, tc.id, got, tc.want)
		}
	}
	if _, err := chapResponse(6, 0, "", nil); err == nil {
		t.Error("CHAP_A=6 (SHA-1) accepted")
	}
}

func TestCHAPEncoding(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []byte
		bad  bool
	}{
		{in: "0x0102ff", want: []byte{1, 2, 0xff}},
		{in: "0X0102FF", want: []byte{1, 2, 0xff}},
		{in: "0x102", want: []byte{1, 2}}, // odd digit count: implied leading zero
		{in: "0bAQL/", want: []byte{1, 2, 0xff}},
		{in: "0BAQI=", want: []byte{1, 2}},
		{in: "0bAQI", want: []byte{1, 2}}, // padding omitted
		{in: "0x", bad: true},
		{in: "0xzz", bad: true},
		{in: "0102", bad: true},
		{in: "0b!!", bad: true},
		{in: "", bad: true},
	} {
		got, err := decodeCHAP(tc.in)
		if (err != nil) != tc.bad || !bytes.Equal(got, tc.want) {
			t.Errorf("decodeCHAP(%q) = %x, %v", tc.in, got, err)
		}
	}
	if s := encodeCHAP([]byte{0xde, 0xad}); s != "0xdead" {
		t.Errorf("encodeCHAP = %q", s)
	}
	for in, want := range map[string]int{"0": 0, "255": 255, "0x10": 16} {
		if got, err := parseCHAPID(in); err != nil || int(got) != want {
			t.Errorf("parseCHAPID(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"256", "-1", "x"} {
		if _, err := parseCHAPID(in); err == nil {
			t.Errorf("parseCHAPID(%q) accepted", in)
		}
	}
	if _, err := parseCHAPAlg("7", []int{5}); err == nil {
		t.Error("CHAP_A outside the offer accepted")
	}
	if a, err := parseCHAPAlg("5", []int{7, 5}); err != nil || a != 5 {
		t.Errorf("parseCHAPAlg: %d, %v", a, err)
	}
}

func TestMutualChallenge(t *testing.T) {
	target := []byte("same")
	mc, err := newMutualChallenge(CHAPSHA256, target)
	if err != nil {
		t.Fatal(err)
	}
	if len(mc.challenge) != 32 || bytes.Equal(mc.challenge, target) {
		t.Fatalf("challenge %x", mc.challenge)
	}
	r, _ := chapResponse(CHAPSHA256, mc.id, "tsecret", mc.challenge)
	if err := mc.verify(CHAPSHA256, "tsecret", encodeCHAP(r)); err != nil {
		t.Fatal(err)
	}
	if err := mc.verify(CHAPSHA256, "other", encodeCHAP(r)); err == nil {
		t.Fatal("wrong secret verified")
	}
	if err := mc.verify(CHAPSHA256, "tsecret", "nonsense"); err == nil {
		t.Fatal("undecodable CHAP_R verified")
	}
}

func TestCheckAnswer(t *testing.T) {
	for _, tc := range []struct {
		key, offered, answer, want string
		bad                        bool
	}{
		{key: "HeaderDigest", offered: "CRC32C,None", answer: "None", want: "None"},
		{key: "HeaderDigest", offered: "None", answer: "CRC32C", bad: true},
		{key: "InitialR2T", offered: "No", answer: "Yes", want: "Yes"},
		{key: "InitialR2T", offered: "Yes", answer: "No", bad: true},
		{key: "ImmediateData", offered: "Yes", answer: "No", want: "No"},
		{key: "ImmediateData", offered: "No", answer: "Yes", bad: true},
		{key: "ImmediateData", offered: "Yes", answer: "Maybe", bad: true},
		{key: "MaxBurstLength", offered: "262144", answer: "65536", want: "65536"},
		{key: "MaxBurstLength", offered: "65536", answer: "262144", bad: true},
		{key: "MaxBurstLength", offered: "65536", answer: "0x1000", want: "0x1000"},
		{key: "MaxBurstLength", offered: "65536", answer: "100", bad: true}, // below 512
		{key: "MaxBurstLength", offered: "65536", answer: "010", bad: true},
		{key: "DefaultTime2Wait", offered: "2", answer: "5", want: "5"},
		{key: "DefaultTime2Wait", offered: "2", answer: "1", bad: true},
		{key: "ErrorRecoveryLevel", offered: "0", answer: "1", bad: true},
		{key: "MaxConnections", offered: "1", answer: "Reject", want: ""},
		{key: "DataPDUInOrder", offered: "Yes", answer: "Irrelevant", want: ""},
		{key: "OFMarker", offered: "No", answer: "NotUnderstood", want: ""},
	} {
		got, err := checkAnswer(tc.key, tc.offered, tc.answer)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("%s: offered %s answered %s: %q, %v", tc.key, tc.offered, tc.answer, got, err)
		}
	}
}

func TestRespondToTargetOffers(t *testing.T) {
	for _, tc := range []struct {
		key, theirs, ours, want string
		bad                     bool
	}{
		{key: "HeaderDigest", theirs: "CRC32C,None", ours: "None", want: "None"},
		{key: "HeaderDigest", theirs: "CRC32C,None", ours: "CRC32C,None", want: "CRC32C"},
		{key: "DataDigest", theirs: "CRC32C", ours: "None", bad: true},
		{key: "InitialR2T", theirs: "Yes", ours: "No", want: "Yes"},
		{key: "ImmediateData", theirs: "Yes", ours: "No", want: "No"},
		{key: "OFMarker", theirs: "Yes", ours: "No", want: "No"},
		{key: "MaxBurstLength", theirs: "1048576", ours: "262144", want: "262144"},
		{key: "DefaultTime2Wait", theirs: "0", ours: "2", want: "2"},
		{key: "MaxOutstandingR2T", theirs: "0", ours: "1", bad: true},
	} {
		got, err := respond(tc.key, tc.theirs, tc.ours)
		if (err != nil) != tc.bad || !tc.bad && got != tc.want {
			t.Errorf("%s: target offers %s, we have %s: %q, %v", tc.key, tc.theirs, tc.ours, got, err)
		}
	}
}

func TestNegotiator(t *testing.T) {
	cfg, err := Config{Addr: "x", TargetName: "t", ExtraKeys: []pdu.KV{
		{Key: "MaxBurstLength", Value: "odd"}, {Key: "X-hatarget-test", Value: "1"},
	}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	n := newNegotiator(&cfg)
	offer := n.offer(&cfg)
	if v, _ := lookup(offer, "MaxBurstLength"); v != "odd" {
		t.Errorf("ExtraKeys did not replace MaxBurstLength: %q", v)
	}
	if v, _ := lookup(offer, "X-hatarget-test"); v != "1" {
		t.Errorf("ExtraKeys not appended: %q", offer)
	}
	if _, waiting := n.offered["MaxRecvDataSegmentLength"]; waiting {
		t.Error("a declarative key awaits an answer")
	}
	replies, err := n.receive([]pdu.KV{
		{Key: "HeaderDigest", Value: "None"}, {Key: "InitialR2T", Value: "Yes"}, {Key: "FirstBurstLength", Value: "8192"},
		{Key: "MaxRecvDataSegmentLength", Value: "16384"}, {Key: "TargetAlias", Value: "alias"},
		{Key: "MaxBurstLength", Value: "Reject"}, {Key: "X-hatarget-test", Value: "NotUnderstood"},
		{Key: "IFMarker", Value: "Yes"}, {Key: "X-vendor-key", Value: "v"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []pdu.KV{{Key: "IFMarker", Value: "No"}, {Key: "X-vendor-key", Value: "NotUnderstood"}}
	if len(replies) != 2 || replies[0] != want[0] || replies[1] != want[1] {
		t.Errorf("replies %q, want %q", replies, want)
	}
	p := defaultParams()
	if err := n.apply(&p); err != nil {
		t.Fatal(err)
	}
	if !p.InitialR2T || p.FirstBurstLength != 8192 || p.TargetMaxRecvDataSegmentLength != 16384 ||
		p.TargetAlias != "alias" || p.MaxBurstLength != 262144 {
		t.Errorf("params %+v", p)
	}
	if _, err := n.receive([]pdu.KV{{Key: "DataDigest", Value: "CRC32C"}}); err == nil {
		t.Error("DataDigest=CRC32C accepted though we offered None")
	}
}

func TestNegotiatedBurstConsistency(t *testing.T) {
	cfg, _ := Config{Addr: "x", TargetName: "t"}.withDefaults()
	n := newNegotiator(&cfg)
	n.offer(&cfg)
	if _, err := n.receive([]pdu.KV{{Key: "MaxBurstLength", Value: "4096"}, {Key: "FirstBurstLength", Value: "8192"}}); err != nil {
		t.Fatal(err)
	}
	p := defaultParams()
	if err := n.apply(&p); err == nil {
		t.Fatal("FirstBurstLength above MaxBurstLength accepted")
	}
}

func TestConfigDefaults(t *testing.T) {
	if _, err := (Config{}).withDefaults(); err == nil {
		t.Error("empty Addr accepted")
	}
	if _, err := (Config{Addr: "x"}).withDefaults(); err == nil {
		t.Error("normal session without TargetName accepted")
	}
	if _, err := (Config{Addr: "x", Discovery: true, CHAPSecret: "s"}).withDefaults(); err == nil {
		t.Error("CHAP secret without user accepted")
	}
	if _, err := (Config{Addr: "x", Discovery: true, CHAPAlgorithms: []int{6}}).withDefaults(); err == nil {
		t.Error("unsupported CHAP algorithm accepted")
	}
	a, _ := Config{Addr: "x", Discovery: true}.withDefaults()
	b, _ := Config{Addr: "x", Discovery: true}.withDefaults()
	if a.ISID == b.ISID || a.ISID[0]&0xc0 != 0x80 {
		t.Errorf("ISIDs %x and %x: want distinct random-type ISIDs", a.ISID, b.ISID)
	}
	if a.MaxRecvDataSegmentLength != defaultMRDSL || a.Timeout != defaultTimeout || a.InitialCmdSN != 1 {
		t.Errorf("defaults %+v", a)
	}
}

func TestEncodeLUN(t *testing.T) {
	for lun, want := range map[uint64][8]byte{
		0:                  {},
		5:                  {0, 5},
		255:                {0, 255},
		256:                {0x41, 0},
		16383:              {0x7f, 0xff},
		0x0102030405060708: {1, 2, 3, 4, 5, 6, 7, 8},
	} {
		if got := EncodeLUN(lun); got != want {
			t.Errorf("EncodeLUN(%d) = %x, want %x", lun, got, want)
		}
	}
}

func TestExtendedCDBLayout(t *testing.T) {
	var buf [pdu.MaxAHSLen]byte
	if extendedCDB(&buf, make([]byte, 16)) != nil {
		t.Fatal("16-byte CDB needs no AHS")
	}
	cdb := make([]byte, 32)
	for i := range cdb {
		cdb[i] = byte(i)
	}
	ahs := extendedCDB(&buf, cdb)
	got, err := pdu.ExtendedCDB(ahs)
	if err != nil || !bytes.Equal(got, cdb[16:]) || len(ahs)%4 != 0 {
		t.Fatalf("AHS %x decodes to %x, %v", ahs, got, err)
	}
	ahs = extendedCDB(&buf, cdb[:17])
	if got, err := pdu.ExtendedCDB(ahs); err != nil || !bytes.Equal(got, cdb[16:17]) || len(ahs) != 8 {
		t.Fatalf("17-byte CDB: AHS %x decodes to %x, %v", ahs, got, err)
	}
}

func TestSerialArithmetic(t *testing.T) {
	for _, tc := range []struct {
		a, b uint32
		lt   bool
	}{
		{1, 2, true}, {2, 1, false}, {5, 5, false}, {0xffffffff, 0, true}, {0, 0xffffffff, false},
		{0xfffffff0, 0x10, true},
	} {
		if serialLT(tc.a, tc.b) != tc.lt {
			t.Errorf("serialLT(%#x, %#x) != %v", tc.a, tc.b, tc.lt)
		}
	}
}

func TestSenseDecoding(t *testing.T) {
	fixed := &SCSIError{Status: StatusCheckCondition, Sense: []byte{0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0x01}}
	if k, a, q := fixed.SenseKey(); k != 5 || a != 0x24 || q != 1 {
		t.Errorf("fixed sense: %x %x %x", k, a, q)
	}
	desc := &SCSIError{Status: StatusCheckCondition, Sense: []byte{0x72, 0x06, 0x29, 0x00}}
	if !desc.unitAttention() || !strings.Contains(desc.Error(), "0x29") {
		t.Errorf("descriptor sense: %v", desc)
	}
	busy := &SCSIError{Opcode: 0x28, Status: StatusBusy}
	if busy.unitAttention() || !strings.Contains(busy.Error(), "status 0x08") {
		t.Errorf("busy: %v", busy)
	}
	if senseData([]byte{0, 3, 1, 2}) == nil || senseData([]byte{0, 0}) != nil || senseData(nil) != nil {
		t.Error("senseData")
	}
}

func TestHistogram(t *testing.T) {
	var h Histogram
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	within := func(got, want time.Duration) bool {
		d := got - want
		return d < 0 && -d <= want/50 || d >= 0 && d <= want/50
	}
	for q, want := range map[float64]time.Duration{0.5: 500 * time.Microsecond, 0.9: 900 * time.Microsecond,
		0.99: 990 * time.Microsecond, 0.999: 999 * time.Microsecond} {
		if got := h.Quantile(q); !within(got, want) {
			t.Errorf("p%v = %v, want %v ±2%%", q*100, got, want)
		}
	}
	if h.Max() != time.Millisecond || h.Count() != 1000 || !within(h.Mean(), 500500*time.Nanosecond) {
		t.Errorf("max %v count %d mean %v", h.Max(), h.Count(), h.Mean())
	}
	var other Histogram
	other.Record(time.Hour)
	other.Record(-time.Second)
	h.Merge(&other)
	if h.Count() != 1002 || h.Max() != time.Hour || h.Quantile(1) != time.Hour || h.Quantile(0) != 0 {
		t.Errorf("after merge: count %d max %v p100 %v p0 %v", h.Count(), h.Max(), h.Quantile(1), h.Quantile(0))
	}
	var empty Histogram
	if empty.Quantile(0.5) != 0 || empty.Mean() != 0 {
		t.Error("empty histogram")
	}
	// Every bucket boundary maps back to its own bucket, up to the top.
	for i := range histBuckets {
		if histBucket(histLow(i)) != i {
			t.Fatalf("bucket %d: low %d maps to %d", i, histLow(i), histBucket(histLow(i)))
		}
	}
	if histBucket(1<<63-1) != histBuckets-1 {
		t.Fatal("largest duration does not land in the last bucket")
	}
}

func TestPortalParsing(t *testing.T) {
	for in, want := range map[string]Portal{
		"10.0.0.1:3261,2":  {Addr: "10.0.0.1:3261", Tag: 2},
		"10.0.0.1,1":       {Addr: "10.0.0.1:3260", Tag: 1},
		"[fe80::1]:3260,7": {Addr: "[fe80::1]:3260", Tag: 7},
		"[fe80::1],7":      {Addr: "[fe80::1]:3260", Tag: 7},
		"host.example":     {Addr: "host.example:3260"},
	} {
		if got, err := parsePortal(in); err != nil || got != want {
			t.Errorf("parsePortal(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	if _, err := parsePortal("h:1,x"); err == nil {
		t.Error("bad tag accepted")
	}
	if _, err := parseSendTargets([]pdu.KV{{Key: "TargetAddress", Value: "h:1,1"}}); err == nil {
		t.Error("TargetAddress before TargetName accepted")
	}
}

func TestLoginErrorText(t *testing.T) {
	e := &LoginError{Addr: "a:1", Class: 2, Detail: 1}
	if !strings.Contains(e.Error(), "authentication failure") || !strings.Contains(e.Error(), "0x02") {
		t.Errorf("%v", e)
	}
	e = &LoginError{Addr: "a:1", Class: 1, Detail: 2, TargetAddress: "b:2"}
	if !strings.Contains(e.Error(), "moved permanently") || !strings.Contains(e.Error(), "b:2") {
		t.Errorf("%v", e)
	}
	e = &LoginError{Addr: "a:1", Class: 3, Detail: 0x99}
	if !strings.Contains(e.Error(), "target error") {
		t.Errorf("%v", e)
	}
}

func TestCheckDataIn(t *testing.T) {
	for _, tc := range []struct {
		r    Response
		edtl int
		bad  bool
	}{
		{Response{DataInLen: 512}, 512, false},
		{Response{DataInLen: 256, Underflow: true, Residual: 256}, 512, false},
		{Response{DataInLen: 256}, 512, true},                                 // short without underflow
		{Response{DataInLen: 512, Underflow: true, Residual: 256}, 512, true}, // more than the residual allows
		{Response{DataInLen: 512, Overflow: true, Residual: 100}, 512, false}, // overflow: EDTL delivered
		{Response{Status: StatusCheckCondition, DataInLen: 0}, 512, false},    // no data promised
		{Response{DataInLen: 0}, 0, false},
	} {
		if err := checkDataIn(&tc.r, tc.edtl); (err != nil) != tc.bad {
			t.Errorf("%+v EDTL %d: %v", tc.r, tc.edtl, err)
		}
	}
}

// TestCommandWindowWakesOnePerSlot: a MaxCmdSN that grows by n wakes the n
// oldest senders waiting for the window, not all of them, and a woken
// sender that gives up passes its slot on.
func TestCommandWindowWakesOnePerSlot(t *testing.T) {
	s := &Session{cmdSN: 10, expCmdSN: 10, maxCmdSN: 9} // window closed
	var waits []chan struct{}
	for range 4 {
		_, wait, err := s.takeCmdSN(false)
		if err != nil || wait == nil {
			t.Fatalf("takeCmdSN with the window closed: %v, %v", wait, err)
		}
		waits = append(waits, wait)
	}
	woken := func() (n []int) {
		for i, w := range waits {
			select {
			case <-w:
				n = append(n, i)
			default:
			}
		}
		return n
	}
	check := func(step string, want ...int) {
		t.Helper()
		if got := woken(); !slices.Equal(got, want) {
			t.Fatalf("%s: woken %v, want %v", step, got, want)
		}
	}
	s.updateCmdWindow(10, 10)
	check("one slot opened", 0)
	s.leaveWindow(waits[0])
	check("the woken sender gave up", 0, 1)
	s.leaveWindow(waits[2])
	check("a waiting sender gave up", 0, 1)
	s.updateCmdWindow(10, 12)
	check("two slots opened", 0, 1, 3)
	if len(s.windowWait) != 0 {
		t.Fatalf("%d senders still queued", len(s.windowWait))
	}
}
