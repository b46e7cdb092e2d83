package forward

import (
	"bufio"
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
	"github.com/hatarget/hatarget/target/scsi"
)

// ServerConfig describes the owner side.
type ServerConfig struct {
	// Lookup finds the LU of a device, the ownership epoch this node is in
	// for it and whether this node owns it. It runs for every command, so
	// that a command never executes after this node learned it lost the LU.
	Lookup func(device string) (lu *scsi.LU, epoch uint64, owner bool)
	// Workers bounds the commands of one connection executing at once.
	// Default 64.
	Workers int
	// MaxInFlight bounds the commands of one connection received and not
	// yet answered; the server stops reading beyond it, which bounds the
	// buffers a peer can make it hold. Default 256.
	MaxInFlight int
	// HelloTimeout bounds the hello of a new connection. Default 10 s.
	HelloTimeout time.Duration
	// DrainTimeout bounds how long a closing connection keeps writing
	// answers, so a peer that stopped reading cannot hold Close. An answer
	// not written by then is dropped and the peer, seeing the connection
	// close, fails its command with the retryable sense; commands still
	// executing are waited for regardless. Default 2 s.
	DrainTimeout time.Duration
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
}

const (
	defaultWorkers        = 64
	defaultServerInFlight = 256
	defaultHelloTimeout   = 10 * time.Second
	defaultDrainTimeout   = 2 * time.Second
	// maxCached bounds the nexuses and device names a connection
	// remembers; a peer cycling through more only costs us re-creating them.
	maxCached = 1024
)

func (cfg ServerConfig) withDefaults() (ServerConfig, error) {
	if cfg.Lookup == nil {
		return cfg, errors.New("forward: server needs a Lookup")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = defaultWorkers
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = defaultServerInFlight
	}
	if cfg.HelloTimeout <= 0 {
		cfg.HelloTimeout = defaultHelloTimeout
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = defaultDrainTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

// Server executes the commands other nodes forward to this one.
type Server struct {
	cfg ServerConfig
	log *slog.Logger

	conns nodeconn.Set[*serverConn]
}

// NewServer returns a server; it serves nothing until Serve or ServeConn.
func NewServer(cfg ServerConfig) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Server{cfg: cfg, log: cfg.Logger}, nil
}

// ErrServerClosed is what Serve returns after Close.
var ErrServerClosed = errors.New("forward: server closed")

// Serve accepts connections on l (a listener of the node network) until l
// fails or the server is closed.
func (s *Server) Serve(l net.Listener) error {
	err := s.conns.Serve(l, s.ServeConn)
	if errors.Is(err, nodeconn.ErrClosed) {
		return ErrServerClosed
	}
	return fmt.Errorf("forward: accept: %w", err)
}

// ServeConn serves one connection until it ends. A node network that
// multiplexes several channels on one listener hands its forward
// connections here.
func (s *Server) ServeConn(nc net.Conn) {
	sc := newServerConn(s, nc)
	if !s.conns.Run(sc, sc.serve) {
		nc.Close()
	}
}

// Close stops accepting, refuses commands that have not started
// (ErrShuttingDown), waits for the running ones and the delivery of their
// answers, and closes every connection. When it returns no command this
// server received is executing.
func (s *Server) Close() error {
	s.conns.Close(func(sc *serverConn) { sc.drain() })
	return nil
}

// serverConn is one connection from a non-owner node. The reader decodes
// requests and hands them to workers; workers execute them and write the
// answers themselves (nodeconn.Writer.Flush).
type serverConn struct {
	srv *Server
	nc  net.Conn
	br  *bufio.Reader
	w   nodeconn.Writer

	// tokens holds one entry per command received and not yet answered.
	tokens chan struct{}
	// pending counts the same commands, for the end of the connection.
	pending sync.WaitGroup

	work *nodeconn.Workers[*stask]

	mu    sync.Mutex
	tasks map[uint32]*stask // received and not answered, by tag, for aborts

	// Reader only: the Nexus and the interned name of the byte strings
	// requests carry, so that per-command decoding does not allocate.
	nexuses map[string]*scsi.Nexus
	devices map[string]string

	draining atomic.Bool // Close: refuse what has not started, then end
	lost     atomic.Bool // the connection failed: drop what has not started
	stop     chan struct{}
}

func newServerConn(s *Server, nc net.Conn) *serverConn {
	sc := &serverConn{
		srv:     s,
		nc:      nc,
		br:      bufio.NewReaderSize(nc, 64<<10),
		tokens:  make(chan struct{}, s.cfg.MaxInFlight),
		work:    nodeconn.NewWorkers(s.cfg.Workers, s.cfg.MaxInFlight, (*stask).run),
		tasks:   make(map[uint32]*stask),
		nexuses: make(map[string]*scsi.Nexus),
		devices: make(map[string]string),
		stop:    make(chan struct{}),
	}
	sc.w.Init(nc, yieldBelow, func(error) { nc.Close() })
	return sc
}

// drain makes the reader stop, as Close wants.
func (sc *serverConn) drain() {
	sc.draining.Store(true)
	sc.nc.SetReadDeadline(time.Now())
}

func (sc *serverConn) serve() {
	if err := sc.hello(); err != nil {
		sc.srv.log.Info("forward hello failed", "remote", sc.nc.RemoteAddr().String(), "err", err)
		sc.nc.Close()
		return
	}
	go sc.w.Run(sc.stop)
	err := sc.readLoop()
	if !sc.draining.Load() {
		// The peer is gone or broke the protocol: nobody will read the
		// answers, so what has not started is dropped.
		sc.lost.Store(true)
		sc.nc.Close()
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
			sc.srv.log.Warn("forward connection failed", "remote", sc.nc.RemoteAddr().String(), "err", err)
		}
	}
	sc.end()
}

// end waits until every command received has been answered or dropped and
// closes the connection.
func (sc *serverConn) end() {
	sc.nc.SetWriteDeadline(time.Now().Add(sc.srv.cfg.DrainTimeout))
	sc.pending.Wait()
	sc.work.Close()
	sc.w.Flush() // a pong the reader posted last
	close(sc.stop)
	sc.nc.Close()
	sc.w.Shutdown()
}

func (sc *serverConn) hello() error {
	sc.nc.SetDeadline(time.Now().Add(sc.srv.cfg.HelloTimeout))
	var b [HelloLen]byte
	if _, err := io.ReadFull(sc.br, b[:]); err != nil {
		return err
	}
	v, err := DecodeHello(b[:])
	if err != nil {
		return err
	}
	if v < Version {
		// The peer speaks only versions before ours: refuse.
		sc.nc.Write(AppendHello(nil, 0))
		return fmt.Errorf("peer speaks protocol version %d, we need %d", v, Version)
	}
	if _, err := sc.nc.Write(AppendHello(nil, Version)); err != nil {
		return err
	}
	sc.nc.SetDeadline(time.Time{})
	if sc.draining.Load() {
		// Close may have set its read deadline before we cleared ours.
		return ErrServerClosed
	}
	return nil
}

func (sc *serverConn) readLoop() error {
	var hb [HeaderLen]byte
	for {
		if _, err := io.ReadFull(sc.br, hb[:]); err != nil {
			return sc.readErr(err)
		}
		h, err := DecodeHeader(hb[:])
		if err != nil {
			return err
		}
		switch h.Type {
		case FrameRequest, FrameTaskMgmt:
			err = sc.readRequest(h)
		case FrameAbort:
			sc.abort(h.Tag)
		case FramePing:
			sc.w.Post(nodeconn.Frame{Head: AppendHeader(nil, Header{Type: FramePong, Tag: h.Tag})})
		default:
			err = protoErr("%s from a client", h.Type)
		}
		if err != nil {
			return sc.readErr(err)
		}
	}
}

// readErr is nil when the reader stopped because the server is closing.
func (sc *serverConn) readErr(err error) error {
	if sc.draining.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	return err
}

// readRequest reads one request or task management frame and hands it to
// a worker.
func (sc *serverConn) readRequest(h Header) error {
	// Blocking here is the backpressure: workers always finish, and each
	// returns a token.
	sc.tokens <- struct{}{}
	sc.pending.Add(1)
	t := newTask(sc)
	if err := t.read(h); err != nil {
		t.release()
		return err
	}
	t.nexus = sc.nexusOf(&t.req)
	t.device = sc.deviceOf(t.req.Device)
	if !sc.register(t) {
		t.release()
		return protoErr("tag %#x reused while in flight", h.Tag)
	}
	sc.work.Submit(t)
	return nil
}

func (sc *serverConn) register(t *stask) bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if _, dup := sc.tasks[t.req.Tag]; dup {
		return false
	}
	sc.tasks[t.req.Tag] = t
	return true
}

func (sc *serverConn) unregister(t *stask) {
	sc.mu.Lock()
	delete(sc.tasks, t.req.Tag)
	sc.mu.Unlock()
}

// abort marks the command tag aborted; one that already got its answer is
// left alone.
func (sc *serverConn) abort(tag uint32) {
	sc.mu.Lock()
	if t := sc.tasks[tag]; t != nil {
		t.aborted.Store(true)
	}
	sc.mu.Unlock()
}

// nexusOf returns the Nexus of a request's nexus fields, the same value
// for every command of the same nexus on this connection. The LU keys its
// per-nexus state by Nexus.Key, which is the non-owner's key for the
// initiator's session: unit attentions and reservations of the remote
// nexus are those of that session.
func (sc *serverConn) nexusOf(r *Request) *scsi.Nexus {
	if n, ok := sc.nexuses[string(r.nexusRaw)]; ok {
		return n
	}
	var n *scsi.Nexus
	if w := &r.Nexus; len(w.InitiatorPort) > 0 || len(w.TargetPort) > 0 {
		n = &scsi.Nexus{
			InitiatorName: string(w.InitiatorName),
			InitiatorPort: string(w.InitiatorPort),
			TargetName:    string(w.TargetName),
			TargetPort:    string(w.TargetPort),
			RelativePort:  w.RelativePort,
			PortGroup:     w.PortGroup,
		}
		n.Key = n.InitiatorPort + "|" + n.TargetPort
	}
	if len(sc.nexuses) >= maxCached {
		clear(sc.nexuses)
	}
	sc.nexuses[string(r.nexusRaw)] = n
	return n
}

// deviceOf interns a device name.
func (sc *serverConn) deviceOf(b []byte) string {
	if name, ok := sc.devices[string(b)]; ok {
		return name
	}
	if len(sc.devices) >= maxCached {
		clear(sc.devices)
	}
	name := string(b)
	sc.devices[name] = name
	return name
}

// stask is one forwarded command at the owner, recycled through taskPool.
type stask struct {
	sc      *serverConn
	req     Request
	meta    [maxRequestMeta]byte
	nexus   *scsi.Nexus
	device  string
	out, in *backend.Buffer
	aborted atomic.Bool
	// fn is the function of a task management frame, 0 for a request.
	fn TMFunction

	cmd     scsi.Command
	res     scsi.Result
	headBuf [HeaderLen + responseFixedLen + MaxSenseLen]byte
	doneFn  func() // t.release, bound once
}

// A task management payload fits the metadata buffer of a request.
var _ [maxRequestMeta - maxTaskMgmtLen]struct{}

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

// read reads the request's payload: the metadata into t.meta, the
// data-out into a pooled buffer.
func (t *stask) read(h Header) error {
	if h.Type == FrameTaskMgmt {
		return t.readTaskMgmt(h)
	}
	br := t.sc.br
	fixed := t.meta[:requestFixedLen]
	if _, err := io.ReadFull(br, fixed); err != nil {
		return err
	}
	f, err := t.req.decodeFixed(h, fixed)
	if err != nil {
		return err
	}
	meta := t.meta[:requestFixedLen+f.varLen]
	if _, err := io.ReadFull(br, meta[requestFixedLen:]); err != nil {
		return err
	}
	if err := t.req.decodeVar(meta); err != nil {
		return err
	}
	if n := int(f.dataOutLen); n > 0 {
		t.out = backend.GetBuffer(n)
		t.req.DataOut = t.out.B[:n]
		if _, err := io.ReadFull(br, t.req.DataOut); err != nil {
			return err
		}
	}
	return nil
}

// readTaskMgmt reads a task management frame into t.meta and t.req, where
// the request fields it shares with a request (tag, epoch, device, nexus)
// go: the rest of the server treats it as a request.
func (t *stask) readTaskMgmt(h Header) error {
	payload := t.meta[:h.Length] // DecodeHeader bounds it by maxTaskMgmtLen
	if _, err := io.ReadFull(t.sc.br, payload); err != nil {
		return err
	}
	m, err := DecodeTaskMgmt(h, payload)
	if err != nil {
		return err
	}
	t.fn = m.Function
	t.req = Request{Tag: m.Tag, Epoch: m.Epoch, Device: m.Device, Nexus: m.Nexus, nexusRaw: m.nexusRaw}
	return nil
}

// run executes the command unless it was aborted or its connection is
// going away, and answers it.
func (t *stask) run() {
	sc := t.sc
	switch {
	case sc.lost.Load():
		sc.unregister(t)
		t.release()
		return
	case sc.draining.Load():
		t.answerError(ErrShuttingDown, 0)
		return
	case t.aborted.Load():
		t.answerAborted()
		return
	}
	lu, epoch, owner := sc.srv.cfg.Lookup(t.device)
	switch {
	case lu == nil:
		t.answerError(ErrUnknownDevice, 0)
	case !owner || epoch != t.req.Epoch:
		t.answerError(ErrNotOwner, epoch)
	case t.fn != 0:
		t.manage(lu)
	default:
		t.execute(lu)
	}
}

// manage performs a task management function on the owner's LU, for the
// remote nexus, and answers GOOD.
func (t *stask) manage(lu *scsi.LU) {
	switch t.fn {
	case TMLogicalUnitReset:
		lu.ResetLULocal(t.nexus)
	case TMNexusLoss:
		lu.NexusLossLocal(t.nexus)
	}
	t.res = scsi.Result{Status: scsi.StatusGood}
	t.answer(nodeconn.Frame{Head: AppendResponse(t.headBuf[:0], t.req.Tag, &t.res)})
}

func (t *stask) execute(lu *scsi.LU) {
	t.cmd = scsi.Command{Nexus: t.nexus, LUN: t.req.LUN, CDB: t.req.CDB, DataOut: t.req.DataOut, TaskTag: t.req.TaskTag}
	if n := int(t.req.DataInLen); n > 0 {
		t.in = backend.GetBuffer(n)
		t.cmd.DataIn = t.in.B[:n]
	}
	lu.ExecuteLocal(&t.cmd, &t.res)
	if t.aborted.Load() {
		t.answerAborted()
		return
	}
	head := AppendResponse(t.headBuf[:0], t.req.Tag, &t.res)
	t.answer(nodeconn.Frame{Head: head, Data: t.cmd.DataIn[:t.res.DataInLen]})
}

// answerAborted answers TASK ABORTED, with neither data nor sense.
func (t *stask) answerAborted() {
	t.res = scsi.Result{Status: scsi.StatusTaskAborted}
	t.answer(nodeconn.Frame{Head: AppendResponse(t.headBuf[:0], t.req.Tag, &t.res)})
}

func (t *stask) answerError(code ErrorCode, epoch uint64) {
	t.answer(nodeconn.Frame{Head: AppendError(t.headBuf[:0], ErrorFrame{Tag: t.req.Tag, Code: code, Epoch: epoch})})
}

// answer queues f and writes it unless another goroutine is writing. The
// command leaves the abortable set first: an abort arriving now is late.
func (t *stask) answer(f nodeconn.Frame) {
	sc := t.sc
	sc.unregister(t)
	f.Done = t.doneFn
	if !sc.w.Send(f) {
		t.release()
		return
	}
	sc.w.Flush()
}

// release returns the task and its buffers once its answer left (or never
// will), and lets the reader take one more command.
func (t *stask) release() {
	sc := t.sc
	backend.PutBuffer(t.out)
	backend.PutBuffer(t.in)
	t.out, t.in, t.sc, t.nexus = nil, nil, nil, nil
	t.fn = 0
	t.cmd = scsi.Command{}
	t.req = Request{}
	t.aborted.Store(false)
	taskPool.Put(t)
	<-sc.tokens
	sc.pending.Done()
}
