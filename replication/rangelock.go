package replication

import "sync"

// rangeLock orders requests on overlapping byte ranges by the order they
// registered in: a request waits until every earlier one it conflicts with
// (overlapping, and one of the two exclusive) has been released. Requests
// on disjoint ranges never wait for each other. The owner registers each
// write as it starts and the replica each request as it arrives, so that
// two writes to the same blocks land in the same order on every copy.
type rangeLock struct {
	mu      sync.Mutex
	cond    sync.Cond
	held    []rangeHold // in registration order
	next    uint64
	waiting int
}

type rangeHold struct {
	id       uint64
	off, end int64
	excl     bool
}

// register records a request on [off, off+n) and returns its ticket. It
// never blocks.
func (l *rangeLock) register(off, n int64, excl bool) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cond.L == nil {
		l.cond.L = &l.mu
	}
	l.next++
	l.held = append(l.held, rangeHold{id: l.next, off: off, end: off + n, excl: excl})
	return l.next
}

// tryLock registers a request on [off, off+n) and reports whether it
// holds its range at once: false when an earlier registration conflicts,
// in which case the ticket stays registered, in order, for wait.
func (l *rangeLock) tryLock(off, n int64, excl bool) (id uint64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cond.L == nil {
		l.cond.L = &l.mu
	}
	l.next++
	me := rangeHold{id: l.next, off: off, end: off + n, excl: excl}
	ok = true
	for i := range l.held {
		if h := &l.held[i]; (h.excl || excl) && h.off < me.end && off < h.end {
			ok = false
			break
		}
	}
	l.held = append(l.held, me)
	return me.id, ok
}

// wait blocks until no earlier registration conflicts with ticket id.
func (l *rangeLock) wait(id uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for l.blocked(id) {
		l.waiting++
		l.cond.Wait()
		l.waiting--
	}
}

// lock registers and waits.
func (l *rangeLock) lock(off, n int64, excl bool) uint64 {
	id := l.register(off, n, excl)
	l.wait(id)
	return id
}

func (l *rangeLock) blocked(id uint64) bool {
	var me *rangeHold
	for i := range l.held {
		if l.held[i].id == id {
			me = &l.held[i]
			break
		}
	}
	if me == nil {
		return false
	}
	for i := range l.held {
		h := &l.held[i]
		if h.id >= id {
			break
		}
		if (h.excl || me.excl) && h.off < me.end && me.off < h.end {
			return true
		}
	}
	return false
}

// release ends ticket id.
func (l *rangeLock) release(id uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range l.held {
		if l.held[i].id == id {
			l.held = append(l.held[:i], l.held[i+1:]...)
			l.held[len(l.held) : len(l.held)+1][0] = rangeHold{}
			break
		}
	}
	if l.waiting > 0 {
		l.cond.Broadcast()
	}
}
