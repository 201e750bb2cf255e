package runtime

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/cgroupmgr"
	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/runtime/monitor"
)

// Root integration tests: they build berth-shim, make a busybox rootfs, and
// drive real monitors and containers.

var (
	testShim   string // built berth-shim
	testRootfs string // busybox rootfs, read-only in the containers
	skipReason string // why the integration tests cannot run here
)

func TestMain(m *testing.M) {
	if os.Getenv("BERTH_TEST_HELPER") != "" {
		os.Exit(helperMain())
	}
	tmp, err := os.MkdirTemp("", "berth-test-runtime-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	skipReason = setup(tmp)
	code := m.Run()
	os.RemoveAll(tmp)
	os.Exit(code)
}

func setup(tmp string) string {
	if os.Geteuid() != 0 {
		return "needs root"
	}
	testShim = filepath.Join(tmp, "berth-shim")
	out, err := exec.Command("go", "build", "-o", testShim, "../cmd/berth-shim").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("build berth-shim: %v: %s", err, out)
	}
	usage, _ := exec.Command(testShim).CombinedOutput()
	for _, c := range []string{"monitor", "init", "exec", "podinit", "pin"} {
		if !strings.Contains(string(usage), c) {
			return fmt.Sprintf("berth-shim has no %q subcommand yet: %s", c, usage)
		}
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return "no busybox (apt-get install busybox-static)"
	}
	testRootfs = filepath.Join(tmp, "rootfs")
	for _, d := range []string{"bin", "proc", "dev", "sys", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(testRootfs, d), 0o755); err != nil {
			return err.Error()
		}
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		return err.Error()
	}
	if err := os.WriteFile(filepath.Join(testRootfs, "bin", "busybox"), data, 0o755); err != nil {
		return err.Error()
	}
	for _, app := range []string{"sh", "echo", "true", "false", "sleep", "cat", "tty", "ls", "stty"} {
		os.Symlink("busybox", filepath.Join(testRootfs, "bin", app))
	}
	return ""
}

func needRoot(tb testing.TB) {
	tb.Helper()
	if skipReason != "" {
		tb.Skip("runtime integration tests: " + skipReason)
	}
}

// testCgroup is a container cgroup path under a parent unique to this test
// process; testPod's cleanup removes the parent.
func testCgroup(name string) string {
	return fmt.Sprintf("/berth-test-runtime-%d/%s", os.Getpid(), name)
}

func newTestRuntime(tb testing.TB, stateDir string, withCgroups bool) *Runtime {
	tb.Helper()
	cfg := Config{StateDir: stateDir, ShimPath: testShim}
	if withCgroups {
		mgr, err := cgroupmgr.New()
		if err != nil {
			tb.Fatal(err)
		}
		cfg.Cgroups = CgroupsFrom(mgr)
		tb.Cleanup(func() {
			// Runs after the pod's cleanup (registered later) deleted
			// the containers' cgroups.
			if err := mgr.Delete(context.Background(), path.Dir(testCgroup("x"))); err != nil {
				tb.Errorf("cleanup: delete test cgroup parent: %v", err)
			}
		})
	}
	r, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close() })
	return r
}

func testSpec(args ...string) *specs.Spec {
	return &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Args: args,
			Env:  []string{"PATH=/bin"},
			Cwd:  "/",
		},
		Root:     &specs.Root{Path: testRootfs, Readonly: true},
		Hostname: "berth-test",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev", "mode=1777"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.MountNamespace},
				{Type: specs.IPCNamespace}, {Type: specs.UTSNamespace}, {Type: specs.NetworkNamespace},
			},
		},
	}
}

// testPod starts a pod monitor and registers the cleanup of the pod and of
// the given container IDs (even if the test fails midway).
type testPod struct {
	tb    testing.TB
	r     *Runtime
	id    string
	state string
	info  MonitorInfo
	ids   []string
}

func startTestPod(tb testing.TB, withCgroups, sharePID bool) *testPod {
	tb.Helper()
	needRoot(tb)
	state := tb.TempDir()
	p := &testPod{tb: tb, r: newTestRuntime(tb, state, withCgroups), id: "berth-test-pod", state: state}
	ctx := context.Background()
	if _, err := p.r.StartMonitor(ctx, p.id, sharePID); err != nil {
		tb.Fatal(err)
	}
	info, err := p.r.ConnectMonitor(ctx, p.id)
	if err != nil {
		tb.Fatal(err)
	}
	p.info = info
	tb.Cleanup(func() {
		for _, id := range p.ids {
			if err := p.r.Delete(ctx, id); err != nil {
				tb.Errorf("cleanup: Delete %s: %v", id, err)
			}
		}
		if err := p.r.StopMonitor(ctx, p.id); err != nil {
			tb.Errorf("cleanup: StopMonitor: %v", err)
		}
	})
	return p
}

func (p *testPod) create(id string, spec *specs.Spec, opts CreateOptions) {
	p.tb.Helper()
	p.ids = append(p.ids, id)
	if err := p.r.Create(context.Background(), p.id, id, spec, opts); err != nil {
		p.tb.Fatalf("Create %s: %v", id, err)
	}
}

func (p *testPod) run(id string, spec *specs.Spec, opts CreateOptions) State {
	p.tb.Helper()
	p.create(id, spec, opts)
	ctx := context.Background()
	if err := p.r.Start(ctx, id); err != nil {
		p.tb.Fatalf("Start %s: %v", id, err)
	}
	st, err := p.r.Wait(ctx, id)
	if err != nil {
		p.tb.Fatalf("Wait %s: %v", id, err)
	}
	return st
}

func logLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		parts := strings.SplitN(l, " ", 2)
		if len(parts) != 2 {
			t.Fatalf("log line %q", l)
		}
		if _, err := time.Parse(time.RFC3339Nano, parts[0]); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, parts[1])
	}
	return out
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && s[i+2] != 'Z'
}

func TestRunEchoLogsAndCleanup(t *testing.T) {
	p := startTestPod(t, true, false)
	logPath := filepath.Join(t.TempDir(), "logs", "c.log")
	st := p.run("echo", testSpec("sh", "-c", "echo hi; echo oops >&2; printf tail"), CreateOptions{
		LogPath: logPath, CgroupPath: testCgroup("echo"),
	})
	if st.Status != StatusStopped || st.ExitCode != 0 || st.Reason != ReasonCompleted {
		t.Errorf("state %+v", st)
	}
	if st.StartedAt.IsZero() || st.FinishedAt.Before(st.StartedAt) || st.CreatedAt.After(st.StartedAt) {
		t.Errorf("times: created %v started %v finished %v", st.CreatedAt, st.StartedAt, st.FinishedAt)
	}
	got := logLines(t, logPath)
	want := map[string]bool{"stdout F hi": true, "stderr F oops": true, "stdout P tail": true}
	if len(got) != 3 {
		t.Errorf("log lines %q", got)
	}
	for _, l := range got {
		if !want[l] {
			t.Errorf("unexpected log line %q (all: %q)", l, got)
		}
	}
	ctx := context.Background()
	if err := p.r.Start(ctx, "echo"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("second Start: %v, want FailedPrecondition", err)
	}
	if err := p.r.Delete(ctx, "echo"); err != nil {
		t.Fatal(err)
	}
	if err := p.r.Delete(ctx, "echo"); err != nil {
		t.Errorf("second Delete: %v", err)
	}
	if _, err := p.r.State(ctx, "echo"); !errdefs.IsNotFound(err) {
		t.Errorf("State after Delete: %v, want NotFound", err)
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory" + testCgroup("echo")); !os.IsNotExist(err) {
		t.Errorf("container cgroup left behind: %v", err)
	}
	if err := p.r.StopMonitor(ctx, p.id); err != nil {
		t.Fatal(err)
	}
	if alive(p.info.Pid) {
		t.Errorf("monitor %d still alive after StopMonitor", p.info.Pid)
	}
	for _, d := range []string{"pods", "containers"} {
		ents, _ := os.ReadDir(filepath.Join(p.state, d))
		if len(ents) != 0 {
			t.Errorf("%s left in state dir: %v", d, ents)
		}
	}
}

// TestNoLogLost: everything a container wrote is in its log by the time
// Wait reports the exit.
func TestNoLogLost(t *testing.T) {
	p := startTestPod(t, false, false)
	logPath := filepath.Join(t.TempDir(), "c.log")
	st := p.run("chatty", testSpec("sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo line$i; echo err$i >&2; i=$((i+1)); done"), CreateOptions{LogPath: logPath})
	if st.ExitCode != 0 {
		t.Fatalf("state %+v", st)
	}
	got := logLines(t, logPath)
	if len(got) != 6000 {
		t.Fatalf("%d log lines, want 6000", len(got))
	}
	next := map[string]int{"stdout": 0, "stderr": 0}
	for _, l := range got {
		f := strings.Fields(l)
		prefix := map[string]string{"stdout": "line", "stderr": "err"}[f[0]]
		if want := prefix + strconv.Itoa(next[f[0]]); f[1] != "F" || f[2] != want {
			t.Fatalf("log line %q, want %s F %s", l, f[0], want)
		}
		next[f[0]]++
	}
}

func TestExitCodeAndStates(t *testing.T) {
	p := startTestPod(t, false, false)
	ctx := context.Background()
	if err := p.r.Start(ctx, "nope"); !errdefs.IsNotFound(err) {
		t.Errorf("Start of unknown: %v, want NotFound", err)
	}
	p.create("three", testSpec("sh", "-c", "exit 3"), CreateOptions{})
	st, err := p.r.State(ctx, "three")
	if err != nil || st.Status != StatusCreated || st.Pid <= 0 {
		t.Fatalf("State after Create: %+v, %v", st, err)
	}
	if !alive(st.Pid) {
		t.Errorf("created process %d is not alive", st.Pid)
	}
	if err := p.r.Start(ctx, "three"); err != nil {
		t.Fatal(err)
	}
	st, err = p.r.Wait(ctx, "three")
	if err != nil || st.Status != StatusStopped || st.ExitCode != 3 || st.Signal != 0 || st.Reason != ReasonError {
		t.Errorf("after exit 3: %+v, %v", st, err)
	}
	if err := p.r.Kill(ctx, "three", syscall.SIGKILL); err != nil {
		t.Errorf("Kill of a stopped container: %v, want nil", err)
	}
	if err := p.r.Kill(ctx, "nope", syscall.SIGKILL); !errdefs.IsNotFound(err) {
		t.Errorf("Kill of unknown: %v, want NotFound", err)
	}
	if err := p.r.Create(ctx, p.id, "three", testSpec("true"), CreateOptions{}); !errdefs.IsAlreadyExists(err) {
		t.Errorf("Create of existing: %v, want AlreadyExists", err)
	}
	// A program that does not exist fails Create, which leaves nothing.
	err = p.r.Create(ctx, p.id, "missing", testSpec("/no/such/program"), CreateOptions{LogPath: filepath.Join(t.TempDir(), "m.log")})
	if err == nil || !strings.Contains(err.Error(), "/no/such/program") {
		t.Errorf("Create of a missing program: %v", err)
	}
	if _, err := p.r.State(ctx, "missing"); !errdefs.IsNotFound(err) {
		t.Errorf("State after a failed Create: %v, want NotFound", err)
	}
	if _, err := os.Stat(filepath.Join(p.state, "containers", "missing")); !os.IsNotExist(err) {
		t.Errorf("bundle left after a failed Create: %v", err)
	}
}

// TestNoFdLeak checks that no descriptor of berthd, the monitor or the
// shim (the sealed berth-shim copy, the sync pipe, sockets) reaches the
// container's process or an exec'd one: only stdio, plus the directory ls
// itself opens.
func TestNoFdLeak(t *testing.T) {
	p := startTestPod(t, false, false)
	ctx := context.Background()
	logPath := filepath.Join(t.TempDir(), "c.log")
	p.create("fds", testSpec("sh", "-c", "ls /proc/self/fd; exec sleep 1000"), CreateOptions{LogPath: logPath, Stdin: true})
	if err := p.r.Start(ctx, "fds"); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	code, err := p.r.Exec(ctx, "fds", ExecOptions{
		Process: &specs.Process{Args: []string{"ls", "/proc/self/fd"}, Env: []string{"PATH=/bin"}, Cwd: "/"},
		Stdout:  &out,
	})
	if err != nil || code != 0 {
		t.Fatalf("Exec = %d, %v", code, err)
	}
	if got := strings.Fields(out.String()); strings.Join(got, " ") != "0 1 2 3" {
		t.Errorf("exec'd process has fds %q, want 0 1 2 (3 is ls's)", got)
	}
	if err := p.r.Kill(ctx, "fds", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, err := p.r.Wait(ctx, "fds"); err != nil {
		t.Fatal(err)
	}
	if got := logLines(t, logPath); strings.Join(got, " ") != "stdout F 0 stdout F 1 stdout F 2 stdout F 3" {
		t.Errorf("container process has fds %q, want 0 1 2 (3 is ls's)", got)
	}
}

func TestConcurrentContainers(t *testing.T) {
	p := startTestPod(t, false, false)
	ctx := context.Background()
	const n = 6
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		id := "par-" + strconv.Itoa(i)
		p.ids = append(p.ids, id)
		go func() {
			if err := p.r.Create(ctx, p.id, id, testSpec("sh", "-c", "exit "+strconv.Itoa(10+i)), CreateOptions{}); err != nil {
				errs <- err
				return
			}
			if err := p.r.Start(ctx, id); err != nil {
				errs <- err
				return
			}
			st, err := p.r.Wait(ctx, id)
			if err == nil && st.ExitCode != 10+i {
				err = fmt.Errorf("%s exited %d, want %d", id, st.ExitCode, 10+i)
			}
			errs <- err
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

func TestKillAndDeleteCreated(t *testing.T) {
	p := startTestPod(t, true, false)
	ctx := context.Background()
	p.create("sleeper", testSpec("sleep", "1000"), CreateOptions{CgroupPath: testCgroup("sleeper")})
	if err := p.r.Start(ctx, "sleeper"); err != nil {
		t.Fatal(err)
	}
	st, _ := p.r.State(ctx, "sleeper")
	if st.Status != StatusRunning {
		t.Fatalf("state %+v", st)
	}
	// The container process is in the cgroup made for it.
	cg, err := os.ReadFile("/proc/" + strconv.Itoa(st.Pid) + "/cgroup")
	if err != nil || !strings.Contains(string(cg), ":memory:"+testCgroup("sleeper")+"\n") {
		t.Errorf("container cgroups: %s %v", cg, err)
	}
	if err := p.r.Kill(ctx, "sleeper", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st, err = p.r.Wait(ctx, "sleeper")
	if err != nil || st.ExitCode != 137 || st.Signal != int(syscall.SIGKILL) || st.Reason != ReasonError {
		t.Errorf("after SIGKILL: %+v, %v", st, err)
	}
	// A created container killed before Start cannot be started.
	p.create("victim", testSpec("true"), CreateOptions{})
	if err := p.r.Kill(ctx, "victim", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if st, err := p.r.Wait(ctx, "victim"); err != nil || st.Signal != int(syscall.SIGKILL) || !st.StartedAt.IsZero() {
		t.Errorf("killed before start: %+v, %v", st, err)
	}
	if err := p.r.Start(ctx, "victim"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Start after kill: %v, want FailedPrecondition", err)
	}
	// Delete of a created, never started container kills it.
	p.create("never", testSpec("true"), CreateOptions{})
	st, _ = p.r.State(ctx, "never")
	if err := p.r.Delete(ctx, "never"); err != nil {
		t.Fatal(err)
	}
	if alive(st.Pid) {
		t.Errorf("created process %d survived Delete", st.Pid)
	}
}

func TestUpdateResources(t *testing.T) {
	p := startTestPod(t, true, false)
	ctx := context.Background()
	spec := testSpec("sleep", "1000")
	limit, newLimit := int64(50), int64(7)
	spec.Linux.Resources = &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &limit}}
	p.create("upd", spec, CreateOptions{CgroupPath: testCgroup("upd")})
	pidsMax := "/sys/fs/cgroup/pids" + testCgroup("upd") + "/pids.max"
	if b, err := os.ReadFile(pidsMax); err != nil || strings.TrimSpace(string(b)) != "50" {
		t.Fatalf("pids.max after Create: %q, %v", b, err)
	}
	if err := p.r.UpdateResources(ctx, "upd", &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &newLimit}}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(pidsMax); err != nil || strings.TrimSpace(string(b)) != "7" {
		t.Errorf("pids.max after UpdateResources: %q, %v", b, err)
	}
	if err := p.r.UpdateResources(ctx, "nope", &specs.LinuxResources{}); !errdefs.IsNotFound(err) {
		t.Errorf("UpdateResources of unknown: %v", err)
	}
}

func TestOOMKilled(t *testing.T) {
	p := startTestPod(t, true, false)
	spec := testSpec("sh", "-c", "x=y; while true; do x=$x$x; done")
	limit := int64(16 << 20)
	spec.Linux.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit, Swap: &limit}}
	st := p.run("oom", spec, CreateOptions{CgroupPath: testCgroup("oom")})
	if st.Reason != ReasonOOMKilled || st.ExitCode != 137 {
		t.Errorf("state %+v, want OOMKilled", st)
	}
}

func TestAttachStdinOnce(t *testing.T) {
	p := startTestPod(t, false, false)
	ctx := context.Background()
	logPath := filepath.Join(t.TempDir(), "c.log")
	p.create("att", testSpec("sh", "-c", "read x; echo got $x; cat; echo cat-done; exit 5"), CreateOptions{
		LogPath: logPath, Stdin: true, StdinOnce: true,
	})
	if err := p.r.Start(ctx, "att"); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	// stdin ends after "hello\n": with stdin_once the container's stdin
	// closes, so cat ends and the container exits.
	if err := p.r.Attach(ctx, "att", strings.NewReader("hello\n"), &out, io.Discard, nil); err != nil {
		t.Fatal(err)
	}
	if out.String() != "got hello\ncat-done\n" {
		t.Errorf("attached stdout %q", out.String())
	}
	st, err := p.r.Wait(ctx, "att")
	if err != nil || st.ExitCode != 5 {
		t.Errorf("state %+v, %v", st, err)
	}
	if got := logLines(t, logPath); strings.Join(got, "|") != "stdout F got hello|stdout F cat-done" {
		t.Errorf("log %q", got)
	}
}

func TestReopenLog(t *testing.T) {
	p := startTestPod(t, false, false)
	ctx := context.Background()
	logPath := filepath.Join(t.TempDir(), "c.log")
	// Each line waits for stdin, which flows through the attach session:
	// so "one" is written after the session subscribed to the output.
	p.create("rot", testSpec("sh", "-c", "read x; echo one; read x; echo two"), CreateOptions{LogPath: logPath, Stdin: true})
	if err := p.r.Start(ctx, "rot"); err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	stdinR, stdinW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- p.r.Attach(ctx, "rot", stdinR, pw, nil, nil) }()
	stdinW.Write([]byte("a\n"))
	// The monitor logs a chunk before it forwards it to attached clients,
	// so once "one" arrives here it is in the file.
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil || line != "one\n" {
		t.Fatalf("attached output %q, %v", line, err)
	}
	go io.Copy(io.Discard, pr)
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if err := p.r.ReopenLog(ctx, "rot"); err != nil {
		t.Fatal(err)
	}
	stdinW.Write([]byte("go\n"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := p.r.Wait(ctx, "rot"); err != nil {
		t.Fatal(err)
	}
	if got := logLines(t, logPath+".1"); strings.Join(got, "|") != "stdout F one" {
		t.Errorf("rotated log %q", got)
	}
	if got := logLines(t, logPath); strings.Join(got, "|") != "stdout F two" {
		t.Errorf("new log %q", got)
	}
}

func TestTty(t *testing.T) {
	p := startTestPod(t, false, false)
	logPath := filepath.Join(t.TempDir(), "c.log")
	spec := testSpec("sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo is-a-tty; exit 2")
	spec.Process.Terminal = true
	st := p.run("tty", spec, CreateOptions{LogPath: logPath, Tty: true})
	if st.ExitCode != 2 {
		t.Errorf("state %+v", st)
	}
	// A terminal turns "\n" into "\r\n"; the record keeps the "\r".
	if got := logLines(t, logPath); strings.Join(got, "|") != "stdout F is-a-tty\r" {
		t.Errorf("log %q", got)
	}
}

func TestTtyAttachResize(t *testing.T) {
	p := startTestPod(t, false, false)
	ctx := context.Background()
	spec := testSpec("sh", "-c", "read x; stty size; exit 6")
	spec.Process.Terminal = true
	p.create("ttyatt", spec, CreateOptions{Tty: true, Stdin: true, LogPath: filepath.Join(t.TempDir(), "c.log")})
	if err := p.r.Resize(ctx, "ttyatt", TermSize{Width: 123, Height: 45}); err != nil {
		t.Fatal(err)
	}
	if err := p.r.Start(ctx, "ttyatt"); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := p.r.Attach(ctx, "ttyatt", strings.NewReader("go\n"), &out, nil, nil); err != nil {
		t.Fatal(err)
	}
	// The terminal echoes the input, then stty reports rows and columns.
	if !strings.Contains(out.String(), "45 123") {
		t.Errorf("attached output %q", out.String())
	}
	st, err := p.r.Wait(ctx, "ttyatt")
	if err != nil || st.ExitCode != 6 {
		t.Errorf("state %+v, %v", st, err)
	}
	if err := p.r.Resize(ctx, "nope", TermSize{Width: 1, Height: 1}); !errdefs.IsNotFound(err) {
		t.Errorf("Resize of unknown: %v", err)
	}
}

func TestExec(t *testing.T) {
	p := startTestPod(t, true, false)
	ctx := context.Background()
	p.create("box", testSpec("sleep", "1000"), CreateOptions{CgroupPath: testCgroup("box")})
	if _, err := p.r.Exec(ctx, "box", ExecOptions{Process: &specs.Process{Args: []string{"true"}, Cwd: "/"}}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Exec in a created container: %v, want FailedPrecondition", err)
	}
	if err := p.r.Start(ctx, "box"); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code, err := p.r.Exec(ctx, "box", ExecOptions{
		Process: &specs.Process{Args: []string{"sh", "-c", "cat /proc/1/cmdline; echo; cat /proc/self/cgroup | grep memory; echo err >&2; exit 4"}, Env: []string{"PATH=/bin"}, Cwd: "/"},
		Stdout:  &out, Stderr: &errOut,
	})
	if err != nil || code != 4 {
		t.Fatalf("Exec = %d, %v (stderr %q)", code, err, errOut.String())
	}
	lines := strings.Split(out.String(), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "sleep") || !strings.HasSuffix(lines[1], ":memory:"+testCgroup("box")) {
		t.Errorf("exec stdout %q: want the container's pid 1 and cgroup", out.String())
	}
	if errOut.String() != "err\n" {
		t.Errorf("exec stderr %q", errOut.String())
	}
	out.Reset()
	code, err = p.r.Exec(ctx, "box", ExecOptions{
		Process: &specs.Process{Args: []string{"sh", "-c", "[ -t 0 ] && echo tty-ok; exit 0"}, Env: []string{"PATH=/bin"}, Cwd: "/"},
		Stdout:  &out, Tty: true,
	})
	if err != nil || code != 0 || !strings.Contains(out.String(), "tty-ok") {
		t.Errorf("tty Exec = %d, %v, output %q", code, err, out.String())
	}
	out.Reset()
	code, err = p.r.Exec(ctx, "box", ExecOptions{
		Process: &specs.Process{Args: []string{"cat"}, Env: []string{"PATH=/bin"}, Cwd: "/"},
		Stdin:   strings.NewReader("from stdin"), Stdout: &out,
	})
	if err != nil || code != 0 || out.String() != "from stdin" {
		t.Errorf("stdin Exec = %d, %v, output %q", code, err, out.String())
	}
}

func TestSharedPidNamespace(t *testing.T) {
	p := startTestPod(t, false, true)
	if p.info.PidNSPath == "" {
		t.Fatal("no pid namespace path")
	}
	logPath := filepath.Join(t.TempDir(), "c.log")
	spec := testSpec("sh", "-c", "echo $$")
	for i, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.PIDNamespace {
			spec.Linux.Namespaces[i].Path = p.info.PidNSPath
		}
	}
	st := p.run("shared", spec, CreateOptions{LogPath: logPath})
	if st.ExitCode != 0 {
		t.Fatalf("state %+v", st)
	}
	// pid 1 is the pod's init, so the container's shell is not.
	if got := logLines(t, logPath); len(got) != 1 || got[0] == "stdout F 1" {
		t.Errorf("log %q", got)
	}
	// A container still running when the pod stops is killed, its exit
	// recorded, and the pinned namespace unmounted.
	spec = testSpec("sleep", "1000")
	spec.Linux.Namespaces[0].Path = p.info.PidNSPath
	p.create("long", spec, CreateOptions{})
	ctx := context.Background()
	if err := p.r.Start(ctx, "long"); err != nil {
		t.Fatal(err)
	}
	if err := p.r.StopMonitor(ctx, p.id); err != nil {
		t.Fatal(err)
	}
	st, err := p.r.State(ctx, "long")
	if err != nil || st.Status != StatusStopped || st.Signal != int(syscall.SIGKILL) || st.Reason != ReasonError {
		t.Errorf("after StopMonitor: %+v, %v", st, err)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), p.state) {
		t.Errorf("mounts left under %s", p.state)
	}
}

// TestStartMonitorRace: concurrent starts of one pod's monitor end with one
// monitor that all of them report.
func TestStartMonitorRace(t *testing.T) {
	needRoot(t)
	r := newTestRuntime(t, t.TempDir(), false)
	ctx := context.Background()
	t.Cleanup(func() { r.StopMonitor(ctx, "berth-test-race") })
	const n = 4
	pids := make(chan int, n)
	for i := 0; i < n; i++ {
		go func() {
			info, err := r.startMonitor(ctx, "berth-test-race", false)
			if err != nil {
				t.Error(err)
			}
			pids <- info.Pid
		}()
	}
	first := <-pids
	for i := 1; i < n; i++ {
		if pid := <-pids; pid != first {
			t.Errorf("monitors %d and %d for one pod", first, pid)
		}
	}
	if err := r.StopMonitor(ctx, "berth-test-race"); err != nil {
		t.Fatal(err)
	}
	if alive(first) {
		t.Errorf("monitor %d alive after StopMonitor", first)
	}
}

func TestMonitorDied(t *testing.T) {
	p := startTestPod(t, false, false)
	ctx := context.Background()
	p.create("orphan", testSpec("sleep", "1000"), CreateOptions{})
	if err := p.r.Start(ctx, "orphan"); err != nil {
		t.Fatal(err)
	}
	st, _ := p.r.State(ctx, "orphan")
	waitErr := make(chan error, 1)
	var waited State
	go func() {
		var err error
		waited, err = p.r.Wait(ctx, "orphan")
		waitErr <- err
	}()
	if err := syscall.Kill(p.info.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-waitErr; err != nil {
		t.Fatal(err)
	}
	if waited.Status != StatusStopped || waited.Reason != ReasonUnknown || waited.Message != MessageMonitorDied {
		t.Errorf("Wait across the monitor's death: %+v", waited)
	}
	got, err := p.r.State(ctx, "orphan")
	if err != nil || got.Status != StatusStopped || got.Reason != ReasonUnknown || !got.FinishedAt.Equal(waited.FinishedAt) {
		t.Errorf("State: %+v, %v", got, err)
	}
	// The container process outlived its monitor: reporting it stopped
	// killed it, so the report is true.
	if alive(st.Pid) {
		t.Errorf("container process %d still runs after its container was reported stopped", st.Pid)
	}
	if err := p.r.Delete(ctx, "orphan"); err != nil {
		t.Fatal(err)
	}
	if alive(st.Pid) {
		t.Errorf("orphaned container process %d survived Delete", st.Pid)
	}
}

// helperMain plays berthd in a child process that the test kills with
// SIGKILL: it starts a pod and a container, reports, and hangs.
func helperMain() int {
	r, err := New(Config{StateDir: os.Getenv("BERTH_TEST_STATE"), ShimPath: os.Getenv("BERTH_TEST_SHIM")})
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	testRootfs = os.Getenv("BERTH_TEST_ROOTFS")
	ctx := context.Background()
	if _, err := r.StartMonitor(ctx, "berth-test-pod", false); err != nil {
		fmt.Println("error", err)
		return 1
	}
	if err := r.Create(ctx, "berth-test-pod", "survivor", testSpec("sleep", "1000"), CreateOptions{}); err != nil {
		fmt.Println("error", err)
		return 1
	}
	if err := r.Start(ctx, "survivor"); err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("ready")
	select {}
}

func TestBerthdKilled(t *testing.T) {
	needRoot(t)
	state := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BERTH_TEST_HELPER=1", "BERTH_TEST_STATE="+state, "BERTH_TEST_SHIM="+testShim, "BERTH_TEST_ROOTFS="+testRootfs)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := newTestRuntime(t, state, false)
	ctx := context.Background()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		r.Delete(ctx, "survivor")
		r.StopMonitor(ctx, "berth-test-pod")
	})
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if line != "ready\n" {
		t.Fatalf("helper said %q", line)
	}
	// kill -9 of "berthd".
	cmd.Process.Kill()
	cmd.Wait()

	info, err := r.ConnectMonitor(ctx, "berth-test-pod")
	if err != nil {
		t.Fatalf("monitor did not survive berthd: %v", err)
	}
	st, err := r.State(ctx, "survivor")
	if err != nil || st.Status != StatusRunning {
		t.Fatalf("after berthd died: %+v, %v", st, err)
	}
	if err := r.Kill(ctx, "survivor", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	st, err = r.Wait(ctx, "survivor")
	if err != nil || st.Status != StatusStopped || st.ExitCode != 137 {
		t.Errorf("exit seen by the new berthd: %+v, %v", st, err)
	}
	// The record is on disk too, for a berthd that finds no monitor.
	fst, err := monitor.ReadStateFile(filepath.Join(state, "containers", "survivor"))
	if err != nil || fst.Status != monitor.StatusStopped || fst.ExitCode != 137 {
		t.Errorf("state file %+v, %v", fst, err)
	}
	if err := r.Delete(ctx, "survivor"); err != nil {
		t.Fatal(err)
	}
	if err := r.StopMonitor(ctx, "berth-test-pod"); err != nil {
		t.Fatal(err)
	}
	if alive(info.Pid) {
		t.Errorf("monitor %d alive after StopMonitor", info.Pid)
	}
}

func TestPinNamespaces(t *testing.T) {
	needRoot(t)
	r := newTestRuntime(t, t.TempDir(), false)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "ns")
	t.Cleanup(func() { r.UnpinNamespaces(ctx, dir) })
	paths, err := r.PinNamespaces(ctx, dir, []string{"net", "ipc", "uts"})
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Readlink("/proc/self/ns/net")
	for kind, p := range paths {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Errorf("%s pin: %v", kind, err)
		}
		if kind == "net" {
			var own syscall.Stat_t
			syscall.Stat("/proc/self/ns/net", &own)
			if st.Ino == own.Ino {
				t.Errorf("pinned net namespace is ours (%s)", self)
			}
		}
	}
	if err := r.UnpinNamespaces(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if err := r.UnpinNamespaces(ctx, dir); err != nil {
		t.Errorf("second Unpin: %v", err)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), dir) {
		t.Errorf("mounts left under %s", dir)
	}
}

// A bundle whose Create died before or while writing meta.json is listed
// (with no pod) and removed by Delete, so start-up reconciliation can clean
// it up.
func TestListAndDeleteHalfMadeBundles(t *testing.T) {
	needRoot(t)
	r := newTestRuntime(t, t.TempDir(), false)
	const noMeta, emptyMeta, garbledMeta = "half-nometa", "half-emptymeta", "half-garbled"
	for id, meta := range map[string]string{noMeta: "", emptyMeta: "\x00", garbledMeta: `{"PodID":`} {
		bundle := r.bundleDir(id)
		if err := os.Mkdir(bundle, 0o711); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bundle, "config.json"), []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
		if meta != "" {
			if err := os.WriteFile(filepath.Join(bundle, metaFile), []byte(strings.TrimPrefix(meta, "\x00")), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	listed, err := r.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, c := range listed {
		got[c.ID] = true
	}
	for _, id := range []string{noMeta, emptyMeta, garbledMeta} {
		if !got[id] {
			t.Errorf("List does not report half-made bundle %s (got %v)", id, listed)
		}
		if err := r.Delete(context.Background(), id); err != nil {
			t.Errorf("Delete %s: %v", id, err)
		}
		if _, err := os.Stat(r.bundleDir(id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("bundle of %s still there after Delete: %v", id, err)
		}
	}
}

// Container processes start with every signal at its default action, as
// under runc: the monitor ignores SIGHUP and SIGINT, and ignored signals
// would otherwise stay ignored across execve (a shell's trap on INT would
// silently never fire).
func TestSignalsStartAtDefault(t *testing.T) {
	p := startTestPod(t, false, false)
	ctx := context.Background()
	p.create("box", testSpec("sleep", "1000"), CreateOptions{})
	if err := p.r.Start(ctx, "box"); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := p.r.Exec(ctx, "box", ExecOptions{
		Process: &specs.Process{Args: []string{"sh", "-c", "cat /proc/1/status /proc/self/status | while read k v; do [ \"$k\" = SigIgn: ] && echo \"$k$v\"; done; true"}, Env: []string{"PATH=/bin"}, Cwd: "/"},
		Stdout:  &out,
	}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("exec output %q", out.String())
	}
	for _, l := range lines {
		if l != "SigIgn:0000000000000000" {
			t.Errorf("%s: want no ignored signal", l)
		}
	}
}

// A running container's state comes from its exit watch, not from a request
// to the monitor each time: State answers while the monitor is frozen, and
// the exit reaches State and every Wait through the one watch.
func TestStateOfRunningContainerIsWatched(t *testing.T) {
	p := startTestPod(t, false, false)
	ctx := context.Background()
	p.create("watched", testSpec("sh", "-c", "read line; exit 7"), CreateOptions{Stdin: true, StdinOnce: true})
	if err := p.r.Start(ctx, "watched"); err != nil {
		t.Fatal(err)
	}
	if st, err := p.r.State(ctx, "watched"); err != nil || st.Status != StatusRunning {
		t.Fatalf("State after Start: %+v, %v", st, err)
	}
	if err := syscall.Kill(p.info.Pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			syscall.Kill(p.info.Pid, syscall.SIGCONT)
		}
	}
	defer thaw()
	for range 100 {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := p.r.State(sctx, "watched")
		cancel()
		if err != nil || st.Status != StatusRunning {
			t.Fatalf("State with the monitor frozen: %+v, %v", st, err)
		}
	}
	waits := make(chan State, 3)
	for range 3 {
		go func() {
			st, err := p.r.Wait(ctx, "watched")
			if err != nil {
				t.Error(err)
			}
			waits <- st
		}()
	}
	thaw()
	// Closing stdin ends the container (stdin_once): attach, then detach.
	actx, acancel := context.WithCancel(ctx)
	go p.r.Attach(actx, "watched", strings.NewReader("bye\n"), io.Discard, io.Discard, nil)
	for range 3 {
		if st := <-waits; st.Status != StatusStopped || st.ExitCode != 7 {
			t.Errorf("Wait: %+v, want stopped with 7", st)
		}
	}
	acancel()
	if st, err := p.r.State(ctx, "watched"); err != nil || st.Status != StatusStopped || st.ExitCode != 7 {
		t.Errorf("State after the exit: %+v, %v", st, err)
	}
}
