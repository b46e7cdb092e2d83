package scsi

import "time"

// CommandKind classifies a command for statistics. Plain reads and writes
// are what an initiator's I/O is made of, so their bytes and latency are
// worth tracking apart; everything else is KindOther.
type CommandKind uint8

const (
	KindOther CommandKind = iota
	// KindRead is READ(6/10/12/16).
	KindRead
	// KindWrite is WRITE(6/10/12/16), WRITE AND VERIFY and WRITE ATOMIC:
	// the commands whose Data-Out is exactly what reaches the medium.
	// COMPARE AND WRITE, ORWRITE and WRITE SAME are KindOther, since
	// their latency and data length are not those of a write.
	KindWrite
)

// NumKinds is the number of CommandKinds, for tables indexed by them.
const NumKinds = 3

func (k CommandKind) String() string {
	switch k {
	case KindRead:
		return "read"
	case KindWrite:
		return "write"
	}
	return "other"
}

// Stats observes the commands an LU executes (LUConfig.Stats), for
// metrics. Completed runs once per command, on the goroutine that
// completed it (for a write ExecuteAsync started, the one its device
// completed it on), with the final status: it is on the I/O path and must
// neither block nor allocate.
type Stats interface {
	// Completed reports a command of kind that ended with status after d.
	// bytes is the data a read returned, or a write took from the
	// initiator when it succeeded; 0 for other commands.
	Completed(kind CommandKind, bytes int, status Status, d time.Duration)
}

// executeObserved is Execute for an LU with Stats: it is timed with one
// clock reading on each side, and LUs without Stats do not pay for it.
func (lu *LU) executeObserved(st *luState, cmd *Command, res *Result) {
	start := time.Now()
	lu.run(st, cmd, res)
	st.observe(lu.table.kindOf(cmd.CDB), cmd, res, start)
}

// observe reports to Stats a command of kind started at start whose
// outcome res holds.
func (st *luState) observe(kind CommandKind, cmd *Command, res *Result, start time.Time) {
	st.cfg.Stats.Completed(kind, transferred(kind, cmd, res), res.Status, time.Since(start))
}

// transferred is the data of a read or write, as Stats counts it.
func transferred(kind CommandKind, cmd *Command, res *Result) int {
	switch {
	case kind == KindRead:
		return res.DataInLen
	case kind == KindWrite && res.Status == StatusGood:
		return min(res.Transfer, len(cmd.DataOut))
	}
	return 0
}
