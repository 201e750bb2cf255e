package server

import (
	"runtime/debug"
	"testing"
)

func numGC() int64 {
	var s debug.GCStats
	debug.ReadGCStats(&s)
	return s.NumGC
}

func TestTrimmerCollectsEveryTrimEvery(t *testing.T) {
	// As in the monitor, only trims collect.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	var tr trimmer
	for round := 0; round < 2; round++ {
		n := numGC()
		for i := 1; i < trimEvery; i++ {
			tr.maybe()
		}
		if got := numGC(); got != n {
			t.Fatalf("round %d: %d GCs before the %dth event", round, got-n, trimEvery)
		}
		tr.maybe()
		if got := numGC(); got != n+1 {
			t.Fatalf("round %d: %d GCs at the %dth event, want 1", round, got-n, trimEvery)
		}
	}
}
