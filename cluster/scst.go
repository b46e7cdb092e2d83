package cluster

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm"
	"github.com/hatarget/hatarget/fsm/scstconf"
	"github.com/hatarget/hatarget/target/iscsi"
)

// buildImport turns an scst.conf into one Import command: the whole file
// commits as one Raft entry or not at all.
func (n *Node) buildImport(r *http.Request) (fsm.Command, func(any, uint64) any, error) {
	body, err := readRawBody(r)
	if err != nil {
		return nil, nil, err
	}
	name := filepath.Base(strOrDefault(r.URL.Query().Get("file"), "scst.conf"))
	f, err := scstconf.Parse(name, body)
	if err != nil {
		return nil, nil, badRequest("%v", err)
	}
	imp, warnings, err := scstconf.ToImport(f)
	if err != nil {
		return nil, nil, badRequest("%v", err)
	}
	var notes []string
	for _, w := range warnings {
		notes = append(notes, w.String())
	}
	for i := range imp.Targets {
		notes = append(notes, dropUnknownParams(&imp.Targets[i])...)
	}
	for i := range imp.Devices {
		if err := checkImportedStorage(&imp.Devices[i]); err != nil {
			return nil, nil, badRequest("%s: %v", name, err)
		}
		fillIdentity(&imp.Devices[i])
	}
	devs := make([]*fsm.Device, len(imp.Devices))
	for i := range imp.Devices {
		devs[i] = &imp.Devices[i]
	}
	n.placeOwners(devs...)
	render := func(res any, gen uint64) any {
		out := api.ImportResult{Warnings: notes, Generation: gen}
		if ir, ok := res.(*fsm.ImportResult); ok {
			out.Devices, out.Targets = ir.Devices, ir.Targets
		}
		return out
	}
	return imp, render, nil
}

// dropUnknownParams removes negotiation keys the iSCSI layer does not
// know, as the single-node server does, and says so.
func dropUnknownParams(t *fsm.Target) []string {
	var notes []string
	limits := iscsi.DefaultLimits()
	kept := t.Params[:0]
	for _, p := range t.Params {
		if err := limits.SetParam(p.Key, p.Value); errors.Is(err, iscsi.ErrUnknownParam) {
			notes = append(notes, fmt.Sprintf("target %s: parameter %s is not supported, ignored", t.IQN, p.Key))
			continue
		}
		kept = append(kept, p)
	}
	t.Params = kept
	return notes
}

// checkImportedStorage refuses a device whose file or block device does
// not exist: SCST would refuse it too, and creating an empty file in its
// place would hide the mistake.
func checkImportedStorage(d *fsm.Device) error {
	if d.Handler == fsm.HandlerNullIO {
		return nil
	}
	if !filepath.IsAbs(d.Path) {
		return fmt.Errorf("device %s: filename %q must be an absolute path", d.Name, d.Path)
	}
	if _, err := os.Stat(d.Path); err != nil {
		return fmt.Errorf("device %s: %w", d.Name, err)
	}
	return nil
}

func (n *Node) readExport(r *http.Request, s *fsm.State) (any, error) {
	return text(scstconf.Format(scstconf.FromState(s, isTrue(r.URL.Query().Get("secrets"))))), nil
}
