package scsi

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"github.com/hatarget/hatarget/alua"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hatarget/hatarget/target/backend"
)

// MaxTransferBytes is the largest data transfer one READ or WRITE may ask
// for. VPD page B0h reports it (as MAXIMUM TRANSFER LENGTH in blocks), and
// commands asking for more fail with INVALID FIELD IN CDB. The transport
// must be able to hold a Data-In or Data-Out buffer of this size for one
// command; 8 MiB is above what Linux, Windows and ESXi issue by default.
const MaxTransferBytes = 8 << 20

// optimalTransferBytes is the OPTIMAL TRANSFER LENGTH of VPD page B0h: large
// enough that initiators merge sequential I/O into few commands.
const optimalTransferBytes = 1 << 20

// LUConfig describes one logical unit.
type LUConfig struct {
	Device    backend.Device
	BlockSize uint32 // 512 or 4096; 0 means 512
	VendorID  string // T10 vendor identification (8 characters); default "HATARGET"
	ProductID string // 16 characters; default "VDISK"
	Revision  string // 4 characters; default "0001"
	Serial    string // unit serial number (VPD 80h), SCST's usn
	// NAA is the NAA IEEE Registered Extended designator (first nibble 6) of
	// VPD 83h. Zero means derive one deterministically from Serial; the
	// cluster normally supplies it so every node reports the same one.
	NAA [16]byte
	// DeviceID is the vendor specific part of the T10 vendor ID designator
	// (SCST's t10_dev_id). Default: Name, or Serial when Name is empty.
	DeviceID string
	// Name is the device name (SCST's device name). It is only the default of
	// DeviceID; the field exists because that default is the device name.
	Name       string
	ReadOnly   bool
	Rotational bool // VPD B1h medium rotation rate: false reports non-rotating
	Removable  bool
	// WriteCache is the initial (and default) WCE bit of the caching mode
	// page (SCST: write_through means false). With WCE clear every write is
	// durable when it completes.
	WriteCache bool

	// Thin makes the LU thin provisioned (scst.conf thin_provisioned): READ
	// CAPACITY(16) reports LBPME and LBPRZ, VPD page B2h is served, and
	// UNMAP and WRITE SAME with the UNMAP bit punch holes in the device. It
	// takes effect only when the device implements backend.Unmapper.
	Thin bool
	// SanitizeAllowed opts the LU in to SANITIZE (OVERWRITE, and BLOCK ERASE
	// on a thin LU), which destroys every block. Without it SANITIZE is not
	// reported and fails as an unsupported operation code.
	SanitizeAllowed bool

	// Reservations keeps the persistent and SPC-2 reservation state
	// (reservations.go). Nil gives the LU an in-memory store of its own,
	// saving APTPL state through Persister. A cluster passes a store shared
	// through Raft. Only NewLU reads it.
	Reservations ReservationStore
	// Persister saves the APTPL state of the default store (for instance a
	// FilePersister per device). Nil: APTPL is not supported (PTPL_C 0) and
	// reservations do not survive a restart. Only NewLU reads it.
	Persister Persister
	// Aborter aborts the tasks of the I_T nexuses PREEMPT AND ABORT
	// preempts; the transport provides it. Nil: there is nothing to abort.
	Aborter TaskAborter
	// Stats, when set, is told about every command Execute completes
	// (stats.go). Nil costs nothing: commands are not even timed.
	Stats Stats
	// PortGroups are every target port group of the LU with its ALUA
	// state (alua.go): a command is gated by the state of the group it
	// arrived through (Nexus.PortGroup), and REPORT TARGET PORT GROUPS
	// lists them all. Empty: a single node, whose only group is
	// active/optimized.
	PortGroups []alua.Group
	// Lease, when set, is the node's owner lease: commands that need the
	// port group to be accessible execute only before it runs out, and
	// get NOT READY, ASYMMETRIC ACCESS STATE TRANSITION after, and the
	// device I/O of commands already running is fenced by it (fence.go).
	Lease *Lease
}

// luState is an immutable snapshot of the configuration with the values
// derived from it. Execute loads it once per command, so Update never tears
// a command in half.
type luState struct {
	cfg       LUConfig
	dev       backend.Device
	blockSize uint32
	shift     uint   // log2(blockSize)
	blocks    uint64 // capacity in logical blocks
	naa       [16]byte
	readOnly  bool              // configured read-only or the device refuses writes
	thin      bool              // cfg.Thin and the device can unmap (see thinState)
	networked backend.Networked // nil: a local device
	// async is the device's unfenced AsyncWriter, if it has one: a
	// started write checks the lease itself.
	async backend.AsyncWriter
}

// maxPendingUA bounds the unit attentions queued per nexus; SPC-4 allows
// dropping conditions when they overflow.
const maxPendingUA = 8

// maxLostNexuses bounds how many nexuses that went away are remembered so
// that they see I_T NEXUS LOSS OCCURRED when they come back. Initiators
// that pick a new ISID for each session would otherwise grow the map
// forever; a forgotten nexus sees POWER ON, RESET instead, which is as good
// a reason to revalidate.
const maxLostNexuses = 1024

// LU is a logical unit: a block device with the SPC-4/SBC-3 command set.
// It is safe for concurrent use by many sessions.
type LU struct {
	state atomic.Pointer[luState]
	table *dispatchTable
	// fwd, when set, executes commands on the LU's owner (forward.go).
	fwd atomic.Pointer[forwarderRef]

	// Mode parameters shared by every I_T nexus. Stored as atomics because
	// the READ/WRITE path reads them; modeMu serialises MODE SELECT, resets
	// and Update so changes apply as a whole.
	modeMu sync.Mutex
	wce    atomic.Bool
	dsense atomic.Bool
	swp    atomic.Bool

	// Medium state, changed under mu. There is no "stopped" state: see
	// startStopUnit.
	ejected atomic.Bool // removable medium unloaded
	closed  atomic.Bool
	// groupsChangedAt is when the ALUA states of the port groups last
	// changed (unix nanoseconds; 0: never since the LU was made), for
	// newNexusState.
	groupsChangedAt atomic.Int64

	// rl makes COMPARE AND WRITE and the other atomic commands atomic
	// against every command touching the same LBAs (rangelock.go).
	rl rangeLock
	// san is the state of SANITIZE (sanitize.go).
	san sanitizeState
	// copies holds the status of the EXTENDED COPY commands this LU ran as
	// copy manager, for RECEIVE COPY RESULTS (copyresults.go).
	copies copyResults

	mu       sync.RWMutex
	nexuses  map[string]*nexusState // by Nexus.Key
	lost     []string               // keys of lost nexuses, oldest first
	prevents int                    // nexuses with PREVENT MEDIUM REMOVAL set
	ports    map[uint16]string      // target ports seen, by relative port identifier

	// pr decides everything about reservations (reservations.go).
	pr          ReservationStore
	ptplCapable bool // APTPL can be honoured: a Persister or a custom store
}

// NewLU checks cfg and builds the logical unit.
func NewLU(cfg LUConfig) (*LU, error) {
	st, err := newState(cfg)
	if err != nil {
		return nil, err
	}
	lu := &LU{table: dispatch, nexuses: make(map[string]*nexusState), ports: make(map[uint16]string)}
	lu.pr, lu.ptplCapable = cfg.Reservations, cfg.Reservations != nil || cfg.Persister != nil
	if lu.pr == nil {
		if lu.pr, err = NewMemoryReservations(cfg.Persister); err != nil {
			return nil, err
		}
	}
	lu.state.Store(st)
	lu.wce.Store(st.cfg.WriteCache)
	return lu, nil
}

func newState(cfg LUConfig) (*luState, error) {
	cfg = withDefaults(cfg)
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	st := &luState{cfg: cfg, dev: fence(cfg.Device, cfg.Lease), blockSize: cfg.BlockSize, naa: cfg.NAA}
	for uint32(1)<<st.shift < cfg.BlockSize {
		st.shift++
	}
	if size := cfg.Device.Size(); size > 0 {
		st.blocks = uint64(size) >> st.shift
	}
	st.readOnly = cfg.ReadOnly || cfg.Device.ReadOnly()
	st.thin = thinState(cfg)
	st.networked, _ = cfg.Device.(backend.Networked)
	st.async, _ = cfg.Device.(backend.AsyncWriter)
	if st.naa == [16]byte{} {
		st.naa = deriveNAA(cfg.Serial)
	}
	return st, nil
}

func withDefaults(cfg LUConfig) LUConfig {
	if cfg.BlockSize == 0 {
		cfg.BlockSize = 512
	}
	if cfg.VendorID == "" {
		cfg.VendorID = "HATARGET"
	}
	if cfg.ProductID == "" {
		cfg.ProductID = "VDISK"
	}
	if cfg.Revision == "" {
		cfg.Revision = "0001"
	}
	if cfg.DeviceID == "" {
		cfg.DeviceID = cfg.Name
	}
	if cfg.DeviceID == "" {
		cfg.DeviceID = cfg.Serial
	}
	return cfg
}

// Validate reports whether cfg can back a logical unit, so a caller can
// check a reconfiguration before applying any of it.
func (cfg LUConfig) Validate() error {
	if cfg.Device == nil {
		return errors.New("scsi: LU needs a device")
	}
	if cfg.BlockSize != 512 && cfg.BlockSize != 4096 {
		return fmt.Errorf("scsi: block size %d: must be 512 or 4096", cfg.BlockSize)
	}
	fields := []struct{ name, v string }{
		{"vendor", cfg.VendorID}, {"product", cfg.ProductID}, {"revision", cfg.Revision},
		{"serial", cfg.Serial}, {"device id", cfg.DeviceID},
	}
	for _, f := range fields {
		if !printableASCII(f.v) {
			return fmt.Errorf("scsi: %s %q: only printable ASCII is allowed", f.name, f.v)
		}
	}
	// Both end up in one-byte designator or page lengths.
	if len(cfg.Serial) > 250 || len(cfg.DeviceID) > 240 {
		return errors.New("scsi: serial or device id too long for a VPD page")
	}
	return nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// naaCompanyID is the IEEE company ID placed in derived NAA designators.
// Derived designators are for single-node use and tests; a cluster stores
// the NAA it generates and passes it in LUConfig.NAA.
const naaCompanyID = 0x000000

// deriveNAA builds an NAA IEEE Registered Extended designator from the serial
// number, so restarting a target without a stored NAA keeps the LU identity.
// Without a serial there is nothing stable to derive it from, and LUs that
// report the same identifier get merged by multipath initiators, so each LU
// then gets a random one.
func deriveNAA(serial string) [16]byte {
	seed := make([]byte, 16)
	if serial == "" {
		_, _ = rand.Read(seed)
	}
	h := sha256.Sum256(append(append([]byte("hatarget naa\x00"), seed...), serial...))
	var n [16]byte
	// NAA (4 bits) | IEEE company ID (24 bits) | vendor specific (100 bits).
	n[0] = 0x60 | byte(naaCompanyID>>20)&0x0f
	n[1] = byte(naaCompanyID >> 12)
	n[2] = byte(naaCompanyID >> 4)
	n[3] = byte(naaCompanyID<<4) | h[0]&0x0f
	copy(n[4:], h[1:13])
	return n
}

// Update applies a new configuration to a live LU. A new capacity raises
// CAPACITY DATA HAS CHANGED, a change visible in mode sense data (read-only,
// write cache) raises MODE PARAMETERS CHANGED, and a change of INQUIRY data
// raises INQUIRY DATA HAS CHANGED, each on every I_T nexus. Update does not
// close the previous device.
func (lu *LU) Update(cfg LUConfig) error {
	st, err := newState(cfg)
	if err != nil {
		return err
	}
	lu.modeMu.Lock()
	old := lu.state.Load()
	if cfg.NAA == ([16]byte{}) && cfg.Serial == old.cfg.Serial {
		st.naa = old.naa // a derived NAA may be random: keep the identity
	}
	lu.state.Store(st)
	writeCacheChanged := old.cfg.WriteCache != st.cfg.WriteCache
	if writeCacheChanged {
		lu.wce.Store(st.cfg.WriteCache)
	}
	lu.modeMu.Unlock()

	if old.blocks != st.blocks || old.blockSize != st.blockSize {
		lu.raiseAll(ascCapacityDataChanged, nil)
	}
	if writeCacheChanged || old.readOnly != st.readOnly {
		lu.raiseAll(ascModeParametersChanged, nil)
	}
	if inquiryChanged(old, st) {
		lu.raiseAll(ascInquiryDataChanged, nil)
	}
	if !sameGroupStates(old.cfg.PortGroups, st.cfg.PortGroups) {
		lu.groupsChangedAt.Store(time.Now().UnixNano())
		lu.raiseAll(ascAsymmetricAccessChanged, nil)
	}
	return nil
}

func inquiryChanged(a, b *luState) bool {
	x, y := a.cfg, b.cfg
	return x.VendorID != y.VendorID || x.ProductID != y.ProductID || x.Revision != y.Revision ||
		x.Serial != y.Serial || x.DeviceID != y.DeviceID || a.naa != b.naa ||
		x.Removable != y.Removable || x.Rotational != y.Rotational
}

// ResetLU performs a logical unit reset (LUN RESET, or TARGET RESET applied
// to every LU). SAM-5 6.3.3 establishes BUS DEVICE RESET FUNCTION OCCURRED
// for every I_T nexus, the requester's included, since its own view of the
// LU state (mode pages, prevent) changed as well; pending unit attentions
// are superseded by it. SPC-4 7.5 returns the mode parameters to their
// saved values, which are the defaults here, and a reset releases every
// PREVENT MEDIUM REMOVAL and the SPC-2 reservation (persistent
// reservations stay). from is the nexus that asked.
//
// When the LU forwards its commands to its owner (SetForwarder with a
// TaskManagementForwarder), the reset happens on the owner's LU, where
// every nexus's state lives, and ResetLU returns the forwarder's error;
// otherwise it happens here (ResetLULocal) and the error is nil.
func (lu *LU) ResetLU(from *Nexus) error {
	if tm := lu.taskManager(); tm != nil {
		return tm.ForwardReset(from)
	}
	lu.ResetLULocal(from)
	return nil
}

// ResetLULocal performs the reset of ResetLU on this LU whatever the
// Forwarder says: the owner's forward server uses it for the resets other
// nodes send.
func (lu *LU) ResetLULocal(from *Nexus) {
	if lu.pr.State().SPC2Holder != "" {
		_, _ = lu.pr.Apply(PROp{Kind: OpReset, Nexus: NexusIDOf(from)})
	}
	lu.resetModes()
	lu.mu.Lock()
	for _, ns := range lu.nexuses {
		ns.prevent = false
	}
	lu.prevents = 0
	lu.mu.Unlock()
	lu.raiseAll(ascBusDeviceReset, nil)
}

// NexusLoss reports that an I_T nexus went away (I_T NEXUS RESET, session
// closed or dropped): its PREVENT and its SPC-2 reservation are released
// and it sees I_T NEXUS LOSS OCCURRED on its next command if it comes back.
// Persistent reservations and registrations stay.
//
// Like ResetLU, it happens on the owner's LU when the LU forwards its
// commands, and returns the forwarder's error.
func (lu *LU) NexusLoss(n *Nexus) error {
	if tm := lu.taskManager(); tm != nil {
		return tm.ForwardNexusLoss(n)
	}
	lu.NexusLossLocal(n)
	return nil
}

// NexusLossLocal reports the loss of n to this LU whatever the Forwarder
// says, for the forward server.
func (lu *LU) NexusLossLocal(n *Nexus) {
	if id := NexusIDOf(n); lu.pr.State().SPC2Holder == id.Key() {
		_, _ = lu.pr.Apply(PROp{Kind: OpNexusLoss, Nexus: id})
	}
	ns := lu.nexusFor(n)
	lu.mu.Lock()
	if ns.prevent {
		ns.prevent = false
		lu.prevents--
	}
	if !ns.lost {
		ns.lost = true
		lu.lost = append(lu.lost, nexusKey(n))
		lu.forgetLostLocked()
	}
	lu.mu.Unlock()
	ns.raise(ascITNexusLoss)
}

// forgetLostLocked drops the oldest lost nexuses beyond maxLostNexuses.
func (lu *LU) forgetLostLocked() {
	for len(lu.lost) > maxLostNexuses {
		key := lu.lost[0]
		lu.lost = lu.lost[1:]
		if ns := lu.nexuses[key]; ns != nil && ns.lost {
			delete(lu.nexuses, key)
		}
	}
}

// RaiseReportedLUNsChanged establishes REPORTED LUNS DATA HAS CHANGED on
// every I_T nexus that uses this LU, after LUN masking or mapping changed.
func (lu *LU) RaiseReportedLUNsChanged() { lu.raiseAll(ascReportedLUNsChanged, nil) }

// Close retires the LU: commands still arriving get NOT READY.
//
// The device belongs to whoever opened it and is not closed here: a
// reconfiguration may swap storage under a live LU, or close it after the
// LU is gone.
func (lu *LU) Close() error {
	lu.closed.Store(true)
	return nil
}

func (lu *LU) resetModes() {
	lu.modeMu.Lock()
	lu.wce.Store(lu.state.Load().cfg.WriteCache)
	lu.dsense.Store(false)
	lu.swp.Store(false)
	lu.modeMu.Unlock()
}

// run executes cmd against the configuration snapshot st.
func (lu *LU) run(st *luState, cmd *Command, res *Result) {
	ns := lu.nexusFor(cmd.Nexus)
	if err := lu.execute(st, ns, cmd, res); err != nil {
		lu.fail(res, err)
	}
}

func resetResult(res *Result) {
	res.Status = StatusGood
	res.Sense = nil
	res.DataInLen = 0
	res.Transfer = 0
}

func (lu *LU) execute(st *luState, ns *nexusState, cmd *Command, res *Result) error {
	c, err := lu.admit(st, ns, cmd)
	if err != nil {
		return err
	}
	return c.run(request{lu: lu, st: st, ns: ns, cmd: cmd, res: res, cdb: cmd.CDB})
}

// admit finds cmd's command and checks that it may run now: the unit
// attention it reports instead, if any, is the only thing admit changes.
func (lu *LU) admit(st *luState, ns *nexusState, cmd *Command) (*command, error) {
	cdb := cmd.CDB
	if len(cdb) == 0 {
		return nil, errInvalidOpcode
	}
	c, lookupErr := lu.table.lookup(cdb)
	if ns.pending.Load() != 0 && (c == nil || c.flags&flagNoUA == 0) {
		if code, ok := lu.popUA(ns); ok {
			return nil, newSense(KeyUnitAttention, code)
		}
	}
	if lookupErr != nil {
		return nil, lookupErr
	}
	if lu.closed.Load() {
		return nil, errClosed
	}
	if err := c.checkCDB(cdb); err != nil {
		return nil, err
	}
	if err := st.checkALUA(c.flags, cmd.Nexus); err != nil {
		return nil, err
	}
	if err := lu.checkReservation(c, cmd.Nexus, cdb); err != nil {
		return nil, err
	}
	if err := lu.checkReady(c.flags); err != nil {
		return nil, err
	}
	return c, nil
}

// checkReady refuses medium commands while a removable medium is out.
func (lu *LU) checkReady(f cmdFlags) error {
	if f&flagNoUA == 0 && lu.san.active() {
		if err := lu.sanitizeBlocks(f); err != nil {
			return err
		}
	}
	if f&(flagNeedsMedium|flagMediaAccess) != 0 && lu.ejected.Load() {
		return errNoMedium
	}
	return nil
}

// fail turns err into CHECK CONDITION with sense data, or RESERVATION
// CONFLICT.
func (lu *LU) fail(res *Result, err error) {
	if err == errReservationConflict {
		res.Status = StatusReservationConflict
		res.Sense = nil
		res.DataInLen = 0
		return
	}
	var s Sense
	if !errors.As(err, &s) {
		s = errInternal
	}
	setCheckCondition(res, &s, lu.dsense.Load())
}

func setCheckCondition(res *Result, s *Sense, descriptor bool) {
	res.Status = StatusCheckCondition
	res.DataInLen = 0
	n := s.encode(res.SenseBuf[:], descriptor)
	res.Sense = res.SenseBuf[:n]
}

// writeProtected reports why writes are refused, if they are.
func (lu *LU) writeProtected(st *luState) error {
	if st.readOnly {
		return errWriteProtected
	}
	if lu.swp.Load() {
		return errSoftwareWP
	}
	return nil
}
