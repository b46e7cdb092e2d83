package iscsi

import "testing"

func TestNegotiatorAnswers(t *testing.T) {
	tests := []struct {
		name, key, offer, want string
		discovery              bool
	}{
		{"digest first acceptable", "HeaderDigest", "CRC32C,None", "CRC32C", false},
		{"digest none only", "DataDigest", "None", "None", false},
		{"digest unknown", "DataDigest", "MD5", "Reject", false},
		{"burst takes min", "MaxBurstLength", "16776192", "1048576", false},
		{"burst below ours", "MaxBurstLength", "65536", "65536", false},
		{"burst out of range", "MaxBurstLength", "100", "Reject", false},
		{"burst not a number", "MaxBurstLength", "lots", "Reject", false},
		{"first burst hex", "FirstBurstLength", "0x10000", "65536", false},
		{"immediate data AND", "ImmediateData", "Yes", "Yes", false},
		{"initial r2t OR", "InitialR2T", "No", "No", false},
		{"initial r2t yes", "InitialR2T", "Yes", "Yes", false},
		{"bad boolean", "ImmediateData", "maybe", "Reject", false},
		{"max connections one", "MaxConnections", "4", "1", false},
		{"erl zero", "ErrorRecoveryLevel", "2", "0", false},
		{"time2wait max", "DefaultTime2Wait", "0", "2", false},
		{"time2retain min", "DefaultTime2Retain", "0", "0", false},
		{"outstanding r2t", "MaxOutstandingR2T", "8", "1", false},
		{"markers off", "OFMarker", "Yes", "No", false},
		{"marker interval", "IFMarkInt", "2048~8192", "Irrelevant", false},
		{"unknown key", "X-com.example.Thing", "1", "NotUnderstood", false},
		{"target-only key", "TargetAlias", "x", "Reject", false},
		{"declarative mrdsl", "MaxRecvDataSegmentLength", "262144", "", false},
		{"discovery irrelevant", "MaxBurstLength", "65536", "Irrelevant", true},
		{"discovery digest", "HeaderDigest", "None", "None", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNegotiator(DefaultLimits(), tt.discovery)
			got, err := n.answer(tt.key, tt.offer)
			if err != nil {
				t.Fatalf("answer: %v", err)
			}
			if got != tt.want {
				t.Errorf("%s=%s: got %q, want %q", tt.key, tt.offer, got, tt.want)
			}
		})
	}
}

func TestNegotiatorRefusesRepeatedKey(t *testing.T) {
	n := newNegotiator(DefaultLimits(), false)
	if _, err := n.answer("MaxBurstLength", "65536"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.answer("MaxBurstLength", "65536"); err == nil {
		t.Fatal("second negotiation of the same key accepted")
	}
}

func TestNegotiatorFirstBurstCapped(t *testing.T) {
	n := newNegotiator(DefaultLimits(), false)
	n.answer("MaxBurstLength", "8192")
	n.answer("FirstBurstLength", "65536")
	n.finish()
	if n.params.FirstBurstLength > n.params.MaxBurstLength {
		t.Fatalf("FirstBurstLength %d above MaxBurstLength %d", n.params.FirstBurstLength, n.params.MaxBurstLength)
	}
}

func TestLimitsSetParam(t *testing.T) {
	l := DefaultLimits()
	for _, kv := range [][2]string{{"HeaderDigest", "CRC32C"}, {"MaxRecvDataSegmentLength", "65536"}, {"InitialR2T", "Yes"}, {"QueuedCommands", "32"}} {
		if err := l.SetParam(kv[0], kv[1]); err != nil {
			t.Fatalf("%s=%s: %v", kv[0], kv[1], err)
		}
	}
	if len(l.HeaderDigest) != 1 || l.HeaderDigest[0] != "CRC32C" || l.MaxRecvDataSegmentLength != 65536 || !l.InitialR2T || l.QueueDepth != 32 {
		t.Fatalf("limits not applied: %+v", l)
	}
	for _, kv := range [][2]string{{"MaxBurstLength", "1"}, {"InitialR2T", "perhaps"}, {"Bogus", "1"}, {"DataDigest", "SHA1"}} {
		if err := l.SetParam(kv[0], kv[1]); err == nil {
			t.Errorf("%s=%s accepted", kv[0], kv[1])
		}
	}
}

func FuzzNegotiate(f *testing.F) {
	f.Add("MaxBurstLength", "65536")
	f.Add("HeaderDigest", "CRC32C,None")
	f.Add("FirstBurstLength", "0xffffffffffff")
	f.Fuzz(func(t *testing.T, key, value string) {
		n := newNegotiator(DefaultLimits(), false)
		if _, err := n.answer(key, value); err != nil {
			t.Fatal(err)
		}
		n.finish()
		p := n.params
		if p.MaxBurstLength > DefaultLimits().MaxBurstLength || p.FirstBurstLength > p.MaxBurstLength ||
			p.MaxXmitDataSegmentLength < minDataSegment || p.MaxXmitDataSegmentLength > maxDataSegment {
			t.Fatalf("negotiated out of bounds: %+v", p)
		}
	})
}
