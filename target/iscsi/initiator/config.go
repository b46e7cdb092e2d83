// Package initiator is a small iSCSI initiator (RFC 7143) for integration
// tests and benchmarks of hatarget: login with optional one-way or mutual
// CHAP, operational negotiation, SendTargets discovery and a full feature
// phase session that carries many concurrent SCSI commands over one
// connection with ErrorRecoveryLevel=0.
//
// A Session has one reader goroutine that dispatches target PDUs to waiting
// tasks by ITT, through a task table indexed by ITT slot. The reader never
// writes; requests are written by the goroutines that issue them, with
// group commit so that concurrent requests share a writev. Data-In is read
// straight into the caller's buffer and Data-Out is written straight from
// it, so a command costs no allocations in the steady state.
package initiator

import (
	"crypto/rand"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hatarget/hatarget/target/iscsi/pdu"
)

// Opt is a Yes/No login key whose zero value keeps the initiator's default.
type Opt uint8

const (
	Default Opt = iota
	Yes
	No
)

func (o Opt) or(def bool) bool {
	switch o {
	case Yes:
		return true
	case No:
		return false
	}
	return def
}

// CHAP algorithm identifiers (IANA "iSCSI CHAP algorithms").
const (
	CHAPMD5    = 5
	CHAPSHA256 = 7
)

// Config describes one session: where to log in, with which credentials and
// which negotiation profile. Zero values select the defaults documented on
// each field; they follow open-iscsi so that the default session exercises
// immediate data and unsolicited Data-Out.
type Config struct {
	// Addr is the target portal, "host:port" (port 3260 if omitted).
	Addr string
	// TargetName is required for normal sessions and ignored for discovery.
	TargetName string
	// InitiatorName defaults to DefaultInitiatorName.
	InitiatorName string
	// ISID defaults to a random-type ISID distinct for every session of
	// this process, so concurrent sessions are separate I_T nexuses.
	ISID [6]byte
	// Discovery opens a SessionType=Discovery session, good only for
	// SendTargets and Logout.
	Discovery bool

	// CHAPUser and CHAPSecret authenticate the initiator to the target.
	// When unset, the initiator offers AuthMethod=None only.
	CHAPUser, CHAPSecret string
	// MutualUser and MutualSecret, when set, make the initiator challenge
	// the target (CHAP_I/CHAP_C) and check its CHAP_N/CHAP_R; the login
	// fails if the target declines to authenticate itself.
	MutualUser, MutualSecret string
	// CHAPAlgorithms is the CHAP_A offer, most preferred first. Default
	// {CHAPMD5}, the algorithm RFC 7143 requires: tgt and IET answer
	// CHAP_A=7 but compute SHA-1 for it, so SHA-256 is opt-in.
	CHAPAlgorithms []int

	// HeaderDigest and DataDigest offer CRC32C (preferred) besides None.
	HeaderDigest, DataDigest bool

	// ImmediateData defaults to Yes, InitialR2T to No.
	ImmediateData, InitialR2T Opt
	// FirstBurstLength defaults to 262144, MaxBurstLength to 16776192,
	// MaxRecvDataSegmentLength (what we accept per PDU) to 262144 and
	// MaxOutstandingR2T to 1.
	FirstBurstLength, MaxBurstLength, MaxRecvDataSegmentLength uint32
	MaxOutstandingR2T                                          uint32

	// ExtraKeys are sent in the first operational-stage Login Request. A
	// key with the name of a standard key replaces it, so tests can offer
	// odd values; the target's answers are in Params.Received and are not
	// checked.
	ExtraKeys []pdu.KV
	// SkipSecurity starts the login in the operational stage, without
	// AuthMethod, as RFC 7143 allows when no authentication is wanted.
	SkipSecurity bool
	// InitialCmdSN is the first CmdSN (default 1); tests set it near 2^32
	// to exercise serial number arithmetic in the target.
	InitialCmdSN uint32

	// Timeout bounds connecting plus login, and the housekeeping exchanges
	// the session starts on its own (ABORT TASK for an abandoned command,
	// a logout the target asked for). Default 15s.
	Timeout time.Duration
	// OnAsync, if set, is called (on its own goroutine) for every
	// Asynchronous Message. A logout request from the target is also
	// honored automatically.
	OnAsync func(AsyncEvent)
}

// DefaultInitiatorName is used when Config.InitiatorName is empty.
const DefaultInitiatorName = "iqn.2024-01.io.hatarget:initiator"

// AsyncEvent is an Asynchronous Message from the target (RFC 7143 11.9).
type AsyncEvent struct {
	Event, VCode byte
	LUN          [8]byte
	Parameters   [3]uint16
	Data         []byte // sense data for a SCSI event
}

const (
	defaultMRDSL      = 262144
	defaultMaxBurst   = 16776192
	defaultFirstBurst = 262144
	defaultTimeout    = 15 * time.Second
	// maxR2TQueue bounds the R2Ts buffered per command; we never offer a
	// larger MaxOutstandingR2T, so a target sending more is in error.
	maxR2TQueue = 1024
)

var isidCounter atomic.Uint32

// newISID returns a random-type ISID (T=10b, RFC 7143 11.12.5): 22 random
// bits with a per-process counter in the qualifier, so ISIDs of one process
// never collide and those of different processes rarely do.
func newISID() [6]byte {
	var r [4]byte
	_, _ = rand.Read(r[:])
	n := isidCounter.Add(1)
	return [6]byte{0x80 | r[0]&0x3f, r[1], r[2], r[3], byte(n >> 8), byte(n)}
}

func (c Config) withDefaults() (Config, error) {
	if c.Addr == "" {
		return c, errors.New("initiator: Config.Addr is empty")
	}
	if !c.Discovery && c.TargetName == "" {
		return c, errors.New("initiator: Config.TargetName is empty")
	}
	if c.InitiatorName == "" {
		c.InitiatorName = DefaultInitiatorName
	}
	if c.ISID == ([6]byte{}) {
		c.ISID = newISID()
	}
	if len(c.CHAPAlgorithms) == 0 {
		c.CHAPAlgorithms = []int{CHAPMD5}
	}
	for _, a := range c.CHAPAlgorithms {
		if _, err := chapHash(a); err != nil {
			return c, err
		}
	}
	if c.CHAPSecret != "" && c.CHAPUser == "" || c.MutualSecret != "" && c.CHAPSecret == "" {
		return c, errors.New("initiator: CHAP needs CHAPUser and CHAPSecret (mutual CHAP needs them too)")
	}
	c.FirstBurstLength = orDefault(c.FirstBurstLength, defaultFirstBurst)
	c.MaxBurstLength = orDefault(c.MaxBurstLength, defaultMaxBurst)
	c.MaxRecvDataSegmentLength = orDefault(c.MaxRecvDataSegmentLength, defaultMRDSL)
	c.MaxOutstandingR2T = min(orDefault(c.MaxOutstandingR2T, 1), maxR2TQueue)
	if c.Timeout <= 0 {
		c.Timeout = defaultTimeout
	}
	if c.InitialCmdSN == 0 {
		c.InitialCmdSN = 1
	}
	return c, nil
}

func orDefault(v, def uint32) uint32 {
	if v == 0 {
		return def
	}
	return v
}

func (c *Config) chap() bool   { return c.CHAPUser != "" }
func (c *Config) mutual() bool { return c.MutualSecret != "" }

func (c *Config) sessionType() string {
	if c.Discovery {
		return "Discovery"
	}
	return "Normal"
}

// Params are the session's operational parameters after login: the
// outcome of negotiation, or the RFC 7143 default for keys not negotiated.
type Params struct {
	HeaderDigest, DataDigest  bool
	MaxConnections            uint32
	InitialR2T, ImmediateData bool
	// MaxRecvDataSegmentLength is ours: the largest data segment the target
	// may send us. TargetMaxRecvDataSegmentLength is the target's
	// declaration and bounds every data segment we send.
	MaxRecvDataSegmentLength       uint32
	TargetMaxRecvDataSegmentLength uint32
	MaxBurstLength                 uint32
	FirstBurstLength               uint32
	DefaultTime2Wait               uint32
	DefaultTime2Retain             uint32
	MaxOutstandingR2T              uint32
	DataPDUInOrder                 bool
	DataSequenceInOrder            bool
	ErrorRecoveryLevel             uint32

	TargetAlias          string
	TargetPortalGroupTag uint16
	TSIH                 uint16
	ISID                 [6]byte
	// CHAPAlgorithm is the CHAP_A the target chose, 0 without CHAP.
	CHAPAlgorithm int

	// Sent and Received are every key=value exchanged during login, in
	// order (CHAP secrets are never sent, only responses).
	Sent, Received []pdu.KV
}

// defaultParams holds the RFC 7143 defaults, the values in force for keys
// that were not negotiated.
func defaultParams() Params {
	return Params{
		MaxConnections:                 1,
		InitialR2T:                     true,
		ImmediateData:                  true,
		MaxRecvDataSegmentLength:       8192,
		TargetMaxRecvDataSegmentLength: 8192,
		MaxBurstLength:                 262144,
		FirstBurstLength:               65536,
		DefaultTime2Wait:               2,
		DefaultTime2Retain:             20,
		MaxOutstandingR2T:              1,
		DataPDUInOrder:                 true,
		DataSequenceInOrder:            true,
	}
}

// Errors a caller may want to tell apart.
var (
	// ErrClosed reports a session closed by Close or Logout.
	ErrClosed = errors.New("initiator: session closed")
	// ErrTaskAborted reports a command ended by task management
	// (ABORT TASK, LUN RESET, ...) without a response of its own.
	ErrTaskAborted = errors.New("initiator: task aborted by task management")
	// ErrProtocol wraps target behavior that violates RFC 7143; the session
	// is dropped when it happens in the full feature phase.
	ErrProtocol = errors.New("iSCSI protocol violation")
)

func protocolErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}
