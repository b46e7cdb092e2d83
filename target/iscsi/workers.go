package iscsi

import "sync/atomic"

// workerPool runs a connection's commands. Workers are long-lived: a fresh
// goroutine per command would start on a small stack and pay for growing it
// through the SCSI and backend layers on every I/O, which profiles showed
// as a tenth of the CPU. Workers are started on demand, up to the queue
// depth, so slow commands (a cold disk, a flush) never hold up the others.
type workerPool struct {
	work    chan *task
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

// submit queues t; it never blocks, because the CmdSN window keeps the
// number of commands at or below the channel's capacity.
func (p *workerPool) submit(t *task) {
	if p.idle.Load() == 0 && p.started < p.max {
		p.started++
		go p.loop()
	}
	select {
	case p.work <- t:
	default:
		// Immediate commands are outside the window: run the overflow on its
		// own goroutine rather than stall the reader.
		go t.run()
	}
}

func (p *workerPool) loop() {
	for {
		p.idle.Add(1)
		t, ok := <-p.work
		p.idle.Add(-1)
		if !ok {
			return
		}
		t.run()
	}
}
