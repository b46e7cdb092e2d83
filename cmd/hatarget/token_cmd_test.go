package main

import (
	"strings"
	"testing"
	"time"
)

func TestTokenCommands(t *testing.T) {
	noEnv(t)
	const secret = "hat_abc"
	for _, tt := range []struct {
		name  string
		args  []string
		calls []call
		want  []string
		not   []string
	}{
		{name: "bootstrap", args: []string{"token", "bootstrap", "--token", "cluster"},
			calls: []call{{method: "POST", path: "/v1/tokens/bootstrap", auth: "Bearer cluster", body: `{"name":"bootstrap"}`,
				answer: `{"name":"bootstrap","role":"admin","index":7,"secret":"` + secret + `","generation":7}`}},
			want: []string{"created admin token bootstrap (generation 7)", "\n" + secret + "\n"}},
		{name: "create json", args: []string{"token", "create", "--name", "ci", "--role", "operator", "-o", "json", "--token", "root"},
			calls: []call{{method: "POST", path: "/v1/tokens", auth: "Bearer root", body: `{"name":"ci","role":"operator"}`,
				answer: `{"name":"ci","role":"operator","index":9,"secret":"` + secret + `","generation":9}`}},
			want: []string{`"secret": "` + secret + `"`}},
		{name: "list", args: []string{"token", "list", "--token", "root"},
			calls: []call{{method: "GET", path: "/v1/tokens", auth: "Bearer root", answer: `[{"name":"ci","role":"operator","index":9}]`}},
			want:  []string{"NAME", "ci", "operator", "9"}, not: []string{"root"}},
		{name: "revoke", args: []string{"token", "revoke", "ci", "--token", "root"},
			calls: []call{{method: "DELETE", path: "/v1/tokens/ci", auth: "Bearer root", answer: `{"generation":10}`}},
			want:  []string{"token ci revoked (generation 10)"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := fakeAPI(t, tt.calls...)
			out, err := runCLI(t, "", append(tt.args, "--addr", srv.URL)...)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestTokenCreateNeedsNameAndRole(t *testing.T) {
	noEnv(t)
	if _, err := runCLI(t, "", "token", "create", "--name", "x"); err == nil || !strings.Contains(err.Error(), "role") {
		t.Fatalf("create without --role: %v", err)
	}
}

func TestAuditCommand(t *testing.T) {
	noEnv(t)
	recs := `[{"index":5,"time":"2026-01-02T03:04:05Z","principal":"ops","role":"operator","source":"10.0.0.9:5000","command":"create_target","body":{"iqn":"x"}},
		{"index":6,"time":"0001-01-01T00:00:00Z","principal":"unknown","command":"set_drain"}]`
	srv := fakeAPI(t, call{method: "GET", path: "/v1/audit?since=2026-01-02T00%3A00%3A00Z", auth: "Bearer root", answer: recs})
	out, err := runCLI(t, "", "audit", "--since", "2026-01-02T00:00:00Z", "--token", "root", "--addr", srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"INDEX", "ops", "operator", "10.0.0.9:5000", "create_target", "unknown", "set_drain"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"":                     {},
		"1h":                   now.Add(-time.Hour),
		"2026-01-01T00:00:00Z": time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		got, err := parseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"-1h", "yesterday"} {
		if _, err := parseSince(bad, now); err == nil {
			t.Errorf("parseSince(%q) accepted", bad)
		}
	}
}
