package server

import (
	"runtime/debug"
	"sync"
)

// trimEvery is how many requests (or exits) the monitor serves between
// trims: a trim collects the garbage they left and gives the freed pages
// back to the kernel.
//
// Without trims, the garbage of each request (some 1.7 KiB for a status
// poll, BenchmarkHandleState) stays resident until the heap reaches the
// GC's minimum target of 4 MiB, and afterwards the freed pages stay too: a
// monitor answering 3,600 status requests (an hour of kubelet's relist at
// one container) grew from 2.6 to 7.2 MiB RSS (BenchmarkMonitorMemory's
// polled case; 3.4 MiB with trims). But each GC also touches runtime
// metadata (some 250 KiB at the first, a few hundred more once GCs are
// frequent: the mark-bit arenas are cleared whole on reuse), so a monitor
// that makes little garbage (most pods: a few creates, starts and polls)
// should never collect: hence a count, not a timer. Counting requests
// rather than reading the heap's statistics keeps runtime/metrics (and its
// tables, some 70 KiB of RSS) out of the monitor.
const trimEvery = 50

// trimmer counts garbage-making events and trims after trimEvery of them.
type trimmer struct {
	mu sync.Mutex
	n  int
}

// maybe counts one event and trims if it is the trimEvery-th.
func (t *trimmer) maybe() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n++; t.n < trimEvery {
		return
	}
	t.n = 0
	debug.FreeOSMemory()
}
