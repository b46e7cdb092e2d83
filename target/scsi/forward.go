package scsi

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
	Forward(cmd *Command, res *Result)
}

// forwarderRef boxes a Forwarder so that it fits an atomic.Pointer.
type forwarderRef struct{ f Forwarder }

// SetForwarder makes Execute hand every command to f; nil executes them
// here again. Commands already running finish where they started. The
// switch is one atomic store, so an owner change never waits for I/O.
func (lu *LU) SetForwarder(f Forwarder) {
	if f == nil {
		lu.fwd.Store(nil)
		return
	}
	lu.fwd.Store(&forwarderRef{f: f})
}

// Execute runs one command addressed to this LU, on this node or, when a
// Forwarder is set, on the owner. READ and WRITE do not allocate here.
func (lu *LU) Execute(cmd *Command, res *Result) {
	if ref := lu.fwd.Load(); ref != nil {
		ref.f.Forward(cmd, res)
		return
	}
	lu.ExecuteLocal(cmd, res)
}

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
