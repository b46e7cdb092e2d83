package iscsi

import "sync/atomic"

// workerPool runs a connection's commands. Workers are long-lived: a fresh
// goroutine per command would start on a small stack and pay for growing it
// through the SCSI and backend layers on every I/O, which profiles showed
// as a tenth of the CPU. Workers are started on demand, up to the queue
// depth, so slow commands (a cold disk, a flush, a SANITIZE) never hold up
// the others.
type workerPool struct {
	work chan *task
	// idle counts workers waiting for a task. A submitter claims one by
	// decrementing it before sending, so two tasks can never both count on
	// the same idle worker while a busy one holds the second back.
	idle    atomic.Int32
	started int // only touched by the submitting reader goroutine
	max     int
}

func newWorkerPool(max int) *workerPool {
	return &workerPool{work: make(chan *task, max), max: max}
}

// close ends the workers once they have run everything submitted; only the
// reader, after its last submit, calls it.
func (p *workerPool) close() { close(p.work) }

// submit hands t to an idle worker, or to a new one. It never blocks: the
// CmdSN window keeps the commands in flight within the channel's capacity.
func (p *workerPool) submit(t *task) {
	if p.idle.Add(-1) < 0 {
		p.idle.Add(1)
		if p.started < p.max {
			p.started++
			go p.loop()
		}
	}
	select {
	case p.work <- t:
	default:
		// Immediate commands are outside the window: run the overflow on its
		// own goroutine rather than stall the reader.
		go t.run()
	}
}

// loop runs tasks; a worker announces itself idle only between tasks, so
// a new worker takes the task it was started for without being claimed.
func (p *workerPool) loop() {
	for t := range p.work {
		t.run()
		p.idle.Add(1)
	}
}
