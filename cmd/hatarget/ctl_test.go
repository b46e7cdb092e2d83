package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/hatarget/hatarget/cluster/api"
)

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "1073741824", want: 1 << 30},
		{in: "512", want: 512},
		{in: "512b", want: 512},
		{in: "4K", want: 4 << 10},
		{in: "4k", want: 4 << 10},
		{in: "10M", want: 10 << 20},
		{in: "1G", want: 1 << 30},
		{in: "1g", want: 1 << 30},
		{in: "2GiB", want: 2 << 30},
		{in: "2gib", want: 2 << 30},
		{in: "3 TiB", want: 3 << 40},
		{in: "1T", want: 1 << 40},
		{in: "1P", want: 1 << 50},
		{in: "1PiB", want: 1 << 50},
		{in: " 8M ", want: 8 << 20},
		{in: "0", wantErr: "above zero"},
		{in: "0G", wantErr: "above zero"},
		{in: "-1G", wantErr: "above zero"},
		{in: "", wantErr: "not a size"},
		{in: "G", wantErr: "not a size"},
		{in: "abc", wantErr: "unknown unit"},
		{in: "1GB", wantErr: "unknown unit"},
		{in: "1X", wantErr: "unknown unit"},
		{in: "1.5G", wantErr: "whole number"},
		{in: "1--2", wantErr: "not a size"},
		{in: "8192P", wantErr: "too large"},
		{in: "99999999999999999999", wantErr: "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseByteSize(tt.in)
			checkErr(t, err, tt.wantErr)
			if got != tt.want {
				t.Errorf("parseByteSize(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestHumanSize(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0 B"},
		{512, "512 B"},
		{1024, "1 KiB"},
		{1536, "1.5 KiB"},
		{1 << 30, "1 GiB"},
		{100 << 30, "100 GiB"},
		{3 << 40, "3 TiB"},
	}
	for _, tt := range tests {
		if got := humanSize(tt.in); got != tt.want {
			t.Errorf("humanSize(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseTargetSettings(t *testing.T) {
	str := func(s string) *string { return &s }
	boolean := func(b bool) *bool { return &b }
	tests := []struct {
		name    string
		in      []string
		want    api.UpdateTarget
		wantErr string
	}{
		{name: "alias", in: []string{"alias=db"}, want: api.UpdateTarget{Alias: str("db")}},
		{name: "empty alias clears it", in: []string{"alias="}, want: api.UpdateTarget{Alias: str("")}},
		{name: "enabled 0", in: []string{"enabled=0"}, want: api.UpdateTarget{Enabled: boolean(false)}},
		{name: "enabled true", in: []string{"enabled=TRUE"}, want: api.UpdateTarget{Enabled: boolean(true)}},
		{name: "enabled 1", in: []string{"Enabled=1"}, want: api.UpdateTarget{Enabled: boolean(true)}},
		{name: "params", in: []string{"HeaderDigest=CRC32C,None", "QueuedCommands=64"},
			want: api.UpdateTarget{Params: map[string]string{"HeaderDigest": "CRC32C,None", "QueuedCommands": "64"}}},
		{name: "value with =", in: []string{"k=a=b"}, want: api.UpdateTarget{Params: map[string]string{"k": "a=b"}}},
		{name: "empty value resets", in: []string{"MaxRecvDataSegmentLength="},
			want: api.UpdateTarget{Params: map[string]string{"MaxRecvDataSegmentLength": ""}}},
		{name: "all", in: []string{"alias=a", "enabled=false", "InitialR2T=No"},
			want: api.UpdateTarget{Alias: str("a"), Enabled: boolean(false), Params: map[string]string{"InitialR2T": "No"}}},
		{name: "no =", in: []string{"enabled"}, wantErr: `"enabled": want KEY=VALUE`},
		{name: "no key", in: []string{"=1"}, wantErr: "want KEY=VALUE"},
		{name: "bad enabled", in: []string{"enabled=yes"}, wantErr: "enabled=yes: want 0, 1, true or false"},
		{name: "twice", in: []string{"alias=a", "alias=b"}, wantErr: "alias is given twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseTargetSettings(tt.in)
			checkErr(t, err, tt.wantErr)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseTargetSettings(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseOutput(t *testing.T) {
	tests := []struct {
		in      string
		want    outputFormat
		wantErr string
	}{
		{in: "table", want: outputTable},
		{in: "json", want: outputJSON},
		{in: "JSON", want: outputJSON},
		{in: "yaml", wantErr: `--output "yaml": want table or json`},
		{in: "", wantErr: "want table or json"},
	}
	for _, tt := range tests {
		got, err := parseOutput(tt.in)
		checkErr(t, err, tt.wantErr)
		if got != tt.want {
			t.Errorf("parseOutput(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseLUNNumber(t *testing.T) {
	tests := []struct {
		in      string
		want    uint64
		wantErr string
	}{
		{in: "0", want: 0},
		{in: "16383", want: 16383},
		{in: "16384", wantErr: "0 to 16383"},
		{in: "-1", wantErr: "0 to 16383"},
		{in: "one", wantErr: "0 to 16383"},
	}
	for _, tt := range tests {
		got, err := parseLUNNumber(tt.in)
		checkErr(t, err, tt.wantErr)
		if got != tt.want {
			t.Errorf("parseLUNNumber(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

// call is one request the fake API expects, and its canned answer.
type call struct {
	method, path string // path with its query, as sent
	// body is compared as JSON values unless raw, when it must be sent
	// byte for byte; empty means no body.
	body   string
	raw    bool
	auth   string // expected Authorization header
	status int    // 200 when zero
	answer string
}

// fakeAPI serves calls in order and fails the test on anything else,
// including calls left unmade.
func fakeAPI(t *testing.T, calls ...call) *httptest.Server {
	t.Helper()
	var mu sync.Mutex
	next := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if next == len(calls) {
			t.Errorf("unexpected request %s %s", r.Method, r.URL.RequestURI())
			http.Error(w, "unexpected", http.StatusTeapot)
			return
		}
		c := calls[next]
		next++
		checkRequest(t, c, r)
		answer(w, c)
	}))
	t.Cleanup(func() {
		srv.Close()
		if next != len(calls) {
			t.Errorf("fake API: %d of %d expected requests made", next, len(calls))
		}
	})
	return srv
}

func checkRequest(t *testing.T, c call, r *http.Request) {
	t.Helper()
	if r.Method != c.method || r.URL.RequestURI() != c.path {
		t.Errorf("request %s %s, want %s %s", r.Method, r.URL.RequestURI(), c.method, c.path)
	}
	if got := r.Header.Get("Authorization"); got != c.auth {
		t.Errorf("Authorization %q, want %q", got, c.auth)
	}
	body, _ := io.ReadAll(r.Body)
	switch {
	case c.raw || c.body == "":
		if string(body) != c.body {
			t.Errorf("%s %s body %q, want %q", r.Method, c.path, body, c.body)
		}
	case !sameJSON(t, body, []byte(c.body)):
		t.Errorf("%s %s body %s, want %s", r.Method, c.path, body, c.body)
	}
}

func sameJSON(t *testing.T, got, want []byte) bool {
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Errorf("body %q is not JSON: %v", got, err)
		return false
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("test's body %q is not JSON: %v", want, err)
	}
	return reflect.DeepEqual(g, w)
}

func answer(w http.ResponseWriter, c call) {
	if strings.HasPrefix(c.answer, "{") || strings.HasPrefix(c.answer, "[") {
		w.Header().Set("Content-Type", "application/json")
	} else {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	}
	status := c.status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	io.WriteString(w, c.answer)
}

// runCLI runs the real root command as main would and returns its stdout.
func runCLI(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	root := newRootCommand()
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	err := root.ExecuteContext(t.Context())
	return out.String(), err
}

// noEnv keeps the developer's own HATARGET_* variables out of the tests.
func noEnv(t *testing.T) {
	t.Setenv(envAddr, "")
	t.Setenv(envToken, "")
}

const (
	statusJSON = `{"leader":"n1","term":3,"commit_index":120,"generation":120,"cluster_version":1,"mixed_versions":true,"nodes":[
		{"name":"n1","address":"10.0.0.1:9260","iscsi_address":"10.0.0.1:3260","raft_role":"leader","healthy":true,"version":"1.2.0","generation":120,
		 "protocol":5,"protocols":[{"channel":"cluster","version":2,"min":1},{"channel":"cmd","version":5,"min":1},{"channel":"fwd","version":1,"min":1}]},
		{"name":"n2","address":"10.0.0.2:9260","iscsi_address":"","raft_role":"none","healthy":false,"version":"1.1.0","protocol":4,"generation":97,"error":"no answer"}]}`
	targetJSON = `{"iqn":"iqn.2025-01.com.example:db","alias":"db","enabled":true,"luns":[],"allowed_initiators":[],"portals":["10.0.0.1:3260"]}`
	lunJSON    = `{"name":"db0","handler":"fileio","path":"/srv/db0.img","size":1073741824,"block_size":512,"serial":"s1","naa":"n1",
		"mappings":[{"target":"iqn.2025-01.com.example:db","lun":3}]}`
	fullTargetJSON = `{"iqn":"iqn.2025-01.com.example:db","alias":"db","enabled":true,"luns":[{"lun":0,"name":"db0"},{"lun":1,"name":"db1","read_only":true}],
		"groups":[{"name":"g1","initiators":["iqn.x:*"],"luns":[{"lun":0,"name":"db2"}]}],"allowed_initiators":["iqn.1993-08.org.debian:01:host1"],
		"chap_users":["host1"],"mutual_chap_user":"db","params":{"QueuedCommands":"64","HeaderDigest":"None"},"portals":["10.0.0.1:3260","10.0.0.2:3260"]}`
	iqn = "iqn.2025-01.com.example:db"
)

func TestCtlCommands(t *testing.T) {
	dir := t.TempDir()
	conf := "HANDLER vdisk_fileio {\n\tDEVICE disk01 {\n\t\tfilename /srv/disk01.img\n\t}\n}\n"
	confPath := filepath.Join(dir, "scst.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	importJSON := `{"devices":["disk01","disk02"],"targets":["iqn.2006-10.net.vlnb:tgt"],"warnings":["scst.conf:7:3: setting foo is not supported, ignored"],"generation":8}`

	tests := []struct {
		name    string
		args    []string
		stdin   string
		calls   []call
		want    string
		wantErr string
	}{
		{
			name:  "cluster status table",
			args:  []string{"cluster", "status"},
			calls: []call{{method: "GET", path: "/v1/status", answer: statusJSON}},
			want: "leader n1, term 3, commit index 120\n" +
				"cluster version 1\n" +
				"NAME  ADDRESS        ISCSI          ROLE    HEALTHY  VERSION  GENERATION\n" +
				"n1    10.0.0.1:9260  10.0.0.1:3260  leader  yes      1.2.0    120\n" +
				"n2    10.0.0.2:9260  -              none    no       1.1.0    97\n" +
				"n2: no answer\n" +
				"protocols of n1: cluster=1-2 cmd=1-5 fwd=1\n" +
				"protocols of n2: not advertised (command protocol 4)\n" +
				"MIXED VERSIONS: 1.2.0 on n1; 1.1.0 on n2\n",
		},
		{
			name:  "cluster status json",
			args:  []string{"cluster", "status", "-o", "json"},
			calls: []call{{method: "GET", path: "/v1/status", answer: statusJSON}},
			want:  indented[api.ClusterStatus](t, statusJSON),
		},
		{
			name:  "cluster status stale",
			args:  []string{"cluster", "status", "--stale", "--output=json"},
			calls: []call{{method: "GET", path: "/v1/status?stale=1", answer: statusJSON}},
			want:  indented[api.ClusterStatus](t, statusJSON),
		},
		{
			name:  "cluster remove",
			args:  []string{"cluster", "remove", "n2"},
			calls: []call{{method: "DELETE", path: "/v1/members/n2", answer: `{"generation":121}`}},
			want:  "removed node n2 (generation 121)\n",
		},
		{
			name: "cluster transfer-leadership",
			args: []string{"cluster", "transfer-leadership", "n2"},
			calls: []call{{method: "POST", path: "/v1/leadership", body: `{"to":"n2"}`,
				answer: `{"name":"n1","raft_role":"follower","leader":"n2","term":4}`}},
			want: "leader is now n2 (term 4)\n",
		},
		{
			name:  "target create",
			args:  []string{"target", "create", iqn, "--alias", "db"},
			calls: []call{{method: "POST", path: "/v1/targets", body: `{"iqn":"` + iqn + `","alias":"db"}`, answer: targetJSON}},
			want:  "created target " + iqn + "\n",
		},
		{
			name:  "target create json",
			args:  []string{"target", "create", iqn, "-o", "json"},
			calls: []call{{method: "POST", path: "/v1/targets", body: `{"iqn":"` + iqn + `"}`, answer: targetJSON}},
			want:  indented[api.Target](t, targetJSON),
		},
		{
			name: "error answer",
			args: []string{"target", "create", iqn},
			calls: []call{{method: "POST", path: "/v1/targets", body: `{"iqn":"` + iqn + `"}`, status: http.StatusConflict,
				answer: `{"error":{"code":"conflict","message":"target ` + iqn + ` already exists"}}`}},
			wantErr: "target " + iqn + " already exists",
		},
		{
			name:  "target delete force",
			args:  []string{"target", "delete", iqn, "--force"},
			calls: []call{{method: "DELETE", path: "/v1/targets/" + iqn + "?force=1", answer: `{"generation":9}`}},
			want:  "deleted target " + iqn + " (generation 9)\n",
		},
		{
			name: "target set",
			args: []string{"target", "set", iqn, "alias=db2", "enabled=0", "HeaderDigest=None"},
			calls: []call{{method: "PATCH", path: "/v1/targets/" + iqn,
				body: `{"alias":"db2","enabled":false,"params":{"HeaderDigest":"None"}}`, answer: targetJSON}},
			want: "updated target " + iqn + "\n",
		},
		{
			name:  "target list",
			args:  []string{"target", "list"},
			calls: []call{{method: "GET", path: "/v1/targets", answer: `[` + fullTargetJSON + `,{"iqn":"iqn.2025-01.com.example:web","luns":[]}]`}},
			want: "IQN                          ALIAS  ENABLED  LUNS             INITIATORS                       CHAP\n" +
				"iqn.2025-01.com.example:db   db     yes      0=db0,1=db1(ro)  iqn.1993-08.org.debian:01:host1  host1 (mutual db)\n" +
				"iqn.2025-01.com.example:web  -      no       -                any                              off\n",
		},
		{
			name:  "target show",
			args:  []string{"target", "show", iqn},
			calls: []call{{method: "GET", path: "/v1/targets/" + iqn, answer: fullTargetJSON}},
			want: "IQN:         " + iqn + "\n" +
				"Alias:       db\n" +
				"Enabled:     yes\n" +
				"Portals:     10.0.0.1:3260, 10.0.0.2:3260\n" +
				"CHAP:        host1 (mutual db)\n" +
				"Initiators:  iqn.1993-08.org.debian:01:host1\n" +
				"Params:      HeaderDigest=None QueuedCommands=64\n" +
				"LUNs:        0=db0,1=db1(ro)\n" +
				"Group g1:    initiators iqn.x:*; LUNs 0=db2\n",
		},
		{
			name:    "target set malformed",
			args:    []string{"target", "set", iqn, "enabled"},
			wantErr: `"enabled": want KEY=VALUE`,
		},
		{
			name: "target chap mutual",
			args: []string{"target", "chap", iqn, "--user", "u", "--secret", "s", "--mutual-user", "mu", "--mutual-secret", "ms"},
			calls: []call{{method: "PUT", path: "/v1/targets/" + iqn + "/chap",
				body: `{"user":"u","secret":"s","mutual_user":"mu","mutual_secret":"ms"}`, answer: `{"generation":10}`}},
			want: "CHAP user u with mutual user mu set on " + iqn + " (generation 10)\n",
		},
		{
			name:  "target chap off",
			args:  []string{"target", "chap", iqn, "--off"},
			calls: []call{{method: "PUT", path: "/v1/targets/" + iqn + "/chap", body: `{}`, answer: `{"generation":11}`}},
			want:  "CHAP is off on " + iqn + " (generation 11)\n",
		},
		{
			name:    "target chap without user",
			args:    []string{"target", "chap", iqn},
			wantErr: "give --user and --secret, or --off",
		},
		{
			name: "target acl add",
			args: []string{"target", "acl", "add", iqn, "iqn.1993-08.org.debian:01:host1"},
			calls: []call{{method: "POST", path: "/v1/targets/" + iqn + "/acl",
				body: `{"initiator":"iqn.1993-08.org.debian:01:host1"}`, answer: `{"generation":12}`}},
			want: "allowed iqn.1993-08.org.debian:01:host1 on " + iqn + " (generation 12)\n",
		},
		{
			name:  "target acl remove",
			args:  []string{"target", "acl", "remove", iqn, "iqn.1993-08.org.debian:01:host1"},
			calls: []call{{method: "DELETE", path: "/v1/targets/" + iqn + "/acl/iqn.1993-08.org.debian:01:host1", answer: `{"generation":13}`}},
			want:  "removed iqn.1993-08.org.debian:01:host1 from the ACL of " + iqn + " (generation 13)\n",
		},
		{
			name: "lun create size",
			args: []string{"lun", "create", iqn, "3", "--name", "db0", "--size", "1G"},
			calls: []call{{method: "POST", path: "/v1/luns",
				body: `{"target":"` + iqn + `","lun":3,"name":"db0","size":1073741824}`, answer: lunJSON}},
			want: "created LUN db0 (1 GiB) at " + iqn + " LUN 3\n",
		},
		{
			name: "lun create all flags",
			args: []string{"lun", "create", iqn, "0", "--name", "db0", "--size", "8GiB", "--path", "/srv/db0.img",
				"--handler", "blockio", "--block-size", "4096", "--thin", "--read-only", "--nv-cache"},
			calls: []call{{method: "POST", path: "/v1/luns",
				body: `{"target":"` + iqn + `","lun":0,"name":"db0","size":8589934592,"path":"/srv/db0.img","handler":"blockio",
					"block_size":4096,"thin":true,"read_only":true,"nv_cache":true}`, answer: lunJSON}},
			want: "created LUN db0 (1 GiB) at " + iqn + " LUN 0\n",
		},
		{name: "lun create zero size", args: []string{"lun", "create", iqn, "0", "--name", "a", "--size", "0"}, wantErr: "--size: size \"0\" must be above zero"},
		{name: "lun create bad lun", args: []string{"lun", "create", iqn, "16384", "--name", "a", "--size", "1G"}, wantErr: "want a number from 0 to 16383"},
		{name: "lun create bad handler", args: []string{"lun", "create", iqn, "0", "--name", "a", "--size", "1G", "--handler", "vdisk"}, wantErr: `--handler "vdisk": want fileio, blockio or nullio`},
		{name: "lun create bad block size", args: []string{"lun", "create", iqn, "0", "--name", "a", "--size", "1G", "--block-size", "1024"}, wantErr: "--block-size 1024: want 512 or 4096"},
		{name: "lun create size not in blocks", args: []string{"lun", "create", iqn, "0", "--name", "a", "--size", "1000"}, wantErr: "not a multiple of the block size 512"},
		{
			name: "lun create replicas",
			args: []string{"lun", "create", iqn, "0", "--name", "db0", "--size", "1G", "--replicas", "2"},
			calls: []call{{method: "POST", path: "/v1/luns",
				body:   `{"target":"` + iqn + `","lun":0,"name":"db0","size":1073741824,"replicas":2}`,
				answer: replicatedLUNJSON(`{"node":"n1","state":"in-sync","owner":true},{"node":"n3","state":"in-sync"}`)}},
			want: "created LUN db0 (1 GiB) at " + iqn + " LUN 0\nReplicas:  n1 in-sync (owner), n3 in-sync\n",
		},
		{
			name: "lun create shared new file",
			args: []string{"lun", "create", iqn, "1", "--name", "db1", "--shared", "--path", "/srv/san/db1.img", "--size", "1G"},
			calls: []call{{method: "POST", path: "/v1/luns",
				body: `{"target":"` + iqn + `","lun":1,"name":"db1","size":1073741824,"path":"/srv/san/db1.img","shared":true}`, answer: lunJSON}},
			want: "created LUN db0 (1 GiB) at " + iqn + " LUN 1\n",
		},
		{
			name: "lun create shared existing device",
			args: []string{"lun", "create", iqn, "2", "--name", "logs", "--shared", "--path", "/dev/mapper/san-logs", "--handler", "blockio"},
			calls: []call{{method: "POST", path: "/v1/luns",
				body: `{"target":"` + iqn + `","lun":2,"name":"logs","path":"/dev/mapper/san-logs","handler":"blockio","shared":true}`, answer: lunJSON}},
			want: "created LUN db0 (1 GiB) at " + iqn + " LUN 2\n",
		},
		{
			name: "lun create nullio",
			args: []string{"lun", "create", iqn, "3", "--name", "null0", "--size", "1T", "--handler", "nullio"},
			calls: []call{{method: "POST", path: "/v1/luns",
				body: `{"target":"` + iqn + `","lun":3,"name":"null0","size":1099511627776,"handler":"nullio"}`, answer: lunJSON}},
			want: "created LUN db0 (1 GiB) at " + iqn + " LUN 3\n",
		},
		{name: "lun create no storage", args: []string{"lun", "create", iqn, "0", "--name", "a"}, wantErr: "give --size: every replica creates its copy"},
		{name: "lun create existing path not shared", args: []string{"lun", "create", iqn, "0", "--name", "a", "--path", "/dev/sdb"}, wantErr: "for an existing file or device on storage every node reaches, add --shared"},
		{name: "lun create shared without path", args: []string{"lun", "create", iqn, "0", "--name", "a", "--size", "1G", "--shared"}, wantErr: "--shared needs --path"},
		{name: "lun create shared and replicas", args: []string{"lun", "create", iqn, "0", "--name", "a", "--path", "/srv/a.img", "--shared", "--replicas", "2"}, wantErr: "give --shared or --replicas, not both"},
		{name: "lun create zero replicas", args: []string{"lun", "create", iqn, "0", "--name", "a", "--size", "1G", "--replicas", "0"}, wantErr: "--replicas 0: want 1 to the number of nodes"},
		{name: "lun create negative replicas", args: []string{"lun", "create", iqn, "0", "--name", "a", "--size", "1G", "--replicas", "-1"}, wantErr: "--replicas -1: want 1 to the number of nodes"},
		{name: "lun create nullio shared", args: []string{"lun", "create", iqn, "0", "--name", "a", "--size", "1G", "--handler", "nullio", "--shared"}, wantErr: "--handler nullio has no storage"},
		{name: "lun create nullio without size", args: []string{"lun", "create", iqn, "0", "--name", "a", "--handler", "nullio"}, wantErr: "--handler nullio needs --size"},
		{
			name:  "lun delete",
			args:  []string{"lun", "delete", iqn, "3"},
			calls: []call{{method: "DELETE", path: "/v1/targets/" + iqn + "/luns/3", answer: `{"generation":14}`}},
			want:  "deleted LUN 3 of " + iqn + " (generation 14)\n",
		},
		{
			name:  "lun resize",
			args:  []string{"lun", "resize", "db0", "2G"},
			calls: []call{{method: "POST", path: "/v1/luns/db0/resize", body: `{"size":2147483648}`, answer: strings.Replace(lunJSON, "1073741824", "2147483648", 1)}},
			want:  "LUN db0 is now 2 GiB (2147483648 bytes)\n",
		},
		{
			name: "lun list",
			args: []string{"lun", "list"},
			calls: []call{{method: "GET", path: "/v1/luns", answer: `[` + lunJSON + `,{"name":"null0","handler":"nullio","size":1099511627776,"block_size":512,"mappings":[]},` +
				strings.Replace(replicatedLUNJSON(`{"node":"n1","state":"in-sync","owner":true},{"node":"n2","state":"out-of-sync"},{"node":"n3","state":"in-sync"}`), `"db0"`, `"r0"`, 1) + `]`}},
			want: "NAME   SIZE   HANDLER  STORAGE                PATH          MAPPED AT\n" +
				"db0    1 GiB  fileio   shared                 /srv/db0.img  " + iqn + ":3\n" +
				"null0  1 TiB  nullio   -                      -             -\n" +
				"r0     1 GiB  fileio   3 replicas, 2 in sync  db0.img       -\n",
		},
		{
			name:  "lun show",
			args:  []string{"lun", "show", "db0"},
			calls: []call{{method: "GET", path: "/v1/luns/db0", answer: lunJSON}},
			want: "Name:           db0\nHandler:        fileio\nPath:           /srv/db0.img\n" +
				"Size:           1 GiB (1073741824 bytes)\nBlock size:     512\nRead-only:      no\nThin:           no\n" +
				"NV cache:       no\nWrite-through:  no\nRemovable:      no\nSerial:         s1\nNAA:            n1\nOwner:          - (not assigned yet)\nNon-owner:      -\nReplicas:       none (shared storage)\n" +
				"Mappings:\n  " + iqn + ":3\n",
		},
		{
			name: "lun show resyncing",
			args: []string{"lun", "show", "db0"},
			calls: []call{{method: "GET", path: "/v1/luns/db0", answer: replicatedLUNJSON(`{"node":"n1","state":"in-sync","owner":true},` +
				`{"node":"n2","state":"resyncing","resync_done":268435456,"resync_total":1073741824,"resync_phase":"copying"}`)}},
			want: replicatedShow("Replicas:       n1 in-sync (owner), n2 resyncing 25% (copying)\n"),
		},
		{
			name: "lun show resync unavailable",
			args: []string{"lun", "show", "db0"},
			calls: []call{{method: "GET", path: "/v1/luns/db0", answer: strings.Replace(
				replicatedLUNJSON(`{"node":"n1","state":"in-sync","owner":true},{"node":"n2","state":"out-of-sync"}`),
				`"mappings"`, `"resync_unavailable":"progress unavailable: the owner n1 did not answer: timeout","mappings"`, 1)}},
			want: replicatedShow("Replicas:       n1 in-sync (owner), n2 out-of-sync\n" +
				"Resync:         progress unavailable: the owner n1 did not answer: timeout\n"),
		},
		{
			name: "lun replace-replica",
			args: []string{"lun", "replace-replica", "db0", "--old", "n2", "--new", "n4"},
			calls: []call{{method: "POST", path: "/v1/luns/db0/replace-replica", body: `{"old":"n2","new":"n4"}`,
				answer: replicatedLUNJSON(`{"node":"n1","state":"in-sync","owner":true},{"node":"n3","state":"in-sync"},{"node":"n4","state":"out-of-sync"}`)}},
			want: "LUN db0: n4 replaced n2 as a replica; it is out of sync until n1 has copied the LUN to it\n" +
				"Replicas:  n1 in-sync (owner), n3 in-sync, n4 out-of-sync\n",
		},
		{
			name: "lun replace-replica json",
			args: []string{"lun", "replace-replica", "db0", "--old", "n2", "--new", "n4", "-o", "json"},
			calls: []call{{method: "POST", path: "/v1/luns/db0/replace-replica", body: `{"old":"n2","new":"n4"}`,
				answer: replicatedLUNJSON(`{"node":"n1","state":"in-sync","owner":true},{"node":"n4","state":"out-of-sync"}`)}},
			want: indented[api.LUN](t, replicatedLUNJSON(`{"node":"n1","state":"in-sync","owner":true},{"node":"n4","state":"out-of-sync"}`)),
		},
		{
			name: "lun replace-replica of the owner",
			args: []string{"lun", "replace-replica", "db0", "--old", "n1", "--new", "n4"},
			calls: []call{{method: "POST", path: "/v1/luns/db0/replace-replica", body: `{"old":"n1","new":"n4"}`, status: http.StatusConflict,
				answer: `{"error":{"code":"conflict","message":"node n1 owns LUN db0: move the LUN first (hatarget lun move db0 --to n3), then replace n1"}}`}},
			wantErr: "node n1 owns LUN db0: move the LUN first",
		},
		{name: "lun replace-replica without --new", args: []string{"lun", "replace-replica", "db0", "--old", "n2"}, wantErr: "give --old NODE (the replica to replace) and --new NODE"},
		{name: "lun replace-replica by itself", args: []string{"lun", "replace-replica", "db0", "--old", "n2", "--new", "n2"}, wantErr: "--old and --new are both n2"},
		{
			name:  "lun force-promote without --yes",
			args:  []string{"lun", "force-promote", "db0", "--to", "n3"},
			calls: []call{{method: "POST", path: "/v1/luns/db0/force-promote", body: `{"to":"n3","dry_run":true}`, answer: forcePlanJSON}},
			want: "Force-promoting n3 to own LUN db0 overrides the in-sync copies on n1, n2 (none of them alive).\n" +
				"Writes acknowledged after n3's copy fell out of sync are on those copies only: they will be lost,\n" +
				"and initiators will read n3's older data instead.\n",
			wantErr: "LUN db0 not promoted: run again with --yes to make n3 its owner anyway",
		},
		{
			name:    "lun force-promote without --yes json",
			args:    []string{"lun", "force-promote", "db0", "--to", "n3", "-o", "json"},
			calls:   []call{{method: "POST", path: "/v1/luns/db0/force-promote", body: `{"to":"n3","dry_run":true}`, answer: forcePlanJSON}},
			want:    indented[api.ForcePromoteResult](t, forcePlanJSON),
			wantErr: "not promoted: run again with --yes",
		},
		{
			name:  "lun force-promote --yes",
			args:  []string{"lun", "force-promote", "db0", "--to", "n3", "--yes"},
			calls: []call{{method: "POST", path: "/v1/luns/db0/force-promote", body: `{"to":"n3"}`, answer: forcedJSON}},
			want: "LUN db0 is owned by n3 (epoch 5), its only in-sync copy\n" +
				"overridden: n1, n2, out of sync now: resynced from n3 if they come back\n",
		},
		{
			name:  "lun force-promote --yes json",
			args:  []string{"lun", "force-promote", "db0", "--to=n3", "--yes", "-o", "json"},
			calls: []call{{method: "POST", path: "/v1/luns/db0/force-promote", body: `{"to":"n3"}`, answer: forcedJSON}},
			want:  indented[api.ForcePromoteResult](t, forcedJSON),
		},
		{
			name: "lun force-promote with a live in-sync replica",
			args: []string{"lun", "force-promote", "db0", "--to", "n3"},
			calls: []call{{method: "POST", path: "/v1/luns/db0/force-promote", body: `{"to":"n3","dry_run":true}`, status: http.StatusConflict,
				answer: `{"error":{"code":"conflict","message":"node n2 holds an in-sync copy of LUN db0 and is alive: use hatarget lun move db0 --to n2"}}`}},
			wantErr: "node n2 holds an in-sync copy of LUN db0 and is alive: use hatarget lun move db0 --to n2",
		},
		{name: "lun force-promote without --to", args: []string{"lun", "force-promote", "db0", "--yes"}, wantErr: "--to NODE is required"},
		{
			name: "lun watch until in sync",
			args: []string{"lun", "watch", "db0", "--until-in-sync", "--interval", "1ms"},
			calls: []call{
				{method: "GET", path: "/v1/luns/db0", answer: replicatedLUNJSON(`{"node":"n1","state":"in-sync","owner":true},{"node":"n2","state":"down"},` +
					`{"node":"n4","state":"out-of-sync","resync_done":0,"resync_total":1073741824}`)},
				{method: "GET", path: "/v1/luns/db0", answer: replicatedLUNJSON(`{"node":"n1","state":"in-sync","owner":true},{"node":"n2","state":"down"},` +
					`{"node":"n4","state":"out-of-sync","resync_done":268435456,"resync_total":1073741824}`)},
				{method: "GET", path: "/v1/luns/db0", status: http.StatusServiceUnavailable,
					answer: `{"error":{"code":"unavailable","message":"the node is shutting down"}}`},
				{method: "GET", path: "/v1/luns/db0", answer: replicatedLUNJSON(`{"node":"n1","state":"in-sync","owner":true},{"node":"n2","state":"down"},` +
					`{"node":"n4","state":"out-of-sync","resync_done":805306368,"resync_total":1073741824}`)},
				{method: "GET", path: "/v1/luns/db0", answer: replicatedLUNJSON(`{"node":"n1","state":"in-sync","owner":true},{"node":"n2","state":"in-sync"},` +
					`{"node":"n4","state":"in-sync"}`)},
			},
			want: "10:00:00  LUN db0  owner n1 (epoch 4)\n" +
				"  n1  in-sync (owner)\n" +
				"  n2  down\n" +
				"  n4  out-of-sync      [....................]   0.0%\n" +
				"10:00:10  LUN db0  owner n1 (epoch 4)\n" +
				"  n1  in-sync (owner)\n" +
				"  n2  down\n" +
				"  n4  out-of-sync      [#####...............]  25.0%  25.6 MiB/s  30s left\n" +
				"10:00:20  db0: the node is shutting down\n" +
				"10:00:30  LUN db0  owner n1 (epoch 4)\n" +
				"  n1  in-sync (owner)\n" +
				"  n2  down\n" +
				"  n4  out-of-sync      [###############.....]  75.0%  25.6 MiB/s  10s left\n" +
				"10:00:40  LUN db0  owner n1 (epoch 4)\n" +
				"  n1  in-sync (owner)\n" +
				"  n2  in-sync\n" +
				"  n4  in-sync\n",
		},
		{
			name: "lun watch resync unavailable",
			args: []string{"lun", "watch", "db0", "--until-in-sync", "--interval", "1ms"},
			calls: []call{
				{method: "GET", path: "/v1/luns/db0", answer: strings.Replace(
					replicatedLUNJSON(`{"node":"n1","state":"in-sync","owner":true},{"node":"n2","state":"out-of-sync"}`),
					`"mappings"`, `"resync_unavailable":"progress unavailable: the owner n1 did not answer: timeout","mappings"`, 1)},
				{method: "GET", path: "/v1/luns/db0", answer: replicatedLUNJSON(`{"node":"n1","state":"in-sync","owner":true},{"node":"n2","state":"in-sync"}`)},
			},
			want: "10:00:00  LUN db0  owner n1 (epoch 4)\n" +
				"  n1  in-sync (owner)\n" +
				"  n2  out-of-sync\n" +
				"  progress unavailable: the owner n1 did not answer: timeout\n" +
				"10:00:10  LUN db0  owner n1 (epoch 4)\n" +
				"  n1  in-sync (owner)\n" +
				"  n2  in-sync\n",
		},
		{
			name:  "lun watch json",
			args:  []string{"lun", "watch", "db0", "--until-in-sync", "-o", "json"},
			calls: []call{{method: "GET", path: "/v1/luns/db0", answer: replicatedLUNJSON(`{"node":"n1","state":"in-sync","owner":true}`)}},
			want:  indented[api.LUN](t, replicatedLUNJSON(`{"node":"n1","state":"in-sync","owner":true}`)),
		},
		{
			name:    "lun watch shared storage",
			args:    []string{"lun", "watch", "db0"},
			calls:   []call{{method: "GET", path: "/v1/luns/db0", answer: lunJSON}},
			wantErr: "LUN db0 is on shared storage: it has no replicas to watch",
		},
		{
			name:    "lun watch unknown LUN",
			args:    []string{"lun", "watch", "nope"},
			calls:   []call{{method: "GET", path: "/v1/luns/nope", status: http.StatusNotFound, answer: `{"error":{"code":"not_found","message":"no LUN named \"nope\""}}`}},
			wantErr: `no LUN named "nope"`,
		},
		{name: "lun watch bad interval", args: []string{"lun", "watch", "db0", "--interval", "0s"}, wantErr: "--interval 0s: want a positive duration"},
		{
			name:  "import scst",
			args:  []string{"import", "scst", confPath},
			calls: []call{{method: "POST", path: "/v1/import/scst?file=scst.conf", body: conf, raw: true, answer: importJSON}},
			want: "created 2 LUNs: disk01, disk02; 1 target: iqn.2006-10.net.vlnb:tgt\n" +
				"warning: scst.conf:7:3: setting foo is not supported, ignored\n",
		},
		{
			name:  "import scst stdin json",
			args:  []string{"import", "scst", "-", "-o", "json"},
			stdin: conf,
			calls: []call{{method: "POST", path: "/v1/import/scst?file=stdin", body: conf, raw: true, answer: importJSON}},
			want:  indented[api.ImportResult](t, importJSON),
		},
		{
			name: "import scst parse error",
			args: []string{"import", "scst", confPath},
			calls: []call{{method: "POST", path: "/v1/import/scst?file=scst.conf", body: conf, raw: true, status: http.StatusBadRequest,
				answer: `{"error":{"code":"invalid","message":"scst.conf:2:9: unknown keyword DEVCE"}}`}},
			wantErr: "scst.conf:2:9: unknown keyword DEVCE",
		},
		{
			name:    "import missing file",
			args:    []string{"import", "scst", filepath.Join(dir, "nope.conf")},
			wantErr: "nope.conf: no such file",
		},
		{
			name:  "export scst",
			args:  []string{"export", "scst"},
			calls: []call{{method: "GET", path: "/v1/export/scst", answer: conf}},
			want:  conf,
		},
		{
			name:  "export scst secrets",
			args:  []string{"export", "scst", "--show-secrets"},
			calls: []call{{method: "GET", path: "/v1/export/scst?secrets=1", answer: conf}},
			want:  conf,
		},
		{name: "export scst json", args: []string{"export", "scst", "-o", "json"}, wantErr: "-o json does not apply"},
		{name: "bad output", args: []string{"target", "list", "-o", "yaml"}, wantErr: `--output "yaml": want table or json`},
		{name: "unknown subcommand", args: []string{"cluster", "statsu"}, wantErr: `unknown command "statsu" for "hatarget cluster"; did you mean status?`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			noEnv(t)
			useWatchClock(t)
			srv := fakeAPI(t, tt.calls...)
			out, err := runCLI(t, tt.stdin, append(tt.args, "--addr", srv.URL)...)
			checkErr(t, err, tt.wantErr)
			if out != tt.want {
				t.Errorf("output:\n%s\nwant:\n%s", out, tt.want)
			}
		})
	}
}

// replicatedShow is lun show's table of replicatedLUNJSON, with its
// replica lines.
func replicatedShow(replicaLines string) string {
	return "Name:           db0\nHandler:        fileio\nPath:           db0.img\n" +
		"Size:           1 GiB (1073741824 bytes)\nBlock size:     512\nRead-only:      no\nThin:           no\n" +
		"NV cache:       no\nWrite-through:  no\nRemovable:      no\nSerial:         s1\nNAA:            n1\nOwner:          n1 (epoch 4)\nNon-owner:      active\n" +
		replicaLines + "Mappings:       none\n"
}

// replicatedLUNJSON is db0, owned by n1 at epoch 4, with replicas (the
// inside of a JSON list).
func replicatedLUNJSON(replicas string) string {
	return `{"name":"db0","handler":"fileio","path":"db0.img","size":1073741824,"block_size":512,"serial":"s1","naa":"n1",` +
		`"owner":"n1","epoch":4,"non_owner":"active","mappings":[],"replicas":[` + replicas + `]}`
}

// Answers of POST /v1/luns/db0/force-promote: the dry run, and the
// promotion of n3 over n1 and n2.
var (
	forcePlanJSON = `{"lun":` + replicatedLUNJSON(`{"node":"n1","state":"down","owner":true},{"node":"n2","state":"down"},{"node":"n3","state":"out-of-sync"}`) +
		`,"overridden":["n1","n2"],"dry_run":true}`
	forcedJSON = `{"lun":` + strings.Replace(replicatedLUNJSON(`{"node":"n1","state":"down"},{"node":"n2","state":"down"},{"node":"n3","state":"in-sync","owner":true}`),
		`"owner":"n1","epoch":4`, `"owner":"n3","epoch":5`, 1) + `,"overridden":["n1","n2"],"generation":77}`
)

// useWatchClock makes lun watch read a clock that starts at 10:00:00 UTC
// and advances ten seconds at every reading (one per frame).
func useWatchClock(t *testing.T) {
	next := time.Date(2025, 1, 1, 10, 0, 0, 0, time.UTC)
	watchNow = func() time.Time {
		now := next
		next = next.Add(10 * time.Second)
		return now
	}
	t.Cleanup(func() { watchNow = time.Now })
}

// On a terminal, lun watch redraws its frame in place: the cursor goes
// back up over the previous frame, which is cleared, and nothing else
// adds ANSI sequences.
func TestLUNWatchRedrawsOnATerminal(t *testing.T) {
	var out bytes.Buffer
	w := &lunWatch{c: &ctl{format: outputTable, out: &out}, name: "db0", tty: true, now: time.Now}
	w.draw([]string{"a", "b", "c"})
	w.draw([]string{"d", "e"})
	w.draw([]string{"f"})
	want := "a\nb\nc\n" + "\x1b[3A\r\x1b[J" + "d\ne\n" + "\x1b[2A\r\x1b[J" + "f\n"
	if out.String() != want {
		t.Errorf("terminal output %q, want %q", out.String(), want)
	}
	if isTerminal(&out) {
		t.Error("a buffer taken for a terminal")
	}
}

func TestProgressBar(t *testing.T) {
	for _, tc := range []struct {
		done, total int64
		want        string
	}{
		{0, 100, "[..........]"},
		{9, 100, "[..........]"},
		{10, 100, "[#.........]"},
		{55, 100, "[#####.....]"},
		{100, 100, "[##########]"},
		{150, 100, "[##########]"},
		{-5, 100, "[..........]"},
		{5, 0, "[..........]"},
		{1 << 50, 1 << 51, "[#####.....]"},
	} {
		if got := progressBar(tc.done, tc.total, 10); got != tc.want {
			t.Errorf("progressBar(%d, %d) = %q, want %q", tc.done, tc.total, got, tc.want)
		}
	}
}

// indented is what -o json must print for answer decoded as T.
func indented[T any](t *testing.T, answer string) string {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(answer), &v); err != nil {
		t.Fatal(err)
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b) + "\n"
}

func TestCtlEnvironment(t *testing.T) {
	const fake = "FAKE" // stands for the fake server's URL
	tests := []struct {
		name           string
		addrEnv, token string
		flags          []string
		wantAuthHeader string
	}{
		{name: "environment", addrEnv: fake, token: "s3cret", wantAuthHeader: "Bearer s3cret"},
		{name: "flags win", addrEnv: "127.0.0.1:1", token: "env", flags: []string{"--addr", fake, "--token", "flag"}, wantAuthHeader: "Bearer flag"},
		{name: "no token", addrEnv: fake},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := fakeAPI(t, call{method: "GET", path: "/v1/members", auth: tt.wantAuthHeader,
				answer: `[{"name":"n1","gossip":"alive","voter":true}]`})
			t.Setenv(envAddr, strings.ReplaceAll(tt.addrEnv, fake, srv.URL))
			t.Setenv(envToken, tt.token)
			args := []string{"cluster", "members"}
			for _, f := range tt.flags {
				args = append(args, strings.ReplaceAll(f, fake, srv.URL))
			}
			out, err := runCLI(t, "", args...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(out, "NAME  GOSSIP  VOTER") || !strings.Contains(out, "\nn1    alive   yes") {
				t.Errorf("output:\n%s", out)
			}
		})
	}
}

func TestAPIErrorShownAsIs(t *testing.T) {
	noEnv(t)
	const msg = "LUN 3 of " + iqn + " is in use by LUN db0"
	srv := fakeAPI(t, call{method: "DELETE", path: "/v1/targets/" + iqn + "/luns/3", status: http.StatusConflict,
		answer: `{"error":{"code":"conflict","message":"` + msg + `"}}`})
	_, err := runCLI(t, "", "lun", "delete", iqn, "3", "--addr", srv.URL)
	if err == nil || err.Error() != msg || !api.IsCode(err, api.CodeConflict) {
		t.Fatalf("error %v, want the API's message %q", err, msg)
	}
}

func TestCtlUnreachable(t *testing.T) {
	noEnv(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = runCLI(t, "", "target", "list", "--addr", addr)
	if err == nil {
		t.Fatal("no error from a closed port")
	}
	for _, want := range []string{"http://" + addr, "--addr", envAddr} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestSnapshotSaveAndExportWriteFiles(t *testing.T) {
	snap := "\x00binary snapshot\xff"
	conf := "TARGET_DRIVER iscsi {\n}\n"
	tests := []struct {
		name     string
		args     []string
		call     call
		content  string
		wantJSON bool
	}{
		{name: "snapshot", args: []string{"cluster", "snapshot", "save", "FILE"},
			call: call{method: "GET", path: "/v1/snapshot", answer: snap}, content: snap},
		{name: "snapshot json", args: []string{"cluster", "snapshot", "save", "FILE", "-o", "json"},
			call: call{method: "GET", path: "/v1/snapshot", answer: snap}, content: snap, wantJSON: true},
		{name: "export", args: []string{"export", "scst", "--out", "FILE"},
			call: call{method: "GET", path: "/v1/export/scst", answer: conf}, content: conf},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			noEnv(t)
			srv := fakeAPI(t, tt.call)
			dir := t.TempDir()
			file := filepath.Join(dir, "out")
			if err := os.WriteFile(file, []byte("old content"), 0o644); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"--addr", srv.URL}, tt.args...)
			args[slices.Index(args, "FILE")] = file
			out, err := runCLI(t, "", args...)
			if err != nil {
				t.Fatal(err)
			}
			checkFile(t, file, tt.content)
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Errorf("%d files in the directory, want only the result", len(entries))
			}
			if tt.wantJSON {
				var got snapshotSaved
				if err := json.Unmarshal([]byte(out), &got); err != nil || got != (snapshotSaved{File: file, Bytes: len(snap)}) {
					t.Errorf("output %q (%v)", out, err)
				}
			}
		})
	}
}

func checkFile(t *testing.T, file, want string) {
	t.Helper()
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("%s holds %q, want %q", file, got, want)
	}
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", file, fi.Mode().Perm())
	}
}

func TestSnapshotSaveToStdoutAndRestore(t *testing.T) {
	noEnv(t)
	snap := "\x00snap\xff"
	srv := fakeAPI(t,
		call{method: "GET", path: "/v1/snapshot", answer: snap},
		call{method: "POST", path: "/v1/snapshot", body: snap, raw: true, answer: `{"generation":40}`},
	)
	out, err := runCLI(t, "", "cluster", "snapshot", "save", "-", "--addr", srv.URL)
	if err != nil || out != snap {
		t.Fatalf("save -: %q, %v", out, err)
	}
	out, err = runCLI(t, snap, "cluster", "snapshot", "restore", "-", "--addr", srv.URL)
	if err != nil || out != "restored the snapshot from stdin (generation 40)\n" {
		t.Fatalf("restore -: %q, %v", out, err)
	}
}

// ctlCommands are the control commands' top-level names.
var ctlCommands = []string{"cluster", "target", "lun", "import", "export"}

func TestCtlCommandsHaveExamplesAndFlags(t *testing.T) {
	root := newRootCommand()
	for _, name := range ctlCommands {
		cmd, _, err := root.Find([]string{name})
		if err != nil || cmd.Name() != name {
			t.Fatalf("no %s command: %v", name, err)
		}
		if cmd.PersistentFlags().Lookup("addr") == nil || cmd.PersistentFlags().ShorthandLookup("o") == nil {
			t.Errorf("%s lacks the --addr or -o persistent flag", name)
		}
		walk(cmd, func(c *cobra.Command) {
			if c.Example == "" {
				t.Errorf("%s has no example", c.CommandPath())
			}
			if c.Short == "" {
				t.Errorf("%s has no short description", c.CommandPath())
			}
		})
	}
	if root.PersistentFlags().Lookup("addr") != nil {
		t.Error("--addr is on the root, where serve and bench would take it")
	}
}

func walk(c *cobra.Command, fn func(*cobra.Command)) {
	fn(c)
	for _, sub := range c.Commands() {
		walk(sub, fn)
	}
}

func TestHelpShowsExample(t *testing.T) {
	out, err := runCLI(t, "", "lun", "create", "--help")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "Examples:\n  hatarget lun create ") {
		t.Errorf("lun create --help has no example:\n%s", out)
	}
}

func TestCompletion(t *testing.T) {
	noEnv(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "bash script", args: []string{"completion", "bash"}, want: "bash completion V2 for hatarget"},
		{name: "output values", args: []string{"__complete", "target", "list", "-o", ""}, want: "table\njson\n:4\n"},
		{name: "handler values", args: []string{"__complete", "lun", "create", "--handler", ""}, want: "fileio\nblockio\nnullio\n:4\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runCLI(t, "", tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("output does not contain %q:\n%s", tt.want, out)
			}
		})
	}
}

func TestCompletionAsksTheAPI(t *testing.T) {
	noEnv(t)
	srv := fakeAPI(t, call{method: "GET", path: "/v1/targets", answer: `[` + targetJSON + `]`})
	out, err := runCLI(t, "", "__complete", "target", "show", "--addr", srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, iqn+"\n:4\n") {
		t.Errorf("completion output:\n%s", out)
	}
}

func TestWriteFileAtomicFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	err := writeFileAtomic(filepath.Join(dir, "missing", "file"), []byte("x"))
	if err == nil || !strings.Contains(err.Error(), "writing ") {
		t.Fatalf("error %v, want one naming the file", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("%d files left behind", len(entries))
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Errorf("no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("error %q, want one containing %q", err, want)
	}
}
