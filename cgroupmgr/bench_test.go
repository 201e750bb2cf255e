package cgroupmgr

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// BenchmarkCreateDelete measures making a container cgroup with typical CRI
// limits under an existing pod cgroup, and removing it again.
func BenchmarkCreateDelete(b *testing.B) {
	m, err := New()
	if err != nil {
		b.Skip(err)
	}
	root := benchRoot(b, m)
	ctx := context.Background()
	if _, err := m.Create(ctx, root+"/pod", nil); err != nil {
		b.Fatal(err)
	}
	res := &specs.LinuxResources{
		CPU:    &specs.LinuxCPU{Shares: ptr[uint64](256), Quota: ptr[int64](50000), Period: ptr[uint64](100000)},
		Memory: &specs.LinuxMemory{Limit: ptr[int64](128 << 20)},
		Pids:   &specs.LinuxPids{Limit: ptr[int64](1024)},
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		p := root + "/pod/ctr" + strconv.Itoa(i)
		c, err := m.Create(ctx, p, res)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Delete(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStats measures one Stats call, which kubelet makes for every
// container every few seconds.
func BenchmarkStats(b *testing.B) {
	m, err := New()
	if err != nil {
		b.Skip(err)
	}
	root := benchRoot(b, m)
	c, err := m.Create(context.Background(), root+"/stats", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr[int64](128 << 20)}})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := c.Stats(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

func benchRoot(b *testing.B, m *Manager) string {
	b.Helper()
	var r [6]byte
	if _, err := rand.Read(r[:]); err != nil {
		b.Fatal(err)
	}
	root := "/berth-test-bench-" + hex.EncodeToString(r[:])
	b.Cleanup(func() {
		if err := m.Delete(context.Background(), root); err != nil {
			b.Errorf("cleanup: %v", err)
		}
	})
	return root
}
