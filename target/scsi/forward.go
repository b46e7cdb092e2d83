package scsi

import "time"

// Forwarding (shared/design/alua.md): every node serves every LU, but only
// the LU's owner executes its commands. A non-owner node installs a
// Forwarder on its LU; Execute then hands every command to it, and the
// owner runs what arrives with ExecuteLocal. Unit attentions, reservations,
// range locks and per-nexus state so live in one place, the owner's LU, for
// the nexuses of every node.

// Forwarder executes a command on another node and fills res with the
// outcome, as LU.Execute would. It must always fill res: when the other
// node cannot be reached, with a sense the initiator retries (NOT READY,
// ASYMMETRIC ACCESS STATE TRANSITION).
type Forwarder interface {
	// Forward reports moving when the other node refused the command
	// because ownership is changing (it is not the owner, or is in
	// another epoch): nothing was executed, and the command may be sent
	// again once this node has learned of the change.
	Forward(cmd *Command, res *Result) (moving bool)
}

// TaskManagementForwarder is implemented by a Forwarder that also carries
// task management to the owner. Task management then acts where the state
// it changes lives: ResetLU and NexusLoss of an LU whose Forwarder has
// these methods run on the owner's LU (ResetLULocal, NexusLossLocal there),
// for the nexus they name, instead of on this node's LU, whose per-nexus
// state no command uses. With a Forwarder without them, they run here.
type TaskManagementForwarder interface {
	// ForwardReset performs a logical unit reset on the owner's LU,
	// requested through the nexus from, and returns once it is done; an
	// error means it was not done, or may not have been.
	ForwardReset(from *Nexus) error
	// ForwardNexusLoss reports the loss of the nexus n to the owner's LU,
	// as ForwardReset does a reset.
	ForwardNexusLoss(n *Nexus) error
	// Abort asks the owner to abort the commands of nexus n with task tag
	// taskTag being forwarded, and returns how many it asked about. Each
	// still completes through Forward (TASK ABORTED unless it was answered
	// first). It must not block.
	Abort(n *Nexus, taskTag uint32) int
}

// forwarderRef boxes a Forwarder so that it fits an atomic.Pointer; tm is
// the same Forwarder when it carries task management, else nil.
type forwarderRef struct {
	f  Forwarder
	tm TaskManagementForwarder
}

// SetForwarder makes Execute hand every command to f; nil executes them
// here again. Commands already running finish where they started. The
// switch is one atomic store, so an owner change never waits for I/O.
func (lu *LU) SetForwarder(f Forwarder) {
	if f == nil {
		lu.fwd.Store(nil)
		return
	}
	tm, _ := f.(TaskManagementForwarder)
	lu.fwd.Store(&forwarderRef{f: f, tm: tm})
}

// SetOwnerGone marks the LU's owner as gone while no new owner is known
// (a failover is pending). Commands that need no medium and no owner state
// (INQUIRY, REPORT LUNS, REPORT TARGET PORT GROUPS...) run here; every
// other command is held until this node learns the new owner, for up to
// ownerGoneWait, and then goes there. An initiator sees a slow command,
// not an error: answering NOT READY, ASYMMETRIC ACCESS STATE TRANSITION at
// once would make multipathd's TEST UNIT READY checker mark every path
// down and the kernel queue I/O until its next check, many seconds later.
func (lu *LU) SetOwnerGone() { lu.SetForwarder(&ownerGone{lu: lu}) }

// ownerGoneWait bounds how long a command waits for a failover: past the
// time one takes (about two seconds after the owner's last lease grant).
const ownerGoneWait = 5 * time.Second

type ownerGone struct{ lu *LU }

func (g *ownerGone) Forward(cmd *Command, res *Result) (moving bool) {
	if c, err := g.lu.table.lookup(cmd.CDB); len(cmd.CDB) > 0 && err == nil && c.flags&flagUnavailableOK != 0 {
		g.lu.ExecuteLocal(cmd, res)
		return false
	}
	for end := time.Now().Add(ownerGoneWait); time.Now().Before(end); time.Sleep(moveRetryInterval) {
		if ref := g.lu.fwd.Load(); ref == nil || ref.f != Forwarder(g) {
			return true // the new owner is known: Execute goes again
		}
	}
	resetResult(res)
	g.lu.fail(res, newSense(KeyNotReady, ascALUATransition))
	return false
}

// taskManager returns the forwarder task management goes to, nil when it
// runs on this LU.
func (lu *LU) taskManager() TaskManagementForwarder {
	if ref := lu.fwd.Load(); ref != nil {
		return ref.tm
	}
	return nil
}

// AbortForwarded asks the owner to abort the commands of nexus n with task
// tag taskTag that this LU is forwarding, so that a queued one never runs
// there, and returns how many it asked about: 0 when the LU executes its
// commands here or its Forwarder cannot abort. Aborted commands still
// complete through Execute; the transport waits for them as for local
// ones. It never blocks.
func (lu *LU) AbortForwarded(n *Nexus, taskTag uint32) int {
	if tm := lu.taskManager(); tm != nil {
		return tm.Abort(n, taskTag)
	}
	return 0
}

// executesHere reports whether this node executes the LU's commands
// rather than forwarding them to its owner.
func (lu *LU) executesHere() bool { return lu.fwd.Load() == nil }

// Execute runs one command addressed to this LU, on this node or, when a
// Forwarder is set, on the owner. READ and WRITE do not allocate here.
func (lu *LU) Execute(cmd *Command, res *Result) {
	var deadline time.Time
	for {
		ref := lu.fwd.Load()
		if ref == nil {
			lu.ExecuteLocal(cmd, res)
			return
		}
		if !ref.f.Forward(cmd, res) {
			return
		}
		// Ownership is moving (lun move, failover): the refusal came
		// before anything executed, so the command waits for this node to
		// learn the new owner or epoch and goes again, instead of failing
		// with the transitioning sense res already holds.
		if deadline.IsZero() {
			deadline = time.Now().Add(moveWait)
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(moveRetryInterval)
	}
}

// A command refused because ownership is moving is sent again every
// moveRetryInterval for up to moveWait (a planned move commits and reaches
// every node well within it); after that the initiator gets the
// transitioning sense and retries on its own.
const (
	moveWait          = time.Second
	moveRetryInterval = 5 * time.Millisecond
)

// ExecuteLocal runs one command on this node whatever the Forwarder says:
// the owner's forward server uses it for the commands other nodes send.
// Stats count commands here, where they execute, so that a command is
// counted once in the cluster.
func (lu *LU) ExecuteLocal(cmd *Command, res *Result) {
	resetResult(res)
	st := lu.state.Load()
	if st.cfg.Stats != nil {
		lu.executeObserved(st, cmd, res)
		return
	}
	lu.run(st, cmd, res)
}
