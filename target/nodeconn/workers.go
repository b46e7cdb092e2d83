package nodeconn

import "sync/atomic"

// Workers runs a connection's tasks on goroutines started on demand, up to
// a maximum: a connection that never has more than one request in flight
// never starts a second goroutine.
type Workers[T any] struct {
	work    chan T
	run     func(T)
	max     int
	idle    atomic.Int32 // workers waiting for work
	started int          // Submit's caller only
}

// NewWorkers returns a pool of at most max workers running run, with room
// for queue tasks waiting.
func NewWorkers[T any](max, queue int, run func(T)) *Workers[T] {
	return &Workers[T]{work: make(chan T, queue), run: run, max: max}
}

// Submit hands t to an idle worker or starts one, up to the maximum;
// beyond that t waits in the queue, which the caller keeps within its
// capacity (the connection's in-flight tokens), so Submit never blocks.
// One goroutine (the connection's reader) submits.
func (w *Workers[T]) Submit(t T) {
	if w.idle.Add(-1) < 0 {
		w.idle.Add(1)
		if w.started < w.max {
			w.started++
			go w.loop()
		}
	}
	w.work <- t
}

// Close ends the workers once the queued tasks ran; nothing may be
// submitted after.
func (w *Workers[T]) Close() { close(w.work) }

// loop runs tasks; a worker announces itself idle only between tasks, so
// a new worker takes the task it was started for.
func (w *Workers[T]) loop() {
	for t := range w.work {
		w.run(t)
		w.idle.Add(1)
	}
}
