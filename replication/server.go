package replication

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/nodeconn"
)

// ServerConfig describes the replica side.
type ServerConfig struct {
	// Secret is the cluster secret owners must prove they know; empty
	// means no authentication, and then owners must have none either.
	Secret string
	// Logger receives connection and epoch events; nil discards them.
	Logger *slog.Logger

	// MaxInFlight bounds the requests of one connection handed to
	// workers and not yet answered; the server stops reading beyond it,
	// which bounds the buffers a peer can make it hold (besides the
	// connection's 1 MiB input buffer, and the one quick write the reader
	// may be executing itself). Default 256.
	MaxInFlight int
	// Workers bounds the requests of one connection executing at once
	// on workers (the reader executes quick writes itself). Default 64.
	Workers int
	// HelloTimeout bounds the handshake of a new connection. Default 10 s.
	HelloTimeout time.Duration
	// IdleTimeout closes a connection silent that long; owners ping
	// theirs much more often. Default 30 s.
	IdleTimeout time.Duration
}

const (
	defaultServerInFlight = 256
	defaultWorkers        = 64
	defaultHelloTimeout   = 10 * time.Second
	defaultIdleTimeout    = 30 * time.Second
)

func (cfg ServerConfig) withDefaults() ServerConfig {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = defaultServerInFlight
	}
	if cfg.Workers <= 0 {
		cfg.Workers = defaultWorkers
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = defaultHelloTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = defaultIdleTimeout
	}
	return cfg
}

// ReplicaDevice is one device this node holds a replica of, as the
// cluster's committed state describes it.
type ReplicaDevice struct {
	// Device is the local copy.
	Device backend.Device
	// Owner is the node allowed to send requests for the device.
	Owner string
	// Epoch is the device's epoch this node knows from Raft.
	Epoch uint64
	// ActivityFile keeps the device's activity log (activity.go), so
	// that it survives a crash of this node; read when the device is
	// added. Empty: the log lives in memory.
	ActivityFile string
}

// Server is the replica side: it applies the writes owners send it to the
// local copies of their devices, and answers their resync requests.
type Server struct {
	cfg ServerConfig
	log *slog.Logger

	devMu   sync.RWMutex
	devices map[string]*devState
	setMu   sync.Mutex // serializes SetDevices

	conns nodeconn.Set[*serverConn]

	// byNode is each owner's live connection: a newer one from the same
	// node supersedes it (supersede).
	nodeMu sync.Mutex
	byNode map[string]*serverConn
}

// devState is what the server knows of one device.
type devState struct {
	name string
	// gate orders requests against epoch changes: a request holds it
	// shared from its epoch check until its write is done, and raising
	// the epoch (a seal, a newer request, SetDevices) takes it exclusive.
	// So once an epoch is raised, no request of an older one is executing
	// or will execute.
	gate sync.RWMutex
	// Guarded by gate.
	dev     backend.Device
	owner   string
	highest uint64
	removed bool

	al     activityLog
	ranges rangeLock
	// inline times its inline writes: only a device that writes fast gets
	// them.
	inline inlineGauge
}

// NewServer returns a server holding no devices; it serves nothing until
// Serve or ServeConn.
func NewServer(cfg ServerConfig) *Server {
	cfg = cfg.withDefaults()
	return &Server{cfg: cfg, log: cfg.Logger, devices: make(map[string]*devState), byNode: make(map[string]*serverConn)}
}

// SetDevices replaces the set of devices this node holds replicas of,
// live. A device that stays keeps the highest epoch seen for it (an epoch
// never goes back); a removed one answers StatusUnknownDevice. When the
// owner, the device or the epoch of an existing device changes, SetDevices
// waits for the requests executing on it: once it returns, none that the
// new state would refuse is running, and a removed device may be closed.
func (s *Server) SetDevices(devices map[string]ReplicaDevice) {
	s.setMu.Lock()
	defer s.setMu.Unlock()
	s.devMu.RLock()
	old := s.devices
	s.devMu.RUnlock()
	next := make(map[string]*devState, len(devices))
	for name, rd := range devices {
		if checkName("device", len(name)) != nil || rd.Device == nil || rd.Owner == "" {
			s.log.Error("replica device ignored: it needs a name of 1 to 255 bytes, a device and an owner",
				"device", name, "owner", rd.Owner)
			continue
		}
		st := old[name]
		if st == nil {
			st = &devState{name: name, dev: rd.Device, owner: rd.Owner, highest: rd.Epoch}
			if rd.ActivityFile != "" {
				if err := st.al.open(rd.ActivityFile, rd.Device.Size()); err != nil {
					// Writes fail until the log can cover them.
					s.log.Error("replica device's activity log", "device", name, "err", err)
				}
			}
			next[name] = st
			continue
		}
		st.gate.RLock()
		same := st.dev == rd.Device && st.owner == rd.Owner && st.highest >= rd.Epoch
		st.gate.RUnlock()
		if !same {
			st.gate.Lock()
			if rd.Epoch > st.highest || st.owner != rd.Owner {
				s.log.Info("replica device changed", "device", name, "owner", rd.Owner,
					"epoch", max(rd.Epoch, st.highest), "previous owner", st.owner, "previous epoch", st.highest)
			}
			st.dev, st.owner, st.highest = rd.Device, rd.Owner, max(st.highest, rd.Epoch)
			st.gate.Unlock()
		}
		next[name] = st
	}
	s.devMu.Lock()
	s.devices = next
	s.devMu.Unlock()
	for name, st := range old {
		if next[name] == nil {
			st.gate.Lock()
			st.removed = true
			st.dev = nil
			st.gate.Unlock()
			if err := st.al.close(); err != nil {
				s.log.Warn("closing a replica device's activity log", "device", name, "err", err)
			}
		}
	}
}

func (s *Server) lookup(name []byte) *devState {
	s.devMu.RLock()
	defer s.devMu.RUnlock()
	return s.devices[string(name)]
}

// Epoch returns the highest epoch the server has seen for device: the
// configured one, or a newer one an owner announced. False when the device
// is unknown.
func (s *Server) Epoch(device string) (uint64, bool) {
	st := s.lookup([]byte(device))
	if st == nil {
		return 0, false
	}
	st.gate.RLock()
	defer st.gate.RUnlock()
	return st.highest, !st.removed
}

// ActivityLog returns the regions of device written by the last requests
// the server received (ActivityEntries of them, in ActivityRegion units),
// merged and in offset order; nil for an unknown device.
func (s *Server) ActivityLog(device string) []Extent {
	st := s.lookup([]byte(device))
	if st == nil {
		return nil
	}
	return st.al.extents()
}

// admit checks a request of node in epoch for the device, and raises the
// device's epoch when the request names a newer one. On StatusOK it
// returns with st.gate held shared, and the device's epoch.
func (st *devState) admit(node string, epoch uint64, log *slog.Logger) (Status, uint64) {
	for {
		st.gate.RLock()
		switch {
		case st.removed:
			st.gate.RUnlock()
			return StatusUnknownDevice, 0
		case epoch < st.highest:
			// Before the owner check: a former owner learns that it is
			// one, whoever owns the device now.
			h := st.highest
			st.gate.RUnlock()
			return StatusStaleEpoch, h
		case node != st.owner:
			h := st.highest
			st.gate.RUnlock()
			return StatusNotOwner, h
		case epoch == st.highest:
			return StatusOK, epoch
		}
		st.gate.RUnlock()
		// Exclusive: this waits for every request of the older epoch
		// still executing.
		st.gate.Lock()
		if !st.removed && node == st.owner && epoch > st.highest {
			log.Info("replica device in a new epoch", "device", st.name, "owner", node,
				"epoch", epoch, "previous epoch", st.highest)
			st.highest = epoch
		}
		st.gate.Unlock()
	}
}

// ErrServerClosed is what Serve returns after Close.
var ErrServerClosed = errors.New("replication: server closed")

// Serve accepts connections on l (a listener of the node network) until l
// fails or the server is closed.
func (s *Server) Serve(l net.Listener) error {
	err := s.conns.Serve(l, s.ServeConn)
	if errors.Is(err, nodeconn.ErrClosed) {
		return ErrServerClosed
	}
	return fmt.Errorf("replication: accept: %w", err)
}

func (s *Server) isClosing() bool { return s.conns.Closing() }

// ServeConn serves one connection until it ends. A node network that
// multiplexes several channels on one listener hands its replication
// connections here.
func (s *Server) ServeConn(nc net.Conn) {
	sc := newServerConn(s, nc)
	if !s.conns.Run(sc, sc.serve) {
		nc.Close()
	}
}

// Close stops accepting, closes every connection and waits until no
// request is executing. Answers not yet sent are dropped: their owners see
// the connection fail.
func (s *Server) Close() error {
	s.conns.Close(func(sc *serverConn) { sc.nc.Close() })
	return nil
}

// Inline writes. The reader executes a write itself, instead of handing
// it to a worker, when it can start at once and should be quick: not
// durable, at most maxInlineWrite bytes, on a device whose recent inline
// writes took under inlineLatency on average, with no earlier request
// holding an overlapping range, and no inline write of the connection
// taken over (below) still running. The data is written from where it
// landed in the reader's buffer, and the answer is queued and sent with
// the others before the reader next reads from the connection (or after
// flushAnswers of them). This saves a goroutine switch and a copy per
// write, and one writev answers a whole read's worth of writes.
//
// Only inline writes are timed: a worker's time includes waiting for the
// others (a file takes one buffered write at a time), which would keep a
// busy device out of the inline path for good. So while a device is deemed
// slow, one eligible write in probeEvery still goes inline, to measure it
// again.
//
// A write that turns out slow (a disk stall, an epoch change waiting for
// older requests) must not hold up the connection: a watchdog, ticking
// every watchPeriod while the reader writes inline, sees an inline write
// still running a whole period later and starts a new reader, so pings
// and other requests are served meanwhile; the old one finishes its write
// like a worker. Durable writes, which may wait for the disk, and other
// requests always go to workers.
const (
	maxInlineWrite = 256 << 10
	inlineLatency  = 100 * time.Microsecond
	probeEvery     = 64
	flushAnswers   = 32
	watchPeriod    = 10 * time.Millisecond
)

// errHandedOff ends a reader whose reading was taken over.
var errHandedOff = errors.New("replication: reading handed over")

// serverConn is one connection from an owner. The reader decodes requests,
// executes quick writes itself and hands the others to workers; answers
// are queued on w, which the reader and the workers flush.
type serverConn struct {
	srv  *Server
	nc   net.Conn
	br   *frameReader
	w    respWriter
	node string // authenticated in the handshake

	// tokens holds one entry per request handed to a worker and not yet
	// answered.
	tokens  chan struct{}
	pending sync.WaitGroup

	work *nodeconn.Workers[*stask]

	// Owned by the reader, and handed over with the reading.
	serving  bool      // the handshake is over
	extended time.Time // when the read deadline was last extended
	inPlace  int       // bytes of br an inline write uses
	answered int       // inline answers queued since the last flush

	// inlineSeq counts the reader's inline writes, twice: it is odd
	// while one runs. The watchdog takes the reading over from an inline
	// write by moving it to even itself.
	inlineSeq  atomic.Uint64
	watch      *time.Timer
	watchArmed atomic.Bool
	watchSeen  atomic.Uint64
	handMu     sync.Mutex   // orders a handover's accounting before its write ends
	slow       atomic.Int32 // inline writes taken over and still running
	readEnd    chan error   // why the reading ended, when it was handed over

	lost  atomic.Bool   // the connection ended: drop what has not started
	ended chan struct{} // closed once nothing of the connection runs
}

func newServerConn(s *Server, nc net.Conn) *serverConn {
	sc := &serverConn{
		srv:     s,
		nc:      nc,
		tokens:  make(chan struct{}, s.cfg.MaxInFlight),
		work:    nodeconn.NewWorkers(s.cfg.Workers, s.cfg.MaxInFlight, (*stask).run),
		readEnd: make(chan error, 1),
		ended:   make(chan struct{}),
	}
	sc.w.init(nc, func(error) { nc.Close() })
	sc.br = newFrameReader(nc, sc.beforeRead)
	return sc
}

func (sc *serverConn) remote() string {
	if a := sc.nc.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

func (sc *serverConn) serve() {
	if err := sc.handshake(); err != nil {
		sc.srv.log.Warn("replication handshake failed", "remote", sc.remote(), "node", sc.node, "err", err)
		sc.nc.Close()
		sc.br.free()
		return
	}
	sc.srv.log.Debug("replication connection", "remote", sc.remote(), "node", sc.node)
	defer close(sc.ended)
	defer sc.srv.forget(sc)
	sc.srv.supersede(sc)
	sc.watch = time.AfterFunc(time.Hour, sc.watchdog)
	sc.watch.Stop()
	err := sc.readLoop()
	if errors.Is(err, errHandedOff) {
		err = <-sc.readEnd
	}
	sc.lost.Store(true)
	sc.watch.Stop()
	sc.w.close()
	sc.nc.Close()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !sc.srv.isClosing() {
		sc.srv.log.Warn("replication connection failed", "remote", sc.remote(), "node", sc.node, "err", err)
	}
	// Workers and taken-over inline writes; each has flushed, or had its
	// frame released, before it counts as done.
	sc.pending.Wait()
	sc.work.Close()
	sc.br.free()
}

// supersede makes sc the connection of its node, and closes and waits
// for the end of the one it replaces. An owner opens a new connection
// only after giving up on the old one, whose requests may still arrive:
// a write the owner abandoned, retransmitted by the network once a
// partition heals, after the owner resynced this copy in the same epoch,
// would overwrite newer data. Once the old connection is closed nothing
// more of it is read, and once it ended nothing of it runs; only then
// does sc read its first request.
func (s *Server) supersede(sc *serverConn) {
	s.nodeMu.Lock()
	old := s.byNode[sc.node]
	s.byNode[sc.node] = sc
	s.nodeMu.Unlock()
	if old == nil {
		return
	}
	s.log.Info("new replication connection from the owner supersedes the old one", "node", sc.node, "old", old.remote(), "new", sc.remote())
	old.lost.Store(true) // what it buffered and has not started never runs
	old.nc.Close()
	<-old.ended
}

// forget removes sc as its node's connection, unless a newer one
// superseded it.
func (s *Server) forget(sc *serverConn) {
	s.nodeMu.Lock()
	if s.byNode[sc.node] == sc {
		delete(s.byNode, sc.node)
	}
	s.nodeMu.Unlock()
}

// handshake runs the server's half of the hello and authentication.
func (sc *serverConn) handshake() error {
	s := sc.srv
	sc.nc.SetDeadline(time.Now().Add(s.cfg.HelloTimeout))
	var hb [ClientHelloLen + MaxNameLen]byte
	if err := sc.br.readFull(hb[:ClientHelloLen]); err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	n := ClientHelloLen + int(hb[ClientHelloLen-1])
	if err := sc.br.readFull(hb[ClientHelloLen:n]); err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	ch, err := DecodeClientHello(hb[:n])
	if err != nil {
		return err
	}
	sc.node = string(ch.Name)
	if err := checkPeerName(sc.nc, sc.node); err != nil {
		return err
	}
	sh := ServerHello{Version: Version}
	if s.cfg.Secret != "" {
		sh.Flags = FlagAuth
	}
	if ch.Version < Version {
		sh.Version = 0
		sc.nc.Write(AppendServerHello(nil, sh))
		return fmt.Errorf("peer speaks protocol version %d, we need %d", ch.Version, Version)
	}
	if _, err := rand.Read(sh.Nonce[:]); err != nil {
		return err
	}
	if _, err := sc.nc.Write(AppendServerHello(nil, sh)); err != nil {
		return fmt.Errorf("write hello: %w", err)
	}
	switch clientAuth := ch.Flags&FlagAuth != 0; {
	case clientAuth && s.cfg.Secret == "":
		return errors.New("authentication mismatch: the peer has a cluster secret and this node has none")
	case !clientAuth && s.cfg.Secret != "":
		return errors.New("authentication mismatch: this node has a cluster secret and the peer has none")
	}
	var proof [ProofLen]byte
	if err := sc.br.readFull(proof[:]); err != nil {
		return fmt.Errorf("read proof: %w", err)
	}
	v := ServerVerdict{Status: VerdictOK}
	want := ClientProof(s.cfg.Secret, sh.Nonce, ch.Name)
	if !hmac.Equal(proof[:], want[:]) {
		v.Status = VerdictBadProof
	} else {
		v.Proof = ServerProof(s.cfg.Secret, ch.Nonce, sh.Nonce, ch.Name)
	}
	if _, err := sc.nc.Write(AppendVerdict(nil, v)); err != nil {
		return fmt.Errorf("write verdict: %w", err)
	}
	if v.Status != VerdictOK {
		return errors.New(v.Status.String())
	}
	sc.nc.SetDeadline(time.Time{})
	return nil
}

// beforeRead runs before each read from the connection, which may wait:
// it sends the answers queued, and pushes the idle deadline back.
func (sc *serverConn) beforeRead() {
	sc.answered = 0
	sc.w.flush()
	if !sc.serving {
		return // the handshake has its own deadline
	}
	if now := time.Now(); now.Sub(sc.extended) > sc.srv.cfg.IdleTimeout/4 {
		sc.nc.SetReadDeadline(now.Add(sc.srv.cfg.IdleTimeout))
		sc.extended = now
	}
}

// readLoop reads until the connection fails, or returns errHandedOff when
// the watchdog took the reading over from it.
func (sc *serverConn) readLoop() error {
	var hb [HeaderLen]byte
	sc.serving = true
	for {
		if err := sc.br.readFull(hb[:]); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return fmt.Errorf("silent for %s", sc.srv.cfg.IdleTimeout)
			}
			return err
		}
		h, err := DecodeHeader(hb[:])
		if err != nil {
			return err
		}
		switch {
		case h.Type == FramePing:
			if sc.w.pong(h.Tag) {
				continue
			}
			return nil
		case h.Type.isRequest():
			if err := sc.readRequest(h); err != nil {
				return err
			}
		default:
			return protoErr("%s from an owner", h.Type)
		}
	}
}

// readRequest reads one request, and executes it inline or hands it to a
// worker.
func (sc *serverConn) readRequest(h Header) error {
	t := newTask(sc)
	if err := t.read(h); err != nil {
		t.free()
		return err
	}
	t.st = sc.srv.lookup(t.device)
	registered := false
	if h.Type == FrameWrite {
		if t.st != nil && sc.inline(t) {
			// The data, where it landed in the reader's buffer.
			n := int(t.length)
			data, err := sc.br.peek(n)
			if err != nil {
				t.free()
				return err
			}
			// Registered in arrival order either way: a later
			// overlapping request waits for this one.
			t.ticket, t.granted = t.st.ranges.tryLock(t.off, t.length, t.excl)
			registered = true
			if t.granted {
				t.data = data
				return sc.runInline(t)
			}
			t.in = backend.GetBuffer(n)
			t.data = t.in.B[:n]
			copy(t.data, data)
			sc.br.discard(n)
		} else if err := t.readData(); err != nil {
			t.free()
			return err
		}
	}
	if t.st != nil && t.ranged && !registered {
		t.ticket, t.granted = t.st.ranges.tryLock(t.off, t.length, t.excl)
	}
	// Blocking here is the backpressure: workers always finish, and each
	// returns a token.
	select {
	case sc.tokens <- struct{}{}:
	default:
		sc.w.flush()
		sc.tokens <- struct{}{}
	}
	sc.pending.Add(1)
	sc.work.Submit(t)
	return nil
}

// inline tells whether the reader should execute the write t itself, if
// its range is free.
func (sc *serverConn) inline(t *stask) bool {
	if t.durable || t.length > maxInlineWrite || sc.slow.Load() != 0 {
		return false
	}
	return t.st.inline.quick()
}

// runInline executes the write t, whose data is in the reader's buffer, on
// the reader. Its answer is queued for the reader's next flush, unless the
// watchdog took the reading over meanwhile: then this goroutine answers
// like a worker, and returns errHandedOff.
func (sc *serverConn) runInline(t *stask) error {
	sc.inPlace = int(t.length)
	t.inline = true
	seq := sc.inlineSeq.Add(1)
	if !sc.watchArmed.Load() && sc.watchArmed.CompareAndSwap(false, true) {
		sc.watch.Reset(watchPeriod)
	}
	// ok is false only once the connection is lost, which the reader
	// itself declares after it stops: never here; but no answer then.
	status, epoch, _, msg, ok := t.execute()
	if sc.inlineSeq.CompareAndSwap(seq, seq+1) {
		sc.br.discard(sc.inPlace)
		sc.inPlace = 0
		if ok {
			sc.w.answer(t.h.Tag, status, epoch, msg)
		}
		t.free()
		if sc.answered++; sc.answered >= flushAnswers {
			// Enough waited for a read to end.
			sc.answered = 0
			sc.w.flush()
		}
		return nil
	}
	// Taken over: the handover has counted this write as pending. Taking
	// handMu waits until the handover that holds it is complete, so the
	// answer below goes out through the new reader's writer state.
	sc.handMu.Lock()
	//lint:ignore SA2001 the lock is a barrier: nothing needs guarding here
	sc.handMu.Unlock()
	if ok && sc.w.answer(t.h.Tag, status, epoch, msg) {
		sc.w.flush()
	}
	t.free()
	sc.slow.Add(-1)
	sc.pending.Done()
	return errHandedOff
}

// watchdog runs every watchPeriod while the reader executes writes inline.
// An inline write that was already running at the previous tick has its
// reading taken over.
func (sc *serverConn) watchdog() {
	s := sc.inlineSeq.Load()
	if last := sc.watchSeen.Swap(s); s == last {
		if s&1 == 1 {
			sc.handOver(s)
		} else {
			// Nothing ran inline for a whole period: sleep until the
			// reader arms the timer again, unless it just started one
			// without seeing the timer disarmed.
			sc.watchArmed.Store(false)
			if sc.inlineSeq.Load() == s || !sc.watchArmed.CompareAndSwap(false, true) {
				return
			}
		}
	}
	if !sc.lost.Load() {
		sc.watch.Reset(watchPeriod)
	}
}

// handOver starts a new reader in place of the one executing inline write
// s, unless that write has finished.
func (sc *serverConn) handOver(s uint64) {
	sc.handMu.Lock()
	defer sc.handMu.Unlock()
	if !sc.inlineSeq.CompareAndSwap(s, s+1) {
		return
	}
	// The reading has not ended (it is in the write), so serve is not
	// waiting for pending yet.
	sc.pending.Add(1)
	sc.slow.Add(1)
	go func() {
		// The write still uses the old buffer.
		sc.br = sc.br.detach(sc.inPlace)
		sc.inPlace = 0
		if err := sc.readLoop(); !errors.Is(err, errHandedOff) {
			sc.readEnd <- err
		}
	}()
}

// stask is one request at the replica, recycled through taskPool.
type stask struct {
	sc   *serverConn
	h    Header
	meta [maxRequestMeta]byte
	in   *backend.Buffer // a write's data
	out  *backend.Buffer // a read's data, sums or extents

	// Decoded request; the slices alias meta and in.
	epoch   uint64
	device  []byte
	off     int64
	length  int64
	chunk   int
	durable bool
	data    []byte

	st      *devState
	ranged  bool
	excl    bool
	ticket  uint64
	granted bool // the ticket held its range at once
	inline  bool // executed by the reader

	headBuf [HeaderLen + responseFixed]byte
	doneFn  func() // t.release, bound once
}

var taskPool sync.Pool

func newTask(sc *serverConn) *stask {
	t, _ := taskPool.Get().(*stask)
	if t == nil {
		t = new(stask)
		t.doneFn = t.release
	}
	t.sc = sc
	return t
}

// read reads and decodes the request h: the metadata into t.meta, a
// write's data into a pooled buffer.
func (t *stask) read(h Header) error {
	t.h = h
	br := t.sc.br
	if h.Type == FrameWrite {
		return t.readWrite(h)
	}
	payload := t.meta[:h.Length] // DecodeHeader bounds it by maxRequestMeta
	if err := br.readFull(payload); err != nil {
		return err
	}
	switch h.Type {
	case FrameUnmap:
		u, err := DecodeUnmap(h, payload)
		if err != nil {
			return err
		}
		t.epoch, t.device, t.off, t.length = u.Epoch, u.Device, u.Offset, u.Length
		t.ranged, t.excl = true, true
	case FrameFlush:
		f, err := DecodeFlush(h, payload)
		if err != nil {
			return err
		}
		t.epoch, t.device = f.Epoch, f.Device
	case FrameSeal:
		s, err := DecodeSeal(h, payload)
		if err != nil {
			return err
		}
		t.epoch, t.device = s.Epoch, s.Device
	case FrameRead:
		r, err := DecodeRead(h, payload)
		if err != nil {
			return err
		}
		t.epoch, t.device, t.off, t.length = r.Epoch, r.Device, r.Offset, int64(r.Length)
		t.ranged = true
	case FrameChecksum:
		c, err := DecodeChecksum(h, payload)
		if err != nil {
			return err
		}
		t.epoch, t.device, t.off, t.length, t.chunk = c.Epoch, c.Device, c.Offset, c.Length, c.Chunk
		t.ranged = true
	case FrameActivity:
		a, err := DecodeActivity(h, payload)
		if err != nil {
			return err
		}
		t.epoch, t.device = a.Epoch, a.Device
	default:
		return protoErr("%s is not a request", h.Type)
	}
	return nil
}

// readWrite reads and decodes a write's metadata; its data, t.length
// bytes, is still to be read (readData, or in place).
func (t *stask) readWrite(h Header) error {
	br := t.sc.br
	if err := br.readFull(t.meta[:writeFixedLen]); err != nil {
		return err
	}
	metaLen := writeFixedLen + int(t.meta[8])
	if metaLen > int(h.Length) {
		return protoErr("write of %d bytes, shorter than its device name", h.Length)
	}
	if err := br.readFull(t.meta[writeFixedLen:metaLen]); err != nil {
		return err
	}
	w, err := decodeWriteMeta(h, t.meta[:metaLen])
	if err != nil {
		return err
	}
	t.epoch, t.device, t.off, t.length, t.durable = w.Epoch, w.Device, w.Offset, int64(writeDataLen(h, &w)), w.Durable
	t.ranged, t.excl = true, true
	return nil
}

// readData reads a write's data into a pooled buffer.
func (t *stask) readData() error {
	n := int(t.length)
	if n == 0 {
		return nil
	}
	t.in = backend.GetBuffer(n)
	t.data = t.in.B[:n]
	return t.sc.br.readFull(t.data)
}

// run executes the request on a worker and answers it.
func (t *stask) run() {
	status, epoch, payload, msg, ok := t.execute()
	if !ok {
		t.release()
		return
	}
	t.answer(status, epoch, payload, msg)
}

// execute executes the request; a payload is in t.out. False when the
// connection was lost before it started.
func (t *stask) execute() (status Status, epoch uint64, payload []byte, msg string, ok bool) {
	sc, st := t.sc, t.st
	if st == nil {
		return StatusUnknownDevice, 0, nil, "", true
	}
	if t.ranged {
		if !t.granted {
			st.ranges.wait(t.ticket)
		}
		defer st.ranges.release(t.ticket)
	}
	if sc.lost.Load() {
		// Nobody will read the answer, and the owner, seeing the
		// connection fail, counts the request as failed.
		return 0, 0, nil, "", false
	}
	status, epoch = st.admit(sc.node, t.epoch, sc.srv.log)
	if status != StatusOK {
		return status, epoch, nil, "", true
	}
	// Held shared from the epoch check until the storage is done with a
	// request that changes it; reads only need the check.
	dev := st.dev
	switch t.h.Type {
	case FrameWrite, FrameUnmap, FrameFlush:
		status, msg = t.modify(st, dev)
		st.gate.RUnlock()
	case FrameSeal:
		st.gate.RUnlock()
	case FrameRead, FrameChecksum, FrameActivity:
		st.gate.RUnlock()
		status, payload, msg = t.query(st, dev)
	}
	return status, epoch, payload, msg, true
}

// inRange checks the request's range against the device.
func (t *stask) inRange(dev backend.Device) bool {
	size := dev.Size()
	return t.off <= size && t.length <= size-t.off
}

// modify applies a write, unmap or flush.
func (t *stask) modify(st *devState, dev backend.Device) (Status, string) {
	if t.h.Type == FrameFlush {
		if err := dev.Flush(); err != nil {
			return StatusIOError, err.Error()
		}
		return StatusOK, ""
	}
	if !t.inRange(dev) {
		return StatusBadRequest, fmt.Sprintf("%d bytes at %d: beyond the device's %d", t.length, t.off, dev.Size())
	}
	if t.length == 0 {
		return StatusOK, ""
	}
	if err := st.al.add(t.off, t.length); err != nil {
		return StatusIOError, fmt.Sprintf("device %s: %v", st.name, err)
	}
	var err error
	if t.h.Type == FrameWrite {
		if t.inline {
			start := time.Now()
			err = dev.WriteAt(t.data, t.off, t.durable)
			st.inline.observe(time.Since(start))
		} else {
			err = dev.WriteAt(t.data, t.off, t.durable)
		}
	} else {
		err = unmap(dev, t.off, t.length)
	}
	if err != nil {
		return StatusIOError, err.Error()
	}
	return StatusOK, ""
}

// zeros backs unmaps of devices that cannot deallocate.
var zeros [1 << 20]byte

// unmap deallocates [off, off+n), or writes zeros where the device cannot:
// unmapped blocks read back as zeros either way.
func unmap(dev backend.Device, off, n int64) error {
	if u, ok := dev.(backend.Unmapper); ok {
		return u.Unmap(off, n)
	}
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if err := dev.WriteAt(zeros[:k], off, false); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// query answers a read, checksum or activity request; payload is in t.out.
func (t *stask) query(st *devState, dev backend.Device) (Status, []byte, string) {
	if t.h.Type == FrameActivity {
		ext := st.al.extents()
		t.out = backend.GetBuffer(len(ext) * ExtentLen)
		return StatusOK, AppendExtents(t.out.B[:0], ext), ""
	}
	if !t.inRange(dev) {
		return StatusBadRequest, nil, fmt.Sprintf("%d bytes at %d: beyond the device's %d", t.length, t.off, dev.Size())
	}
	if t.h.Type == FrameRead {
		t.out = backend.GetBuffer(int(t.length))
		p := t.out.B[:t.length]
		if err := dev.ReadAt(p, t.off); err != nil {
			return StatusIOError, nil, err.Error()
		}
		return StatusOK, p, ""
	}
	n := chunks(t.length, t.chunk)
	t.out = backend.GetBuffer(n * ChecksumLen)
	sums := t.out.B[:0]
	buf := backend.GetBuffer(t.chunk)
	defer backend.PutBuffer(buf)
	for off, end := t.off, t.off+t.length; off < end; off += int64(t.chunk) {
		p := buf.B[:min(int64(t.chunk), end-off)]
		if err := dev.ReadAt(p, off); err != nil {
			return StatusIOError, nil, err.Error()
		}
		sum := sha256.Sum256(p)
		sums = append(sums, sum[:]...)
	}
	return StatusOK, sums, ""
}

// answer sends a worker's response, and releases the task once it is
// written (or never will be).
func (t *stask) answer(status Status, epoch uint64, payload []byte, msg string) {
	sc := t.sc
	if len(payload) == 0 {
		// Copied: the task is free at once.
		if sc.w.answer(t.h.Tag, status, epoch, msg) {
			sc.w.flush()
		}
		t.release()
		return
	}
	head := AppendResponse(t.headBuf[:0], t.h.Tag, status, epoch, len(payload))
	// Until this flush returns, even if whoever writes the frame releases
	// t first: serve waits for every flusher.
	sc.pending.Add(1)
	defer sc.pending.Done()
	if !sc.w.send(outFrame{head: head, data: payload, done: t.doneFn}) {
		t.release()
		return
	}
	sc.w.flush()
}

// free returns the task and its buffers to their pools.
func (t *stask) free() {
	backend.PutBuffer(t.in)
	backend.PutBuffer(t.out)
	*t = stask{doneFn: t.doneFn}
	taskPool.Put(t)
}

// release frees a task a worker ran, and lets the reader take one more
// request.
func (t *stask) release() {
	sc := t.sc
	t.free()
	<-sc.tokens
	sc.pending.Done()
}
