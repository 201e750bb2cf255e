package cgroupmgr

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/errdefs"
)

// Integration tests: root, real kernel. They run v1 on v1/hybrid hosts and
// v2 where the host (or the hybrid cgroup2 mount) allows.

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create cgroups")
	}
}

func v1Manager(t *testing.T) *Manager {
	t.Helper()
	requireRoot(t)
	m, err := New()
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if m.Mode() == ModeV2 {
		t.Skip("host is cgroup v2 only; the v1 tests do not apply")
	}
	return m
}

// testRoot returns a fresh "/berth-test-<random>" path that is deleted,
// and checked gone from every hierarchy, when the test ends.
func testRoot(t *testing.T, m *Manager) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	root := "/berth-test-" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		if err := m.Delete(context.Background(), root); err != nil {
			t.Errorf("cleanup: Delete(%s): %v", root, err)
		}
		for _, d := range m.dirs(root) {
			if _, err := os.Lstat(d); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("cleanup: %s still there (%v)", d, err)
			}
		}
	})
	return root
}

type proc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr strings.Builder
	waited bool
	err    error
}

// start runs a command that waits for a line on stdin before working. It is
// killed and reaped when the test ends.
func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...)}
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdout = bufio.NewReader(out)
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.cleanup)
	return p
}

// startHelper re-executes the test binary in a helper mode (see TestMain).
func startHelper(t *testing.T, mode string) *proc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: exec.Command(exe)}
	p.cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.stdout = bufio.NewReader(out)
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.cleanup)
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// cleanup kills and reaps the process. A test that failed may have left it
// in a frozen v1 freezer group, where SIGKILL waits for a thaw: thaw the
// test's groups first so that reaping cannot hang.
func (p *proc) cleanup() {
	if p.waited {
		return
	}
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid()) + "/cgroup"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			// "6:freezer:/berth-test-abc/pod/ctr": thaw from the test root.
			if _, cg, ok := strings.Cut(l, ":freezer:/"); ok && strings.HasPrefix(cg, "berth-test-") {
				top, _, _ := strings.Cut(cg, "/")
				_ = thawTree(filepath.Join(defaultRoot, "freezer", top))
			}
		}
	}
	_ = p.cmd.Process.Kill()
	_ = p.wait()
}

func (p *proc) release(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(p.stdin, "go\n"); err != nil {
		t.Fatalf("release pid %d: %v", p.pid(), err)
	}
}

func (p *proc) wait() error {
	if !p.waited {
		p.waited = true
		p.stdin.Close()
		_, _ = io.Copy(io.Discard, p.stdout) // drain so Wait can finish
		p.err = p.cmd.Wait()
	}
	return p.err
}

func killedBy(err error) (syscall.Signal, bool) {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return 0, false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		return 0, false
	}
	return ws.Signal(), true
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func ptr[T any](v T) *T { return &v }

func TestV1CreateLimitsReadBack(t *testing.T) {
	m := v1Manager(t)
	root := testRoot(t, m)
	path := root + "/pod1/ctr1"
	res := &specs.LinuxResources{
		CPU: &specs.LinuxCPU{
			Shares: ptr[uint64](512),
			Quota:  ptr[int64](50000),
			Period: ptr[uint64](100000),
			Cpus:   "0",
			Mems:   "0",
		},
		Memory: &specs.LinuxMemory{Limit: ptr[int64](64 << 20), Swap: ptr[int64](64 << 20)},
		Pids:   &specs.LinuxPids{Limit: ptr[int64](10)},
	}
	c, err := m.Create(context.Background(), path, res)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if c.Path() != path {
		t.Errorf("Path() = %q, want %q", c.Path(), path)
	}
	checks := map[string]string{
		"cpu/cpu.shares":                     "512",
		"cpu/cpu.cfs_quota_us":               "50000",
		"cpu/cpu.cfs_period_us":              "100000",
		"memory/memory.limit_in_bytes":       strconv.Itoa(64 << 20),
		"pids/pids.max":                      "10",
		"cpuset/cpuset.cpus":                 "0",
		"cpuset/cpuset.mems":                 "0",
		"memory/memory.memsw.limit_in_bytes": strconv.Itoa(64 << 20),
	}
	for file, want := range checks {
		ctrl, name, _ := strings.Cut(file, "/")
		if ctrl == "memory" && strings.Contains(name, "memsw") {
			if _, err := os.Stat(filepath.Join(defaultRoot, ctrl, path, name)); err != nil {
				t.Logf("no swap accounting on this kernel: %v", err)
				continue
			}
		}
		if got := readTrim(t, filepath.Join(defaultRoot, ctrl, path, name)); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	// The cpuset parents were given cpus and mems, so tasks can join them.
	parentCpus := readTrim(t, filepath.Join(defaultRoot, "cpuset", root, "pod1", "cpuset.cpus"))
	if parentCpus != readTrim(t, filepath.Join(defaultRoot, "cpuset", "cpuset.cpus")) {
		t.Errorf("parent cpuset.cpus %q not inherited from the root", parentCpus)
	}
	// The cgroup exists in every mounted hierarchy, name=systemd included.
	for _, d := range m.dirs(path) {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("missing %s: %v", d, err)
		}
	}

	// A real process can join it, and is listed (recursively from the root).
	p := start(t, "sleep", "1000")
	if err := c.AddProc(p.pid()); err != nil {
		t.Fatalf("AddProc: %v", err)
	}
	for _, ctrl := range []string{"cpu", "cpuacct", "cpuset", "memory", "pids", "freezer"} {
		procs := readTrim(t, filepath.Join(defaultRoot, ctrl, path, "cgroup.procs"))
		if !slices.Contains(strings.Fields(procs), strconv.Itoa(p.pid())) {
			t.Errorf("%s/cgroup.procs = %q, missing %d", ctrl, procs, p.pid())
		}
	}
	if m.Mode() == ModeHybrid {
		// The unified mirror names the container in /proc/<pid>/cgroup.
		lines := strings.Split(readTrim(t, "/proc/"+strconv.Itoa(p.pid())+"/cgroup"), "\n")
		if !slices.Contains(lines, "0::"+path) {
			t.Errorf("/proc/%d/cgroup has no 0::%s line: %q", p.pid(), path, lines)
		}
	}
	rc, err := m.Load(context.Background(), root)
	if err != nil {
		t.Fatalf("Load(root): %v", err)
	}
	pids, err := rc.Procs()
	if err != nil {
		t.Fatalf("Procs: %v", err)
	}
	if !slices.Equal(pids, []int{p.pid()}) {
		t.Errorf("Procs() of the root = %v, want [%d]", pids, p.pid())
	}

	// Update changes values; Create on an existing cgroup updates it too.
	if err := c.Update(&specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: ptr[int64](128 << 20), Swap: ptr[int64](128 << 20)}}); err != nil {
		t.Fatalf("Update (raise memory): %v", err)
	}
	if got := readTrim(t, filepath.Join(defaultRoot, "memory", path, "memory.limit_in_bytes")); got != strconv.Itoa(128<<20) {
		t.Errorf("after Update memory.limit_in_bytes = %s", got)
	}
	// Down again, then up with the limit alone: memsw must follow, or the
	// kernel refuses a limit above it.
	for _, lim := range []int64{32 << 20, 96 << 20} {
		mem := &specs.LinuxMemory{Limit: ptr(lim)}
		if lim < 64<<20 {
			mem.Swap = ptr(lim)
		}
		if err := c.Update(&specs.LinuxResources{Memory: mem}); err != nil {
			t.Fatalf("Update memory to %d: %v", lim, err)
		}
		if got := readTrim(t, filepath.Join(defaultRoot, "memory", path, "memory.limit_in_bytes")); got != strconv.FormatInt(lim, 10) {
			t.Errorf("memory.limit_in_bytes = %s, want %d", got, lim)
		}
	}
	if err := c.AddProc(1 << 30); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("AddProc(no such pid): %v, want ErrNotFound", err)
	}
	if _, err := m.Create(context.Background(), path, &specs.LinuxResources{
		CPU:  &specs.LinuxCPU{Shares: ptr[uint64](1024), Quota: ptr[int64](-1)},
		Pids: &specs.LinuxPids{Limit: ptr[int64](-1)},
	}); err != nil {
		t.Fatalf("Create again: %v", err)
	}
	for file, want := range map[string]string{"cpu/cpu.shares": "1024", "cpu/cpu.cfs_quota_us": "-1", "pids/pids.max": "max"} {
		ctrl, name, _ := strings.Cut(file, "/")
		if got := readTrim(t, filepath.Join(defaultRoot, ctrl, path, name)); got != want {
			t.Errorf("after second Create %s = %q, want %q", file, got, want)
		}
	}
	// The process survived the re-create: Create did not reset membership.
	if pids, _ := c.Procs(); !slices.Equal(pids, []int{p.pid()}) {
		t.Errorf("Procs() after second Create = %v", pids)
	}
}

func TestV1InvalidRequests(t *testing.T) {
	m := v1Manager(t)
	root := testRoot(t, m)
	ctx := context.Background()
	_, err := m.Create(ctx, root+"/u", &specs.LinuxResources{Unified: map[string]string{"memory.high": "1000000"}})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("unified on v1: err = %v, want ErrInvalidArgument", err)
	}
	if _, err := m.Load(ctx, root+"/u"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a failed Create left the cgroup behind: Load err = %v", err)
	}
	// The kernel refusing a value is ErrInvalidArgument, and a failed
	// Create rolls back what it made.
	_, err = m.Create(ctx, root+"/bad", &specs.LinuxResources{CPU: &specs.LinuxCPU{Cpus: "999"}})
	if !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("cpuset.cpus 999: err = %v, want ErrInvalidArgument", err)
	}
	if _, err := m.Load(ctx, root+"/bad"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("a failed Create left the cgroup behind: Load err = %v", err)
	}
	for _, p := range []string{"", "relative", "/", "/a/../b", "/sys/fs/cgroup/memory/x"} {
		if _, err := m.Create(ctx, p, nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Create(%q): err = %v, want ErrInvalidArgument", p, err)
		}
	}
}

func TestV1MemoryLimitOOMKill(t *testing.T) {
	m := v1Manager(t)
	root := testRoot(t, m)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	limit := int64(48 << 20)
	c, err := m.Create(ctx, root+"/oom", &specs.LinuxResources{Memory: &specs.LinuxMemory{
		Limit:      &limit,
		Swap:       &limit, // no swap beyond the limit
		Swappiness: ptr[uint64](0),
	}})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	events, err := c.OOMEvents(ctx)
	if err != nil {
		t.Fatalf("OOMEvents: %v", err)
	}
	if n, err := c.OOMKillCount(); err != nil || n != 0 {
		t.Fatalf("OOMKillCount before = %d, %v; want 0", n, err)
	}
	p := startHelper(t, "alloc")
	if err := c.AddProc(p.pid()); err != nil {
		t.Fatalf("AddProc: %v", err)
	}
	p.release(t)
	err = p.wait()
	if sig, ok := killedBy(err); !ok || sig != syscall.SIGKILL {
		t.Fatalf("allocating process ended with %v (stderr %q), want killed by SIGKILL", err, p.stderr.String())
	}
	n, err := c.OOMKillCount()
	if err != nil {
		t.Fatalf("OOMKillCount: %v", err)
	}
	if n == 0 {
		t.Errorf("OOMKillCount = 0 after the process was OOM-killed")
	}
	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st.OOMKillCount != n || st.MemoryLimitBytes != uint64(limit) {
		t.Errorf("Stats OOMKillCount=%d MemoryLimitBytes=%d, want %d and %d", st.OOMKillCount, st.MemoryLimitBytes, n, limit)
	}
	// The kernel signalled the eventfd during the OOM, before the kill; the
	// channel must deliver it. (Bounded only by the test's own deadline.)
	if !recv(t, events) {
		t.Fatal("OOM event channel closed without an event")
	}
	// Removing the cgroup closes the channel.
	if err := c.Delete(ctx); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	for recv(t, events) {
	}
}

func TestOOMEventsClosedByContext(t *testing.T) {
	m := v1Manager(t)
	root := testRoot(t, m)
	c, err := m.Create(context.Background(), root+"/ev", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	events, err := c.OOMEvents(ctx)
	if err != nil {
		t.Fatalf("OOMEvents: %v", err)
	}
	cancel()
	for recv(t, events) {
		t.Error("event without an OOM")
	}
}

func TestV1PidsLimit(t *testing.T) {
	m := v1Manager(t)
	root := testRoot(t, m)
	c, err := m.Create(context.Background(), root+"/pids", &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: ptr[int64](4)}})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	// The shell and its background sleeps share the limit of 4.
	p := start(t, "sh", "-c", `read x; i=0; while [ $i -lt 8 ]; do sleep 1000 >/dev/null 2>&1 & i=$((i+1)); echo ok $i; done; echo done`)
	if err := c.AddProc(p.pid()); err != nil {
		t.Fatalf("AddProc: %v", err)
	}
	p.release(t)
	var lines []string
	for {
		l, err := p.stdout.ReadString('\n')
		if err != nil {
			break
		}
		lines = append(lines, strings.TrimSpace(l))
	}
	err = p.wait()
	if slices.Contains(lines, "done") || err == nil {
		t.Fatalf("all forks succeeded despite pids.max=4: output %q, exit %v", lines, err)
	}
	if len(lines) != 3 {
		t.Errorf("started %d sleeps (%q), want 3 (4 minus the shell)", len(lines), lines)
	}
	st, err := c.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.PidsLimit != 4 || st.PidsCurrent != 3 {
		t.Errorf("Stats pids current=%d limit=%d, want 3 and 4", st.PidsCurrent, st.PidsLimit)
	}
	t.Logf("shell stderr: %s", strings.TrimSpace(p.stderr.String()))
	// The orphaned sleeps are stragglers for Delete (in the cleanup) to kill.
}

func TestV1StatsBusyProcess(t *testing.T) {
	m := v1Manager(t)
	root := testRoot(t, m)
	ctx := context.Background()
	c, err := m.Create(ctx, root+"/stats", &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: ptr[int64](256 << 20)},
		Pids:   &specs.LinuxPids{Limit: ptr[int64](100)},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := startHelper(t, "hold")
	if err := c.AddProc(p.pid()); err != nil {
		t.Fatal(err)
	}
	p.release(t)
	if l, err := p.stdout.ReadString('\n'); err != nil || l != "ready\n" {
		t.Fatalf("helper: %q, %v (stderr %q)", l, err, p.stderr.String())
	}
	st, err := m.Stats(ctx, c.Path())
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	t.Logf("stats: %+v", *st)
	if st.CPUUsageNanos == 0 || st.CPUUserNanos+st.CPUSystemNanos > st.CPUUsageNanos+st.CPUUsageNanos/2+1e8 {
		t.Errorf("cpu usage %d (user %d, system %d) implausible", st.CPUUsageNanos, st.CPUUserNanos, st.CPUSystemNanos)
	}
	if st.MemoryUsageBytes < 32<<20 || st.MemoryRSSBytes < 32<<20 {
		t.Errorf("memory usage %d, rss %d; want at least the 32 MiB the helper touched", st.MemoryUsageBytes, st.MemoryRSSBytes)
	}
	if st.MemoryWorkingSetBytes == 0 || st.MemoryWorkingSetBytes > st.MemoryUsageBytes {
		t.Errorf("working set %d, usage %d", st.MemoryWorkingSetBytes, st.MemoryUsageBytes)
	}
	if st.MemoryLimitBytes != 256<<20 {
		t.Errorf("memory limit %d", st.MemoryLimitBytes)
	}
	if st.PidsCurrent == 0 || st.PidsLimit != 100 {
		t.Errorf("pids current %d limit %d", st.PidsCurrent, st.PidsLimit)
	}
	if st.Timestamp.IsZero() {
		t.Error("zero timestamp")
	}
}

func TestV1FreezeThaw(t *testing.T) {
	m := v1Manager(t)
	root := testRoot(t, m)
	c, err := m.Create(context.Background(), root+"/fz", nil)
	if err != nil {
		t.Fatal(err)
	}
	p := start(t, "sleep", "1000")
	if err := c.AddProc(p.pid()); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(defaultRoot, "freezer", root, "fz", "freezer.state")
	if err := c.Freeze(); err != nil {
		t.Fatalf("Freeze: %v", err)
	}
	if got := readTrim(t, state); got != "FROZEN" {
		t.Errorf("freezer.state after Freeze = %s", got)
	}
	if frozen, err := c.Frozen(); err != nil || !frozen {
		t.Errorf("Frozen after Freeze = %v, %v", frozen, err)
	}
	if err := c.Thaw(); err != nil {
		t.Fatalf("Thaw: %v", err)
	}
	if got := readTrim(t, state); got != "THAWED" {
		t.Errorf("freezer.state after Thaw = %s", got)
	}
	if frozen, err := c.Frozen(); err != nil || frozen {
		t.Errorf("Frozen after Thaw = %v, %v", frozen, err)
	}
}

func TestV1DeleteKillsStragglers(t *testing.T) {
	m := v1Manager(t)
	root := testRoot(t, m)
	ctx := context.Background()
	pod, err := m.Create(ctx, root+"/pod", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctr, err := m.Create(ctx, root+"/pod/ctr", nil)
	if err != nil {
		t.Fatal(err)
	}
	// One idle process in the pod, one in the container, and a shell in the
	// container that forks without pause (the freezer's reason to exist).
	idle := start(t, "sleep", "1000")
	inCtr := start(t, "sleep", "1000")
	forker := start(t, "sh", "-c", "read x; while :; do /bin/true; done")
	if err := pod.AddProc(idle.pid()); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*proc{inCtr, forker} {
		if err := ctr.AddProc(p.pid()); err != nil {
			t.Fatal(err)
		}
	}
	forker.release(t)
	// A frozen container must not shield its processes: v1 delivers
	// SIGKILL to frozen tasks only once they thaw.
	if err := ctr.Freeze(); err != nil {
		t.Fatalf("Freeze: %v", err)
	}
	if err := m.Delete(ctx, root+"/pod"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	for _, p := range []*proc{idle, inCtr, forker} {
		if sig, ok := killedBy(p.wait()); !ok || sig != syscall.SIGKILL {
			t.Errorf("pid %d ended with %v, want SIGKILL", p.pid(), p.err)
		}
	}
	for _, d := range append(m.dirs(root+"/pod"), m.dirs(root+"/pod/ctr")...) {
		if _, err := os.Lstat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after Delete (%v)", d, err)
		}
	}
	// Idempotent: deleting again, through the manager or the old handle.
	if err := m.Delete(ctx, root+"/pod"); err != nil {
		t.Errorf("second Delete: %v", err)
	}
	if err := ctr.Delete(ctx); err != nil {
		t.Errorf("Delete through a stale handle: %v", err)
	}
	if _, err := m.Load(ctx, root+"/pod"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Load after Delete: %v, want ErrNotFound", err)
	}
	if _, err := ctr.Stats(ctx); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Stats after Delete: %v, want ErrNotFound", err)
	}
	if _, err := m.Stats(ctx, root+"/pod"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Manager.Stats after Delete: %v, want ErrNotFound", err)
	}
}

// v2Manager returns a manager for the unified hierarchy: the real one on a
// v2 host, or the cgroup2 mount of a hybrid host (which usually has no
// controllers, so the tests that need them skip).
func v2Manager(t *testing.T) *Manager {
	t.Helper()
	requireRoot(t)
	m, err := New()
	if err != nil {
		t.Fatal(err)
	}
	switch m.Mode() {
	case ModeV2:
		return m
	case ModeHybrid:
		return newV2Manager(hybridUnified)
	}
	t.Skip("no cgroup2 mount on this host")
	return nil
}

func TestV2CreateProcsFreezeDelete(t *testing.T) {
	m := v2Manager(t)
	root := testRoot(t, m)
	ctx := context.Background()
	path := root + "/pod/ctr"
	c, err := m.Create(ctx, path, &specs.LinuxResources{Unified: map[string]string{"cgroup.max.descendants": "3"}})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	d := filepath.Join(m.v2mount, path)
	if got := readTrim(t, filepath.Join(d, "cgroup.max.descendants")); got != "3" {
		t.Errorf("cgroup.max.descendants = %s, want 3", got)
	}
	if _, err := m.Create(ctx, path, &specs.LinuxResources{Unified: map[string]string{"cgroup.procs": "1"}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("unified cgroup.procs: err = %v, want ErrInvalidArgument", err)
	}
	if _, err := m.Create(ctx, path, &specs.LinuxResources{Unified: map[string]string{"nosuch.file": "1"}}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("unified nosuch.file: err = %v, want ErrInvalidArgument", err)
	}
	p := start(t, "sleep", "1000")
	if err := c.AddProc(p.pid()); err != nil {
		t.Fatalf("AddProc: %v", err)
	}
	rc, err := m.Load(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	if pids, err := rc.Procs(); err != nil || !slices.Equal(pids, []int{p.pid()}) {
		t.Errorf("Procs() = %v, %v; want [%d]", pids, err, p.pid())
	}
	if err := c.Freeze(); err != nil {
		t.Fatalf("Freeze: %v", err)
	}
	if ev := readTrim(t, filepath.Join(d, "cgroup.events")); !strings.Contains(ev, "frozen 1") {
		t.Errorf("cgroup.events after Freeze: %q", ev)
	}
	if err := c.Thaw(); err != nil {
		t.Fatalf("Thaw: %v", err)
	}
	if ev := readTrim(t, filepath.Join(d, "cgroup.events")); !strings.Contains(ev, "frozen 0") {
		t.Errorf("cgroup.events after Thaw: %q", ev)
	}
	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	t.Logf("v2 stats (controllers as enabled on this mount): %+v", *st)
	if err := m.Delete(ctx, root+"/pod"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if sig, ok := killedBy(p.wait()); !ok || sig != syscall.SIGKILL {
		t.Errorf("process ended with %v, want SIGKILL", p.err)
	}
	if _, err := os.Lstat(d); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists: %v", d, err)
	}
	if err := c.Delete(ctx); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}

func v2Controllers(t *testing.T, m *Manager) []string {
	return strings.Fields(readTrim(t, filepath.Join(m.v2mount, "cgroup.controllers")))
}

func TestV2Hugetlb(t *testing.T) {
	m := v2Manager(t)
	if !slices.Contains(v2Controllers(t, m), "hugetlb") {
		t.Skipf("hugetlb controller not available at %s", m.v2mount)
	}
	if _, err := os.Stat("/sys/kernel/mm/hugepages/hugepages-2048kB"); err != nil {
		t.Skip("no 2 MiB huge pages on this machine")
	}
	// Create enables hugetlb in the ancestors' subtree_control, the mount's
	// root included; put the root back as it was once the group is gone
	// (cleanups run last-registered first, so after testRoot's Delete).
	rootCtl := filepath.Join(m.v2mount, "cgroup.subtree_control")
	if !slices.Contains(strings.Fields(readTrim(t, rootCtl)), "hugetlb") {
		t.Cleanup(func() {
			if err := os.WriteFile(rootCtl, []byte("-hugetlb"), 0); err != nil {
				t.Errorf("restore %s: %v", rootCtl, err)
			}
		})
	}
	root := testRoot(t, m)
	path := root + "/pod/ctr"
	_, err := m.Create(context.Background(), path, &specs.LinuxResources{
		HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 8 << 20}},
	})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if got := readTrim(t, filepath.Join(m.v2mount, path, "hugetlb.2MB.max")); got != strconv.Itoa(8<<20) {
		t.Errorf("hugetlb.2MB.max = %s", got)
	}
}

func TestV2MemoryPids(t *testing.T) {
	m := v2Manager(t)
	ctrls := v2Controllers(t, m)
	if !slices.Contains(ctrls, "memory") || !slices.Contains(ctrls, "pids") {
		t.Skipf("memory and pids controllers not available at %s (controllers: %v); covered by the v1 tests here", m.v2mount, ctrls)
	}
	root := testRoot(t, m)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	limit := int64(48 << 20)
	c, err := m.Create(ctx, root+"/oom", &specs.LinuxResources{
		Memory: &specs.LinuxMemory{Limit: &limit, Swap: &limit},
		Pids:   &specs.LinuxPids{Limit: ptr[int64](64)},
	})
	if err != nil {
		t.Fatal(err)
	}
	d := filepath.Join(m.v2mount, root, "oom")
	for file, want := range map[string]string{"memory.max": strconv.Itoa(int(limit)), "memory.swap.max": "0", "pids.max": "64"} {
		if got := readTrim(t, filepath.Join(d, file)); got != want {
			t.Errorf("%s = %s, want %s", file, got, want)
		}
	}
	events, err := c.OOMEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p := startHelper(t, "alloc")
	if err := c.AddProc(p.pid()); err != nil {
		t.Fatal(err)
	}
	p.release(t)
	if sig, ok := killedBy(p.wait()); !ok || sig != syscall.SIGKILL {
		t.Fatalf("allocating process ended with %v, want SIGKILL", p.err)
	}
	if !recv(t, events) {
		t.Fatal("OOM event channel closed without an event")
	}
	if n, err := c.OOMKillCount(); err != nil || n == 0 {
		t.Errorf("OOMKillCount = %d, %v", n, err)
	}
}

// Containers of one pod are created concurrently; the cpuset parents they
// share must come out populated whichever wins, so every container can take
// a process.
func TestV1ConcurrentCreate(t *testing.T) {
	m := v1Manager(t)
	root := testRoot(t, m)
	ctx := context.Background()
	const n = 8
	cgs := make([]*Cgroup, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			cgs[i], errs[i] = m.Create(ctx, root+"/pod/ctr"+strconv.Itoa(i), &specs.LinuxResources{
				CPU:  &specs.LinuxCPU{Cpus: "0", Shares: ptr[uint64](100)},
				Pids: &specs.LinuxPids{Limit: ptr[int64](50)},
			})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Create ctr%d: %v", i, err)
		}
	}
	for i, c := range cgs {
		p := start(t, "sleep", "1000")
		if err := c.AddProc(p.pid()); err != nil {
			t.Errorf("AddProc into ctr%d: %v", i, err)
		}
	}
	rc, err := m.Load(ctx, root+"/pod")
	if err != nil {
		t.Fatal(err)
	}
	if pids, err := rc.Procs(); err != nil || len(pids) != n {
		t.Errorf("pod Procs() = %v, %v; want %d pids", pids, err, n)
	}
}
