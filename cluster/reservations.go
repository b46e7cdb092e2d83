package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm"
	"github.com/hatarget/hatarget/target"
	"github.com/hatarget/hatarget/target/scsi"
)

// prMachine is the SCSI reservation state machine as the fsm sees it:
// serialised state and operation in, serialised state and outcome out.
type prMachine struct{}

func (prMachine) Apply(state, op []byte) ([]byte, []byte, error) {
	cur := &scsi.PRState{}
	if len(state) > 0 {
		var err error
		if cur, err = scsi.UnmarshalPRState(state); err != nil {
			return nil, nil, err
		}
	}
	var o scsi.PROp
	if err := fsm.DecodeStrict(op, &o); err != nil {
		return nil, nil, fmt.Errorf("reservation operation: %w", err)
	}
	next, out := cur.Apply(o)
	nb, err := scsi.MarshalPRState(next)
	if err != nil {
		return nil, nil, err
	}
	ob, err := json.Marshal(out)
	if err != nil {
		return nil, nil, err
	}
	return nb, ob, nil
}

// Reservations keeps one replicated ReservationStore per device this node
// serves (it is the dataplane's target.ReservationProvider). Operations go
// through Raft; every node's stores follow the applied state, and the LU
// of a device receives the effects of operations other nodes proposed.
type Reservations struct {
	n      *Node
	seq    atomic.Uint64
	mu     sync.Mutex
	stores map[string]*prStore
}

// NewReservations returns a provider for the dataplane, bound to the
// node when it is passed in Config.Reservations to Start. The dataplane
// asks it for stores only once the node applies a configuration.
func NewReservations() *Reservations {
	return &Reservations{stores: map[string]*prStore{}}
}

func (r *Reservations) bind(n *Node) {
	r.n = n
	n.fsm.observe(r.applied)
}

// Store returns the replicated store of a device; lu receives the
// effects of operations proposed on other nodes.
func (r *Reservations) Store(device string, lu scsi.EffectApplier) scsi.ReservationStore {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := &prStore{r: r, device: device, lu: lu}
	s.refresh(r.n.fsm.State())
	r.stores[device] = s
	return s
}

// Release forgets a device's store once the dataplane closed it.
func (r *Reservations) Release(device string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.stores, device)
}

// applied runs on the Raft apply goroutine after every state change (c
// is nil when no command made it).
func (r *Reservations) applied(c fsm.Command, res any, s *fsm.State) {
	r.mu.Lock()
	stores := make([]*prStore, 0, len(r.stores))
	for _, st := range r.stores {
		stores = append(stores, st)
	}
	r.mu.Unlock()
	for _, st := range stores {
		st.refresh(s)
	}
	rc, ok := c.(*fsm.Reservation)
	if !ok || r.ownOrigin(rc.Origin) {
		return
	}
	rr, _ := res.(*fsm.ReservationResult)
	r.mu.Lock()
	st := r.stores[rc.Device]
	r.mu.Unlock()
	if st == nil || rr == nil {
		return
	}
	var out scsi.PROutcome
	if err := json.Unmarshal(rr.Outcome, &out); err != nil {
		r.n.log.Error("reservation outcome", "device", rc.Device, "err", err)
		return
	}
	if len(out.Effects) > 0 {
		st.lu.ApplyReservationEffects(out.Effects, nil)
	}
}

func (r *Reservations) ownOrigin(origin string) bool {
	name, _, _ := cutLast(origin, '/')
	return name == r.n.cfg.Name
}

func cutLast(s string, sep byte) (string, string, bool) {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// prStore is one device's replicated reservation state.
type prStore struct {
	r      *Reservations
	device string
	lu     scsi.EffectApplier
	raw    atomic.Pointer[[]byte]
	state  atomic.Pointer[scsi.PRState]
}

// refresh decodes the device's state when its serialised form changed;
// the fsm replaces the bytes on every change, so identity tells.
func (s *prStore) refresh(st *fsm.State) {
	raw := st.Reservations[s.device]
	if old := s.raw.Load(); old != nil && sameBytes(*old, raw) {
		return
	}
	next := &scsi.PRState{}
	if len(raw) > 0 {
		var err error
		if next, err = scsi.UnmarshalPRState(raw); err != nil {
			s.r.n.log.Error("reservation state", "device", s.device, "err", err)
			return
		}
	}
	s.state.Store(next)
	s.raw.Store(&raw)
}

func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// State implements scsi.ReservationStore.
func (s *prStore) State() *scsi.PRState { return s.state.Load() }

// Apply implements scsi.ReservationStore: the operation commits through
// Raft (on the leader, forwarded if need be) before its outcome counts.
func (s *prStore) Apply(op scsi.PROp) (scsi.PROutcome, error) {
	b, err := json.Marshal(op)
	if err != nil {
		return scsi.PROutcome{}, err
	}
	origin := s.r.n.cfg.Name + "/" + strconv.FormatUint(s.r.seq.Add(1), 10)
	c := &fsm.Reservation{Device: s.device, Origin: origin, Op: b}
	ctx, cancel := context.WithTimeout(context.Background(), applyTimeout)
	defer cancel()
	raw, err := s.r.n.submit(ctx, c)
	if err != nil {
		return scsi.PROutcome{}, fmt.Errorf("reservation on %s: %w", s.device, err)
	}
	var out scsi.PROutcome
	if err := json.Unmarshal(raw, &out); err != nil {
		return scsi.PROutcome{}, fmt.Errorf("reservation on %s: %w", s.device, err)
	}
	return out, nil
}

// reservationAnswer is the internal route's answer.
type reservationAnswer struct {
	Outcome    json.RawMessage `json:"outcome"`
	Generation uint64          `json:"generation"`
}

func (n *Node) buildReservation(r *http.Request) (fsm.Command, func(any, uint64) any, error) {
	var c fsm.Reservation
	if err := decodeBody(r, &c); err != nil {
		return nil, nil, err
	}
	return &c, func(res any, gen uint64) any {
		rr, _ := res.(*fsm.ReservationResult)
		if rr == nil {
			return reservationAnswer{Generation: gen}
		}
		return reservationAnswer{Outcome: rr.Outcome, Generation: gen}
	}, nil
}

// submit commits a reservation command from any node: proposed directly
// on the leader, sent to the leader's internal route otherwise. It waits
// until this node has applied the entry.
func (n *Node) submit(ctx context.Context, c *fsm.Reservation) ([]byte, error) {
	if n.isLeader() {
		res, _, err := n.propose(c)
		if err != nil {
			return nil, err
		}
		rr, _ := res.(*fsm.ReservationResult)
		if rr == nil {
			return nil, fmt.Errorf("no outcome")
		}
		return rr.Outcome, nil
	}
	_, addr := n.leader()
	if addr == "" {
		return nil, fmt.Errorf("no Raft leader")
	}
	client := &api.Client{Base: "http://" + addr, Token: n.cfg.Token, HTTP: n.forward}
	var ans reservationAnswer
	if err := client.Do(ctx, http.MethodPost, "/v1/internal/reservation", c, &ans); err != nil {
		return nil, err
	}
	n.waitIndex(ctx, ans.Generation)
	return ans.Outcome, nil
}

// waitIndex waits until this node has applied index and its reservation
// stores show it.
func (n *Node) waitIndex(ctx context.Context, index uint64) {
	for {
		ch := n.fsm.Changed()
		if n.fsm.Observed() >= index {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		case <-n.stop:
			return
		}
	}
}

var _ target.ReservationProvider = (*Reservations)(nil)
