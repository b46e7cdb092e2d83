package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hatarget/hatarget/cluster"
	"github.com/hatarget/hatarget/cluster/api"
)

func TestPrintClusterStatusVersions(t *testing.T) {
	cur := cluster.ProtocolTable()
	node := func(name, release string, tbl []api.ProtocolVersion) api.NodeStatus {
		return api.NodeStatus{Name: name, Version: release, Protocol: 4, Protocols: tbl}
	}
	for _, tc := range []struct {
		name    string
		status  api.ClusterStatus
		want    []string
		notWant []string
	}{
		{
			name:    "one release",
			status:  api.ClusterStatus{ClusterVersion: 2, Nodes: []api.NodeStatus{node("n1", "v2", cur), node("n2", "v2", cur)}},
			want:    []string{"cluster version 2\n", "protocols of n1, n2: " + cluster.FormatProtocols(cur) + "\n"},
			notWant: []string{"MIXED"},
		},
		{
			name: "in the middle of an upgrade",
			status: api.ClusterStatus{ClusterVersion: 1, Nodes: []api.NodeStatus{
				node("n1", "v2", cur), node("n2", "v0.1.0", nil), node("n3", "v2", cur), node("gone", "", nil)}},
			want: []string{"cluster version 1\n", "protocols of n1, n3: ", "protocols of n2: not advertised (command protocol 4)\n",
				"MIXED VERSIONS: v2 on n1, n3; v0.1.0 on n2\n"},
			notWant: []string{"gone:", "protocols of gone"},
		},
		{
			name: "one release, other tables",
			status: api.ClusterStatus{ClusterVersion: 2, Nodes: []api.NodeStatus{
				node("n1", "dev", cur), node("n2", "dev", cur[:3])}},
			want: []string{"MIXED VERSIONS: one release, different protocol tables"},
		},
		{
			name:   "answered by a node of v0.1.0",
			status: api.ClusterStatus{Nodes: []api.NodeStatus{node("n1", "v0.1.0", nil), node("n2", "v2", nil)}},
			want:   []string{"cluster version not reported", "MIXED VERSIONS: v0.1.0 on n1; v2 on n2\n"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			printClusterStatus(&b, &tc.status)
			out := b.String()
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestVersionOutput(t *testing.T) {
	var b bytes.Buffer
	if err := printVersion(&b, currentVersion()); err != nil {
		t.Fatal(err)
	}
	for _, p := range cluster.ProtocolTable() {
		if !strings.Contains(b.String(), "\n"+p.Channel+" ") {
			t.Errorf("channel %s missing:\n%s", p.Channel, b.String())
		}
	}
}
