package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// field returns the value of "key:" in /proc/<pid>/status-like output.
func field(t *testing.T, out, key string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			return strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no %q in output:\n%s", key, out)
	return ""
}

func capMask(names ...string) string {
	var m uint64
	for _, n := range names {
		m |= 1 << capNames[n]
	}
	return fmt.Sprintf("%016x", m)
}

func nsInode(t *testing.T, p string) string {
	t.Helper()
	l, err := os.Readlink(p)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestPidAndMountNamespace(t *testing.T) {
	rootfs := busyboxRootfs(t)
	out := run(t, testSpec(rootfs, "sh", "-c",
		`echo pid=$$; echo cmdline=$(tr '\0' ' ' </proc/1/cmdline); echo mnt=$(readlink /proc/self/ns/mnt); echo pidns=$(readlink /proc/self/ns/pid); head -1 /proc/self/mountinfo`))
	if got := field(t, out, "pid"); got != "1" {
		t.Errorf("container's $$ = %s, want 1", got)
	}
	if got := field(t, out, "cmdline"); !strings.HasPrefix(got, "sh -c") {
		t.Errorf("/proc/1/cmdline = %q, want the user's program", got)
	}
	for _, ns := range []string{"mnt", "pid"} {
		key := ns
		if ns == "pid" {
			key = "pidns"
		}
		if field(t, out, key) == nsInode(t, "/proc/self/ns/"+ns) {
			t.Errorf("container shares the host's %s namespace", ns)
		}
	}
	// The first mount of the container's table is its rootfs, as "/".
	if !strings.Contains(out, rootfs+" / ") {
		t.Errorf("container's mount table does not start with its rootfs:\n%s", out)
	}
}

func TestHostnameUserGroupsCapabilities(t *testing.T) {
	rootfs := busyboxRootfs(t)
	spec := testSpec(rootfs, "sh", "-c", "hostname; id; cat /proc/self/status; ulimit -n; umask; pwd")
	umask := uint32(0o027)
	spec.Process.User = specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{2000}, Umask: &umask}
	spec.Process.Cwd = "/home/user/work"
	spec.Process.Capabilities = &specs.LinuxCapabilities{
		Bounding:    []string{"CAP_NET_BIND_SERVICE", "CAP_CHOWN", "CAP_KILL"},
		Effective:   []string{"CAP_NET_BIND_SERVICE"},
		Permitted:   []string{"CAP_NET_BIND_SERVICE", "CAP_KILL"},
		Inheritable: []string{"CAP_NET_BIND_SERVICE"},
		Ambient:     []string{"CAP_NET_BIND_SERVICE"},
	}
	out := run(t, spec)
	lines := strings.Split(out, "\n")
	if lines[0] != "berth-test-host" {
		t.Errorf("hostname = %q", lines[0])
	}
	if lines[1] != "uid=1000(user) gid=1000(user) groups=2000(extra)" {
		t.Errorf("id = %q", lines[1])
	}
	// After execve as a non-root user only the ambient set survives into
	// permitted and effective; bounding and inheritable are kept as set.
	want := map[string]string{
		"CapBnd":     capMask("CAP_NET_BIND_SERVICE", "CAP_CHOWN", "CAP_KILL"),
		"CapInh":     capMask("CAP_NET_BIND_SERVICE"),
		"CapAmb":     capMask("CAP_NET_BIND_SERVICE"),
		"CapPrm":     capMask("CAP_NET_BIND_SERVICE"),
		"CapEff":     capMask("CAP_NET_BIND_SERVICE"),
		"Uid":        "1000\t1000\t1000\t1000",
		"Gid":        "1000\t1000\t1000\t1000",
		"Groups":     "2000",
		"NoNewPrivs": "1",
		"Seccomp":    "2",
	}
	for k, v := range want {
		if got := field(t, out, k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	n := len(lines)
	if lines[n-4] != "1024" || lines[n-3] != "0027" || lines[n-2] != "/home/user/work" {
		t.Errorf("ulimit -n, umask, pwd = %q, want 1024, 0027, /home/user/work", lines[n-4:n-1])
	}
}

func TestRootCapabilities(t *testing.T) {
	rootfs := busyboxRootfs(t)
	out := run(t, testSpec(rootfs, "cat", "/proc/self/status"))
	// Docker's default set is the well-known 00000000a80425fb.
	for _, k := range []string{"CapBnd", "CapPrm", "CapEff"} {
		if got := field(t, out, k); got != "00000000a80425fb" {
			t.Errorf("%s = %s, want docker's default 00000000a80425fb", k, got)
		}
	}
	if got := field(t, out, "CapAmb"); got != "0000000000000000" {
		t.Errorf("CapAmb = %s", got)
	}
}

func TestSeccomp(t *testing.T) {
	rootfs := busyboxRootfs(t)
	// Creating a user namespace needs no capability; only seccomp stops it.
	script := "rmdir /tmp/d 2>/dev/null; unshare -U true && echo r_unshare=ok || echo r_unshare=denied; mkdir /tmp/d && echo r_mkdir=ok || echo r_mkdir=denied"
	spec := testSpec(rootfs, "sh", "-c", script)
	spec.Linux.Seccomp = nil
	out := run(t, spec)
	if field(t, out, "r_unshare") != "ok" || field(t, out, "r_mkdir") != "ok" {
		t.Fatalf("without seccomp:\n%s", out)
	}
	spec = testSpec(rootfs, "sh", "-c", script+"; grep Seccomp: /proc/self/status")
	out = run(t, spec)
	if field(t, out, "r_unshare") != "denied" || field(t, out, "r_mkdir") != "ok" || field(t, out, "Seccomp") != "2" {
		t.Errorf("with the default profile, want unshare denied, mkdir ok:\n%s", out)
	}
	if !strings.Contains(out, "Operation not permitted") {
		t.Errorf("want EPERM from the default profile:\n%s", out)
	}
	// A profile of our own: allow all but mkdir.
	spec = testSpec(rootfs, "sh", "-c", script)
	spec.Linux.Seccomp = &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Syscalls:      []specs.LinuxSyscall{{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno}},
	}
	out = run(t, spec)
	if field(t, out, "r_unshare") != "ok" || field(t, out, "r_mkdir") != "denied" {
		t.Errorf("with a mkdir-denying profile:\n%s", out)
	}
}

func TestSeccompWithoutNoNewPrivs(t *testing.T) {
	rootfs := busyboxRootfs(t)
	spec := testSpec(rootfs, "grep", "-E", "NoNewPrivs|Seccomp:", "/proc/self/status")
	spec.Process.NoNewPrivileges = false
	spec.Process.User = specs.User{UID: 1000, GID: 1000}
	out := run(t, spec)
	if field(t, out, "NoNewPrivs") != "0" || field(t, out, "Seccomp") != "2" {
		t.Errorf("want no_new_privs off and a filter:\n%s", out)
	}
}

func TestMaskedAndReadonly(t *testing.T) {
	rootfs := busyboxRootfs(t)
	os.MkdirAll(filepath.Join(rootfs, "secret"), 0o755)
	os.WriteFile(filepath.Join(rootfs, "secret/key"), []byte("s3cret"), 0o644)
	os.WriteFile(filepath.Join(rootfs, "secretfile"), []byte("s3cret"), 0o644)
	spec := testSpec(rootfs, "sh", "-c", `
cat /secretfile; echo "file=$?"
ls /secret/key 2>/dev/null; echo "dir=$?"
touch /sys/kernel/x 2>&1; (echo 1 > /proc/sys/kernel/shmmni) 2>&1; touch /x 2>&1; touch /dev/shm/ok && echo shm=ok`)
	spec.Linux.MaskedPaths = append(spec.Linux.MaskedPaths, "/secret", "/secretfile")
	spec.Root.Readonly = true
	out := run(t, spec)
	if strings.Contains(out, "s3cret") || field(t, out, "file") != "0" || field(t, out, "dir") == "0" {
		t.Errorf("masked paths readable:\n%s", out)
	}
	for _, p := range []string{"/sys/kernel/x", "/proc/sys/kernel/shmmni", "/x"} {
		if !strings.Contains(out, p+": Read-only file system") {
			t.Errorf("%s is writable:\n%s", p, out)
		}
	}
	if field(t, out, "shm") != "ok" {
		t.Errorf("/dev/shm not writable:\n%s", out)
	}
}

func TestStartWaitsForFifo(t *testing.T) {
	rootfs := busyboxRootfs(t)
	c, err := create(t, testSpec(rootfs, "sh", "-c", "echo ran > /tmp/marker"))
	if err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(rootfs, "tmp/marker")
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the program ran before start: %v", err)
	}
	// The created process is our init, from the sealed copy of berth-shim.
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", c.pid))
	if err != nil || !strings.HasPrefix(exe, "/memfd:berth-shim") {
		t.Errorf("created process runs %q (%v), want the sealed memfd copy", exe, err)
	}
	// What a process in the container would reach through /proc/<pid>/exe
	// can't be written (CVE-2019-5736).
	if f, err := os.OpenFile(fmt.Sprintf("/proc/%d/exe", c.pid), os.O_WRONLY, 0); err == nil {
		_, werr := f.Write([]byte("x"))
		f.Close()
		if werr == nil {
			t.Errorf("the container process's executable is writable")
		}
	}
	c.start()
	if _, st := c.wait(); st.ExitStatus() != 0 {
		t.Fatalf("exit %v", st)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("the program did not run after start: %v", err)
	}
}

func TestNoHostFdsOrCwd(t *testing.T) {
	rootfs := busyboxRootfs(t)
	// A descriptor the monitor forgot to mark close-on-exec.
	leak, err := os.Open("/")
	if err != nil {
		t.Fatal(err)
	}
	defer leak.Close()
	spec := testSpec(rootfs, "sleep", "1000")
	spec.Process.Cwd = "/tmp"
	c, err := create(t, spec, func(cmd *exec.Cmd) { cmd.ExtraFiles = append(cmd.ExtraFiles, leak) })
	if err != nil {
		t.Fatal(err)
	}
	c.start()
	// The sync pipe reaches EOF when the program has been exec'd.
	if m, err := c.next(); err == nil {
		t.Fatalf("unexpected sync message after start: %+v", m)
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", c.pid))
	if err != nil {
		t.Fatal(err)
	}
	var fds []string
	for _, e := range ents {
		fds = append(fds, e.Name())
	}
	if strings.Join(fds, " ") != "0 1 2" {
		t.Errorf("container process has fds %v, want 0 1 2", fds)
	}
	var cwd, want unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/cwd", c.pid), &cwd); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(filepath.Join(rootfs, "tmp"), &want); err != nil {
		t.Fatal(err)
	}
	if cwd.Dev != want.Dev || cwd.Ino != want.Ino {
		t.Errorf("container cwd is not the rootfs's /tmp")
	}
}

func TestExecErrors(t *testing.T) {
	rootfs := busyboxRootfs(t)
	os.WriteFile(filepath.Join(rootfs, "bin/noexec"), []byte("#!/bin/sh\n"), 0o644)
	for _, tc := range []struct {
		arg  string
		code int
	}{{"no-such-program", ExitNotFound}, {"/bin/noexec", ExitNotExecutable}, {"/nope/x", ExitNotFound}} {
		_, err := create(t, testSpec(rootfs, tc.arg))
		var se *syncError
		if !errors.As(err, &se) || se.m.Code != tc.code {
			t.Errorf("create with %s: %v, want an error with code %d", tc.arg, err, tc.code)
		}
	}
}

func TestSysctlsAndOOMScore(t *testing.T) {
	rootfs := busyboxRootfs(t)
	spec := testSpec(rootfs, "sh", "-c", "echo fwd=$(cat /proc/sys/net/ipv4/ip_forward); echo oom=$(cat /proc/self/oom_score_adj)")
	spec.Linux.Sysctl = map[string]string{"net.ipv4.ip_forward": "1", "kernel.shmmni": "1000"}
	adj := 500
	spec.Process.OOMScoreAdj = &adj
	out := run(t, spec)
	if field(t, out, "fwd") != "1" || field(t, out, "oom") != "500" {
		t.Errorf("sysctl or oom_score_adj not applied:\n%s", out)
	}
	spec.Linux.Sysctl = map[string]string{"vm.swappiness": "10"}
	if _, err := create(t, spec); err == nil || !strings.Contains(err.Error(), "not namespaced") {
		t.Errorf("a host-wide sysctl was accepted: %v", err)
	}
	// Lowering the score needs CAP_SYS_RESOURCE, which root lacks on some
	// machines: then the kernel's refusal must surface.
	cur, _ := os.ReadFile("/proc/self/oom_score_adj")
	low := -999
	canLower := os.WriteFile("/proc/self/oom_score_adj", []byte(strconv.Itoa(low)), 0) == nil
	os.WriteFile("/proc/self/oom_score_adj", cur, 0)
	spec.Linux.Sysctl = nil
	spec.Process.OOMScoreAdj = &low
	_, err := create(t, spec)
	if canLower && err != nil {
		t.Errorf("lowering oom_score_adj: %v", err)
	}
	if !canLower && (err == nil || !strings.Contains(err.Error(), "oom_score_adj")) {
		t.Errorf("lowering oom_score_adj without CAP_SYS_RESOURCE: %v, want the kernel's error", err)
	}
}

// An image whose /dev/null is a symlink to a host path must not redirect
// the device creation or the masking onto that host file.
func TestSymlinkedDevNullStaysInside(t *testing.T) {
	rootfs := busyboxRootfs(t)
	host := filepath.Join(t.TempDir(), "host-file")
	if err := os.WriteFile(host, []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(host, filepath.Join(rootfs, "dev/null")); err != nil {
		t.Fatal(err)
	}
	os.Symlink(host, filepath.Join(rootfs, "dev/console"))
	noDev := func(s *specs.Spec) {
		var ms []specs.Mount
		for _, m := range s.Mounts {
			if !strings.HasPrefix(m.Destination, "/dev") {
				ms = append(ms, m)
			}
		}
		s.Mounts = ms
	}
	// No /dev mount and no device entry: the masking source is refused.
	spec := testSpec(rootfs, "true")
	noDev(spec)
	if _, err := create(t, spec); err == nil || !strings.Contains(err.Error(), "not the null device") {
		t.Errorf("create with a symlinked /dev/null: %v, want a refusal", err)
	}
	// A device entry replaces the symlink inside the rootfs.
	spec = testSpec(rootfs, "sh", "-c", "ls -l /dev/null; cat /proc/keys; echo end")
	noDev(spec)
	mode := os.FileMode(0o666)
	spec.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/null", Type: "c", Major: 1, Minor: 3, FileMode: &mode}}
	out := run(t, spec)
	if !strings.HasPrefix(out, "crw-rw-rw-") || !strings.Contains(out, "1,   3") {
		t.Errorf("/dev/null in the container:\n%s", out)
	}
	b, err := os.ReadFile(host)
	if err != nil || string(b) != "host" {
		t.Errorf("host file changed: %q %v", b, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(host, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		t.Errorf("host file is no longer a regular file: %v", err)
	}
	// A bind mount whose destination is an absolute symlink lands inside.
	target := t.TempDir()
	os.Symlink(target, filepath.Join(rootfs, "data"))
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), []byte("bound"), 0o644)
	spec = testSpec(rootfs, "cat", "/data/f")
	spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/data", Type: "bind", Source: src, Options: []string{"rbind", "ro"}})
	if out := run(t, spec); out != "bound" {
		t.Errorf("bind mount through a symlink: %q", out)
	}
	if _, err := os.Stat(filepath.Join(rootfs, target)); err != nil {
		t.Errorf("the symlinked destination was not created inside the rootfs: %v", err)
	}
	if ents, _ := os.ReadDir(target); len(ents) != 0 {
		t.Errorf("host directory %s got content", target)
	}
}

func writeJSON(t testing.TB, v any) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "process.json")
	b, _ := json.Marshal(v)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHomeFromPasswd(t *testing.T) {
	rootfs := busyboxRootfs(t)
	spec := testSpec(rootfs, "sh", "-c", "echo home=$HOME")
	spec.Process.Env = []string{"PATH=/bin"}
	spec.Process.User = specs.User{UID: 1000, GID: 1000}
	if out := run(t, spec); field(t, out, "home") != "/tmp" {
		t.Errorf("HOME for uid 1000: %q, want /tmp from /etc/passwd", out)
	}
	spec.Process.User = specs.User{UID: 4242, GID: 4242}
	if out := run(t, spec); field(t, out, "home") != "/" {
		t.Errorf("HOME for an unknown uid: %q, want /", out)
	}
}

func TestTerminal(t *testing.T) {
	rootfs := busyboxRootfs(t)
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer master.Close()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	unix.Fstat(int(slave.Fd()), &st)
	spec := testSpec(rootfs, "sh", "-c", `test -t 0 && echo tty=yes; stat -c 'console=%t:%T' /dev/console; echo ctty=$(cut -d' ' -f7 /proc/1/stat); echo size=$(stty size)`)
	spec.Process.Terminal = true
	spec.Process.ConsoleSize = &specs.Box{Height: 33, Width: 101}
	c, err := create(t, spec, func(cmd *exec.Cmd) { cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave })
	if err != nil {
		t.Fatal(err)
	}
	slave.Close()
	c.start()
	var out strings.Builder
	buf := make([]byte, 4096)
	for {
		k, err := master.Read(buf)
		out.Write(buf[:k])
		if err != nil {
			break // EIO once the container's side is closed
		}
	}
	c.stdout.Close()
	if _, err := unix.Wait4(c.pid, &c.status, 0, nil); err != nil {
		t.Fatal(err)
	}
	c.done = true
	got := strings.ReplaceAll(out.String(), "\r", "")
	if field(t, got, "tty") != "yes" {
		t.Errorf("stdin is not a terminal:\n%s", got)
	}
	if want := fmt.Sprintf("%x:%x", unix.Major(st.Rdev), unix.Minor(st.Rdev)); field(t, got, "console") != want {
		t.Errorf("/dev/console is %s, want the pty %s", field(t, got, "console"), want)
	}
	if field(t, got, "size") != "33 101" {
		t.Errorf("terminal size %q, want 33 101", field(t, got, "size"))
	}
	// The terminal is the controlling terminal of the container's session.
	if field(t, got, "ctty") != fmt.Sprint(st.Rdev) {
		t.Errorf("controlling tty %s, want %d:\n%s", field(t, got, "ctty"), st.Rdev, got)
	}
}

func TestBindAndTmpfsMounts(t *testing.T) {
	rootfs := busyboxRootfs(t)
	src := t.TempDir()
	sub := filepath.Join(src, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("berth-test", sub, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	// Shared, so that a slave copy of it can be told from a private one.
	if err := unix.Mount("", sub, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(sub, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", sub, err)
		}
	})
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, []byte("file-content"), 0o644)
	spec := testSpec(rootfs, "sh", "-c", `
touch /ro/x 2>/dev/null && echo ro=rw || echo ro=ro
touch /ro/sub/x 2>/dev/null && echo rosub=rw || echo rosub=ro
touch /rro/sub/x 2>/dev/null && echo rrosub=rw || echo rrosub=ro
touch /rw/x && echo rw=rw
ls /norec/sub | wc -l | sed 's/^/norec=/'
ls /rw/sub | wc -l | sed 's/^/rec=/'
echo file=$(cat /etc/bound)
echo tmp=$(stat -c %a /scratch) $(df -k /scratch | tail -1 | awk '{print $2}')
grep ' /rro/sub ' /proc/self/mountinfo | grep -q 'master:' && echo prop=slave || echo prop=private`)
	spec.Mounts = append(spec.Mounts,
		specs.Mount{Destination: "/ro", Type: "bind", Source: src, Options: []string{"rbind", "ro"}},
		specs.Mount{Destination: "/rro", Type: "bind", Source: src, Options: []string{"rbind", "rro", "rslave"}},
		specs.Mount{Destination: "/rw", Type: "bind", Source: src, Options: []string{"rbind", "rw"}},
		specs.Mount{Destination: "/norec", Type: "bind", Source: src, Options: []string{"bind"}},
		specs.Mount{Destination: "/etc/bound", Type: "bind", Source: file, Options: []string{"bind", "ro"}},
		specs.Mount{Destination: "/scratch", Type: "tmpfs", Source: "tmpfs", Options: []string{"mode=1777", "size=2m"}},
	)
	// As containerd sets it for HostToContainer propagation.
	spec.Linux.RootfsPropagation = "rslave"
	out := run(t, spec)
	want := map[string]string{
		"ro": "ro", "rosub": "rw", "rrosub": "ro", "rw": "rw", "norec": "0", "rec": "1",
		"file": "file-content", "tmp": "1777 2048", "prop": "slave",
	}
	for k, v := range want {
		if got := field(t, out, k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	// The container's writes through the rw bind reached the host dir.
	if _, err := os.Stat(filepath.Join(src, "x")); err != nil {
		t.Errorf("write through the rw bind: %v", err)
	}
}

// rshared root propagation (containerd asks for it with Bidirectional
// mounts) must not break pivot_root.
func TestRootfsPropagationShared(t *testing.T) {
	rootfs := busyboxRootfs(t)
	spec := testSpec(rootfs, "sh", "-c", "echo ok=yes")
	spec.Linux.RootfsPropagation = "rshared"
	if out := run(t, spec); field(t, out, "ok") != "yes" {
		t.Errorf("output %q", out)
	}
}
