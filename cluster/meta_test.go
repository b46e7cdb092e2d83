package cluster

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/hatarget/hatarget/cluster/api"
)

// metaV010 is the metadata a v0.1.0 node gossips, byte for byte.
const metaV010 = `{"v":1,"ver":"v0.1.0","proto":4,"iscsi":"10.0.0.1:3260","api":"10.0.0.1:9260","raft":"10.0.0.1:9261",` +
	`"fwd":"10.0.0.1:9264","repl":"10.0.0.1:9263","expect":3,"boot":true}`

// metaCurrent is the metadata of this format, with a fixed table so that
// the sample does not follow the versions.
const metaCurrent = `{"v":1,"ver":"v0.2.0","proto":5,"iscsi":"10.0.0.1:3260","api":"10.0.0.1:9260","raft":"10.0.0.1:9261",` +
	`"fwd":"10.0.0.1:9264","repl":"10.0.0.1:9263","expect":3,"boot":true,"pt":"cluster=1-2 cmd=1-5 fwd=1"}`

var sampleTable = []api.ProtocolVersion{
	{Channel: ChannelCluster, Version: 2, Min: 1},
	{Channel: ChannelCommands, Version: 5, Min: 1},
	{Channel: ChannelForward, Version: 1, Min: 1},
}

func sampleMeta() Meta {
	m := Meta{Version: "v0.2.0", Protocol: 5, ISCSI: "10.0.0.1:3260", API: "10.0.0.1:9260", Raft: "10.0.0.1:9261",
		Fwd: "10.0.0.1:9264", Repl: "10.0.0.1:9263", BootstrapExpect: 3, Bootstrapped: true}
	m.setProtocols(sampleTable)
	return m
}

// metaV010Struct is v0.1.0's Meta, and decodeV010 its decodeMeta: an older
// node reading this release's metadata.
type metaV010Struct struct {
	V               int    `json:"v"`
	Version         string `json:"ver"`
	Protocol        uint16 `json:"proto"`
	ISCSI           string `json:"iscsi"`
	API             string `json:"api"`
	Raft            string `json:"raft"`
	Fwd             string `json:"fwd,omitempty"`
	Repl            string `json:"repl,omitempty"`
	BootstrapExpect int    `json:"expect,omitempty"`
	Bootstrapped    bool   `json:"boot,omitempty"`
}

func decodeV010(b []byte) (metaV010Struct, bool) {
	var m metaV010Struct
	return m, json.Unmarshal(b, &m) == nil && m.V == 1
}

func TestMetaEncoding(t *testing.T) {
	b, err := sampleMeta().encode()
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != metaCurrent {
		t.Errorf("the encoding changed; if on purpose, check that v0.1.0 still reads it and update the sample\n got: %s\nwant: %s", b, metaCurrent)
	}
}

// Each release reads the other's metadata: nodes of both gossip together
// for the whole of a rolling upgrade.
func TestMetaAcrossReleases(t *testing.T) {
	old, ok := decodeV010([]byte(metaCurrent))
	want := metaV010Struct{V: 1, Version: "v0.2.0", Protocol: 5, ISCSI: "10.0.0.1:3260", API: "10.0.0.1:9260", Raft: "10.0.0.1:9261",
		Fwd: "10.0.0.1:9264", Repl: "10.0.0.1:9263", BootstrapExpect: 3, Bootstrapped: true}
	if !ok || old != want {
		t.Errorf("v0.1.0 reads this release's metadata as %+v (ok %v), want %+v", old, ok, want)
	}

	m, err := decodeMeta([]byte(metaV010))
	if err != nil {
		t.Fatalf("reading v0.1.0's metadata: %v", err)
	}
	if m.Version != "v0.1.0" || m.Protocol != 4 || m.API != "10.0.0.1:9260" || m.Repl != "10.0.0.1:9263" || !m.Bootstrapped {
		t.Errorf("v0.1.0's metadata read as %+v", m)
	}
	if tbl := m.table; tbl != nil {
		t.Errorf("v0.1.0 advertises no protocol table, read %v", tbl)
	}

	m, err = decodeMeta([]byte(metaCurrent))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.table; !reflect.DeepEqual(got, sampleTable) {
		t.Errorf("table read back as %v, want %v", got, sampleTable)
	}
}

func TestDecodeMetaRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, meta, err string
	}{
		{"not JSON", `{"v":1`, "node metadata"},
		{"a later major", `{"v":2,"ver":"v9"}`, "version 2 is not supported"},
		{"no version", `{"ver":"v9"}`, "version 0 is not supported"},
		{"oldest above the version", `{"v":1,"pt":"cmd=4-3"}`, `protocol "cmd" accepts from version 4 but speaks 3`},
		{"no version", `{"v":1,"pt":"cmd= fwd=1"}`, `protocol "cmd": version`},
		{"no oldest version", `{"v":1,"pt":"cmd=-3"}`, `protocol "cmd": oldest version`},
		{"beyond 16 bits", `{"v":1,"pt":"cmd=65536"}`, `protocol "cmd": version`},
		{"no channel", `{"v":1,"pt":"=3"}`, `protocol "=3" is not channel=version`},
		{"no equals sign", `{"v":1,"pt":"cmd"}`, `protocol "cmd" is not channel=version`},
		{"twice", `{"v":1,"pt":"cmd=3 fwd=1 cmd=3"}`, `protocol "cmd" listed twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := decodeMeta([]byte(tc.meta)); err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("decodeMeta(%s) = %v, want %q", tc.meta, err, tc.err)
			}
		})
	}
}

// The whole table must fit memberlist's 512 bytes even with IPv6
// addresses and a long release name: metadata that does not fit is not
// gossiped at all.
func TestMetaFitsWithTheWholeTable(t *testing.T) {
	addr := "[2001:db8:1234:5678:9abc:def0:1234:5678]:65535"
	m := Meta{Version: "v10.20.30-rc.4+g0123456789ab.dirty", Protocol: 65535, ISCSI: addr, API: addr, Raft: addr, Fwd: addr, Repl: addr,
		BootstrapExpect: 99, Bootstrapped: true}
	m.setProtocols(ProtocolTable())
	b, err := m.encode()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d bytes of %d", len(b), maxMetaSize)
}

func TestProtocolTable(t *testing.T) {
	tbl := ProtocolTable()
	seen := map[string]bool{}
	for _, p := range tbl {
		switch {
		case seen[p.Channel]:
			t.Errorf("channel %s listed twice", p.Channel)
		case DescribeChannel(p.Channel) == "":
			t.Errorf("channel %s has no description", p.Channel)
		case p.Version == 0 || p.Min == 0 || p.Min > p.Version:
			t.Errorf("channel %s: version %d, oldest %d", p.Channel, p.Version, p.Min)
		}
		seen[p.Channel] = true
	}
	if len(seen) != len(channelDescriptions) {
		t.Errorf("the table has %d channels, %d are described", len(seen), len(channelDescriptions))
	}
	// The table survives gossip, in the same order.
	var m Meta
	m.setProtocols(tbl)
	b, err := m.encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeMeta(b)
	if err != nil || !reflect.DeepEqual(got.table, tbl) {
		t.Errorf("gossiped table reads back as %v (%v), want %v", got.table, err, tbl)
	}
}

func TestMixedVersions(t *testing.T) {
	newer := append(ProtocolTable(), api.ProtocolVersion{Channel: "zzz", Version: 1, Min: 1})
	node := func(release string, tbl []api.ProtocolVersion) api.NodeStatus {
		return api.NodeStatus{Version: release, Protocols: tbl}
	}
	for _, tc := range []struct {
		name  string
		rows  []api.NodeStatus
		mixed bool
	}{
		{"one release", []api.NodeStatus{node("v2", ProtocolTable()), node("v2", ProtocolTable())}, false},
		{"a node of unknown release", []api.NodeStatus{node("v2", ProtocolTable()), node("", nil)}, false},
		{"a node known by its record only", []api.NodeStatus{node("v2", ProtocolTable()), node("v2", nil)}, false},
		{"two releases", []api.NodeStatus{node("v2", ProtocolTable()), node("v0.1.0", nil)}, true},
		{"same release, other tables", []api.NodeStatus{node("dev", ProtocolTable()), node("dev", newer)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := MixedVersions(tc.rows); got != tc.mixed {
				t.Errorf("mixedVersions = %v, want %v", got, tc.mixed)
			}
		})
	}
}

func FuzzDecodeMeta(f *testing.F) {
	f.Add([]byte(metaV010))
	f.Add([]byte(metaCurrent))
	f.Add([]byte(`{"v":1,"pt":"b=0 cmd=0-2  a=1\tzz=3-3"}`))
	f.Add([]byte(`{"v":1,"pt":null}`))
	f.Add([]byte(`{"v":1,"pt":"x=1-2-3 y=01"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		tbl := m.table
		if len(tbl) != len(strings.Fields(m.Protocols)) {
			t.Fatalf("table of %d channels from %q", len(tbl), m.Protocols)
		}
		for _, p := range tbl {
			if p.Min > p.Version {
				t.Fatalf("channel %q: oldest %d above %d", p.Channel, p.Min, p.Version)
			}
		}
		again, err := m.encode()
		if err != nil {
			return // too big to gossip: never sent
		}
		m2, err := decodeMeta(again)
		if err != nil {
			t.Fatalf("re-encoded metadata refused: %v\n%s", err, again)
		}
		if !reflect.DeepEqual(m2.table, tbl) {
			t.Fatalf("table changed through a re-encoding: %v, then %v", tbl, m2.table)
		}
	})
}
