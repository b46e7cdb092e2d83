package scsi

import (
	"errors"
	"testing"
)

// recordingForwarder answers every command GOOD with one byte of data and
// remembers the CDBs it saw.
type recordingForwarder struct{ cdbs [][]byte }

func (f *recordingForwarder) Forward(cmd *Command, res *Result) bool {
	f.cdbs = append(f.cdbs, cmd.CDB)
	*res = Result{Status: StatusGood, DataInLen: 1, Transfer: 1}
	cmd.DataIn[0] = 0xee
	return false
}

func TestForwarderTakesEveryCommandOfTheLU(t *testing.T) {
	h := newHarness(t, nil)
	f := &recordingForwarder{}
	h.lu.SetForwarder(f)
	v := testView{0: h.lu}
	for _, cdb := range [][]byte{cdbTUR(), cdbInquiry(false, 0, 36), cdbRW10(opRead10, 0, 1, 0)} {
		cmd := &Command{Nexus: h.n, CDB: cdb, DataIn: make([]byte, 512)}
		res := &Result{}
		Execute(v, cmd, res)
		if res.Status != StatusGood || res.DataInLen != 1 || cmd.DataIn[0] != 0xee {
			t.Fatalf("cdb %x: not answered by the forwarder: %+v", cdb, res)
		}
	}
	if len(f.cdbs) != 3 {
		t.Fatalf("forwarder saw %d commands, want 3", len(f.cdbs))
	}

	// REPORT LUNS belongs to the nexus's view, which is local.
	cmd := &Command{Nexus: h.n, CDB: []byte{opReportLUNs, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0}, DataIn: make([]byte, 256)}
	res := &Result{}
	Execute(v, cmd, res)
	if res.Status != StatusGood || res.DataInLen != 16 || len(f.cdbs) != 3 {
		t.Fatalf("REPORT LUNS: %+v, forwarded %d", res, len(f.cdbs))
	}
}

func TestExecuteLocalIgnoresTheForwarder(t *testing.T) {
	h := newHarness(t, nil)
	f := &recordingForwarder{}
	h.lu.SetForwarder(f)
	res := &Result{}
	h.lu.ExecuteLocal(&Command{Nexus: h.n, CDB: cdbRW10(opWrite10, 1, 1, 0), DataOut: fill(512, 0x5a)}, res)
	if res.Status != StatusGood || len(f.cdbs) != 0 {
		t.Fatalf("ExecuteLocal: %+v, forwarded %d", res, len(f.cdbs))
	}
	if w := h.dev.Counts().Writes; w != 1 {
		t.Fatalf("%d writes reached the device, want 1", w)
	}

	h.lu.SetForwarder(nil)
	_, data := h.exec(h.n, cdbRW10(opRead10, 1, 1, 0), nil, 512)
	if data[0] != 0x5a || len(f.cdbs) != 0 {
		t.Fatalf("after SetForwarder(nil): read %#x, forwarded %d", data[0], len(f.cdbs))
	}
}

// nopForwarder answers GOOD without touching anything.
type nopForwarder struct{}

func (nopForwarder) Forward(_ *Command, res *Result) bool { res.Status = StatusGood; return false }

func TestForwardedExecuteDoesNotAllocate(t *testing.T) {
	h := newHarness(t, nil)
	h.lu.SetForwarder(nopForwarder{})
	v := testView{0: h.lu}
	cmd := &Command{Nexus: h.n, CDB: cdbRW10(opRead10, 8, 8, 0), DataIn: make([]byte, 4096)}
	res := &Result{}
	if allocs := testing.AllocsPerRun(200, func() { Execute(v, cmd, res) }); allocs != 0 {
		t.Errorf("%v allocations per forwarded command", allocs)
	}
}

// tmForwarder is a Forwarder that also carries task management, and
// records it.
type tmForwarder struct {
	nopForwarder
	resets, losses []*Nexus
	aborts         []uint32
	err            error
}

func (f *tmForwarder) ForwardReset(from *Nexus) error {
	f.resets = append(f.resets, from)
	return f.err
}

func (f *tmForwarder) ForwardNexusLoss(n *Nexus) error {
	f.losses = append(f.losses, n)
	return f.err
}

func (f *tmForwarder) Abort(_ *Nexus, taskTag uint32) int {
	f.aborts = append(f.aborts, taskTag)
	return 1
}

// With a forwarder that carries task management, resets and nexus losses
// go to the owner and leave this LU alone; the Local variants and a plain
// forwarder act here.
func TestTaskManagementFollowsTheForwarder(t *testing.T) {
	h := newHarness(t, nil)
	f := &tmForwarder{}
	h.lu.SetForwarder(f)
	if err := h.lu.ResetLU(h.n); err != nil || len(f.resets) != 1 || f.resets[0] != h.n {
		t.Fatalf("ResetLU: %v, forwarded %v", err, f.resets)
	}
	if err := h.lu.NexusLoss(h.n); err != nil || len(f.losses) != 1 || f.losses[0] != h.n {
		t.Fatalf("NexusLoss: %v, forwarded %v", err, f.losses)
	}
	if got := h.lu.AbortForwarded(h.n, 42); got != 1 || len(f.aborts) != 1 || f.aborts[0] != 42 {
		t.Fatalf("AbortForwarded: %d, forwarded %v", got, f.aborts)
	}
	f.err = errors.New("owner unreachable")
	if err := h.lu.ResetLU(h.n); err != f.err {
		t.Fatalf("ResetLU returned %v, want the forwarder's error", err)
	}
	h.lu.SetForwarder(nil)
	good.check(t, first(h.exec(h.n, cdbTUR(), nil, 0))) // nothing happened here

	h.lu.SetForwarder(f)
	h.lu.ResetLULocal(h.n)
	h.lu.SetForwarder(nil)
	wantSense(KeyUnitAttention, ascBusDeviceReset).check(t, first(h.exec(h.n, cdbTUR(), nil, 0)))

	h.lu.SetForwarder(nopForwarder{}) // no task management: it runs here
	if err := h.lu.NexusLoss(h.n); err != nil {
		t.Fatal(err)
	}
	if got := h.lu.AbortForwarded(h.n, 1); got != 0 {
		t.Fatalf("AbortForwarded with a plain forwarder: %d", got)
	}
	h.lu.SetForwarder(nil)
	wantSense(KeyUnitAttention, ascITNexusLoss).check(t, first(h.exec(h.n, cdbTUR(), nil, 0)))
	if got := h.lu.AbortForwarded(h.n, 1); got != 0 {
		t.Fatalf("AbortForwarded without a forwarder: %d", got)
	}
}
