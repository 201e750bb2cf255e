package server

import (
	"runtime/debug"
	"sync"
)

// trimEvery is how many requests (or exits) the monitor serves between
// trims: a trim collects the garbage they left and gives the freed pages
// back to the kernel.
//
// Without trims, the garbage of each request (some 2.5 KiB) stays resident
// until the heap reaches the GC's minimum target of 4 MiB, and afterwards
// the freed pages stay too: a monitor answering 3,600 status requests (an
// hour of kubelet's relist) grew from 2.6 to 7 MiB RSS
// (BenchmarkMonitorMemory's polled case). But each GC also touches runtime
// metadata (some 250 KiB at the first, more over the next few), so a
// monitor that makes little garbage (most pods: a few creates and starts)
// should never collect. Counting requests rather than reading the heap's
// statistics keeps runtime/metrics (and its tables) out of the monitor.
const trimEvery = 50

// memoryLimit is a backstop for garbage that no trim counts (an attach
// session's frames, say): the GC runs when the runtime's memory nears it.
// It is far above what a monitor uses (a few MiB, most of it mapped but
// never touched), so it never makes the GC run in vain.
const memoryLimit = 16 << 20

// setGCPolicy turns off the GC's own pacing: with it, once a GC has run,
// the runtime forces one every 2 minutes even in an idle process, and
// within a few cycles its mark-bit arenas (64 KiB each, cleared on reuse)
// and other metadata add some 700 KiB of RSS (measured). GCs happen then
// only at trims, and at the memory limit.
func setGCPolicy() {
	debug.SetGCPercent(-1)
	debug.SetMemoryLimit(memoryLimit)
}

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
