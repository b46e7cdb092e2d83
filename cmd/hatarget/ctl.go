package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/cluster/pki"
	"github.com/hatarget/hatarget/target/durable"
)

// The control commands (cluster, target, lun, import, export) are thin
// clients of one node's management API; any node accepts any call.

const (
	envAddr   = "HATARGET_ADDR"
	envToken  = "HATARGET_TOKEN"
	envCACert = "HATARGET_CACERT"
	envCert   = "HATARGET_CLIENT_CERT"
	envKey    = "HATARGET_CLIENT_KEY"
	// requestTimeout bounds a whole command, so that a node that lost its
	// quorum cannot hang a script.
	requestTimeout = 30 * time.Second
	// completionTimeout is short because a shell waits for completions.
	completionTimeout = 3 * time.Second
)

var defaultCtlAddr = "127.0.0.1:" + strconv.Itoa(api.DefaultAPIPort)

type outputFormat string

const (
	outputTable outputFormat = "table"
	outputJSON  outputFormat = "json"
)

func parseOutput(s string) (outputFormat, error) {
	switch f := outputFormat(strings.ToLower(strings.TrimSpace(s))); f {
	case outputTable, outputJSON:
		return f, nil
	default:
		return "", fmt.Errorf("--output %q: want table or json", s)
	}
}

// addCtlFlags puts the connection and output flags on a control command.
// They are persistent so that every subcommand takes them, and they are
// not on the root because serve and bench talk to no API.
func addCtlFlags(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.String("addr", defaultCtlAddr, "management API of any node, HOST[:PORT] or URL (env "+envAddr+")")
	f.String("token", "", "bearer token of the API (env "+envToken+")")
	f.String("ca-cert", "", "cluster CA certificate (PEM): talk HTTPS to a node started with --tls-ca, verifying it (env "+envCACert+")")
	f.String("cert", "", "operator client certificate (PEM) from hatarget tls cert create --client, with --key (env "+envCert+")")
	f.String("key", "", "private key of --cert (env "+envKey+")")
	f.StringP("output", "o", string(outputTable), "output format: table or json")
	noFiles := cobra.FixedCompletions(nil, cobra.ShellCompDirectiveNoFileComp)
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(
		[]string{string(outputTable), string(outputJSON)}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("addr", noFiles)
	_ = cmd.RegisterFlagCompletionFunc("token", noFiles)
}

// ctl is what a control command needs: a client and where and how to print.
type ctl struct {
	client *api.Client
	format outputFormat
	out    io.Writer
	in     io.Reader
}

func newCtl(cmd *cobra.Command) (*ctl, error) {
	output, _ := cmd.Flags().GetString("output")
	format, err := parseOutput(output)
	if err != nil {
		return nil, err
	}
	addr := flagOrEnv(cmd, "addr", envAddr)
	if strings.TrimSpace(addr) == "" {
		return nil, fmt.Errorf("--addr is empty: give HOST[:PORT] of a node's API (default %s)", defaultCtlAddr)
	}
	client := api.NewClient(addr, flagOrEnv(cmd, "token", envToken))
	if err := ctlTLS(cmd, client); err != nil {
		return nil, err
	}
	return &ctl{
		client: client,
		format: format,
		out:    cmd.OutOrStdout(),
		in:     cmd.InOrStdin(),
	}, nil
}

// ctlTLS switches the client to HTTPS when --ca-cert is given. The CA is
// required for it: trusting any certificate would hand the token to
// whoever answers.
func ctlTLS(cmd *cobra.Command, client *api.Client) error {
	ca := flagOrEnv(cmd, "ca-cert", envCACert)
	cert, key := flagOrEnv(cmd, "cert", envCert), flagOrEnv(cmd, "key", envKey)
	if ca == "" {
		if cert != "" || key != "" {
			return errors.New("--cert and --key need --ca-cert: the CA that verifies the node")
		}
		return nil
	}
	roots, err := pki.LoadRoots(ca)
	if err != nil {
		return fmt.Errorf("--ca-cert: %w", err)
	}
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	switch {
	case cert != "" && key != "":
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return fmt.Errorf("--cert/--key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	case cert != "" || key != "":
		return errors.New("--cert and --key go together")
	}
	client.UseTLS(cfg)
	return nil
}

// flagOrEnv returns the flag when it was given, else the environment
// variable when set, else the flag's default. The environment is not made
// the flag's default so that --help never prints a token.
func flagOrEnv(cmd *cobra.Command, name, env string) string {
	f := cmd.Flags().Lookup(name)
	if f == nil {
		return ""
	}
	if !f.Changed {
		if v, ok := os.LookupEnv(env); ok && v != "" {
			return v
		}
	}
	return f.Value.String()
}

// ctlFunc is the body of a control command; ctx carries the request timeout.
type ctlFunc func(ctx context.Context, c *ctl, args []string) error

// ctlRun turns a ctlFunc into a RunE: it builds the client from the flags,
// bounds the command by requestTimeout and rewrites transport errors so
// that they say what to check.
func ctlRun(fn ctlFunc) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := newCtl(cmd)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
		defer cancel()
		return c.explain(fn(ctx, c, args))
	}
}

// explain rewrites an error for people. API errors are returned bare:
// their Message is already written for people and needs no prefix.
func (c *ctl) explain(err error) error {
	var apiErr *api.Error
	var urlErr *url.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &apiErr):
		return apiErr
	case errors.As(err, &urlErr) && urlErr.Op == "parse":
		return fmt.Errorf("--addr %q is not HOST[:PORT] or a URL: %v", c.client.Base, urlErr.Err)
	case errors.Is(err, context.Canceled):
		return errors.New("interrupted")
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &urlErr) && urlErr.Timeout():
		return fmt.Errorf("no answer from %s within %s (check --addr or %s; a node without quorum cannot commit)",
			c.client.Base, requestTimeout, envAddr)
	case errors.As(err, &urlErr) && errors.Is(err, io.EOF) && strings.HasPrefix(c.client.Base, "http://"):
		// A node with TLS closes a plain HTTP connection without a word.
		return fmt.Errorf("%s closed the connection: a node started with --tls-ca answers HTTPS only; pass --ca-cert or set %s",
			c.client.Base, envCACert)
	case errors.As(err, &urlErr):
		return fmt.Errorf("cannot reach the hatarget API at %s: %v (is the agent running there? set --addr or %s)",
			c.client.Base, urlErr.Err, envAddr)
	}
	return err
}

// show prints v as JSON with -o json, else through table. Every command
// prints through here so that -o behaves the same everywhere.
func (c *ctl) show(v any, table func(w io.Writer)) error {
	if c.format == outputJSON {
		return writeJSON(c.out, v)
	}
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

// writeJSON indents by two spaces and ends with a newline, for jq and eyes.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// completeFirstArg completes the first argument with the names list asks
// the API for; later arguments and failures complete nothing, so a
// completion never prints an error into the shell.
func completeFirstArg(list func(ctx context.Context, c *api.Client) ([]string, error)) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, err := newCtl(cmd)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
		defer cancel()
		names, err := list(ctx, c.client)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

func targetNames(ctx context.Context, c *api.Client) ([]string, error) {
	ts, err := c.Targets(ctx)
	names := make([]string, 0, len(ts))
	for _, t := range ts {
		names = append(names, t.IQN)
	}
	return names, err
}

func lunNames(ctx context.Context, c *api.Client) ([]string, error) {
	ls, err := c.LUNs(ctx)
	names := make([]string, 0, len(ls))
	for _, l := range ls {
		names = append(names, l.Name)
	}
	return names, err
}

// groupCommand is a command that only holds subcommands. It runs, so that
// a mistyped subcommand is an error (exit 1) rather than a help page that
// a script would take for success: cobra checks that only for the root.
func groupCommand(use, short, example string) *cobra.Command {
	return &cobra.Command{
		Use: use, Short: short, Example: example,
		Args: cobra.ArbitraryArgs, RunE: runGroup,
		SuggestionsMinimumDistance: 2, // cobra's default, which it sets only on the root
	}
}

func runGroup(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return errors.New(msg)
}

// sizeUnits are powers of 1024, as disk sizes are counted in sectors.
var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "kib": 1 << 10,
	"m": 1 << 20, "mib": 1 << 20,
	"g": 1 << 30, "gib": 1 << 30,
	"t": 1 << 40, "tib": 1 << 40,
	"p": 1 << 50, "pib": 1 << 50,
}

// parseByteSize reads a size like 10G, 512MiB or 1073741824. KB, MB and GB
// are refused: they would be read as powers of 1000 by some and 1024 by
// others, and a disk size must not be ambiguous.
func parseByteSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if strings.ContainsAny(t, ".,") {
		return 0, fmt.Errorf("size %q: give a whole number, e.g. 1536M instead of 1.5G", s)
	}
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '-' && r != '+' })
	if i < 0 {
		i = len(t)
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	mult, ok := sizeUnits[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (K, M, G, T, P or KiB, MiB, GiB, TiB, PiB; powers of 1024)", s, unit)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	switch {
	case errors.Is(err, strconv.ErrRange):
		return 0, fmt.Errorf("size %q is too large", s)
	case err != nil:
		return 0, fmt.Errorf("size %q is not a size like 10G, 512MiB or 1073741824", s)
	case n <= 0:
		return 0, fmt.Errorf("size %q must be above zero", s)
	case n > math.MaxInt64/mult:
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
}

// humanSize prints a byte count in the binary units parseByteSize reads.
func humanSize(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	s := strings.TrimSuffix(strconv.FormatFloat(v, 'f', 1, 64), ".0")
	return s + " " + units[i:i+1] + "iB"
}

// readInput reads a file, or stdin for "-".
func readInput(c *ctl, name string) ([]byte, error) {
	if name == "-" {
		b, err := io.ReadAll(c.in)
		if err != nil {
			return nil, fmt.Errorf("reading stdin: %w", err)
		}
		return b, nil
	}
	return os.ReadFile(name) // its error names the file
}

// writeOutput writes data to a file, or to the command's output for "-".
// A file is written under a temporary name and renamed, so that an
// interrupted command never leaves half a snapshot or config behind, and
// with mode 0600 because it may hold CHAP secrets.
func writeOutput(c *ctl, name string, data []byte) error {
	if name == "-" {
		_, err := c.out.Write(data)
		return err
	}
	return writeFileAtomic(name, data)
}

func writeFileAtomic(name string, data []byte) error {
	if err := durable.WriteFile(name, data); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return nil
}

// yesNo prints a flag the way the tables do.
func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// dash stands in for an empty table cell, which would shift the columns
// for anyone reading the table with awk.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// plural says "1 LUN" or "2 LUNs".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}
