package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hatarget/hatarget/cluster/api"
)

func newImportCommand() *cobra.Command {
	cmd := groupCommand("import", "Load configuration from another format into the cluster",
		`  hatarget import scst /etc/scst.conf`)
	addCtlFlags(cmd)
	cmd.AddCommand(newImportSCSTCommand())
	return cmd
}

func newImportSCSTCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "scst FILE",
		Short: "Apply an scst.conf to the cluster as one atomic change",
		Long: `Import sends an SCST configuration file (or stdin for "-") to the cluster,
which applies all of it as one Raft entry: either every device and target in
it is created, or, on any error, nothing is. Errors name the file, line and
column. Settings hatarget does not support are reported as warnings.`,
		Example: `  hatarget import scst /etc/scst.conf
  ssh old-san cat /etc/scst.conf | hatarget import scst -
  hatarget import scst scst.conf -o json`,
		Args: cobra.ExactArgs(1),
		RunE: ctlRun(func(ctx context.Context, c *ctl, args []string) error {
			conf, err := readInput(c, args[0])
			if err != nil {
				return err
			}
			r, err := importSCST(ctx, c.client, importName(args[0]), conf)
			if err != nil {
				return err
			}
			return c.show(r, func(w io.Writer) { printImport(w, r) })
		}),
	}
}

// importSCST calls the route directly because the client's ImportSCST
// cannot pass the file name the server quotes in line:col errors.
func importSCST(ctx context.Context, c *api.Client, name string, conf []byte) (*api.ImportResult, error) {
	var r api.ImportResult
	path := "/v1/import/scst?file=" + url.QueryEscape(name)
	return &r, c.Do(ctx, http.MethodPost, path, conf, &r)
}

// importName is the file name errors should quote: the base name, since
// the server has no business knowing the client's directories.
func importName(file string) string {
	if file == "-" {
		return "stdin"
	}
	return filepath.Base(file)
}

func printImport(w io.Writer, r *api.ImportResult) {
	fmt.Fprintf(w, "created %s; %s\n", namedCount(r.Devices, "LUN"), namedCount(r.Targets, "target"))
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
}

// namedCount says "2 LUNs: disk01, disk02" or "0 targets".
func namedCount(names []string, noun string) string {
	s := plural(len(names), noun)
	if len(names) > 0 {
		s += ": " + strings.Join(names, ", ")
	}
	return s
}

func newExportCommand() *cobra.Command {
	cmd := groupCommand("export", "Write the cluster's configuration in another format",
		`  hatarget export scst > scst.conf`)
	addCtlFlags(cmd)
	cmd.AddCommand(newExportSCSTCommand())
	return cmd
}

func newExportSCSTCommand() *cobra.Command {
	var showSecrets bool
	var out string
	cmd := &cobra.Command{
		Use:   "scst",
		Short: "Print the configuration as an scst.conf",
		Long: `Export prints the replicated configuration as an scst.conf, which
"hatarget import scst" and "hatarget serve --config" read back. CHAP secrets
are left out unless --show-secrets. --out writes a file readable only by its
owner, whole or not at all. The output is scst.conf text, so -o json does
not apply.`,
		Example: `  hatarget export scst
  hatarget export scst --show-secrets --out /root/scst.conf.backup`,
		Args: cobra.NoArgs,
		RunE: ctlRun(func(ctx context.Context, c *ctl, _ []string) error {
			if c.format == outputJSON {
				return fmt.Errorf("export scst prints scst.conf text; -o json does not apply")
			}
			conf, err := c.client.ExportSCST(ctx, showSecrets)
			if err != nil {
				return err
			}
			return writeOutput(c, out, conf)
		}),
	}
	cmd.Flags().BoolVar(&showSecrets, "show-secrets", false, "include CHAP secrets")
	cmd.Flags().StringVar(&out, "out", "-", `file to write ("-" for stdout)`)
	return cmd
}
