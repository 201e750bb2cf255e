package container

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/runtime/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// started creates and starts a long-running container and waits until it
// has exec'd its program.
func started(t *testing.T, spec *specs.Spec) *ctr {
	t.Helper()
	c, err := create(t, spec)
	if err != nil {
		t.Fatal(err)
	}
	c.start()
	if m, err := c.next(); err == nil {
		t.Fatalf("sync message after start: %+v", m)
	}
	return c
}

// shimExec runs `berth-shim exec` against pid and returns its output and
// exit status.
func shimExec(t testing.TB, pid int, p ExecProcess) (string, int) {
	t.Helper()
	file := writeJSON(t, p)
	var out bytes.Buffer
	cmd := exec.Command(shim, "exec", "--pid", fmt.Sprint(pid), "--process", file)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), 0
}

func execProcess(args ...string) ExecProcess {
	caps := append([]string(nil), defaultCaps...)
	return ExecProcess{
		Process: specs.Process{
			Args:            args,
			Env:             []string{"PATH=/bin"},
			Cwd:             "/",
			NoNewPrivileges: true,
			Capabilities:    &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps},
		},
		Seccomp: seccomp.DefaultProfile(),
	}
}

// berthTestCgroup makes a cgroup in the v1 memory and pids hierarchies.
func berthTestCgroup(t *testing.T) string {
	t.Helper()
	name := "/berth-test-" + filepath.Base(t.TempDir())
	for _, h := range []string{"memory", "pids"} {
		dir := filepath.Join("/sys/fs/cgroup", h, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Skipf("cgroup v1 %s: %v", h, err)
		}
		// Registered before the container's cleanup, so it runs after it.
		t.Cleanup(func() {
			if err := os.Remove(dir); err != nil {
				t.Errorf("remove cgroup: %v", err)
			}
		})
	}
	return name
}

func TestExecJoinsNamespacesAndCgroup(t *testing.T) {
	rootfs := busyboxRootfs(t)
	cg := berthTestCgroup(t)
	spec := testSpec(rootfs, "sleep", "1000")
	spec.Linux.CgroupsPath = cg
	spec.Linux.Namespaces = append(spec.Linux.Namespaces, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	c := started(t, spec)
	hostCg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", c.pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(hostCg), "memory:"+cg+"\n") {
		t.Errorf("container is not in cgroup %s:\n%s", cg, hostCg)
	}

	p := execProcess("sh", "-c", `for n in cgroup ipc mnt net pid uts; do echo $n=$(readlink /proc/self/ns/$n); done
echo fds=$(ls /proc/self/fd | tr '\n' ' ')
grep -E 'Seccomp:|NoNewPrivs|CapEff' /proc/self/status; echo ppid=$PPID; echo host=$(hostname)`)
	out, code := shimExec(t, c.pid, p)
	if code != 0 {
		t.Fatalf("exec exited %d:\n%s", code, out)
	}
	for _, ns := range []string{"cgroup", "ipc", "mnt", "net", "pid", "uts"} {
		if want := nsInode(t, fmt.Sprintf("/proc/%d/ns/%s", c.pid, ns)); field(t, out, ns) != want {
			t.Errorf("exec's %s namespace is %s, container's %s", ns, field(t, out, ns), want)
		}
	}
	if field(t, out, "Seccomp") != "2" || field(t, out, "NoNewPrivs") != "1" || field(t, out, "CapEff") != "00000000a80425fb" {
		t.Errorf("exec's security context:\n%s", out)
	}
	// The parent it sees is outside its pid namespace (0), not the container's init.
	if field(t, out, "ppid") != "0" || field(t, out, "host") != "berth-test-host" {
		t.Errorf("ppid/hostname:\n%s", out)
	}
	// ls's own directory fd is the only one beyond stdio.
	if field(t, out, "fds") != "0 1 2 3" {
		t.Errorf("exec'd process has fds %q", field(t, out, "fds"))
	}

	// The exec'd process is in the container's cgroup (as the host sees it).
	p = execProcess("sh", "-c", "cat /proc/self/cgroup; sleep 1000")
	file := writeJSON(t, p)
	var out2 bytes.Buffer
	cmd := exec.Command(shim, "exec", "--pid", fmt.Sprint(c.pid), "--process", file)
	outR, outW, _ := os.Pipe()
	cmd.Stdout = outW
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	outW.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	buf := make([]byte, 4096)
	n, _ := outR.Read(buf)
	out2.Write(buf[:n])
	kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
	var child int
	fmt.Sscan(string(kids), &child)
	childCg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", child))
	if err != nil {
		t.Fatal(err)
	}
	if string(childCg) != string(hostCg) {
		t.Errorf("exec'd process cgroups:\n%s\ncontainer's:\n%s", childCg, hostCg)
	}
	// Inside its cgroup namespace the container's cgroup is the root.
	if !strings.Contains(out2.String(), "memory:/\n") {
		t.Errorf("exec'd process sees cgroups:\n%s", out2.String())
	}
	// Killing the exec entry with a signal is forwarded to the process.
	cmd.Process.Signal(unix.SIGTERM)
	if err := cmd.Wait(); err == nil || cmd.ProcessState.ExitCode() != 128+int(unix.SIGTERM) {
		t.Errorf("exec after SIGTERM: %v, want exit %d", err, 128+int(unix.SIGTERM))
	}
}

func TestExecExitStatus(t *testing.T) {
	rootfs := busyboxRootfs(t)
	c := started(t, testSpec(rootfs, "sleep", "1000"))
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"sh", "-c", "exit 7"}, 7},
		{[]string{"sh", "-c", "kill -9 $$"}, 128 + 9},
		{[]string{"no-such-program"}, ExitNotFound},
		{[]string{"/etc/passwd"}, ExitNotExecutable},
		{[]string{"true"}, 0},
	} {
		if out, code := shimExec(t, c.pid, execProcess(tc.args...)); code != tc.code {
			t.Errorf("exec %v: exit %d, want %d\n%s", tc.args, code, tc.code, out)
		}
	}
	// The user, groups and a seccomp profile from the process file.
	p := execProcess("sh", "-c", "id; mkdir /tmp/x")
	p.User = specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{2000}}
	p.Seccomp = &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Syscalls:      []specs.LinuxSyscall{{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno}},
	}
	out, code := shimExec(t, c.pid, p)
	if code == 0 || !strings.Contains(out, "uid=1000(user) gid=1000(user) groups=2000(extra)") ||
		!strings.Contains(out, "Operation not permitted") {
		t.Errorf("exec as user 1000 with a mkdir-denying profile: exit %d\n%s", code, out)
	}
}

func TestPinnedNamespaces(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "berth-test-pod")
	t.Cleanup(func() {
		if err := Unpin(dir); err != nil {
			t.Errorf("unpin: %v", err)
		}
	})
	out, err := exec.Command(shim, "pin", "--dir", dir, "--ns", "net,ipc,uts", "--hostname", "berth-test-pod").CombinedOutput()
	if err != nil {
		t.Fatalf("pin: %v\n%s", err, out)
	}
	// A second pin on the same dir must not replace the first.
	if out, err := exec.Command(shim, "pin", "--dir", dir, "--ns", "net").CombinedOutput(); err == nil {
		t.Errorf("second pin succeeded:\n%s", out)
	}
	rootfs := busyboxRootfs(t)
	spec := testSpec(rootfs, "sh", "-c", "for n in net ipc uts; do echo $n=$(stat -L -c %i /proc/self/ns/$n); done; hostname")
	spec.Hostname = "ignored"
	spec.Linux.Namespaces = []specs.LinuxNamespace{
		{Type: specs.PIDNamespace}, {Type: specs.MountNamespace},
		{Type: specs.NetworkNamespace, Path: filepath.Join(dir, "net")},
		{Type: specs.IPCNamespace, Path: filepath.Join(dir, "ipc")},
		{Type: specs.UTSNamespace, Path: filepath.Join(dir, "uts")},
	}
	out2 := run(t, spec)
	for _, ns := range []string{"net", "ipc", "uts"} {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dir, ns), &st); err != nil {
			t.Fatal(err)
		}
		if field(t, out2, ns) != fmt.Sprint(st.Ino) {
			t.Errorf("container's %s namespace %s, pinned %d", ns, field(t, out2, ns), st.Ino)
		}
		if nsInode(t, "/proc/self/ns/"+ns) == fmt.Sprintf("%s:[%d]", ns, st.Ino) {
			t.Errorf("pinned %s namespace is the host's", ns)
		}
	}
	if !strings.HasSuffix(out2, "berth-test-pod\n") {
		t.Errorf("hostname in the pod's uts namespace:\n%s", out2)
	}
	// unpin removes everything and is idempotent.
	for i := 0; i < 2; i++ {
		if out, err := exec.Command(shim, "unpin", "--dir", dir).CombinedOutput(); err != nil {
			t.Fatalf("unpin: %v\n%s", err, out)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Errorf("unpin left %v", ents)
	}
	if isRoot, _ := isMountRoot(unix.AT_FDCWD, dir); isRoot {
		t.Errorf("unpin left %s mounted", dir)
	}
}

func TestPodInit(t *testing.T) {
	cmd := exec.Command(shim, "podinit")
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Orphan a process into its pid namespace: the exec'd shell's
	// background child outlives it and is re-parented to podinit.
	p := execProcess("/bin/sh", "-c", "/bin/sleep 1000 >/dev/null 2>&1 &")
	p.Seccomp = nil
	p.Env = []string{"PATH=/bin:/usr/bin"}
	out, code := shimExec(t, cmd.Process.Pid, p)
	if code != 0 {
		t.Fatalf("exec into podinit's namespaces: %d\n%s", code, out)
	}
	kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
	if err != nil || len(strings.Fields(string(kids))) == 0 {
		t.Fatalf("podinit adopted nothing: %q %v", kids, err)
	}
	var sleeper int
	fmt.Sscan(strings.Fields(string(kids))[len(strings.Fields(string(kids)))-1], &sleeper)
	// Kill the orphan; podinit must reap it (wait for the zombie to vanish
	// through a pidfd, which becomes readable when the process exits).
	pidfd, err := unix.PidfdOpen(sleeper, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	unix.Kill(sleeper, unix.SIGKILL)
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	unix.Poll(fds, -1)
	// It has exited; podinit reaps it on SIGCHLD, and then its /proc entry
	// goes away. There is no event for "reaped", so look until it is gone.
	reaped := false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", sleeper)); errors.Is(err, os.ErrNotExist) {
			reaped = true
			break
		}
	}
	if !reaped {
		t.Errorf("podinit did not reap its orphan %d", sleeper)
	}
	cmd.Process.Signal(unix.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("podinit after SIGTERM: %v", err)
	}
}

// Killing `berth-shim exec` kills the process it runs, also when that
// process switched to another user (which clears the parent-death signal).
func TestExecKilledWithEntry(t *testing.T) {
	rootfs := busyboxRootfs(t)
	c := started(t, testSpec(rootfs, "sleep", "1000"))
	p := execProcess("sleep", "1000")
	p.User = specs.User{UID: 1000, GID: 1000}
	cmd := exec.Command(shim, "exec", "--pid", fmt.Sprint(c.pid), "--process", writeJSON(t, p))
	outR, outW, _ := os.Pipe()
	defer outR.Close()
	cmd.Stdout = outW
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	outW.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	// Find the exec'd sleep: the entry's only child, once it runs sleep.
	var child int
	for deadline := time.Now().Add(30 * time.Second); child == 0 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		var k int
		if _, err := fmt.Sscan(string(kids), &k); err == nil {
			if cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", k)); strings.HasPrefix(string(cl), "sleep\x00") {
				child = k
			}
		}
	}
	if child == 0 {
		t.Fatal("exec'd process not found")
	}
	pidfd, err := unix.PidfdOpen(child, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	cmd.Process.Kill()
	cmd.Wait()
	// Returns once the child has died; hangs (and the test times out) if not.
	unix.Poll([]unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}, -1)
	// Orphaned, the child was re-parented to us (a subreaper, as the
	// monitor is): reap it, or the container's pid namespace can't end.
	unix.Wait4(child, nil, 0, nil)
	// Its stdout closes with it.
	if n, _ := outR.Read(make([]byte, 1)); n != 0 {
		t.Error("unexpected output")
	}
}

// A container can join a pod's shared pid namespace held by podinit.
func TestSharedPidNamespace(t *testing.T) {
	pi := exec.Command(shim, "podinit")
	pi.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWPID}
	if err := pi.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pi.Process.Kill(); pi.Wait() })
	rootfs := busyboxRootfs(t)
	spec := testSpec(rootfs, "sh", "-c", "echo pid=$$; echo init=$(tr '\\0' ' ' </proc/1/cmdline)")
	for i, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.PIDNamespace {
			spec.Linux.Namespaces[i].Path = fmt.Sprintf("/proc/%d/ns/pid", pi.Process.Pid)
		}
	}
	out := run(t, spec)
	if field(t, out, "pid") == "1" || !strings.HasPrefix(field(t, out, "init"), shim+" podinit") {
		t.Errorf("container in the pod's pid namespace:\n%s", out)
	}
}

// A plain specs.Process file in the bundle gets the bundle's seccomp profile.
func TestExecSeccompFromBundle(t *testing.T) {
	rootfs := busyboxRootfs(t)
	c := started(t, testSpec(rootfs, "sleep", "1000"))
	spec := testSpec(rootfs, "true")
	spec.Linux.Seccomp = &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Syscalls:      []specs.LinuxSyscall{{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno}},
	}
	dir := t.TempDir()
	b, _ := json.Marshal(spec)
	os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600)
	p := execProcess("sh", "-c", "mkdir /tmp/from-bundle")
	pb, _ := json.Marshal(p.Process) // no "seccomp" key
	file := filepath.Join(dir, "exec-1.json")
	os.WriteFile(file, pb, 0o600)
	var out bytes.Buffer
	cmd := exec.Command(shim, "exec", "--pid", fmt.Sprint(c.pid), "--process", file)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err == nil || !strings.Contains(out.String(), "Operation not permitted") {
		t.Errorf("exec with the bundle's mkdir-denying profile: %v\n%s", err, out.String())
	}
}
