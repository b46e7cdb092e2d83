package main

// The agent's settings come from four places, highest first: its
// command-line flags, the environment (HATARGET_<FLAG>), the configuration
// file (TOML, /etc/hatarget/agent.toml by default) and the flags' defaults.
// Everything here is driven by the agent's pflag set, so a flag added to the
// agent is a setting of the environment and of the file without more code.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/spf13/pflag"
)

const (
	envPrefix          = "HATARGET_"
	defaultAgentConfig = "/etc/hatarget/agent.toml"
	// configFlag names the file itself: it can be set on the command line
	// and in the environment, not in the file.
	configFlag = "config"
)

// origin is where a setting's value came from.
type origin string

const (
	fromDefault origin = ""
	fromFlag    origin = "command line"
	fromEnv     origin = "environment"
	fromFile    origin = "configuration file"
)

// agentSettings says where the agent's settings came from, for its log.
type agentSettings struct {
	file    string // the configuration file read; "" when none was
	origins map[string]origin
	// shadowed lists the file's keys that the command line or the
	// environment overrides: an operator editing the file would otherwise
	// wonder why the change does nothing.
	shadowed []string
}

// agentFlags returns a fresh set of the agent's flags at their defaults,
// the inherited logging flags included, in the order they are defined.
func agentFlags() *pflag.FlagSet {
	f := newAgentCommand().Flags()
	addLogFlags(f)
	f.SortFlags = false
	return f
}

// envName is the environment variable of a flag: HATARGET_DATA_DIR for
// --data-dir.
func envName(flag string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// isSetting tells the flags that are settings from cobra's --help, which
// is not.
func isSetting(f *pflag.Flag) bool { return f.Name != "help" }

// isSecret reports whether a setting's value must stay out of logs.
func isSecret(name string) bool {
	return strings.Contains(name, "secret") || strings.Contains(name, "token") || strings.Contains(name, "key")
}

// loadAgentSettings gives every flag that the command line did not set its
// value from the environment, else from the configuration file. lookupEnv is
// os.LookupEnv outside tests.
func loadAgentSettings(flags *pflag.FlagSet, lookupEnv func(string) (string, bool)) (agentSettings, error) {
	s := agentSettings{origins: map[string]origin{}}
	var errs []error
	flags.VisitAll(func(f *pflag.Flag) {
		switch {
		case !isSetting(f):
		case f.Changed:
			s.origins[f.Name] = fromFlag
		default:
			v, ok := lookupEnv(envName(f.Name))
			if !ok {
				return
			}
			vals := []string{v}
			if _, list := f.Value.(pflag.SliceValue); list {
				vals = splitList(v)
			}
			if err := setFlag(f, vals); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", envName(f.Name), err))
				return
			}
			s.origins[f.Name] = fromEnv
		}
	})
	if len(errs) > 0 {
		return s, errors.Join(errs...)
	}
	path := flags.Lookup(configFlag).Value.String()
	if path == "" {
		return s, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && s.origins[configFlag] == fromDefault {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("configuration file: %w", err)
	}
	values, err := parseAgentFile(path, data, flags)
	if err != nil {
		return s, err
	}
	for _, v := range values {
		if o := s.origins[v.name]; o != fromDefault {
			s.shadowed = append(s.shadowed, v.name+" (set in the "+string(o)+")")
			continue
		}
		if err := setFlag(flags.Lookup(v.name), v.values); err != nil {
			return s, fmt.Errorf("%s: %s: %w", path, v.name, err)
		}
		s.origins[v.name] = fromFile
	}
	s.file = path
	return s, nil
}

// logSources says where the settings came from: names only, no values, so
// that secrets stay out of the log.
func (s agentSettings) logSources(log *slog.Logger) {
	byOrigin := map[origin][]string{}
	for name, o := range s.origins {
		byOrigin[o] = append(byOrigin[o], name)
	}
	for _, names := range byOrigin {
		slices.Sort(names)
	}
	file := s.file
	if file == "" {
		file = "none"
	}
	log.Info("settings loaded", "file", file, "from_command_line", byOrigin[fromFlag],
		"from_environment", byOrigin[fromEnv], "from_file", byOrigin[fromFile])
	if len(s.shadowed) > 0 {
		log.Warn("settings of the configuration file are overridden", "file", s.file, "settings", s.shadowed)
	}
}

// fileValue is one setting of the configuration file.
type fileValue struct {
	name   string
	values []string
}

// parseAgentFile decodes the configuration file into the agent's settings.
// The document is decoded into a struct made of the flag set, one field per
// setting, so that the TOML decoder's strict mode reports each unknown key
// with its line.
func parseAgentFile(path string, data []byte, flags *pflag.FlagSet) ([]fileValue, error) {
	var fields []reflect.StructField
	var names []string
	anyType := reflect.TypeFor[any]()
	flags.VisitAll(func(f *pflag.Flag) {
		if !isSetting(f) || f.Name == configFlag {
			return
		}
		fields = append(fields, reflect.StructField{
			Name: "F" + strconv.Itoa(len(fields)),
			Type: anyType,
			Tag:  reflect.StructTag(`toml:"` + f.Name + `"`),
		})
		names = append(names, f.Name)
	})
	doc := reflect.New(reflect.StructOf(fields))
	dec := toml.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(doc.Interface()); err != nil {
		return nil, fileError(path, err)
	}
	var out []fileValue
	for i, name := range names {
		v := doc.Elem().Field(i).Interface()
		if v == nil {
			continue
		}
		vals, err := tomlStrings(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, name, err)
		}
		out = append(out, fileValue{name: name, values: vals})
	}
	return out, nil
}

// fileError puts the file and line in front of a decoding error, the way
// compilers do, so that editors can jump to it.
func fileError(path string, err error) error {
	var unknown *toml.StrictMissingError
	if errors.As(err, &unknown) {
		errs := make([]error, 0, len(unknown.Errors))
		for _, e := range unknown.Errors {
			line, _ := e.Position()
			key := strings.Join(e.Key(), ".")
			hint := "`hatarget agent --help` lists the settings"
			if key == configFlag {
				hint = "it can only be set with --config or " + envName(configFlag)
			}
			errs = append(errs, fmt.Errorf("%s:%d: unknown key %q: %s", path, line, key, hint))
		}
		return errors.Join(errs...)
	}
	var syntax *toml.DecodeError
	if errors.As(err, &syntax) {
		line, col := syntax.Position()
		return fmt.Errorf("%s:%d:%d: %s", path, line, col, strings.TrimPrefix(syntax.Error(), "toml: "))
	}
	return fmt.Errorf("%s: %w", path, err)
}

// tomlStrings turns a decoded TOML value into the strings a flag parses.
func tomlStrings(v any) ([]string, error) {
	list, ok := v.([]any)
	if !ok {
		s, err := tomlScalar(v)
		return []string{s}, err
	}
	out := make([]string, 0, len(list))
	for _, e := range list {
		s, err := tomlScalar(e)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func tomlScalar(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64), nil
	case bool:
		return strconv.FormatBool(v), nil
	}
	return "", errors.New("want a string, a number, a boolean or a list of them")
}

// splitList reads a list setting from the environment: comma-separated,
// as a variable holds one string.
func splitList(v string) []string {
	var out []string
	for e := range strings.SplitSeq(v, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// setFlag sets a flag as if given on the command line, a list flag to
// exactly vals. The flag is not marked Changed: Changed keeps meaning "on
// the command line", which the precedence and the reload rely on.
func setFlag(f *pflag.Flag, vals []string) error {
	var err error
	if list, ok := f.Value.(pflag.SliceValue); ok {
		err = list.Replace(vals)
	} else if len(vals) != 1 {
		return errors.New("takes one value, not a list")
	} else {
		err = f.Value.Set(vals[0])
	}
	if err != nil {
		return fmt.Errorf("not a valid %s: %w", f.Value.Type(), err)
	}
	return nil
}

// flagValues is the inverse of setFlag.
func flagValues(f *pflag.Flag) []string {
	if list, ok := f.Value.(pflag.SliceValue); ok {
		return list.GetSlice()
	}
	return []string{f.Value.String()}
}

// writeDefaultConfig writes the default configuration file: every setting
// of the agent, documented and commented out at its default. The package
// ships it as /etc/hatarget/agent.toml.
func writeDefaultConfig(w io.Writer) error {
	var b strings.Builder
	b.WriteString(`# Settings of ` + "`hatarget agent`" + `, read from /etc/hatarget/agent.toml (TOML)
# or from the file given with --config or ` + envName(configFlag) + `.
#
# Every setting is also a flag of the agent and an environment variable
# ` + envPrefix + `<SETTING> (dashes become underscores, lists are comma-separated).
# Flags win over the environment, the environment over this file, this file
# over the defaults. Unknown keys are an error. Every setting below is
# commented out at its default.
#
# After a change, ` + "`systemctl reload hatarget`" + ` applies ` + strings.Join(liveSettingNames(), ", ") + ` at once
# and logs which other changed settings wait for a restart. Restart one node
# at a time, as in an upgrade (deploy/README.md).
#
# The file is 0640 root:hatarget: it may hold the API token.
`)
	var err error
	agentFlags().VisitAll(func(f *pflag.Flag) {
		if err != nil || !isSetting(f) || f.Hidden || f.Name == configFlag {
			return
		}
		var line []byte
		line, err = toml.Marshal(map[string]any{f.Name: tomlDefault(f)})
		if err != nil {
			err = fmt.Errorf("default of --%s: %w", f.Name, err)
			return
		}
		b.WriteString("\n")
		usage := f.Usage
		if _, live := liveSettings[f.Name]; live {
			usage += "; applied by a reload"
		}
		writeComment(&b, usage)
		fmt.Fprintf(&b, "# (flag --%s, environment %s)\n#%s", f.Name, envName(f.Name), line)
	})
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, b.String())
	return err
}

// tomlDefault is a flag's default as the TOML value that sets it.
func tomlDefault(f *pflag.Flag) any {
	if list, ok := f.Value.(pflag.SliceValue); ok {
		return list.GetSlice()
	}
	t := f.Value.Type()
	if strings.HasPrefix(t, "int") || strings.HasPrefix(t, "uint") {
		if n, err := strconv.ParseInt(f.DefValue, 10, 64); err == nil {
			return n
		}
	}
	if b, err := strconv.ParseBool(f.DefValue); t == "bool" && err == nil {
		return b
	}
	return f.DefValue
}

// writeComment wraps text into comment lines of at most 78 columns.
func writeComment(b *strings.Builder, text string) {
	col := 0
	for _, word := range strings.Fields(text) {
		if col > 0 && col+1+len(word) > 78 {
			b.WriteString("\n")
			col = 0
		}
		if col == 0 {
			b.WriteString("#")
			col = 1
		}
		b.WriteString(" " + word)
		col += 1 + len(word)
	}
	b.WriteString("\n")
}
