package runtime

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/cgroupmgr"
	"github.com/berth-dev/berth/errdefs"
)

// The OCI runtime handler tests run the same container flows as the
// built-in runtime's tests through Debian's runc.

const testRunc = "/usr/sbin/runc"

// startRuncPod is startTestPod with a runtime that has handler "runc"; it
// returns the pod and runc's --root.
func startRuncPod(tb testing.TB) (*testPod, string) {
	return startRuncPodPID(tb, false)
}

// startRuncPodPID is startRuncPod, with a shared pid namespace if sharePID.
func startRuncPodPID(tb testing.TB, sharePID bool) (*testPod, string) {
	tb.Helper()
	needRoot(tb)
	if _, err := os.Stat(testRunc); err != nil {
		tb.Skip("no runc (apt-get install runc)")
	}
	state := tb.TempDir()
	mgr, err := cgroupmgr.New()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := mgr.Delete(context.Background(), path.Dir(testCgroup("x"))); err != nil {
			tb.Errorf("cleanup: delete test cgroup parent: %v", err)
		}
	})
	root := filepath.Join(state, "runc-root")
	r, err := New(Config{
		StateDir: state, ShimPath: testShim, Cgroups: CgroupsFrom(mgr),
		Handlers: map[string]Handler{"runc": {Path: testRunc, Root: root}},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close() })
	p := &testPod{tb: tb, r: r, id: "berth-test-pod", state: state}
	ctx := context.Background()
	if _, err := r.StartMonitor(ctx, p.id, sharePID); err != nil {
		tb.Fatal(err)
	}
	if p.info, err = r.ConnectMonitor(ctx, p.id); err != nil {
		tb.Fatal(err)
	}
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
	return p, root
}

// runcState is `runc --root ROOT state ID`; ok is false if runc does not
// know the container.
func runcState(t *testing.T, root, id string) (st specs.State, ok bool) {
	t.Helper()
	out, err := exec.Command(testRunc, "--root", root, "state", id).Output()
	if err != nil {
		return st, false
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("runc state: %v: %s", err, out)
	}
	return st, true
}

// runcSpec is testSpec as runc wants it: a writable rootfs is not needed,
// but runc requires the spec version.
func runcSpec(args ...string) *specs.Spec {
	s := testSpec(args...)
	s.Version = specs.Version
	return s
}

func TestHandlerFeatures(t *testing.T) {
	p, _ := startRuncPod(t)
	if got := p.r.Handlers(); strings.Join(got, ",") != ",runc" {
		t.Errorf("Handlers() = %q", got)
	}
	f, ok := p.r.HandlerFeatures("runc")
	if !ok {
		t.Fatal("no features for runc")
	}
	// Debian 12's runc 1.1 knows neither rro nor idmapped mounts; a newer
	// one does. Whatever it is, the features come from `runc features`.
	out, err := exec.Command(testRunc, "features").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := bytes.Contains(out, []byte(`"rro"`)); f.RecursiveReadOnlyMounts != want {
		t.Errorf("RecursiveReadOnlyMounts = %v, runc features says %v", f.RecursiveReadOnlyMounts, want)
	}
	if _, ok := p.r.HandlerFeatures("nope"); ok {
		t.Error("features for an unknown handler")
	}
	if err := p.r.Create(context.Background(), p.id, "x", runcSpec("true"), CreateOptions{Handler: "nope"}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Create with an unknown handler: %v, want InvalidArgument", err)
	}
}

func TestHandlerRunLogsExitAndDelete(t *testing.T) {
	p, root := startRuncPod(t)
	ctx := context.Background()
	logPath := filepath.Join(t.TempDir(), "c.log")
	p.create("echo", runcSpec("sh", "-c", "echo hi; echo oops >&2; exit 3"), CreateOptions{
		LogPath: logPath, CgroupPath: testCgroup("echo"), Handler: "runc",
	})
	st, err := p.r.State(ctx, "echo")
	if err != nil || st.Status != StatusCreated || st.Pid <= 0 || !alive(st.Pid) {
		t.Fatalf("State after Create: %+v, %v", st, err)
	}
	// runc made it: it knows the container, with the same pid, created.
	rs, ok := runcState(t, root, "echo")
	if !ok || rs.Pid != st.Pid || rs.Status != specs.StateCreated {
		t.Fatalf("runc state %+v (known %v), want created with pid %d", rs, ok, st.Pid)
	}
	// Its parent is the monitor (runc create has exited).
	if ppid := parentPid(t, st.Pid); ppid != itoa(p.info.Pid) {
		t.Errorf("container's parent is %s, want the monitor %d", ppid, p.info.Pid)
	}
	if err := p.r.Start(ctx, "echo"); err != nil {
		t.Fatal(err)
	}
	st, err = p.r.Wait(ctx, "echo")
	if err != nil || st.Status != StatusStopped || st.ExitCode != 3 || st.Reason != ReasonError {
		t.Fatalf("after exit 3: %+v, %v", st, err)
	}
	got := strings.Join(logLines(t, logPath), "|")
	if got != "stdout F hi|stderr F oops" && got != "stderr F oops|stdout F hi" {
		t.Errorf("log lines %q", got)
	}
	if err := p.r.Start(ctx, "echo"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("second Start: %v, want FailedPrecondition", err)
	}
	if err := p.r.Delete(ctx, "echo"); err != nil {
		t.Fatal(err)
	}
	if _, ok := runcState(t, root, "echo"); ok {
		t.Error("runc still knows the container after Delete")
	}
	if _, err := os.Stat("/sys/fs/cgroup/memory" + testCgroup("echo")); !os.IsNotExist(err) {
		t.Errorf("container cgroup left behind: %v", err)
	}
	// A program that does not exist fails Create with runc's message, and
	// leaves nothing.
	err = p.r.Create(ctx, p.id, "missing", runcSpec("/no/such/program"), CreateOptions{Handler: "runc", CgroupPath: testCgroup("missing")})
	if err == nil || !strings.Contains(err.Error(), "/no/such/program") {
		t.Errorf("Create of a missing program: %v", err)
	}
	if _, ok := runcState(t, root, "missing"); ok {
		t.Error("runc still knows the failed container")
	}
	if _, err := p.r.State(ctx, "missing"); !errdefs.IsNotFound(err) {
		t.Errorf("State after a failed Create: %v, want NotFound", err)
	}
}

func TestHandlerKillStopAndTty(t *testing.T) {
	p, root := startRuncPod(t)
	ctx := context.Background()
	// pid 1 of a pid namespace gets only the signals it handles.
	p.create("sleeper", runcSpec("sh", "-c", "trap 'exit 7' TERM; sleep 1000 & wait"), CreateOptions{Handler: "runc", CgroupPath: testCgroup("sleeper")})
	if err := p.r.Start(ctx, "sleeper"); err != nil {
		t.Fatal(err)
	}
	if rs, _ := runcState(t, root, "sleeper"); rs.Status != specs.StateRunning {
		t.Errorf("runc says %q, want running", rs.Status)
	}
	if err := p.r.Kill(ctx, "sleeper", syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	st, err := p.r.Wait(ctx, "sleeper")
	if err != nil || st.Signal != 0 || st.ExitCode != 7 {
		t.Errorf("after SIGTERM: %+v, %v", st, err)
	}
	if err := p.r.Kill(ctx, "sleeper", syscall.SIGKILL); err != nil {
		t.Errorf("Kill of a stopped container: %v", err)
	}

	logPath := filepath.Join(t.TempDir(), "tty.log")
	spec := runcSpec("sh", "-c", "read x; [ -t 0 ] && [ -t 1 ] && echo is-a-tty; stty size; exit 2")
	spec.Process.Terminal = true
	// A container ID as long as the CRI's makes the console socket's path
	// too long for a socket address: it is reached through a descriptor.
	tty := strings.Repeat("7", 64)
	if len(filepath.Join(p.state, "containers", tty, "console.sock")) <= 107 {
		t.Fatalf("state dir %s too short to test a long console socket path", p.state)
	}
	p.create(tty, spec, CreateOptions{LogPath: logPath, Tty: true, Stdin: true, Handler: "runc", CgroupPath: testCgroup("tty")})
	if err := p.r.Resize(ctx, tty, TermSize{Width: 123, Height: 45}); err != nil {
		t.Fatal(err)
	}
	if err := p.r.Start(ctx, tty); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := p.r.Attach(ctx, tty, strings.NewReader("go\n"), &out, nil, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "is-a-tty") || !strings.Contains(out.String(), "45 123") {
		t.Errorf("attached output %q", out.String())
	}
	st, err = p.r.Wait(ctx, tty)
	if err != nil || st.ExitCode != 2 {
		t.Errorf("tty state %+v, %v", st, err)
	}
	if got := strings.Join(logLines(t, logPath), "|"); !strings.Contains(got, "stdout F is-a-tty\r") {
		t.Errorf("tty log %q", got)
	}
}

func TestHandlerExecAndUpdate(t *testing.T) {
	p, _ := startRuncPod(t)
	ctx := context.Background()
	p.create("box", runcSpec("sleep", "1000"), CreateOptions{Handler: "runc", CgroupPath: testCgroup("box")})
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
		Process: &specs.Process{Args: []string{"sh", "-c", "[ -t 0 ] && echo tty-ok; exit 5"}, Env: []string{"PATH=/bin"}, Cwd: "/"},
		Stdout:  &out, Tty: true,
	})
	if err != nil || code != 5 || !strings.Contains(out.String(), "tty-ok") {
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
	// An exec killed by a signal reports 128+signal.
	code, err = p.r.Exec(ctx, "box", ExecOptions{
		Process: &specs.Process{Args: []string{"sh", "-c", "kill -9 $$"}, Env: []string{"PATH=/bin"}, Cwd: "/"},
	})
	if err != nil || code != 137 {
		t.Errorf("killed Exec = %d, %v, want 137", code, err)
	}
	// Ending the context of an exec kills the exec'd process, not only
	// runc (which would leave it running in the container).
	ectx, ecancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	go func() {
		bufio.NewReader(pr).ReadString('\n')
		ecancel()
		io.Copy(io.Discard, pr)
	}()
	_, err = p.r.Exec(ectx, "box", ExecOptions{
		Process: &specs.Process{Args: []string{"sh", "-c", "echo started; exec sleep 987654"}, Env: []string{"PATH=/bin"}, Cwd: "/"},
		Stdout:  pw,
	})
	pw.Close()
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Exec: %v", err)
	}
	if pids := pidsWithCmdline("sleep\x00987654\x00"); len(pids) != 0 {
		t.Errorf("the exec'd process outlived its cancelled Exec: %v", pids)
	}
	limit := int64(64 << 20)
	if err := p.r.UpdateResources(ctx, "box", &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/sys/fs/cgroup/memory" + testCgroup("box") + "/memory.limit_in_bytes")
	if err != nil || strings.TrimSpace(string(b)) != itoa(int(limit)) {
		t.Errorf("memory limit %q, %v; want %d", b, err, limit)
	}
}

// TestHandlerMonitorRestartAndBerthdGone: a new Runtime (a berthd restart)
// finds a runc container and its exit, and Delete with the monitor gone
// still removes runc's state.
func TestHandlerMonitorGone(t *testing.T) {
	p, root := startRuncPod(t)
	ctx := context.Background()
	p.create("c", runcSpec("sleep", "1000"), CreateOptions{Handler: "runc", CgroupPath: testCgroup("c")})
	if err := p.r.Start(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	// A second Runtime on the same state dir sees the same container.
	r2, err := New(Config{StateDir: p.state, ShimPath: testShim, Handlers: map[string]Handler{"runc": {Path: testRunc, Root: root}}})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	st, err := r2.State(ctx, "c")
	if err != nil || st.Status != StatusRunning {
		t.Fatalf("State from a new Runtime: %+v, %v", st, err)
	}
	var out bytes.Buffer
	if code, err := r2.Exec(ctx, "c", ExecOptions{Process: &specs.Process{Args: []string{"echo", "again"}, Env: []string{"PATH=/bin"}, Cwd: "/"}, Stdout: &out}); err != nil || code != 0 || out.String() != "again\n" {
		t.Errorf("Exec from a new Runtime = %d, %v, %q", code, err, out.String())
	}
	// The monitor stops (killing the container); Delete then only has
	// files and runc's state to remove.
	if err := p.r.StopMonitor(ctx, p.id); err != nil {
		t.Fatal(err)
	}
	st, err = r2.State(ctx, "c")
	if err != nil || st.Status != StatusStopped {
		t.Errorf("State after the monitor stopped: %+v, %v", st, err)
	}
	if _, ok := runcState(t, root, "c"); !ok {
		t.Error("runc forgot the container before Delete")
	}
	if err := r2.Delete(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if _, ok := runcState(t, root, "c"); ok {
		t.Error("runc still knows the container after Delete")
	}
}

// pidsWithCmdline lists the live processes whose command line is cmdline.
func pidsWithCmdline(cmdline string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && string(b) == cmdline {
			if n, err := strconv.Atoi(e.Name()); err == nil && alive(n) {
				out = append(out, e.Name())
			}
		}
	}
	return out
}

// TestHandlerSharedPidNamespace: runc joins the pod's pinned pid namespace,
// where the monitor's pod init is pid 1.
func TestHandlerSharedPidNamespace(t *testing.T) {
	p, _ := startRuncPodPID(t, true)
	ctx := context.Background()
	if p.info.PidNSPath == "" {
		t.Fatal("no pid namespace path")
	}
	spec := runcSpec("sleep", "1000")
	for i, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.PIDNamespace {
			spec.Linux.Namespaces[i].Path = p.info.PidNSPath
		}
	}
	p.create("a", spec, CreateOptions{Handler: "runc", CgroupPath: testCgroup("a")})
	if err := p.r.Start(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	code, err := p.r.Exec(ctx, "a", ExecOptions{Process: &specs.Process{Args: []string{"sh", "-c", "cat /proc/1/cmdline; echo; echo $$"}, Env: []string{"PATH=/bin"}, Cwd: "/"}, Stdout: &out})
	lines := strings.Split(out.String(), "\n")
	if err != nil || code != 0 || len(lines) < 2 || strings.HasPrefix(lines[0], "sleep") || lines[1] == "1" {
		t.Errorf("exec in a shared pid namespace = %d, %v, %q: want pid 1 to be the pod init", code, err, out.String())
	}
	if err := p.r.Kill(ctx, "a", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if st, err := p.r.Wait(ctx, "a"); err != nil || st.ExitCode != 137 {
		t.Errorf("after SIGKILL: %+v, %v", st, err)
	}
}

// parentPid is pid's parent, from /proc/PID/stat.
func parentPid(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return f[1] // after state
}

func itoa(n int) string { return strconv.Itoa(n) }
