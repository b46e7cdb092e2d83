package main

import (
	"strings"
	"testing"
)

func TestNodeWaitCommands(t *testing.T) {
	noEnv(t)
	tests := []struct {
		name    string
		args    []string
		calls   []call
		want    []string // parts of the output, in order
		wantErr string
	}{
		{name: "drain --wait", args: []string{"node", "drain", "n2", "--wait", "--interval", "1ms"}, calls: []call{
			{method: "POST", path: "/v1/nodes/n2/drain", body: `{}`, answer: `{"moved":{"db0":"n1"},"kept":["r0"],"leader":"n3","generation":9}`},
			{method: "GET", path: "/v1/nodes/n2/safety", answer: `{"node":"n2","safe":false,"reasons":["LUN r0: n2 holds its only in-sync copy (n1 is out of sync, resyncing 45%)"],"idle":true}`},
			{method: "GET", path: "/v1/nodes/n2/safety", answer: `{"node":"n2","safe":true,"idle":false,"pending":["LUN r0: n2 still owns it (n1 can take it over)"]}`},
			{method: "POST", path: "/v1/nodes/n2/drain", body: `{}`, answer: `{"moved":{"r0":"n1"},"generation":11}`},
			{method: "GET", path: "/v1/nodes/n2/safety", answer: `{"node":"n2","safe":true,"idle":true}`},
		}, want: []string{"waiting for:\n  LUN r0: n2 holds its only in-sync copy (n1 is out of sync, resyncing 45%)\n",
			"waiting for:\n  LUN r0: n2 still owns it (n1 can take it over)\n",
			"node n2 drained; 1 LUN moved\n  db0 -> n1\nRaft leadership handed over to n3\nnode n2 can be stopped\n"}},
		{name: "drain refused", args: []string{"node", "drain", "n2"}, calls: []call{
			{method: "POST", path: "/v1/nodes/n2/drain", body: `{}`, status: 409,
				answer: `{"error":{"code":"conflict","message":"not draining n2: ... LUN one: n2 holds its only copy"}}`},
		}, wantErr: "LUN one: n2 holds its only copy"},
		{name: "drain --force without --wait", args: []string{"node", "drain", "n2", "--force"}, calls: []call{
			{method: "POST", path: "/v1/nodes/n2/drain", body: `{"force":true}`, answer: `{"moved":{},"kept":["one"],"generation":9}`},
		}, want: []string{"node n2 drained; 0 LUNs moved\nstill owns one: no other node holds an in-sync copy yet\n"}},
		{name: "undrain --wait", args: []string{"node", "undrain", "n2", "--wait", "--interval", "1ms"}, calls: []call{
			{method: "POST", path: "/v1/nodes/n2/undrain", answer: `{"generation":50}`},
			{method: "GET", path: "/v1/status", answer: `{"nodes":[{"name":"n2","healthy":true,"gossip":"alive","generation":42}]}`},
			{method: "GET", path: "/v1/luns", answer: `[{"name":"r0","owner":"n1","replicas":[{"node":"n1","state":"in-sync","owner":true},{"node":"n2","state":"resyncing","resync_done":1,"resync_total":4,"resync_phase":"copying"}]}]`},
			{method: "GET", path: "/v1/status", answer: `{"nodes":[{"name":"n2","healthy":true,"gossip":"alive","generation":50}]}`},
			{method: "GET", path: "/v1/luns", answer: `[{"name":"r0","owner":"n1","replicas":[{"node":"n1","state":"in-sync","owner":true},{"node":"n2","state":"in-sync"}]}]`},
		}, want: []string{"waiting for:\n  n2 is catching up with the Raft log: generation 42 of 50\n  LUN r0: n2 is resyncing, 25% (copying)\n",
			"node n2 undrained\nnode n2 has caught up and its copies are in sync\n"}},
		{name: "rebalance --dry-run", args: []string{"cluster", "rebalance", "--dry-run"}, calls: []call{
			{method: "POST", path: "/v1/rebalance", body: `{"dry_run":true}`, answer: `{"moves":[{"lun":"db0","from":"n1","to":"n2"}],"dry_run":true}`},
		}, want: []string{"would move 1 LUN (dry run):\nLUN  FROM  TO\ndb0  n1    n2\n"}},
		{name: "upgrade plan: leader last, one node done, the old leader's safety checked here", args: []string{"cluster", "upgrade", "plan"}, calls: upgradeCalls(),
			want: []string{"cluster version 1; upgrading to v0.2.0\n",
				"1     n2           v0.2.0 (done)  -     r0 (in-sync)  yes\n",
				"2     n3           v0.1.0         db0   r0 (in-sync)  after drain: LUN db0: n3 still owns it (n2 can take it over)\n",
				"3     n1 (leader)  v0.1.0         r0    r0 (in-sync)  after drain: LUN r0: n1 still owns it (n2, n3 can take it over); n1 is not drained; n1 leads Raft\n",
				"each step: node drain NAME --wait"}},
		{name: "upgrade status: next step", args: []string{"cluster", "upgrade", "status"}, calls: upgradeCalls(),
			want: []string{"1 of 3 nodes run v0.2.0; cluster version 1\nMIXED VERSIONS",
				"next: n3 (v0.1.0): hatarget node drain n3 --wait; stop now: after drain: LUN db0: n3 still owns it (n2 can take it over)\n"}},
		{name: "rebalance, nothing to move", args: []string{"cluster", "rebalance"}, calls: []call{
			{method: "POST", path: "/v1/rebalance", body: `{}`, answer: `{"moves":[]}`},
		}, want: []string{"ownership is balanced: nothing to move\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := fakeAPI(t, tt.calls...)
			out, err := runCLI(t, "", append(tt.args, "--addr", srv.URL)...)
			checkErr(t, err, tt.wantErr)
			rest := out
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("output:\n%s\nlacks, in order:\n%s", out, w)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

// upgradeCalls are the API calls of `cluster upgrade plan` and `status`
// against a cluster half-way through an upgrade: n2 runs the new release,
// the leader n1 the old one, which has no safety route: the plan checks
// n1 on the status and LUN list instead.
func upgradeCalls() []call {
	return []call{
		{method: "GET", path: "/v1/status", answer: `{"leader":"n1","cluster_version":1,"mixed_versions":true,"nodes":[
			{"name":"n1","version":"v0.1.0","protocol":4,"healthy":true,"voter":true,"gossip":"alive"},
			{"name":"n2","version":"v0.2.0","protocol":5,"healthy":true,"voter":true,"gossip":"alive"},
			{"name":"n3","version":"v0.1.0","protocol":4,"healthy":true,"voter":true,"gossip":"alive"}]}`},
		{method: "GET", path: "/v1/luns", answer: `[{"name":"r0","owner":"n1","replicas":[{"node":"n1","state":"in-sync","owner":true},{"node":"n2","state":"in-sync"},{"node":"n3","state":"in-sync"}]},{"name":"db0","owner":"n3"}]`},
		{method: "GET", path: "/v1/nodes/n1/safety", status: 404, answer: `404 page not found`},
		{method: "GET", path: "/v1/nodes/n2/safety", answer: `{"node":"n2","safe":true,"idle":true}`},
		{method: "GET", path: "/v1/nodes/n3/safety", answer: `{"node":"n3","safe":true,"idle":false,"pending":["LUN db0: n3 still owns it (n2 can take it over)"]}`},
	}
}
