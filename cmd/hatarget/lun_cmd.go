package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm"
)

func newLUNCommand() *cobra.Command {
	cmd := groupCommand("lun", "Create, resize and delete LUNs",
		`  hatarget lun create iqn.2025-01.com.example:db 0 --name db0 --size 100G
  hatarget lun list
  hatarget lun resize db0 200G`)
	cmd.Long = `LUN commands manage logical units: a named device (a file, a block device
or nullio) mapped at a LUN number of a target. A LUN is replicated unless
created with --shared: each of its replicas (three by default) keeps its own
copy, and replace-replica, force-promote and watch act on those copies. A
--shared LUN is one file or device every node reaches at the same path.`
	addCtlFlags(cmd)
	cmd.AddCommand(newLUNCreateCommand(), newLUNDeleteCommand(), newLUNResizeCommand(),
		newLUNListCommand(), newLUNShowCommand(), newLUNMoveCommand(),
		newLUNReplaceReplicaCommand(), newLUNForcePromoteCommand(), newLUNWatchCommand())
	return cmd
}

// lunCreateOptions are the flags of lun create, kept as text until
// validated so that errors can quote what was typed.
type lunCreateOptions struct {
	name, size, path, handler string
	nonOwner                  string
	blockSize                 uint32
	replicas                  int
	// replicasSet: --replicas was given, so 0 is a mistake rather than
	// the cluster's default.
	replicasSet                     bool
	shared, thin, readOnly, nvCache bool
}

func newLUNCreateCommand() *cobra.Command {
	var o lunCreateOptions
	cmd := &cobra.Command{
		Use:   "create IQN LUN --name NAME (--size SIZE [--replicas N] [--path FILE] | --shared --path FILE [--size SIZE])",
		Short: "Create a LUN and map it at a LUN number of a target",
		Long: `Create makes a device named NAME and maps it at LUN (0 to 16383) of target
IQN.

By default the LUN is replicated synchronously: --replicas N nodes (from 1
to the number of nodes; by default 3, or every node of a smaller cluster)
each keep their own copy of SIZE bytes, a sparse file under their
--storage-dir, or the file or device at --path on every replica (used as it
is when it exists and holds SIZE bytes). A write is acknowledged once every
in-sync copy has it, and any in-sync replica can take over when the owner
fails.

With --shared the LUN is not replicated: it is the file or device at --path,
which every node reaches (shared storage). With --size a sparse file of that
size is created there; without, the existing file or device is served at
its current size. The nullio handler stores nothing: it takes --size only.

SIZE is a number of bytes with an optional K, M, G, T or P suffix (or KiB,
MiB, GiB, TiB, PiB; powers of 1024), a multiple of the block size.`,
		Example: `  hatarget lun create iqn.2025-01.com.example:db 0 --name db0 --size 100G
  hatarget lun create iqn.2025-01.com.example:db 3 --name db3 --size 100G --replicas 2
  hatarget lun create iqn.2025-01.com.example:db 4 --name db4 --size 100G --path /dev/vg0/db4
  hatarget lun create iqn.2025-01.com.example:db 1 --name db1 --shared --path /srv/san/db1.img --size 2T --thin
  hatarget lun create iqn.2025-01.com.example:db 2 --name logs --shared --path /dev/mapper/san-logs --handler blockio --block-size 4096
  hatarget lun create iqn.2025-01.com.example:bench 0 --name null0 --size 1T --handler nullio`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: completeTargetArg,
	}
	cmd.RunE = ctlRun(func(ctx context.Context, c *ctl, args []string) error {
		o.replicasSet = cmd.Flags().Changed("replicas")
		req, err := o.request(args[0], args[1])
		if err != nil {
			return err
		}
		l, err := c.client.CreateLUN(ctx, req)
		if err != nil {
			return err
		}
		return c.show(l, func(w io.Writer) {
			fmt.Fprintf(w, "created LUN %s (%s) at %s LUN %d\n", l.Name, humanSize(l.Size), req.Target, req.LUN)
			if len(l.Replicas) > 0 {
				fmt.Fprintf(w, "Replicas:\t%s\n", replicaText(l.Replicas))
			}
		})
	})
	f := cmd.Flags()
	f.StringVar(&o.name, "name", "", "device name, unique in the cluster: letters, digits, '-', '_', '.' (required)")
	f.StringVar(&o.size, "size", "", "size of each replica's copy, or of a new --shared file, e.g. 100G")
	f.StringVar(&o.path, "path", "", "backing file or block device: on every replica (default: under each one's --storage-dir), or with --shared the one every node reaches")
	f.IntVar(&o.replicas, "replicas", 0, "nodes keeping a synchronous copy, 1 to the number of nodes (default 3, or every node of a smaller cluster)")
	f.BoolVar(&o.shared, "shared", false, "not replicated: the file or device at --path, which every node reaches (shared storage)")
	f.StringVar(&o.handler, "handler", "", "fileio, blockio or nullio (default fileio)")
	f.Uint32Var(&o.blockSize, "block-size", 0, "logical block size, 512 or 4096 (default 512)")
	f.BoolVar(&o.thin, "thin", false, "thin provisioned: UNMAP punches holes in the file")
	f.BoolVar(&o.readOnly, "read-only", false, "map the LUN read-only")
	f.BoolVar(&o.nvCache, "nv-cache", false, "treat the cache as non-volatile: SYNCHRONIZE CACHE and FUA return at once")
	f.StringVar(&o.nonOwner, "non-owner", "", "ALUA state of the paths through nodes other than the owner: active (active/non-optimized, the default) or standby (no media access)")
	_ = cmd.MarkFlagRequired("name")
	_ = cmd.RegisterFlagCompletionFunc("non-owner", cobra.FixedCompletions(
		[]string{api.NonOwnerActive, api.NonOwnerStandby}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("handler", cobra.FixedCompletions(
		[]string{fsm.HandlerFileIO, fsm.HandlerBlockIO, fsm.HandlerNullIO}, cobra.ShellCompDirectiveNoFileComp))
	_ = cmd.RegisterFlagCompletionFunc("block-size", cobra.FixedCompletions(
		[]string{"512", "4096"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// request validates the flags before anything is sent, so that a typo
// fails here with the flag's name rather than as a server error.
func (o lunCreateOptions) request(iqn, lunArg string) (api.CreateLUN, error) {
	lun, err := parseLUNNumber(lunArg)
	if err != nil {
		return api.CreateLUN{}, err
	}
	req := api.CreateLUN{
		Target: iqn, LUN: lun, Name: o.name, Path: o.path, Handler: o.handler, BlockSize: o.blockSize,
		Thin: o.thin, ReadOnly: o.readOnly, NVCache: o.nvCache, NonOwner: o.nonOwner, Replicas: o.replicas, Shared: o.shared,
	}
	if err := o.checkStorage(); err != nil {
		return api.CreateLUN{}, err
	}
	if o.nonOwner != "" && o.nonOwner != api.NonOwnerActive && o.nonOwner != api.NonOwnerStandby {
		return api.CreateLUN{}, fmt.Errorf("--non-owner %q: want %s or %s", o.nonOwner, api.NonOwnerActive, api.NonOwnerStandby)
	}
	if o.blockSize != 0 && o.blockSize != 512 && o.blockSize != 4096 {
		return api.CreateLUN{}, fmt.Errorf("--block-size %d: want 512 or 4096", o.blockSize)
	}
	if o.size != "" {
		if req.Size, err = lunSize(o.size, o.blockSize); err != nil {
			return api.CreateLUN{}, fmt.Errorf("--size: %w", err)
		}
	}
	return req, nil
}

// checkStorage checks that the flags describe one kind of storage:
// nullio, a replicated copy of --size on every replica, or a --shared
// file or device.
func (o lunCreateOptions) checkStorage() error {
	switch o.handler {
	case "", fsm.HandlerFileIO, fsm.HandlerBlockIO:
	case fsm.HandlerNullIO:
		if o.path != "" || o.shared || o.replicasSet {
			return fmt.Errorf("--handler nullio has no storage: leave out --path, --shared and --replicas")
		}
		if o.size == "" {
			return fmt.Errorf("--handler nullio needs --size")
		}
		return nil
	default:
		return fmt.Errorf("--handler %q: want fileio, blockio or nullio", o.handler)
	}
	switch {
	case o.shared && o.replicasSet:
		return fmt.Errorf("--shared storage is one copy every node reaches, not replicated: give --shared or --replicas, not both")
	case o.shared && o.path == "":
		return fmt.Errorf("--shared needs --path: the file or device every node reaches (with --size, a new sparse file there)")
	case o.shared:
		return nil
	case o.replicasSet && o.replicas < 1:
		return fmt.Errorf("--replicas %d: want 1 to the number of nodes (or --shared for storage every node reaches)", o.replicas)
	case o.size == "":
		return fmt.Errorf("give --size: every replica creates its copy at that size (or uses the file or device at --path); " +
			"for an existing file or device on storage every node reaches, add --shared")
	}
	return nil
}

// lunSize parses a size and checks it against the block size (512 when
// not given, which every supported block size is a multiple of).
func lunSize(s string, blockSize uint32) (int64, error) {
	size, err := parseByteSize(s)
	if err != nil {
		return 0, err
	}
	if blockSize == 0 {
		blockSize = 512
	}
	if size%int64(blockSize) != 0 {
		return 0, fmt.Errorf("size %s (%d bytes) is not a multiple of the block size %d", s, size, blockSize)
	}
	return size, nil
}

func parseLUNNumber(s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > fsm.MaxLUN {
		return 0, fmt.Errorf("LUN %q: want a number from 0 to %d", s, fsm.MaxLUN)
	}
	return n, nil
}

func newLUNDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete IQN LUN",
		Short: "Unmap a LUN from a target, deleting the device once unmapped everywhere",
		Long: `Delete unmaps LUN from target IQN. When the device is mapped nowhere else it
is deleted from the configuration; its backing file stays on disk.`,
		Example:           `  hatarget lun delete iqn.2025-01.com.example:db 1`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: completeTargetArg,
		RunE: ctlRun(func(ctx context.Context, c *ctl, args []string) error {
			lun, err := parseLUNNumber(args[1])
			if err != nil {
				return err
			}
			r, err := c.client.DeleteLUN(ctx, args[0], lun)
			if err != nil {
				return err
			}
			return c.show(r, func(w io.Writer) {
				fmt.Fprintf(w, "deleted LUN %d of %s (generation %d)\n", lun, args[0], r.Generation)
			})
		}),
	}
}

var completeLUNArg = completeFirstArg(lunNames)

func newLUNResizeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "resize NAME SIZE",
		Short: "Grow a LUN",
		Long: `Resize grows the device NAME to SIZE (see "lun create" for the format);
initiators see a capacity-changed unit attention. LUNs cannot shrink.`,
		Example: `  hatarget lun resize db0 200G
  hatarget lun resize db0 214748364800`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: completeLUNArg,
		RunE: ctlRun(func(ctx context.Context, c *ctl, args []string) error {
			size, err := parseByteSize(args[1])
			if err != nil {
				return err
			}
			l, err := c.client.ResizeLUN(ctx, args[0], size)
			if err != nil {
				return err
			}
			return c.show(l, func(w io.Writer) {
				fmt.Fprintf(w, "LUN %s is now %s (%d bytes)\n", l.Name, humanSize(l.Size), l.Size)
			})
		}),
	}
}

func newLUNListCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List LUNs with their size, storage and mappings",
		Example: `  hatarget lun list
  hatarget lun list -o json | jq -r '.[] | select(.mappings == []) | .name'`,
		Args: cobra.NoArgs,
		RunE: ctlRun(func(ctx context.Context, c *ctl, _ []string) error {
			ls, err := c.client.LUNs(ctx)
			if err != nil {
				return err
			}
			return c.show(ls, func(w io.Writer) { printLUNs(w, ls) })
		}),
	}
}

func printLUNs(w io.Writer, ls []api.LUN) {
	fmt.Fprintln(w, "NAME\tSIZE\tHANDLER\tSTORAGE\tPATH\tMAPPED AT")
	for _, l := range ls {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", l.Name, humanSize(l.Size), l.Handler, storageText(l), dash(l.Path), dash(mappingList(l.Mappings)))
	}
}

// storageText says where a LUN's blocks are: how many replicas and how
// many of them are in sync, shared storage, or none (nullio).
func storageText(l api.LUN) string {
	switch {
	case len(l.Replicas) > 0:
		inSync := 0
		for _, r := range l.Replicas {
			if r.State == api.ReplicaInSync {
				inSync++
			}
		}
		return fmt.Sprintf("%d replicas, %d in sync", len(l.Replicas), inSync)
	case l.Handler == fsm.HandlerNullIO:
		return "-"
	}
	return "shared"
}

// mappingList prints mappings as "iqn:lun"; a group mapping as
// "iqn/group:lun", because group LUNs are seen only by the group's initiators.
func mappingList(ms []api.Mapping) string {
	parts := make([]string, 0, len(ms))
	for _, m := range ms {
		parts = append(parts, mappingString(m))
	}
	return strings.Join(parts, ", ")
}

func mappingString(m api.Mapping) string {
	s := m.Target
	if m.Group != "" {
		s += "/" + m.Group
	}
	s += ":" + strconv.FormatUint(m.LUN, 10)
	if m.ReadOnly {
		s += " (read-only)"
	}
	return s
}

func newLUNShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "show NAME",
		Short:             "Show one LUN in detail",
		Example:           `  hatarget lun show db0`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeLUNArg,
		RunE: ctlRun(func(ctx context.Context, c *ctl, args []string) error {
			l, err := c.client.LUN(ctx, args[0])
			if err != nil {
				return err
			}
			return c.show(l, func(w io.Writer) { printLUN(w, l) })
		}),
	}
}

func printLUN(w io.Writer, l *api.LUN) {
	fmt.Fprintf(w, "Name:\t%s\n", l.Name)
	fmt.Fprintf(w, "Handler:\t%s\n", l.Handler)
	fmt.Fprintf(w, "Path:\t%s\n", dash(l.Path))
	fmt.Fprintf(w, "Size:\t%s (%d bytes)\n", humanSize(l.Size), l.Size)
	fmt.Fprintf(w, "Block size:\t%d\n", l.BlockSize)
	fmt.Fprintf(w, "Read-only:\t%s\n", yesNo(l.ReadOnly))
	fmt.Fprintf(w, "Thin:\t%s\n", yesNo(l.Thin))
	fmt.Fprintf(w, "NV cache:\t%s\n", yesNo(l.NVCache))
	fmt.Fprintf(w, "Write-through:\t%s\n", yesNo(l.WriteThrough))
	fmt.Fprintf(w, "Removable:\t%s\n", yesNo(l.Removable))
	fmt.Fprintf(w, "Serial:\t%s\n", dash(l.Serial))
	fmt.Fprintf(w, "NAA:\t%s\n", dash(l.NAA))
	fmt.Fprintf(w, "Owner:\t%s\n", ownerText(l))
	fmt.Fprintf(w, "Non-owner:\t%s\n", dash(l.NonOwner))
	fmt.Fprintf(w, "Replicas:\t%s\n", replicaText(l.Replicas))
	if l.ResyncUnavailable != "" {
		fmt.Fprintf(w, "Resync:\t%s\n", l.ResyncUnavailable)
	}
	if len(l.Mappings) == 0 {
		fmt.Fprintln(w, "Mappings:\tnone")
		return
	}
	fmt.Fprintln(w, "Mappings:")
	for _, m := range l.Mappings {
		fmt.Fprintf(w, "  %s\n", mappingString(m))
	}
}

// replicaText lists a replicated LUN's copies with their states.
func replicaText(rs []api.Replica) string {
	if len(rs) == 0 {
		return "none (shared storage)"
	}
	parts := make([]string, 0, len(rs))
	for _, r := range rs {
		p := r.Node + " " + r.State
		if r.State == api.ReplicaResyncing && r.ResyncTotal > 0 {
			p += fmt.Sprintf(" %.0f%% (%s)", 100*float64(min(r.ResyncDone, r.ResyncTotal))/float64(r.ResyncTotal), r.ResyncPhase)
		}
		if r.Owner {
			p += " (owner)"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ", ")
}

// ownerText shows the owner with its epoch, or that none is assigned yet.
func ownerText(l *api.LUN) string {
	if l.Owner == "" {
		return "- (not assigned yet)"
	}
	return fmt.Sprintf("%s (epoch %d)", l.Owner, l.Epoch)
}
