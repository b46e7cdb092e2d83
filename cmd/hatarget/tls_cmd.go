package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hatarget/hatarget/cluster/pki"
)

// The tls commands make the cluster's certificates. They talk to no node:
// the CA is a pair of files, best kept on an operator's machine rather
// than on the nodes, whose certificates it signs.

// maxDays keeps --days within what a time.Duration holds, with room.
const maxDays = 100 * 365

func newTLSCommand() *cobra.Command {
	cmd := groupCommand("tls", "Make the cluster CA and the certificates of nodes and operators",
		`  hatarget tls ca create --dir ca
  hatarget tls cert create --ca ca --node n1 --addr 10.0.0.1 --out n1-tls
  hatarget tls cert create --ca ca --client alice --out ~/.hatarget`)
	cmd.Long = `TLS commands make the certificates that secure the cluster: one CA per
cluster, a certificate per node (which nodes present to each other, and on
the management API), and client certificates for operators.

A certificate names its holder in a URI, hatarget://node/NAME or
hatarget://operator/NAME; nodes accept a peer only if its certificate is
of the cluster CA and names a current member. Keys are ECDSA P-256, written
0600 in directories created 0700; see docs/tls.md.`
	cmd.PersistentFlags().StringP("output", "o", string(outputTable), "output format: table or json")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(
		[]string{string(outputTable), string(outputJSON)}, cobra.ShellCompDirectiveNoFileComp))
	ca := groupCommand("ca", "Make the cluster CA", "  hatarget tls ca create --dir ca")
	ca.AddCommand(newTLSCACreateCommand())
	cert := groupCommand("cert", "Issue the certificate of a node or an operator",
		"  hatarget tls cert create --ca ca --node n1 --addr 10.0.0.1 --out n1-tls")
	cert.AddCommand(newTLSCertCreateCommand())
	cmd.AddCommand(ca, cert)
	return cmd
}

// tlsOptions are the flags every tls command has.
type tlsOptions struct {
	days  int
	force bool
}

func (o *tlsOptions) addFlags(cmd *cobra.Command, defaultDays int, force string) {
	cmd.Flags().IntVar(&o.days, "days", defaultDays, "days the certificate is valid")
	cmd.Flags().BoolVar(&o.force, "force", false, force)
}

func (o *tlsOptions) validity() (time.Duration, error) {
	if o.days < 1 || o.days > maxDays {
		return 0, fmt.Errorf("--days %d: want 1 to %d", o.days, maxDays)
	}
	return time.Duration(o.days) * 24 * time.Hour, nil
}

// tlsWritten is what a tls command wrote: its -o json answer.
type tlsWritten struct {
	Kind      string    `json:"kind"` // ca, node or operator
	Name      string    `json:"name,omitempty"`
	Identity  string    `json:"identity,omitempty"`
	Subject   string    `json:"subject"`
	Addresses []string  `json:"addresses,omitempty"`
	NotAfter  time.Time `json:"not_after"`
	CACert    string    `json:"ca_cert"`
	Cert      string    `json:"cert,omitempty"`
	Key       string    `json:"key"`
}

// newTLSOutput is a ctl without a client, so that the tls commands print
// through ctl.show like every other command.
func newTLSOutput(cmd *cobra.Command) (*ctl, error) {
	output, _ := cmd.Flags().GetString("output")
	format, err := parseOutput(output)
	if err != nil {
		return nil, err
	}
	return &ctl{format: format, out: cmd.OutOrStdout()}, nil
}

func newTLSCACreateCommand() *cobra.Command {
	var o tlsOptions
	var dir string
	cmd := &cobra.Command{
		Use:   "create --dir DIR [--days N] [--force]",
		Short: "Make a new cluster CA: DIR/ca.crt and DIR/ca.key",
		Long: `Create makes a self-signed CA for one cluster: DIR/ca.crt, the certificate
every node and operator trusts, and DIR/ca.key, its private key (0600; DIR
is created 0700). Keep the key off the nodes, and a copy of it offline:
whoever holds it can issue certificates every node accepts, and without it
no certificate can be issued or renewed.

Create refuses a DIR that already holds a CA: replacing it would stop every
node from trusting the certificates the old one issued. --force replaces
it.`,
		Example: `  hatarget tls ca create --dir ca
  hatarget tls ca create --dir /secure/hatarget-ca --days 7300`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newTLSOutput(cmd)
			if err != nil {
				return err
			}
			validity, err := o.validity()
			if err != nil {
				return err
			}
			ca, err := pki.CreateCA(dir, pki.CAOptions{Validity: validity}, o.force)
			if err != nil {
				return err
			}
			out := tlsWritten{Kind: "ca", Subject: ca.Cert.Subject.CommonName, NotAfter: ca.Cert.NotAfter.UTC(),
				CACert: filepath.Join(dir, pki.CACertFile), Key: filepath.Join(dir, pki.CAKeyFile)}
			return c.show(out, func(w io.Writer) { printCACreated(w, dir, out) })
		},
	}
	o.addFlags(cmd, int(pki.DefaultCAValidity/(24*time.Hour)), "replace the CA DIR holds; certificates it issued are no longer trusted")
	cmd.Flags().StringVar(&dir, "dir", "", "directory to write the CA into (created 0700)")
	_ = cmd.MarkFlagRequired("dir")
	_ = cmd.MarkFlagDirname("dir")
	return cmd
}

func printCACreated(w io.Writer, dir string, out tlsWritten) {
	fmt.Fprintf(w, "created the cluster CA %q, valid until %s\n", out.Subject, out.NotAfter.Format(time.DateOnly))
	fmt.Fprintf(w, "  %s\tCA certificate: give it to every node (--tls-ca) and operator (--ca-cert)\n", out.CACert)
	fmt.Fprintf(w, "  %s\tCA key: issues certificates; keep it off the nodes\n", out.Key)
	fmt.Fprintf(w, "next, for each node: hatarget tls cert create --ca %s --node NAME --addr IP --out DIR\n", dir)
}

// certRequest is what tls cert create is asked for.
type certRequest struct {
	node, client string
	addrs        []string
}

// request checks the flags and turns them into a pki request.
func (r certRequest) request(validity time.Duration) (pki.CertRequest, error) {
	if r.client != "" {
		if len(r.addrs) > 0 {
			return pki.CertRequest{}, errors.New("--addr is for --node: an operator's certificate names no address")
		}
		if err := pki.ValidName(r.client); err != nil {
			return pki.CertRequest{}, fmt.Errorf("--client: %w", err)
		}
		return pki.CertRequest{Identity: pki.Operator(r.client), Validity: validity}, nil
	}
	if err := pki.ValidName(r.node); err != nil {
		return pki.CertRequest{}, fmt.Errorf("--node: %w", err)
	}
	if len(r.addrs) == 0 {
		return pki.CertRequest{}, fmt.Errorf("--node %s needs --addr: the IP address other nodes and operators reach it at (its --bind), so that HTTPS clients can verify it", r.node)
	}
	ips, err := parseIPs(r.addrs)
	if err != nil {
		return pki.CertRequest{}, err
	}
	return pki.CertRequest{Identity: pki.Node(r.node), IPs: ips, Validity: validity}, nil
}

func parseIPs(addrs []string) ([]net.IP, error) {
	ips := make([]net.IP, 0, len(addrs))
	for _, a := range addrs {
		ip := net.ParseIP(strings.Trim(a, "[]"))
		if ip == nil {
			return nil, fmt.Errorf("--addr %q is not an IP address: nodes are reached by address, and the node's name is in the certificate already", a)
		}
		ips = append(ips, ip)
	}
	return ips, nil
}

func newTLSCertCreateCommand() *cobra.Command {
	var o tlsOptions
	var r certRequest
	var caDir, outDir string
	cmd := &cobra.Command{
		Use:   "create --ca DIR (--node NAME --addr IP... | --client NAME) --out DIR [--days N] [--force]",
		Short: "Issue the certificate of a node or an operator",
		Long: `Create issues a certificate of the CA in --ca and a new key, and writes
them into --out (created 0700) as NAME.crt and NAME.key (0600), beside a
copy of the CA certificate, ca.crt.

--node NAME makes a node's certificate, which the node presents to other
nodes and on its management API: NAME must be the node's --name, and
--addr its IP addresses (its --bind), so that HTTPS clients verify it by
the address they dial. --client NAME makes an operator's client
certificate, which nodes accept on the management API only.

Create refuses to overwrite the files of an existing certificate, and a
ca.crt of another CA; --force overwrites them. To renew a node's
certificate, issue it again with --force into the node's directory and
send the agent SIGHUP: new connections use the new certificate, running
ones and iSCSI sessions carry on.`,
		Example: `  hatarget tls cert create --ca ca --node n1 --addr 10.0.0.1 --out /etc/hatarget/tls
  hatarget tls cert create --ca ca --node n2 --addr 10.0.0.2 --addr fd00::2 --out n2-tls
  hatarget tls cert create --ca ca --client alice --out ~/.hatarget --days 90
  # renewal, in place
  hatarget tls cert create --ca ca --node n1 --addr 10.0.0.1 --out /etc/hatarget/tls --force && systemctl reload hatarget`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := newTLSOutput(cmd)
			if err != nil {
				return err
			}
			validity, err := o.validity()
			if err != nil {
				return err
			}
			req, err := r.request(validity)
			if err != nil {
				return err
			}
			out, err := issueCert(caDir, outDir, req, o.force)
			if err != nil {
				return err
			}
			return c.show(out, func(w io.Writer) { printCertIssued(w, out) })
		},
	}
	o.addFlags(cmd, int(pki.DefaultCertValidity/(24*time.Hour)), "overwrite the certificate's files, and a ca.crt of another CA, in the --out directory")
	f := cmd.Flags()
	f.StringVar(&caDir, "ca", "", "directory of the CA (hatarget tls ca create --dir)")
	f.StringVar(&r.node, "node", "", "issue the certificate of the node NAME (its --name)")
	f.StringVar(&r.client, "client", "", "issue the client certificate of the operator NAME")
	f.StringArrayVar(&r.addrs, "addr", nil, "IP address of the node (its --bind), repeatable")
	f.StringVar(&outDir, "out", "", "directory to write the certificate, its key and the CA certificate into (created 0700)")
	_ = cmd.MarkFlagRequired("ca")
	_ = cmd.MarkFlagRequired("out")
	_ = cmd.MarkFlagDirname("ca")
	_ = cmd.MarkFlagDirname("out")
	cmd.MarkFlagsOneRequired("node", "client")
	cmd.MarkFlagsMutuallyExclusive("node", "client")
	noFiles := cobra.FixedCompletions(nil, cobra.ShellCompDirectiveNoFileComp)
	for _, name := range []string{"node", "client", "addr"} {
		_ = cmd.RegisterFlagCompletionFunc(name, noFiles)
	}
	return cmd
}

// issueCert issues req with the CA in caDir and writes it into outDir.
func issueCert(caDir, outDir string, req pki.CertRequest, force bool) (tlsWritten, error) {
	ca, err := pki.LoadCA(caDir)
	if err != nil {
		return tlsWritten{}, err
	}
	iss, err := ca.Issue(req)
	if err != nil {
		return tlsWritten{}, err
	}
	files, err := iss.Write(outDir, force)
	if err != nil {
		return tlsWritten{}, err
	}
	out := tlsWritten{
		Kind: string(req.Identity.Role), Name: req.Identity.Name, Identity: req.Identity.URI().String(),
		Subject: iss.Cert.Subject.CommonName, NotAfter: iss.Cert.NotAfter.UTC(),
		CACert: files.CA, Cert: files.Cert, Key: files.Key,
	}
	for _, ip := range req.IPs {
		out.Addresses = append(out.Addresses, ip.String())
	}
	return out, nil
}

func printCertIssued(w io.Writer, out tlsWritten) {
	fmt.Fprintf(w, "issued the certificate of %s %s (%s)", out.Kind, out.Name, out.Identity)
	if len(out.Addresses) > 0 {
		fmt.Fprintf(w, " for %s", strings.Join(out.Addresses, ", "))
	}
	fmt.Fprintf(w, ", valid until %s\n", out.NotAfter.Format(time.DateOnly))
	if out.Kind == string(pki.RoleNode) {
		fmt.Fprintf(w, "  %s\tCA certificate\tagent --tls-ca\n", out.CACert)
		fmt.Fprintf(w, "  %s\tnode certificate\tagent --tls-cert\n", out.Cert)
		fmt.Fprintf(w, "  %s\tprivate key (0600)\tagent --tls-key\n", out.Key)
		return
	}
	fmt.Fprintf(w, "  %s\tCA certificate\t--ca-cert or HATARGET_CACERT\n", out.CACert)
	fmt.Fprintf(w, "  %s\tclient certificate\tfor the management API\n", out.Cert)
	fmt.Fprintf(w, "  %s\tprivate key (0600)\t\n", out.Key)
}
