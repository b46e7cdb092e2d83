package main

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// env is a fake environment for loadAgentSettings.
func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.toml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// sample is a non-default value of a setting, as the environment and a
// TOML file spell it, and as the flag then prints it.
type sample struct{ env, toml, want string }

func sampleFor(t *testing.T, f *pflag.Flag) sample {
	switch f.Value.Type() {
	case "string":
		return sample{"sample-" + f.Name, `"sample-` + f.Name + `"`, "sample-" + f.Name}
	case "int", "uint16":
		return sample{"4321", "4321", "4321"}
	case "duration":
		return sample{"7s", `"7s"`, "7s"}
	case "stringArray":
		return sample{"a:1, b:2", `["a:1", "b:2"]`, "[a:1,b:2]"}
	case "bool":
		return sample{"true", "true", "true"}
	}
	t.Fatalf("--%s: no sample value for flags of type %s; add one", f.Name, f.Value.Type())
	return sample{}
}

// TestEverySettingFromEnvAndFile enumerates the agent's flags, so that a
// flag added later is checked without touching this test.
func TestEverySettingFromEnvAndFile(t *testing.T) {
	var names []string
	agentFlags().VisitAll(func(f *pflag.Flag) {
		if isSetting(f) && f.Name != configFlag {
			names = append(names, f.Name)
		}
	})
	if len(names) < 15 {
		t.Fatalf("only %d agent settings: %v", len(names), names)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			s := sampleFor(t, agentFlags().Lookup(name))
			if s.want == agentFlags().Lookup(name).Value.String() {
				t.Fatalf("sample %q is the default", s.want)
			}

			flags := agentFlags()
			flags.Lookup(configFlag).Value.Set("")
			got, err := loadAgentSettings(flags, env(map[string]string{envName(name): s.env}))
			if err != nil {
				t.Fatalf("from %s: %v", envName(name), err)
			}
			if v := flags.Lookup(name).Value.String(); v != s.want || got.origins[name] != fromEnv {
				t.Errorf("from %s=%q: %q (%q), want %q", envName(name), s.env, v, got.origins[name], s.want)
			}

			flags = agentFlags()
			path := writeFile(t, name+" = "+s.toml+"\n")
			flags.Lookup(configFlag).Value.Set(path)
			got, err = loadAgentSettings(flags, env(nil))
			if err != nil {
				t.Fatalf("from the file: %v", err)
			}
			if v := flags.Lookup(name).Value.String(); v != s.want || got.origins[name] != fromFile {
				t.Errorf("from the file, %s = %s: %q (%q), want %q", name, s.toml, v, got.origins[name], s.want)
			}
		})
	}
}

func TestSettingsPrecedence(t *testing.T) {
	file := writeFile(t, `bind = "10.0.0.3"
join = ["10.0.0.9"]
`)
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantBind string
		wantJoin string
		from     origin
		shadowed []string
	}{
		{name: "defaults", args: []string{"--config="}, wantBind: "127.0.0.1", wantJoin: "[]", from: fromDefault},
		{name: "file", args: []string{"--config", file}, wantBind: "10.0.0.3", wantJoin: "[10.0.0.9]", from: fromFile},
		{name: "environment over file", args: []string{"--config", file},
			env:      map[string]string{"HATARGET_BIND": "10.0.0.2", "HATARGET_JOIN": "10.0.0.7,10.0.0.8"},
			wantBind: "10.0.0.2", wantJoin: "[10.0.0.7,10.0.0.8]", from: fromEnv,
			shadowed: []string{"bind (set in the environment)", "join (set in the environment)"}},
		{name: "flag over environment and file", args: []string{"--config", file, "--bind", "10.0.0.1", "--join", "a", "--join", "b"},
			env:      map[string]string{"HATARGET_BIND": "10.0.0.2", "HATARGET_JOIN": "10.0.0.7"},
			wantBind: "10.0.0.1", wantJoin: "[a,b]", from: fromFlag,
			shadowed: []string{"bind (set in the command line)", "join (set in the command line)"}},
		{name: "config file from the environment", env: map[string]string{"HATARGET_CONFIG": file},
			wantBind: "10.0.0.3", wantJoin: "[10.0.0.9]", from: fromFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			flags := agentFlags()
			if err := flags.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			s, err := loadAgentSettings(flags, env(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if got := flags.Lookup("bind").Value.String(); got != tt.wantBind {
				t.Errorf("bind %q, want %q", got, tt.wantBind)
			}
			if got := flags.Lookup("join").Value.String(); got != tt.wantJoin {
				t.Errorf("join %q, want %q", got, tt.wantJoin)
			}
			if s.origins["bind"] != tt.from {
				t.Errorf("bind from %q, want %q", s.origins["bind"], tt.from)
			}
			if !slices.Equal(s.shadowed, tt.shadowed) {
				t.Errorf("shadowed %q, want %q", s.shadowed, tt.shadowed)
			}
		})
	}
}

func TestSettingsErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent.toml")
	tests := []struct {
		name    string
		file    string // content of a file given with --config
		args    []string
		env     map[string]string
		wantErr string // "" for no error; FILE stands for the file's path
	}{
		{name: "missing default file", args: []string{}},
		{name: "missing explicit file", args: []string{"--config", missing}, wantErr: "absent.toml: no such file"},
		{name: "missing file from the environment", env: map[string]string{"HATARGET_CONFIG": missing}, wantErr: "absent.toml: no such file"},
		{name: "unknown key", file: "bind = \"10.0.0.1\"\n\nbogus = 1\n", wantErr: `FILE:3: unknown key "bogus"`},
		{name: "two unknown keys", file: "bogus = 1\nbind = \"10.0.0.1\"\nalso-bogus = 2\n", wantErr: `FILE:1: unknown key "bogus": ` + "`hatarget agent --help` lists the settings\nFILE:3: unknown key \"also-bogus\""},
		{name: "a table", file: "[agent]\nbind = \"10.0.0.1\"\n", wantErr: `FILE:1: unknown key "agent"`},
		{name: "config in the file", file: "config = \"/x\"\n", wantErr: `FILE:1: unknown key "config": it can only be set with --config or HATARGET_CONFIG`},
		{name: "syntax error", file: "bind = \"10.0.0.1\"\niscsi-port = = 3\n", wantErr: "FILE:2:"},
		{name: "bad number", file: "iscsi-port = \"many\"\n", wantErr: `FILE: iscsi-port: not a valid int: strconv.ParseInt: parsing "many"`},
		{name: "list for a single value", file: "bind = [\"a\", \"b\"]\n", wantErr: "FILE: bind: takes one value, not a list"},
		{name: "table value", file: "bind = {a = 1}\n", wantErr: "FILE: bind: want a string"},
		{name: "bad environment", env: map[string]string{"HATARGET_BOOTSTRAP_EXPECT": "three"}, wantErr: "HATARGET_BOOTSTRAP_EXPECT: not a valid int"},
		{name: "every value type", file: "bind = \"10.0.0.1\"\nbootstrap-expect = 3\njoin = [\"a\"]\nnop-in-interval = \"1m\"\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			flags := agentFlags()
			// The default file of the machine running the test stays out.
			flags.Lookup(configFlag).Value.Set(missing)
			path := ""
			if tt.file != "" {
				path = writeFile(t, tt.file)
				tt.args = append(tt.args, "--config", path)
			}
			if err := flags.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			_, err := loadAgentSettings(flags, env(tt.env))
			want := strings.ReplaceAll(tt.wantErr, "FILE", path)
			switch {
			case want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
				t.Fatalf("error %v, want one containing %q", err, want)
			}
		})
	}
}

func TestFillDefaults(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skip(err)
	}
	tests := []struct {
		name     string
		opts     agentOptions
		stateDir string
		wantName string
		wantDir  string
	}{
		{name: "outside systemd", wantName: host, wantDir: "hatarget-data"},
		{name: "systemd StateDirectory", stateDir: "/var/lib/hatarget", wantName: host, wantDir: "/var/lib/hatarget"},
		{name: "several StateDirectory entries", stateDir: "/var/lib/hatarget:/var/lib/other", wantName: host, wantDir: "/var/lib/hatarget"},
		{name: "set", opts: agentOptions{name: "n1", dataDir: "/srv/h"}, stateDir: "/var/lib/hatarget", wantName: "n1", wantDir: "/srv/h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.opts
			if err := o.fillDefaults(func(k string) string {
				if k == "STATE_DIRECTORY" {
					return tt.stateDir
				}
				return ""
			}); err != nil {
				t.Fatal(err)
			}
			if o.name != tt.wantName || o.dataDir != tt.wantDir {
				t.Errorf("name %q, data dir %q; want %q, %q", o.name, o.dataDir, tt.wantName, tt.wantDir)
			}
		})
	}
}

func TestReload(t *testing.T) {
	path := writeFile(t, "log-level = \"info\"\nbind = \"10.0.0.1\"\n")
	running := agentFlags()
	if err := running.Parse([]string{"--config", path, "--log-format", "json"}); err != nil {
		t.Fatal(err)
	}
	environment := env(map[string]string{"HATARGET_TOKEN": "s3cret-token"})
	if _, err := loadAgentSettings(running, environment); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	r := &reloader{running: running, level: new(slog.LevelVar), log: slog.New(slog.NewTextHandler(&logs, nil)), lookupEnv: environment}

	steps := []struct {
		name            string
		file            string
		wantErr         string
		wantRestart     []string
		wantLevel       slog.Level
		wantRunningBind string
	}{
		{name: "nothing changed", file: "log-level = \"info\"\nbind = \"10.0.0.1\"\n", wantLevel: slog.LevelInfo, wantRunningBind: "10.0.0.1"},
		{name: "log level applied, bind waits for a restart", file: "log-level = \"debug\"\nbind = \"10.0.0.2\"\n",
			wantRestart: []string{"bind"}, wantLevel: slog.LevelDebug, wantRunningBind: "10.0.0.1"},
		{name: "the command line still wins", file: "log-level = \"debug\"\nbind = \"10.0.0.1\"\nlog-format = \"text\"\n",
			wantLevel: slog.LevelDebug, wantRunningBind: "10.0.0.1"},
		{name: "a broken file changes nothing", file: "log-level = \"warn\"\nbogus = 1\n", wantErr: "unknown key",
			wantLevel: slog.LevelDebug, wantRunningBind: "10.0.0.1"},
		{name: "a bad level is refused", file: "log-level = \"loud\"\nbind = \"10.0.0.1\"\n", wantErr: "log-level",
			wantLevel: slog.LevelDebug, wantRunningBind: "10.0.0.1"},
		{name: "back to the default", file: "", wantLevel: slog.LevelInfo, wantRunningBind: "10.0.0.1", wantRestart: []string{"bind"}},
	}
	for _, step := range steps {
		if err := os.WriteFile(path, []byte(step.file), 0o600); err != nil {
			t.Fatal(err)
		}
		restart, err := r.reload()
		if step.wantErr == "" && err != nil || step.wantErr != "" && (err == nil || !strings.Contains(err.Error(), step.wantErr)) {
			t.Errorf("%s: error %v, want %q", step.name, err, step.wantErr)
		}
		if !slices.Equal(restart, step.wantRestart) {
			t.Errorf("%s: need restart %q, want %q", step.name, restart, step.wantRestart)
		}
		if got := r.level.Level(); got != step.wantLevel {
			t.Errorf("%s: level %v, want %v", step.name, got, step.wantLevel)
		}
		if got := running.Lookup("bind").Value.String(); got != step.wantRunningBind {
			t.Errorf("%s: running bind %q, want %q", step.name, got, step.wantRunningBind)
		}
	}
	if strings.Contains(logs.String(), "s3cret") {
		t.Errorf("the log shows the token:\n%s", logs.String())
	}
}

// TestReloadKeepsSecretsOutOfTheLog changes the token, which needs a
// restart: the log names the setting, not its values.
func TestReloadKeepsSecretsOutOfTheLog(t *testing.T) {
	path := writeFile(t, "token = \"old-s3cret\"\n")
	running := agentFlags()
	if err := running.Parse([]string{"--config", path}); err != nil {
		t.Fatal(err)
	}
	if _, err := loadAgentSettings(running, env(nil)); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	r := &reloader{running: running, level: new(slog.LevelVar), log: slog.New(slog.NewTextHandler(&logs, nil)), lookupEnv: env(nil)}
	if err := os.WriteFile(path, []byte("token = \"new-s3cret\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	restart, err := r.reload()
	if err != nil || !slices.Equal(restart, []string{"token"}) {
		t.Fatalf("reload: %q, %v; want [token]", restart, err)
	}
	if !strings.Contains(logs.String(), "setting=token") || strings.Contains(logs.String(), "s3cret") {
		t.Errorf("want the token named and its values hidden:\n%s", logs.String())
	}
}

// TestDefaultConfigInSync checks deploy/systemd/agent.toml against the
// flags: it is what `hatarget gen config` writes, it sets nothing as it
// is, and each of its commented-out lines, uncommented, sets its setting to
// the default.
func TestDefaultConfigInSync(t *testing.T) {
	var gen bytes.Buffer
	if err := writeDefaultConfig(&gen); err != nil {
		t.Fatal(err)
	}
	checkedIn, err := os.ReadFile("../../deploy/systemd/agent.toml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gen.Bytes(), checkedIn) {
		t.Fatalf("deploy/systemd/agent.toml differs from the flags; regenerate it: go run ./cmd/hatarget gen config > deploy/systemd/agent.toml")
	}

	flags := agentFlags()
	flags.Lookup(configFlag).Value.Set(writeFile(t, gen.String()))
	s, err := loadAgentSettings(flags, env(nil))
	if err != nil || len(s.origins) != 0 {
		t.Fatalf("the default file as it is: %v, set %v; want nothing set", err, s.origins)
	}

	setting := regexp.MustCompile(`^#([a-z0-9-]+) = `)
	var uncommented strings.Builder
	seen := map[string]bool{}
	sc := bufio.NewScanner(&gen)
	for sc.Scan() {
		if m := setting.FindStringSubmatch(sc.Text()); m != nil {
			seen[m[1]] = true
			uncommented.WriteString(strings.TrimPrefix(sc.Text(), "#") + "\n")
		}
	}
	flags = agentFlags()
	flags.Lookup(configFlag).Value.Set(writeFile(t, uncommented.String()))
	if _, err := loadAgentSettings(flags, env(nil)); err != nil {
		t.Fatalf("every setting uncommented: %v", err)
	}
	flags.VisitAll(func(f *pflag.Flag) {
		if f.Hidden || f.Name == configFlag {
			return
		}
		if !seen[f.Name] {
			t.Errorf("--%s is missing from the default file", f.Name)
		}
		if f.Value.String() != f.DefValue {
			t.Errorf("--%s: the default file sets %q, the flag's default is %q", f.Name, f.Value.String(), f.DefValue)
		}
	})
}

// TestUnitInSync checks deploy/systemd/hatarget.service against the agent:
// the flags and environment variables it uses exist, and it uses the
// protocol the agent speaks.
func TestUnitInSync(t *testing.T) {
	f, err := os.Open("../../deploy/systemd/hatarget.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	unit, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	// Continuation lines joined, comments dropped.
	var directives []string
	for line := range strings.SplitSeq(strings.ReplaceAll(string(unit), "\\\n", " "), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "[") {
			directives = append(directives, line)
		}
	}
	for _, want := range []string{"Type=notify", "NotifyAccess=main", "ExecReload=/bin/kill -HUP $MAINPID", "StateDirectory=hatarget"} {
		if !slices.Contains(directives, want) {
			t.Errorf("the unit lacks %s", want)
		}
	}
	flags := agentFlags()
	envVars := map[string]bool{}
	flags.VisitAll(func(f *pflag.Flag) { envVars[envName(f.Name)] = true })
	flagRE := regexp.MustCompile(`\s--([a-z0-9-]+)`)
	envRE := regexp.MustCompile(`\b(HATARGET_[A-Z0-9_]+)`)
	execStart := 0
	for _, d := range directives {
		if strings.HasPrefix(d, "ExecStart=") {
			execStart++
			if !strings.Contains(d, "/usr/bin/hatarget agent") {
				t.Errorf("ExecStart does not run /usr/bin/hatarget agent, where the package installs it: %s", d)
			}
			for _, m := range flagRE.FindAllStringSubmatch(d, -1) {
				if flags.Lookup(m[1]) == nil {
					t.Errorf("ExecStart uses --%s, which the agent does not have", m[1])
				}
			}
		}
		for _, m := range envRE.FindAllStringSubmatch(d, -1) {
			if !envVars[m[1]] {
				t.Errorf("the unit sets %s, which no agent setting reads", m[1])
			}
		}
	}
	if execStart != 1 {
		t.Errorf("%d ExecStart= lines, want 1", execStart)
	}
}
