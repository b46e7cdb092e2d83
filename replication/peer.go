package replication

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/nodeconn"
)

// PeerConfig describes the owner's connection to one replica.
type PeerConfig struct {
	// Node is the replica's node name, as the cluster knows it.
	Node string
	// Addr is the replica's replication address, as Dial understands it.
	Addr string
	// Self is this node's name: the replica only takes requests for a
	// device from the connection of its owner.
	Self string
	// Secret is the cluster secret; empty means no authentication, and
	// then the replica must have none either.
	Secret string
	// Dial opens a connection on the node network; nil dials TCP. The
	// cluster passes its one node dialer, where TLS lives.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Timeout bounds a dial with its handshake, and is the unit of silence
	// detection: a connection that received nothing for Timeout/2 is
	// pinged, and one silent for 2×Timeout is declared dead, failing its
	// requests. Requests themselves are bounded by their context. Default
	// 1 s.
	Timeout time.Duration
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
}

const (
	defaultPeerTimeout = time.Second
	minRedial          = 50 * time.Millisecond
	maxRedial          = 2 * time.Second
)

// Errors of requests to a replica. A refusal by the replica is one of
// ErrNotOwner, ErrUnknownDevice, ErrBadRequest, ErrReplicaIO (wrapped, with
// the replica's message) or a *StaleEpochError; the rest say the request
// got no answer.
var (
	// ErrNotOwner: the replica does not take requests for the device from
	// this node (its committed state names another owner, or it has not
	// learned yet that this node is the owner).
	ErrNotOwner = errors.New("replication: not the device's owner at the replica")
	// ErrUnknownDevice: the replica holds no such device.
	ErrUnknownDevice = errors.New("replication: unknown device at the replica")
	// ErrBadRequest: the replica cannot apply the request (a range beyond
	// its copy, say).
	ErrBadRequest = errors.New("replication: bad request")
	// ErrReplicaIO: the replica's storage failed the request.
	ErrReplicaIO = errors.New("replication: I/O error at the replica")
	// ErrTimeout: no answer in time. The request may still be applied.
	ErrTimeout = errors.New("replication: timed out")
	// ErrConnection: the replica cannot be reached, or the connection
	// failed with the request in flight. The request may have been
	// applied.
	ErrConnection = errors.New("replication: no connection to the replica")
	// ErrAuthentication: the handshake failed on the cluster secret.
	ErrAuthentication = errors.New("replication: authentication failed")
	// ErrPeerClosed: the Peer was closed.
	ErrPeerClosed = errors.New("replication: peer closed")
)

// StaleEpochError is a replica's refusal of a request in an epoch older
// than one it has seen for the device: another node owns it now.
type StaleEpochError struct {
	Node string
	// Epoch is the replica's epoch for the device.
	Epoch uint64
}

func (e *StaleEpochError) Error() string {
	return fmt.Sprintf("replication: stale epoch: replica %s is in epoch %d", e.Node, e.Epoch)
}

// Peer is the owner's connection to one replica. It is safe for concurrent
// use: many requests are in flight at once on one connection, matched to
// their answers by tag. When the connection fails the requests in flight
// on it fail at once and the Peer redials in the background, with
// backoff; a request made while it has no connection waits for the next
// attempt, and fails with it. A request is never sent twice.
type Peer struct {
	cfg PeerConfig
	log *slog.Logger

	tags atomic.Uint32
	cur  atomic.Pointer[peerConn]
	// conns counts the connections installed: a resync that saw it
	// change cannot tell whether the replica restarted (and lost what it
	// had not made durable) in between.
	conns atomic.Uint64

	mu     sync.Mutex
	closed bool
	// waiting are requests made while there is no connection: the next
	// one sends them, or the attempt to make it fails them.
	waiting []*call

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // connection and redial goroutines

	calls sync.Pool
}

// NewPeer returns the Peer of the replica cfg describes, connecting in
// the background: requests made before the first connection wait for it,
// and fail if that attempt fails. The cluster uses it for every member of
// an in-sync set, so that a member that is down is still written to (and
// dropped when it fails) rather than forgotten.
func NewPeer(cfg PeerConfig) (*Peer, error) {
	p, err := newPeer(cfg)
	if err != nil {
		return nil, err
	}
	p.wg.Add(1)
	go p.redial()
	return p, nil
}

// Dial is NewPeer that makes the first connection before it returns, and
// returns its error instead (an ErrAuthentication for a secret mismatch).
func Dial(ctx context.Context, cfg PeerConfig) (*Peer, error) {
	p, err := newPeer(cfg)
	if err != nil {
		return nil, err
	}
	cn, err := p.connect(ctx)
	if err != nil {
		p.cancel()
		return nil, err
	}
	p.install(cn)
	return p, nil
}

func newPeer(cfg PeerConfig) (*Peer, error) {
	switch {
	case cfg.Node == "" || cfg.Addr == "":
		return nil, errors.New("replication: a peer needs a node name and an address")
	case checkName("node", len(cfg.Self)) != nil:
		return nil, fmt.Errorf("replication: this node's name %q: want 1 to %d bytes", cfg.Self, MaxNameLen)
	}
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = d.DialContext
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultPeerTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Peer{cfg: cfg, log: cfg.Logger.With("replica", cfg.Node)}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p, nil
}

// Node is the replica's node name.
func (p *Peer) Node() string { return p.cfg.Node }

// Close ends the connection and stops redialling; requests in flight fail
// with ErrPeerClosed.
func (p *Peer) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	if cn := p.cur.Load(); cn != nil {
		cn.fail(ErrPeerClosed)
	}
	p.wg.Wait()
	p.failWaiting(ErrPeerClosed)
	return nil
}

// Connected reports whether the Peer has a live connection.
func (p *Peer) Connected() bool {
	cn := p.cur.Load()
	return cn != nil && !cn.isDead()
}

// connect dials and runs the handshake, within Timeout.
func (p *Peer) connect(ctx context.Context) (*peerConn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	nc, err := p.cfg.Dial(ctx, "tcp", p.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("%w: dial %s at %s: %w", ErrConnection, p.cfg.Node, p.cfg.Addr, err)
	}
	deadline, _ := ctx.Deadline()
	nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	err = checkPeerName(nc, p.cfg.Node)
	if err == nil {
		err = p.handshake(nc)
	}
	stop()
	if err != nil {
		nc.Close()
		if errors.Is(err, ErrAuthentication) || errors.Is(err, ErrProtocol) {
			return nil, fmt.Errorf("replication: handshake with %s at %s: %w", p.cfg.Node, p.cfg.Addr, err)
		}
		return nil, fmt.Errorf("%w: handshake with %s at %s: %w", ErrConnection, p.cfg.Node, p.cfg.Addr, err)
	}
	nc.SetDeadline(time.Time{})
	return newPeerConn(p, nc), nil
}

// handshake runs the client's half of the hello and authentication.
func (p *Peer) handshake(nc net.Conn) error {
	secret := p.cfg.Secret
	ch := ClientHello{Version: Version, Name: []byte(p.cfg.Self)}
	if secret != "" {
		ch.Flags = FlagAuth
	}
	if _, err := rand.Read(ch.Nonce[:]); err != nil {
		return err
	}
	b, err := AppendClientHello(nil, ch)
	if err != nil {
		return err
	}
	if _, err := nc.Write(b); err != nil {
		return err
	}
	var sb [ServerHelloLen]byte
	if _, err := io.ReadFull(nc, sb[:]); err != nil {
		return err
	}
	sh, err := DecodeServerHello(sb[:])
	if err != nil {
		return err
	}
	switch {
	case sh.Version == 0:
		return fmt.Errorf("%w: the replica refused protocol version %d", ErrProtocol, Version)
	case sh.Version != Version:
		return fmt.Errorf("%w: the replica answered protocol version %d to our %d", ErrProtocol, sh.Version, Version)
	case sh.Flags&FlagAuth != 0 && secret == "":
		return fmt.Errorf("%w: the replica requires the cluster secret and this node has none configured", ErrAuthentication)
	case sh.Flags&FlagAuth == 0 && secret != "":
		return fmt.Errorf("%w: this node has a cluster secret and the replica has none configured: both must agree", ErrAuthentication)
	}
	proof := ClientProof(secret, sh.Nonce, ch.Name)
	if _, err := nc.Write(proof[:]); err != nil {
		return err
	}
	var vb [VerdictLen]byte
	if _, err := io.ReadFull(nc, vb[:]); err != nil {
		return err
	}
	v, err := DecodeVerdict(vb[:])
	if err != nil {
		return err
	}
	if v.Status != VerdictOK {
		return fmt.Errorf("%w: the replica refused us: %s", ErrAuthentication, v.Status)
	}
	if want := ServerProof(secret, ch.Nonce, sh.Nonce, ch.Name); !hmac.Equal(v.Proof[:], want[:]) {
		return fmt.Errorf("%w: the replica did not prove it knows the cluster secret", ErrAuthentication)
	}
	return nil
}

// install makes cn the live connection and serves it.
func (p *Peer) install(cn *peerConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		cn.nc.Close()
		return
	}
	p.cur.Store(cn)
	p.conns.Add(1)
	p.wg.Add(1)
	go cn.run()
	for _, c := range p.waiting {
		p.send(cn, c, nil)
	}
	clear(p.waiting)
	p.waiting = p.waiting[:0]
}

// failWaiting fails the requests waiting for a connection with err.
func (p *Peer) failWaiting(err error) {
	p.mu.Lock()
	waiting := p.waiting
	p.waiting = nil
	p.mu.Unlock()
	for _, c := range waiting {
		c.err = err
		c.unsent()
		c.complete()
	}
}

// redial connects again after cn failed, backing off while it cannot.
func (p *Peer) redial() {
	defer p.wg.Done()
	backoff := time.Duration(0)
	for attempt := 0; ; attempt++ {
		if backoff > 0 {
			t := time.NewTimer(backoff)
			select {
			case <-p.ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		if p.ctx.Err() != nil {
			return
		}
		cn, err := p.connect(p.ctx)
		if err == nil {
			p.log.Info("replication connection up", "attempts", attempt+1)
			p.install(cn)
			return
		}
		p.failWaiting(err)
		if attempt == 0 || attempt%20 == 0 {
			p.log.Warn("cannot reach replica", "err", err, "attempts", attempt+1)
		}
		backoff = min(max(2*backoff, minRedial), maxRedial)
	}
}

// lost is called once cn has ended.
func (p *Peer) lost(cn *peerConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.cur.Load() != cn {
		return
	}
	p.wg.Add(1)
	go p.redial()
}

// call is one request in flight, recycled through Peer.calls.
type call struct {
	p   *Peer
	cn  *peerConn
	tag uint32
	typ FrameType

	head []byte // the encoded frame, all but a write's data
	data []byte // a write's data: the caller's
	buf  []byte // a read's destination: the caller's
	want int    // the sums a checksum request expects

	// done receives one signal from whoever completes the call: the
	// reader on its answer, the teardown of a dead connection, or start
	// when it could not send. Whoever takes the call out of the
	// connection's pending map completes it.
	done chan struct{}
	// released is set once the writer no longer references head and
	// data: the call is not reused, nor its data given back, before.
	released  atomic.Bool
	releaseFn func()
	timer     *time.Timer
	// notify, when set, replaces done and await: the call is asynchronous
	// (Volume.StartWrite), and notify runs once its outcome is in and the
	// writer has let go of it, on whichever goroutine saw the later of
	// the two; left counts them down.
	notify func(*call)
	left   atomic.Int32
	// plug, when set, holds back the frame of a call start sends at once
	// (Volume.StartWrite's).
	plug *backend.Plug

	// The outcome.
	err    error
	status Status
	epoch  uint64
	out    *backend.Buffer // a checksum or activity answer
	outLen int
	msg    [MaxMessageLen]byte
	msgLen int
}

func (p *Peer) getCall(t FrameType) *call {
	c, _ := p.calls.Get().(*call)
	if c == nil {
		c = &call{p: p, head: make([]byte, 0, HeaderLen+maxRequestMeta), done: make(chan struct{}, 1)}
		c.releaseFn = func() {
			// Once released is set, a synchronous call may be recycled.
			async := c.notify != nil
			c.released.Store(true)
			if async {
				c.step()
			}
		}
		c.timer = time.NewTimer(time.Hour)
		c.timer.Stop()
	}
	c.typ = t
	c.tag = p.tags.Add(1)
	return c
}

// putCall recycles c once its outcome has been read.
func (p *Peer) putCall(c *call) {
	backend.PutBuffer(c.out)
	c.cn, c.data, c.buf, c.out, c.err, c.notify, c.plug = nil, nil, nil, nil, nil, nil, nil
	c.want, c.outLen, c.msgLen, c.status, c.epoch = 0, 0, 0, 0, 0
	c.head = c.head[:0]
	p.calls.Put(c)
}

// start sends c (encoded in c.head, or failed with c.err). It never
// blocks: a call that cannot be sent is completed at once.
func (p *Peer) start(c *call) {
	c.released.Store(true)
	if c.err != nil {
		c.unsent()
		c.complete()
		return
	}
	cn := p.cur.Load()
	if cn == nil || cn.isDead() {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.err = ErrPeerClosed
			c.unsent()
			c.complete()
			return
		}
		if cn = p.cur.Load(); cn == nil || cn.isDead() {
			// Sent by install, or failed by the attempt that fails.
			p.waiting = append(p.waiting, c)
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
	}
	p.send(cn, c, c.plug)
}

// send sends c on cn, or queues it there until plug is unplugged. It
// never blocks, so install may call it with p.mu held.
func (p *Peer) send(cn *peerConn, c *call, plug *backend.Plug) {
	c.cn = cn
	// Once c is pending, the teardown of a failing connection may
	// complete it, and its caller may then recycle it as soon as released
	// says the writer is done with it: so nothing of c is read after, and
	// released is false from then until the writer, or the failure below,
	// lets go of the frame.
	tag, async := c.tag, c.notify != nil
	f := nodeconn.Frame{Head: c.head, Data: c.data, Done: c.releaseFn, Ref: c}
	c.released.Store(false)
	cn.mu.Lock()
	if cn.pending == nil { // failAll ran
		cn.mu.Unlock()
		c.err = cn.err()
		c.unsent()
		c.complete()
		return
	}
	cn.pending[tag] = c
	cn.mu.Unlock()
	if plug != nil && cn.w.Send(f) {
		plug.Hold(&cn.w)
		return
	}
	if plug == nil && cn.w.Post(f) {
		return
	}
	// The writer is closed and never had the frame.
	cn.w.Release(func() { c.released.Store(true) })
	if async {
		c.step()
	}
	if cn.claim(tag) == c {
		c.err = cn.err()
		c.complete()
	}
	// Otherwise the connection's teardown claimed c and completes it.
}

// await waits for c's outcome until ctx ends or, when deadline is not
// zero, until deadline, and returns it as an error. c stays the caller's:
// putCall it after reading any answer payload.
func (p *Peer) await(ctx context.Context, c *call, deadline time.Time) error {
	// An answer already in counts even when the deadline has passed: the
	// caller may have been busy (its local write) while it came.
	select {
	case <-c.done:
		if !c.released.Load() {
			c.cn.w.WaitFor(c.released.Load)
		}
		return c.result()
	default:
	}
	var timeout <-chan time.Time
	if !deadline.IsZero() {
		c.timer.Reset(time.Until(deadline))
		timeout = c.timer.C
	}
	select {
	case <-c.done:
	case <-timeout:
		p.abandon(c, fmt.Errorf("%w: no answer from %s", ErrTimeout, p.cfg.Node))
	case <-ctx.Done():
		err := ctx.Err()
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w: no answer from %s: %w", ErrTimeout, p.cfg.Node, err)
		}
		p.abandon(c, err)
	}
	if timeout != nil {
		c.timer.Stop()
	}
	if !c.released.Load() {
		c.cn.w.WaitFor(c.released.Load)
	}
	return c.result()
}

// abandon gives up on c with err, unless its answer is being completed,
// in which case it waits for that. Either way, once it returns nobody but
// the writer (until released) touches c. An asynchronous call is not
// waited for: abandon completes it with err, or leaves it to whoever is
// completing it.
func (p *Peer) abandon(c *call, err error) {
	p.mu.Lock()
	if i := slices.Index(p.waiting, c); i >= 0 {
		p.waiting = slices.Delete(p.waiting, i, i+1)
		p.mu.Unlock()
		c.err = err
		c.unsent()
		c.completeAsync()
		return
	}
	cn := c.cn // set under p.mu when install sends a waiting call
	p.mu.Unlock()
	if cn == nil || cn.claim(c.tag) != c {
		if c.notify == nil {
			<-c.done
		}
		return
	}
	c.err = err
	switch {
	case cn.w.Unqueue(c):
		c.unsent()
	case !c.released.Load():
		// The writer is in the middle of writing the frame, blocked on a
		// replica that stopped reading: the connection cannot go on
		// without the rest of the frame, which is the caller's buffer.
		cn.fail(fmt.Errorf("request abandoned while being written: %w", err))
	}
	c.completeAsync()
}

// complete delivers c's outcome, which whoever took c out of the
// connection's pending set (or never put it there) has filled in.
func (c *call) complete() {
	if c.notify == nil {
		c.done <- struct{}{}
		return
	}
	c.step()
}

// completeAsync completes c if it is asynchronous: a synchronous call's
// outcome is read by the await that abandoned it.
func (c *call) completeAsync() {
	if c.notify != nil {
		c.step()
	}
}

// unsent records that the writer never had c's frame, or no longer
// does.
func (c *call) unsent() {
	c.released.Store(true)
	c.step()
}

// step counts down one of an asynchronous call's two events, its
// outcome and its release.
func (c *call) step() {
	if c.notify != nil && c.left.Add(-1) == 0 {
		c.notify(c)
	}
}

// result turns c's outcome into an error.
func (c *call) result() error {
	if c.err != nil {
		return c.err
	}
	node := c.p.cfg.Node
	msg := string(c.msg[:c.msgLen])
	switch c.status {
	case StatusOK:
		return nil
	case StatusStaleEpoch:
		return &StaleEpochError{Node: node, Epoch: c.epoch}
	case StatusNotOwner:
		return fmt.Errorf("%w: replica %s (its epoch %d)", ErrNotOwner, node, c.epoch)
	case StatusUnknownDevice:
		return fmt.Errorf("%w: replica %s", ErrUnknownDevice, node)
	case StatusIOError:
		return fmt.Errorf("%w: replica %s: %q", ErrReplicaIO, node, msg)
	case StatusBadRequest:
		return fmt.Errorf("%w: replica %s: %q", ErrBadRequest, node, msg)
	}
	return fmt.Errorf("%w: %s from %s", ErrProtocol, c.status, node)
}

func (p *Peer) startWrite(device string, epoch, seq uint64, off int64, data []byte, durable bool) *call {
	return p.startWriteNotify(device, epoch, seq, off, data, durable, nil, nil)
}

// startWriteNotify is startWrite for a call that completes through
// notify, when notify is not nil, instead of through await; its frame
// waits for plug when plug is not nil.
func (p *Peer) startWriteNotify(device string, epoch, seq uint64, off int64, data []byte, durable bool, notify func(*call), plug *backend.Plug) *call {
	c := p.getCall(FrameWrite)
	c.head, c.err = AppendWrite(c.head[:0], Write{Tag: c.tag, Epoch: epoch, Seq: seq, Offset: off, Durable: durable, Data: data}, device)
	c.data = data
	c.notify, c.plug = notify, plug
	c.left.Store(2)
	p.start(c)
	return c
}

func (p *Peer) startUnmap(device string, epoch, seq uint64, off, length int64) *call {
	c := p.getCall(FrameUnmap)
	c.head, c.err = AppendUnmap(c.head[:0], Unmap{Tag: c.tag, Epoch: epoch, Seq: seq, Offset: off, Length: length}, device)
	p.start(c)
	return c
}

func (p *Peer) startFlush(device string, epoch, seq uint64) *call {
	c := p.getCall(FrameFlush)
	c.head, c.err = AppendFlush(c.head[:0], Flush{Tag: c.tag, Epoch: epoch, Seq: seq}, device)
	p.start(c)
	return c
}

func (p *Peer) startSeal(device string, epoch uint64) *call {
	c := p.getCall(FrameSeal)
	c.head, c.err = AppendSeal(c.head[:0], Seal{Tag: c.tag, Epoch: epoch}, device)
	p.start(c)
	return c
}

// finish awaits c with ctx and recycles it.
func (p *Peer) finish(ctx context.Context, c *call) error {
	err := p.await(ctx, c, time.Time{})
	p.putCall(c)
	return err
}

// Write stores data at off in the replica's copy of device, durably
// (FUA) when durable is set, and returns once the replica has.
func (p *Peer) Write(ctx context.Context, device string, epoch, seq uint64, off int64, data []byte, durable bool) error {
	return p.finish(ctx, p.startWrite(device, epoch, seq, off, data, durable))
}

// Unmap deallocates [off, off+length) of the replica's copy.
func (p *Peer) Unmap(ctx context.Context, device string, epoch, seq uint64, off, length int64) error {
	return p.finish(ctx, p.startUnmap(device, epoch, seq, off, length))
}

// Flush makes every write the replica completed durable.
func (p *Peer) Flush(ctx context.Context, device string, epoch uint64) error {
	return p.finish(ctx, p.startFlush(device, epoch, 0))
}

// Seal announces epoch to the replica: once it returns, the replica runs
// no request of an older epoch for device, and refuses every later one.
func (p *Peer) Seal(ctx context.Context, device string, epoch uint64) error {
	return p.finish(ctx, p.startSeal(device, epoch))
}

// Read fills buf (at most MaxDataLen bytes) from off of the replica's
// copy.
func (p *Peer) Read(ctx context.Context, device string, epoch uint64, off int64, buf []byte) error {
	c := p.getCall(FrameRead)
	c.head, c.err = AppendRead(c.head[:0], Read{Tag: c.tag, Epoch: epoch, Offset: off, Length: len(buf)}, device)
	c.buf = buf
	p.start(c)
	return p.finish(ctx, c)
}

// Checksums returns the SHA-256 of each chunk-byte piece of [off,
// off+length) of the replica's copy, the last one possibly shorter. A
// request covers at most MaxChecksumLen bytes and MaxChecksums chunks.
func (p *Peer) Checksums(ctx context.Context, device string, epoch uint64, off, length int64, chunk int) ([][ChecksumLen]byte, error) {
	c := p.getCall(FrameChecksum)
	c.head, c.err = AppendChecksum(c.head[:0], Checksum{Tag: c.tag, Epoch: epoch, Offset: off, Length: length, Chunk: chunk}, device)
	if c.err == nil {
		c.want = chunks(length, chunk)
	}
	p.start(c)
	defer p.putCall(c)
	if err := p.await(ctx, c, time.Time{}); err != nil {
		return nil, err
	}
	return DecodeChecksums(make([][ChecksumLen]byte, 0, c.want), c.out.B[:c.outLen], c.want)
}

// Activity returns the replica's activity log of device: the regions its
// last writes touched (see ActivityEntries).
func (p *Peer) Activity(ctx context.Context, device string, epoch uint64) ([]Extent, error) {
	c := p.getCall(FrameActivity)
	c.head, c.err = AppendActivity(c.head[:0], Activity{Tag: c.tag, Epoch: epoch}, device)
	p.start(c)
	defer p.putCall(c)
	if err := p.await(ctx, c, time.Time{}); err != nil {
		return nil, err
	}
	if c.out == nil {
		return nil, nil
	}
	return DecodeExtents(nil, c.out.B[:c.outLen])
}

// peerYieldBelow makes the writer of a Peer's connection yield once
// before a round of fewer frames: the volume's other writes, about to be
// sent, then share its system call, which was measured to cut the owner's
// CPU per replicated write.
const peerYieldBelow = 4

// peerConn is one connection to the replica: a reader goroutine that
// completes calls, the writer goroutine, and a watchdog.
type peerConn struct {
	p  *Peer
	nc net.Conn
	br *bufio.Reader
	w  nodeconn.Writer

	mu      sync.Mutex
	pending map[uint32]*call // nil once failAll ran
	failErr error

	frames    atomic.Uint64 // frames received, for the watchdog
	dead      chan struct{}
	closeOnce sync.Once
}

func newPeerConn(p *Peer, nc net.Conn) *peerConn {
	cn := &peerConn{p: p, nc: nc, br: bufio.NewReaderSize(nc, 64<<10),
		pending: make(map[uint32]*call), dead: make(chan struct{})}
	cn.w.Init(nc, peerYieldBelow, cn.fail)
	return cn
}

func (cn *peerConn) isDead() bool {
	select {
	case <-cn.dead:
		return true
	default:
		return false
	}
}

// err is why the connection failed, as a request error.
func (cn *peerConn) err() error {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	switch {
	case errors.Is(cn.failErr, ErrPeerClosed):
		return ErrPeerClosed
	case cn.failErr == nil:
		return fmt.Errorf("%w: connection to %s closed", ErrConnection, cn.p.cfg.Node)
	}
	return fmt.Errorf("%w: connection to %s failed: %v", ErrConnection, cn.p.cfg.Node, cn.failErr)
}

// fail ends the connection; the reader then fails its calls.
func (cn *peerConn) fail(err error) {
	cn.closeOnce.Do(func() {
		cn.mu.Lock()
		cn.failErr = err
		cn.mu.Unlock()
		close(cn.dead)
		cn.w.Close()
		cn.nc.Close()
		if !errors.Is(err, ErrPeerClosed) {
			cn.p.log.Warn("replication connection lost", "err", err)
		}
	})
}

// claim takes the call waiting for tag out of the pending set; nil when
// none is (any more).
func (cn *peerConn) claim(tag uint32) *call {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	c := cn.pending[tag]
	if c != nil {
		delete(cn.pending, tag)
	}
	return c
}

func (cn *peerConn) run() {
	defer cn.p.wg.Done()
	go cn.w.Run(cn.dead)
	go cn.watch()
	err := cn.readLoop()
	cn.fail(err)
	// The writer lets go of every frame before the calls complete, so no
	// caller reuses a buffer the writer still reads.
	cn.w.Shutdown()
	cn.failAll()
	cn.p.lost(cn)
}

// failAll completes every call still waiting on the connection.
func (cn *peerConn) failAll() {
	cn.mu.Lock()
	pending := cn.pending
	cn.pending = nil
	cn.mu.Unlock()
	err := cn.err()
	for _, c := range pending {
		c.err = err
		c.complete()
	}
}

var pingFrame = AppendPing(nil, 0, false)

// watch declares the replica dead when it has been silent for 2×Timeout,
// pinging it whenever it has been silent for Timeout/2.
func (cn *peerConn) watch() {
	timeout := cn.p.cfg.Timeout
	nodeconn.Silence{
		Tick:   timeout / 2,
		Frames: &cn.frames,
		Ping:   func(int) { cn.w.Post(nodeconn.Frame{Head: pingFrame}) },
		Fail:   func() { cn.fail(fmt.Errorf("replica silent for %s", nodeconn.SilentTicks*timeout/2)) },
	}.Watch(cn.dead)
}

// readLoop completes calls as their answers arrive.
func (cn *peerConn) readLoop() error {
	var hb [HeaderLen]byte
	var fb [responseFixed]byte
	for {
		if _, err := io.ReadFull(cn.br, hb[:]); err != nil {
			return fmt.Errorf("read: %w", err)
		}
		cn.frames.Add(1)
		h, err := DecodeHeader(hb[:])
		if err != nil {
			return err
		}
		switch h.Type {
		case FrameResponse:
			if _, err := io.ReadFull(cn.br, fb[:]); err != nil {
				return fmt.Errorf("read: %w", err)
			}
			r, err := decodeResponseFixed(h, fb[:])
			if err != nil {
				return err
			}
			if err := cn.readResponse(r, int(h.Length)-responseFixed); err != nil {
				return err
			}
		case FramePong:
		default:
			return protoErr("%s from a replica", h.Type)
		}
	}
}

// readResponse reads the n-byte payload of response r into its call and
// completes it.
func (cn *peerConn) readResponse(r Response, n int) error {
	c := cn.claim(r.Tag)
	if c == nil {
		// The answer to a request its caller gave up on.
		_, err := cn.br.Discard(n)
		return err
	}
	err := cn.readPayload(c, r, n)
	if err != nil {
		c.err = fmt.Errorf("%w: connection to %s failed: %v", ErrConnection, cn.p.cfg.Node, err)
	}
	c.complete()
	return err
}

func (cn *peerConn) readPayload(c *call, r Response, n int) error {
	c.status, c.epoch = r.Status, r.Epoch
	var dst []byte
	switch {
	case r.Status != StatusOK:
		dst = c.msg[:n] // decodeResponseFixed bounds it
		c.msgLen = n
	case c.typ == FrameRead:
		if n != len(c.buf) {
			return protoErr("read of %d bytes answered with %d", len(c.buf), n)
		}
		dst = c.buf
	case c.typ == FrameChecksum:
		if n != c.want*ChecksumLen {
			return protoErr("%d checksums answered with %d bytes", c.want, n)
		}
		c.out = backend.GetBuffer(n)
		dst, c.outLen = c.out.B[:n], n
	case c.typ == FrameActivity:
		if n%ExtentLen != 0 || n/ExtentLen > MaxExtents {
			return protoErr("activity answered with %d bytes", n)
		}
		if n > 0 {
			c.out = backend.GetBuffer(n)
			dst, c.outLen = c.out.B[:n], n
		}
	case n != 0:
		return protoErr("%s answered with %d bytes", c.typ, n)
	}
	_, err := io.ReadFull(cn.br, dst)
	return err
}
