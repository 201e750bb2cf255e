package cgroupmgr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/errdefs"
)

func TestParseKV(t *testing.T) {
	// A v1 memory.oom_control and bits of memory.stat, with a line the
	// parser must skip rather than fail on.
	kv, err := parseKV([]byte("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n\nweird line here\nneg -1\ntotal_inactive_file 4096\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"oom_kill_disable": 0, "under_oom": 0, "oom_kill": 3, "total_inactive_file": 4096}
	if len(kv) != len(want) {
		t.Errorf("parseKV = %v, want %v", kv, want)
	}
	for k, v := range want {
		if kv[k] != v {
			t.Errorf("parseKV[%q] = %d, want %d", k, kv[k], v)
		}
	}
}

func TestParseUintAndPids(t *testing.T) {
	for in, want := range map[string]uint64{"max\n": 0, "42\n": 42, " 7 ": 7} {
		if got, err := parseUint(in); err != nil || got != want {
			t.Errorf("parseUint(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := parseUint("-1"); err == nil {
		t.Error("parseUint(-1) succeeded")
	}
	pids, err := parsePids([]byte("12\n7\n\n"))
	if err != nil || !slices.Equal(pids, []int{12, 7}) {
		t.Errorf("parsePids = %v, %v", pids, err)
	}
	if _, err := parsePids([]byte("12\nx\n")); err == nil {
		t.Error("parsePids accepted garbage")
	}
}

func TestWorkingSet(t *testing.T) {
	if got := workingSet(100, 30); got != 70 {
		t.Errorf("workingSet(100, 30) = %d", got)
	}
	if got := workingSet(10, 30); got != 0 {
		t.Errorf("workingSet(10, 30) = %d, want floor 0", got)
	}
}

func TestValidateResources(t *testing.T) {
	p := func(v int64) *int64 { return &v }
	for _, tc := range []struct {
		name string
		mode string
		res  specs.LinuxResources
		ok   bool
	}{
		{"empty", ModeV1, specs.LinuxResources{}, true},
		{"unified on v1", ModeV1, specs.LinuxResources{Unified: map[string]string{"memory.high": "1"}}, false},
		{"unified on hybrid", ModeHybrid, specs.LinuxResources{Unified: map[string]string{"memory.high": "1"}}, false},
		{"unified on v2", ModeV2, specs.LinuxResources{Unified: map[string]string{"memory.high": "1"}}, true},
		{"unified path escape", ModeV2, specs.LinuxResources{Unified: map[string]string{"../memory.high": "1"}}, false},
		{"unified procs", ModeV2, specs.LinuxResources{Unified: map[string]string{"cgroup.procs": "1"}}, false},
		{"swap below limit", ModeV1, specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: p(100), Swap: p(50)}}, false},
		{"swap unlimited", ModeV1, specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: p(100), Swap: p(-1)}}, true},
		{"limit unlimited swap set", ModeV1, specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: p(-1), Swap: p(100)}}, false},
		{"zero means unset", ModeV1, specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: p(0), Swap: p(0)}}, true},
		{"negative limit", ModeV1, specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: p(-5)}}, false},
		{"bad quota", ModeV1, specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: p(-2)}}, false},
	} {
		err := validateResources(tc.mode, &tc.res)
		if tc.ok && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if !tc.ok && !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: err = %v, want ErrInvalidArgument", tc.name, err)
		}
	}
}

func TestToV2Resources(t *testing.T) {
	p := func(v int64) *int64 { return &v }
	u := func(v uint64) *uint64 { return &v }

	r, extra, err := toV2Resources(&specs.LinuxResources{
		CPU:    &specs.LinuxCPU{Shares: u(1024), Quota: p(50000)},
		Memory: &specs.LinuxMemory{Limit: p(100 << 20), Swap: p(150 << 20)},
		Pids:   &specs.LinuxPids{Limit: p(-1)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.CPU.Max != cgroup2.CPUMax("50000 100000") {
		t.Errorf("cpu.max = %q, want quota with the default period", r.CPU.Max)
	}
	if r.CPU.Weight == nil || *r.CPU.Weight != 100 {
		t.Errorf("cpu.weight for 1024 shares = %d, want 100 (the default weight)", *r.CPU.Weight)
	}
	if *r.Memory.Max != 100<<20 || *r.Memory.Swap != 50<<20 {
		t.Errorf("memory.max %d swap.max %d, want 100MiB and 50MiB (OCI swap is memory+swap)", *r.Memory.Max, *r.Memory.Swap)
	}
	if len(extra) != 0 {
		t.Errorf("extra writes %v", extra)
	}
	if got := r.Pids.Values(); len(got) != 1 {
		t.Errorf("pids values %v", got)
	}

	// Unlimited values are written as "max", which the kernel requires.
	r, extra, err = toV2Resources(&specs.LinuxResources{
		CPU:    &specs.LinuxCPU{Quota: p(-1), Period: u(200000)},
		Memory: &specs.LinuxMemory{Limit: p(-1), Swap: p(-1)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.CPU.Max != cgroup2.CPUMax("max 200000") {
		t.Errorf("cpu.max = %q", r.CPU.Max)
	}
	if r.Memory.Max != nil || r.Memory.Swap != nil {
		t.Errorf("numeric memory values left for unlimited: %+v", r.Memory)
	}
	if !slices.Equal(extra, []v2write{{"memory.max", "max"}, {"memory.swap.max", "max"}}) {
		t.Errorf("extra = %v", extra)
	}

	if _, _, err := toV2Resources(&specs.LinuxResources{Memory: &specs.LinuxMemory{Swap: p(100)}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("swap without limit: err = %v", err)
	}
	r, _, err = toV2Resources(&specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}})
	if err != nil || len(r.Devices) != 1 {
		t.Errorf("devices not carried over: %v, %v", r.Devices, err)
	}
}

func TestNormalizeResources(t *testing.T) {
	zero, q := uint64(0), int64(0)
	in := &specs.LinuxResources{CPU: &specs.LinuxCPU{Shares: &zero, Quota: &q, Period: &zero, Cpus: "0"}}
	out := normalizeResources(in)
	if out.CPU.Shares != nil || out.CPU.Quota != nil || out.CPU.Period != nil || out.CPU.Cpus != "0" {
		t.Errorf("normalized cpu = %+v", *out.CPU)
	}
	if in.CPU.Shares == nil || in.CPU.Quota == nil {
		t.Error("normalizeResources changed its argument")
	}
	same := &specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "1"}}
	if normalizeResources(same) != same {
		t.Error("copied resources that needed no change")
	}
}

// The v2 OOM watcher, run against plain files standing in for a cgroup2
// directory (this hybrid test host has no v2 memory controller): an
// increase of oom_kill is an event, other changes are not, and removing the
// group closes the channel.
func TestOOMEventsV2Watcher(t *testing.T) {
	mount := t.TempDir()
	m := newV2Manager(mount)
	c := &Cgroup{path: "/pod/ctr", mgr: m}
	dir := filepath.Join(mount, "pod", "ctr")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	events := filepath.Join(dir, "memory.events")
	write := func(oomKill int) {
		t.Helper()
		s := fmt.Sprintf("low 0\nhigh 0\nmax 3\noom 1\noom_kill %d\noom_group_kill 0\n", oomKill)
		if err := os.WriteFile(events, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := c.OOMEvents(ctx)
	if err != nil {
		t.Fatalf("OOMEvents: %v", err)
	}
	write(0) // a change that is not an OOM kill
	write(2)
	if !recv(t, ch) {
		t.Fatal("channel closed instead of delivering the oom_kill increase")
	}
	if n, err := c.OOMKillCount(); err != nil || n != 2 {
		t.Errorf("OOMKillCount = %d, %v; want 2", n, err)
	}
	select {
	case <-ch:
		t.Error("second event for a single increase")
	default:
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	for recv(t, ch) {
		t.Error("event after the group was removed")
	}
}

func TestOOMEventsV2NoMemoryController(t *testing.T) {
	mount := t.TempDir()
	c := &Cgroup{path: "/x", mgr: newV2Manager(mount)}
	if err := os.MkdirAll(filepath.Join(mount, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := c.OOMEvents(context.Background()); !errors.Is(err, errdefs.ErrNotImplemented) {
		t.Errorf("err = %v, want ErrNotImplemented", err)
	}
}

// recv receives from ch and reports whether it got a value (false: closed).
// The minute is a guard against a hang, not a speed requirement.
func recv(t *testing.T, ch <-chan struct{}) bool {
	t.Helper()
	select {
	case _, ok := <-ch:
		return ok
	case <-time.After(time.Minute):
		t.Fatal("no event and no close within a minute")
		return false
	}
}
