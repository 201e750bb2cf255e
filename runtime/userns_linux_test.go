package runtime

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/cgroupmgr"
	"github.com/berth-dev/berth/errdefs"
)

// testUserns maps container ids 0-65535 to host ids 100000-165535.
var testUserns = struct{ UID, GID specs.LinuxIDMapping }{
	UID: specs.LinuxIDMapping{ContainerID: 0, HostID: 100000, Size: 65536},
	GID: specs.LinuxIDMapping{ContainerID: 0, HostID: 100000, Size: 65536},
}

// TestPinUserns: a pod's user namespace is pinned with its mappings and
// owns the pod's other namespaces; the uts one has the pod's hostname.
func TestPinUserns(t *testing.T) {
	needRoot(t)
	r := newTestRuntime(t, t.TempDir(), false)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "ns")
	t.Cleanup(func() { r.UnpinNamespaces(ctx, dir) })
	paths, err := r.PinNamespacesUserns(ctx, dir, []string{"user", "net", "ipc", "uts"}, "userns-pod", testUserns.UID, testUserns.GID)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nsenter", "--user="+paths["user"], "--uts="+paths["uts"], "sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; hostname").CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter: %v: %s", err, out)
	}
	if f := strings.Fields(string(out)); strings.Join(f, " ") != "0 100000 65536 0 100000 65536 userns-pod" {
		t.Errorf("maps and hostname %q", out)
	}
	var user unix.Stat_t
	if err := unix.Stat(paths["user"], &user); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"net", "ipc", "uts"} {
		fd, err := unix.Open(paths[k], unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		// NS_GET_USERNS: the owning user namespace.
		ofd, err := unix.IoctlRetInt(fd, 0xb701)
		unix.Close(fd)
		if err != nil {
			t.Fatalf("%s: NS_GET_USERNS: %v", k, err)
		}
		var st unix.Stat_t
		unix.Fstat(ofd, &st)
		unix.Close(ofd)
		if st.Ino != user.Ino {
			t.Errorf("%s namespace is not owned by the pod's user namespace", k)
		}
	}
	if err := r.UnpinNamespaces(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(paths["user"]); !os.IsNotExist(err) {
		t.Errorf("user pin left: %v", err)
	}
	if _, err := r.PinNamespaces(ctx, dir, []string{"user"}); err == nil {
		t.Error("a user namespace pinned without mappings")
	}
}

// usernsPod is a test pod of handler with a pinned user namespace (and
// net, ipc, uts owned by it), and the namespaces' pin paths.
func usernsPod(t *testing.T, handler string) (*testPod, map[string]string) {
	t.Helper()
	var p *testPod
	if handler == DefaultHandler {
		p = startTestPod(t, true, false)
	} else {
		p, _ = startRuncPod(t)
	}
	// The container's root must reach its rootfs in the state dir, as in
	// /run/berth/runtime: testing's temp dirs are 0700.
	for d := p.state; d != "/tmp"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "ns")
	t.Cleanup(func() { p.r.UnpinNamespaces(ctx, dir) })
	paths, err := p.r.PinNamespacesUserns(ctx, dir, []string{"user", "net", "ipc", "uts"}, "userns-pod", testUserns.UID, testUserns.GID)
	if err != nil {
		t.Fatal(err)
	}
	return p, paths
}

// overlayRootfs mounts a writable overlay of the test rootfs, as the image
// service makes one per container, and returns it and its upper dir.
func overlayRootfs(t *testing.T) (root, upper string) {
	t.Helper()
	dir := t.TempDir()
	upper, work, root := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "rootfs")
	for _, d := range []string{upper, work, root} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("overlay", root, "overlay", 0, "lowerdir="+testRootfs+",upperdir="+upper+",workdir="+work); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(root, unix.MNT_DETACH) })
	return root, upper
}

// TestUserns: a container of a pod with a user namespace, on the built-in
// runtime and on runc, is root inside and the mapped uid outside, and so is
// a process exec'd into it; its rootfs is idmapped (host root's files are
// its root's); it has proc, a read-only sysfs, /dev with working devices,
// mqueue, masked and read-only paths; what it writes in a volume belongs on
// the host to the mapped uid, and what it writes in its rootfs too (seen
// through the container's rootfs; on disk, the idmapped upper dir has its
// in-container ids).
func TestUserns(t *testing.T) {
	for _, handler := range []string{DefaultHandler, "runc"} {
		t.Run("handler="+handler, func(t *testing.T) { runUsernsTest(t, handler) })
	}
}

func runUsernsTest(t *testing.T, handler string) {
	p, paths := usernsPod(t, handler)
	ctx := context.Background()
	vol := t.TempDir() // below a 0700 dir: only host root reaches it by path
	if err := os.Chmod(vol, 0o777); err != nil {
		t.Fatal(err)
	}
	// An idmapped volume (kubelet's volume mappings): host root's files
	// there are the pod's root's, and what it writes there is host root's.
	// A tmpfs, as an emptyDir in memory is (the e2e test idmaps a directory
	// of the root file system).
	idvol := t.TempDir()
	if err := unix.Mount("tmpfs", idvol, "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(idvol, unix.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(idvol, "hostroot"), []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	root, upper := overlayRootfs(t)
	spec := usernsSpec(paths, "sh", "-c", "echo written > /vol/f; echo root > /rootfile; exec sleep 1000")
	spec.Root = &specs.Root{Path: root}
	spec.Linux.MaskedPaths = []string{"/proc/kcore", "/proc/acpi"}
	spec.Linux.ReadonlyPaths = []string{"/proc/sys"}
	caps := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SETUID", "CAP_SETGID", "CAP_KILL"}
	spec.Process.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps}
	spec.Process.NoNewPrivileges = true
	errno := uint(unix.EPERM)
	spec.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
		{Names: []string{"mkdir", "mkdirat"}, Action: specs.ActErrno, ErrnoRet: &errno},
	}}
	spec.Mounts = append(spec.Mounts,
		specs.Mount{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		specs.Mount{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777"}},
		specs.Mount{Destination: "/vol", Type: "bind", Source: vol, Options: []string{"rbind", "rw"}},
		specs.Mount{Destination: "/idvol", Type: "bind", Source: idvol, Options: []string{"rbind", "rw"},
			UIDMappings: []specs.LinuxIDMapping{testUserns.UID}, GIDMappings: []specs.LinuxIDMapping{testUserns.GID}},
		// The OCI idmap option alone: the container's mappings.
		specs.Mount{Destination: "/idvol2", Type: "bind", Source: idvol, Options: []string{"bind", "ro", "idmap"}},
	)
	bad := *spec
	bad.Mounts = slices.Clone(spec.Mounts)
	bad.Mounts[len(bad.Mounts)-2].UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: 200000, Size: 65536}}
	if err := p.r.Create(ctx, p.id, "bad", &bad, CreateOptions{Handler: handler}); !errors.Is(err, errdefs.ErrInvalidArgument) {
		if err == nil {
			p.ids = append(p.ids, "bad")
		}
		t.Errorf("Create with a volume mapped unlike the pod: %v, want InvalidArgument", err)
	}
	p.create("u", spec, CreateOptions{Handler: handler, CgroupPath: testCgroup("u")})
	if err := p.r.Start(ctx, "u"); err != nil {
		t.Fatal(err)
	}
	st, err := p.r.State(ctx, "u")
	if err != nil {
		t.Fatal(err)
	}
	status, err := os.ReadFile("/proc/" + itoa(st.Pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(statusLine(string(status), "Uid:")); len(f) == 0 || f[0] != "100000" {
		t.Errorf("host uid of the container process: %q, want 100000", f)
	}
	var user, ctrUser unix.Stat_t
	if err := unix.Stat(paths["user"], &user); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat("/proc/"+itoa(st.Pid)+"/ns/user", &ctrUser); err != nil || ctrUser.Ino != user.Ino {
		t.Errorf("the container process is not in the pod's user namespace (%v)", err)
	}
	script := `exec 2>&1
busybox id -u; cat /proc/self/uid_map; cat /proc/self/gid_map
ls -ln /bin/busybox
hostname
cat /vol/f
cat /proc/1/cmdline | tr '\0' ' '; echo
grep -E ' /sys | /dev/mqueue | /dev/shm | /dev/pts ' /proc/self/mounts | cut -d' ' -f2,3,4 | cut -d, -f1
(touch /sys/x) 2>/dev/null && echo sys-writable
echo null > /dev/null && echo dev-null-ok
ls -l /dev/null | cut -c1
head -c 4 /dev/zero | wc -c
cat /proc/kcore 2>/dev/null | wc -c
(echo 1 > /proc/sys/kernel/shmmni) 2>/dev/null && echo proc-sys-writable
grep -E '^(CapEff|NoNewPrivs)' /proc/self/status
echo exec > /execfile && echo wrote
cat /idvol/hostroot; busybox stat -c %u:%g /idvol/hostroot; echo new > /idvol/new
busybox stat -c %u:%g /idvol2/hostroot
mkdir /tmp/d 2>/dev/null || echo mkdir-denied
`
	var out bytes.Buffer
	code, err := p.r.Exec(ctx, "u", ExecOptions{Process: &specs.Process{Args: []string{"sh", "-c", script}, Env: []string{"PATH=/bin"}, Cwd: "/",
		Capabilities: spec.Process.Capabilities, NoNewPrivileges: true}, Stdout: &out})
	if err != nil || code != 0 {
		t.Fatalf("exec = %d, %v: %q", code, err, out.String())
	}
	want := []string{
		"0", "0 100000 65536", "0 100000 65536",
		"", // ls: checked below
		"userns-pod", "written", "sleep 1000 ",
		"/dev/pts devpts rw", "/dev/mqueue mqueue rw", "/dev/shm tmpfs rw", "/sys sysfs ro",
		"dev-null-ok", "c", "4", "0",
		"CapEff:\t00000000000000eb", "NoNewPrivs:\t1",
		"wrote",
		"secret", "0:0", "0:0", "mkdir-denied",
	}
	got := strings.Split(strings.TrimSpace(out.String()), "\n")
	for i := range got {
		got[i] = strings.Join(strings.Fields(got[i]), " ")
	}
	for i := range want {
		want[i] = strings.Join(strings.Fields(want[i]), " ")
	}
	if len(got) != len(want) {
		t.Fatalf("inside the container:\n%s\nwant %d lines", out.String(), len(want))
	}
	if f := strings.Fields(got[3]); len(f) < 4 || f[2] != "0" || f[3] != "0" {
		t.Errorf("rootfs file owner inside: %q, want 0 0 (idmapped)", got[3])
	}
	got[3] = ""
	if sorted := func(s []string) string {
		s = append([]string(nil), s...)
		slices.Sort(s[7:11])
		return strings.Join(s, "\n")
	}; sorted(got) != sorted(want) {
		t.Errorf("inside the container:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, f := range []string{filepath.Join(vol, "f"), filepath.Join(p.state, "containers", "u", idmappedRootfs, "rootfile"), filepath.Join(p.state, "containers", "u", idmappedRootfs, "execfile")} {
		var fst unix.Stat_t
		if err := unix.Stat(f, &fst); err != nil || fst.Uid != 100000 || fst.Gid != 100000 {
			t.Errorf("%s on the host: uid %d gid %d, %v; want 100000", f, fst.Uid, fst.Gid, err)
		}
	}
	for _, f := range []string{filepath.Join(upper, "rootfile"), filepath.Join(idvol, "new")} {
		var fst unix.Stat_t
		if err := unix.Stat(f, &fst); err != nil || fst.Uid != 0 || fst.Gid != 0 {
			t.Errorf("%s on disk: uid %d gid %d, %v; want 0 (written through an idmapped mount)", f, fst.Uid, fst.Gid, err)
		}
	}
	if err := p.r.Delete(ctx, "u"); err != nil {
		t.Fatal(err)
	}
	if mi, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mi), filepath.Join(p.state, "containers")) {
		t.Error("idmapped rootfs left mounted after Delete")
	}
}

func statusLine(status, key string) string {
	for _, l := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(l, key); ok {
			return v
		}
	}
	return ""
}

// TestIdmappedOverlayCrashedCreate: the idmapped view of an overlay rootfs
// (mounted again on idmapped layers) is writable as the pod's root, and a
// Create that died before meta.json leaves it to Delete, which unmounts it
// before removing the bundle: the image layers below survive.
func TestIdmappedOverlayCrashedCreate(t *testing.T) {
	needRoot(t)
	state := t.TempDir()
	r := newTestRuntime(t, state, false)
	ctx := context.Background()
	nsDir := filepath.Join(t.TempDir(), "ns")
	t.Cleanup(func() { r.UnpinNamespaces(ctx, nsDir) })
	paths, err := r.PinNamespacesUserns(ctx, nsDir, []string{"user", "net", "ipc", "uts"}, "", testUserns.UID, testUserns.GID)
	if err != nil {
		t.Fatal(err)
	}
	img := t.TempDir()
	lower, ctrDir := filepath.Join(img, "layer"), filepath.Join(img, "ctr")
	for _, d := range []string{lower, ctrDir, filepath.Join(ctrDir, "upper"), filepath.Join(ctrDir, "work"), filepath.Join(ctrDir, "rootfs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(lower, "keep"), []byte("layer"), 0o644); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(ctrDir, "rootfs")
	opts := "lowerdir=" + lower + ",upperdir=" + filepath.Join(ctrDir, "upper") + ",workdir=" + filepath.Join(ctrDir, "work")
	if err := unix.Mount("overlay", root, "overlay", 0, opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(root, unix.MNT_DETACH) })

	for d := state; d != "/tmp"; d = filepath.Dir(d) { // reachable by uid 100000
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	bundle := filepath.Join(state, "containers", "crashed")
	if err := os.Mkdir(bundle, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := idmapRootfs(root, bundle, paths["user"], testUserns.UID.HostID, testUserns.GID.HostID); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unmountIdmapped(bundle) })
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(bundle, "rootfs", "keep"), &st); err != nil || st.Uid != testUserns.UID.HostID {
		t.Errorf("layer file through the idmapped rootfs: uid %d, %v; want %d", st.Uid, err, testUserns.UID.HostID)
	}
	// Written as the pod's root (host 100000): on disk as its root, 0.
	if err := exec.Command("setpriv", "--reuid=100000", "--regid=100000", "--clear-groups", "sh", "-c", "echo new > "+filepath.Join(bundle, "rootfs", "new")).Run(); err != nil {
		t.Errorf("write as the pod's root: %v", err)
	} else if err := unix.Stat(filepath.Join(ctrDir, "upper", "new"), &st); err != nil || st.Uid != 0 {
		t.Errorf("written file in the upper dir: uid %d, %v; want 0", st.Uid, err)
	}
	if err := r.Delete(ctx, "crashed"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(lower, "keep")); err != nil {
		t.Errorf("Delete removed the image layer's file: %v", err)
	}
	if _, err := os.Stat(bundle); !os.IsNotExist(err) {
		t.Errorf("bundle left: %v", err)
	}
}

// usernsSpec is the spec of a container of the pod pinned at paths.
func usernsSpec(paths map[string]string, args ...string) *specs.Spec {
	spec := runcSpec(args...)
	spec.Linux.Namespaces = []specs.LinuxNamespace{
		{Type: specs.PIDNamespace}, {Type: specs.MountNamespace},
		{Type: specs.UserNamespace, Path: paths["user"]}, {Type: specs.NetworkNamespace, Path: paths["net"]},
		{Type: specs.IPCNamespace, Path: paths["ipc"]}, {Type: specs.UTSNamespace, Path: paths["uts"]},
	}
	spec.Linux.UIDMappings = []specs.LinuxIDMapping{testUserns.UID}
	spec.Linux.GIDMappings = []specs.LinuxIDMapping{testUserns.GID}
	spec.Hostname = ""
	return spec
}

// TestUsernsTtyAndSysctl: in a pod's user namespace, a container's terminal
// and an exec's terminal work, and the pod's namespaced sysctls are set.
func TestUsernsTtyAndSysctl(t *testing.T) {
	for _, handler := range []string{DefaultHandler, "runc"} {
		t.Run("handler="+handler, func(t *testing.T) {
			p, paths := usernsPod(t, handler)
			ctx := context.Background()
			logPath := filepath.Join(t.TempDir(), "c.log")
			spec := usernsSpec(paths, "sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo is-a-tty; cat /proc/sys/net/ipv4/ip_unprivileged_port_start; exec sleep 1000")
			spec.Process.Terminal = true
			spec.Linux.Sysctl = map[string]string{"net.ipv4.ip_unprivileged_port_start": "80"}
			p.create("tty", spec, CreateOptions{Handler: handler, LogPath: logPath, Tty: true})
			if err := p.r.Start(ctx, "tty"); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			code, err := p.r.Exec(ctx, "tty", ExecOptions{
				Process: &specs.Process{Args: []string{"sh", "-c", "[ -t 0 ] && echo tty-ok; cat /proc/self/uid_map"}, Env: []string{"PATH=/bin"}, Cwd: "/"},
				Stdout:  &out, Tty: true,
			})
			if err != nil || code != 0 || !strings.Contains(out.String(), "tty-ok") || !strings.Contains(strings.Join(strings.Fields(out.String()), " "), "0 100000 65536") {
				t.Errorf("tty Exec = %d, %v, output %q", code, err, out.String())
			}
			if err := p.r.Kill(ctx, "tty", unix.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if _, err := p.r.Wait(ctx, "tty"); err != nil {
				t.Fatal(err)
			}
			if got := logLines(t, logPath); strings.Join(got, "|") != "stdout F is-a-tty\r|stdout F 80\r" {
				t.Errorf("log %q", got)
			}
		})
	}
}

// usernsSharedPIDPod is usernsPod with a shared pid namespace: as
// podsandbox does, the user namespace is pinned first and the monitor is
// started with it, so that the pod's pid namespace belongs to it.
func usernsSharedPIDPod(t *testing.T, handler string) (*testPod, map[string]string) {
	t.Helper()
	needRoot(t)
	if _, err := os.Stat(testRunc); err != nil && handler != DefaultHandler {
		t.Skip("no runc (apt-get install runc)")
	}
	state := t.TempDir()
	mgr, err := cgroupmgr.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := mgr.Delete(context.Background(), path.Dir(testCgroup("x"))); err != nil {
			t.Errorf("cleanup: delete test cgroup parent: %v", err)
		}
	})
	cfg := Config{StateDir: state, ShimPath: testShim, Cgroups: CgroupsFrom(mgr)}
	if handler != DefaultHandler {
		cfg.Handlers = map[string]Handler{handler: {Path: testRunc, Root: filepath.Join(state, "runc-root")}}
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	// The container's root must reach its rootfs in the state dir.
	for d := state; d != "/tmp"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "ns")
	t.Cleanup(func() { r.UnpinNamespaces(ctx, dir) })
	paths, err := r.PinNamespacesUserns(ctx, dir, []string{"user", "net", "ipc", "uts"}, "userns-pod", testUserns.UID, testUserns.GID)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPod{tb: t, r: r, id: "berth-test-pod", state: state}
	t.Cleanup(func() {
		for _, id := range p.ids {
			if err := p.r.Delete(ctx, id); err != nil {
				t.Errorf("cleanup: Delete %s: %v", id, err)
			}
		}
		if err := p.r.StopMonitor(ctx, p.id); err != nil {
			t.Errorf("cleanup: StopMonitor: %v", err)
		}
	})
	if paths["pid"], err = r.StartMonitorUserns(ctx, p.id, true, paths["user"]); err != nil {
		t.Fatal(err)
	}
	if p.info, err = r.ConnectMonitor(ctx, p.id); err != nil {
		t.Fatal(err)
	}
	if p.info.PidNSPath != paths["pid"] || paths["pid"] == "" {
		t.Fatalf("pid namespace %q, monitor says %q", paths["pid"], p.info.PidNSPath)
	}
	return p, paths
}

// nsOwner is the inode of the user namespace that owns the namespace at path.
func nsOwner(t *testing.T, path string) uint64 {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ofd, err := unix.IoctlRetInt(fd, 0xb701) // NS_GET_USERNS
	if err != nil {
		t.Fatalf("%s: NS_GET_USERNS: %v", path, err)
	}
	defer unix.Close(ofd)
	var st unix.Stat_t
	if err := unix.Fstat(ofd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// podInitPid finds the host pid of the process that is pid 1 of the pid
// namespace pinned at pidns.
func podInitPid(t *testing.T, pidns string) int {
	t.Helper()
	var want unix.Stat_t
	if err := unix.Stat(pidns, &want); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name()+"/ns/pid", &st) != nil || st.Ino != want.Ino {
			continue
		}
		status, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue
		}
		if f := strings.Fields(statusLine(string(status), "NSpid:")); len(f) == 2 && f[1] == "1" {
			return atoi(t, f[0])
		}
	}
	t.Fatalf("no pid 1 in the pid namespace %s", pidns)
	return 0
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestUsernsSharedPID: a pod with a user namespace and a shared pid
// namespace (shareProcessNamespace), on the built-in runtime and on runc.
// The pid namespace belongs to the pod's user namespace; its pid 1 is the
// pod init, root inside and the mapped uid outside; two containers see each
// other's processes through their proc; the pod init dies with the pod; and
// a new Runtime (berthd restarted) finds the monitor and its pid namespace.
func TestUsernsSharedPID(t *testing.T) {
	for _, handler := range []string{DefaultHandler, "runc"} {
		t.Run("handler="+handler, func(t *testing.T) {
			p, paths := usernsSharedPIDPod(t, handler)
			ctx := context.Background()
			var user unix.Stat_t
			if err := unix.Stat(paths["user"], &user); err != nil {
				t.Fatal(err)
			}
			if nsOwner(t, paths["pid"]) != user.Ino {
				t.Fatal("the pod's pid namespace is not owned by its user namespace")
			}
			initPid := podInitPid(t, paths["pid"])
			status, err := os.ReadFile("/proc/" + itoa(initPid) + "/status")
			if err != nil {
				t.Fatal(err)
			}
			if f := strings.Fields(statusLine(string(status), "Uid:")); len(f) == 0 || f[0] != "100000" {
				t.Errorf("host uid of the pod init: %q, want 100000", f)
			}
			var initUser unix.Stat_t
			if err := unix.Stat("/proc/"+itoa(initPid)+"/ns/user", &initUser); err != nil || initUser.Ino != user.Ino {
				t.Errorf("the pod init is not in the pod's user namespace (%v)", err)
			}

			for _, c := range []struct{ id, arg string }{{"a", "1001"}, {"b", "1002"}} {
				spec := usernsSpec(paths, "sleep", c.arg)
				spec.Linux.Namespaces[0] = specs.LinuxNamespace{Type: specs.PIDNamespace, Path: paths["pid"]}
				p.create(c.id, spec, CreateOptions{Handler: handler, CgroupPath: testCgroup(c.id)})
				if err := p.r.Start(ctx, c.id); err != nil {
					t.Fatal(err)
				}
			}
			st, err := p.r.State(ctx, "a")
			if err != nil {
				t.Fatal(err)
			}
			status, err = os.ReadFile("/proc/" + itoa(st.Pid) + "/status")
			if err != nil {
				t.Fatal(err)
			}
			if f := strings.Fields(statusLine(string(status), "Uid:")); len(f) == 0 || f[0] != "100000" {
				t.Errorf("host uid of container a: %q, want 100000", f)
			}
			if f := strings.Fields(statusLine(string(status), "NSpid:")); len(f) != 2 || f[1] == "1" {
				t.Errorf("container a's pids (host, pod): %q, want two, and not pid 1 in the pod", f)
			}
			script := `exec 2>&1
busybox id -u
cat /proc/1/cmdline | tr '\0' ' '; echo
for d in /proc/[0-9]*; do tr '\0' ' ' < $d/cmdline; echo; done | grep '^sleep ' | sort
grep '^proc /proc proc' /proc/self/mounts | cut -d' ' -f1-3
`
			var out bytes.Buffer
			code, err := p.r.Exec(ctx, "b", ExecOptions{Process: &specs.Process{Args: []string{"sh", "-c", script}, Env: []string{"PATH=/bin"}, Cwd: "/"}, Stdout: &out})
			if err != nil || code != 0 {
				t.Fatalf("exec = %d, %v: %q", code, err, out.String())
			}
			got := strings.Split(strings.TrimSpace(out.String()), "\n")
			for i := range got {
				got[i] = strings.TrimSpace(got[i])
			}
			want := []string{"0", "berth-shim podinit", "sleep 1001", "sleep 1002", "proc /proc proc"}
			if !slices.Equal(got, want) {
				t.Errorf("in container b:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}

			// berthd restarted: a new Runtime finds the monitor, its pid
			// namespace, and the same pod init.
			cfg := p.r.cfg
			r2, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer r2.Close()
			info, err := r2.ConnectMonitor(ctx, p.id)
			if err != nil || info.PidNSPath != paths["pid"] || info.Pid != p.info.Pid {
				t.Errorf("ConnectMonitor after a restart: %+v, %v; want %+v", info, err, p.info)
			}
			if again, err := r2.StartMonitorUserns(ctx, p.id, true, paths["user"]); err != nil || again != paths["pid"] {
				t.Errorf("StartMonitorUserns of a running pod: %q, %v", again, err)
			}
			if _, err := r2.StartMonitorUserns(ctx, p.id, true, "/proc/self/ns/user"); !errors.Is(err, errdefs.ErrAlreadyExists) {
				t.Errorf("StartMonitorUserns of a running pod with another user namespace: %v, want AlreadyExists", err)
			}
			if got := podInitPid(t, paths["pid"]); got != initPid {
				t.Errorf("pod init %d, was %d", got, initPid)
			}

			// The pod init dies with the pod, and takes the containers.
			pfd, err := unix.PidfdOpen(initPid, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(pfd)
			if err := p.r.StopMonitor(ctx, p.id); err != nil {
				t.Fatal(err)
			}
			if err := unix.PidfdSendSignal(pfd, 0, nil, 0); err != unix.ESRCH {
				t.Errorf("pod init after StopMonitor: signal 0 = %v, want ESRCH", err)
			}
			for _, id := range []string{"a", "b"} {
				if st, err := p.r.State(ctx, id); err != nil || st.Status != StatusStopped {
					t.Errorf("container %s after StopMonitor: %+v, %v", id, st, err)
				}
			}
		})
	}
}

// In a user namespace the container's device nodes are the host's, bound
// in (mknod is not allowed there). A device the pod names differently from
// the host (CRI's container_path) is found on the host by its numbers.
func TestUsernsRenamedDevice(t *testing.T) {
	p, paths := usernsPod(t, DefaultHandler)
	ctx := context.Background()
	spec := usernsSpec(paths, "sleep", "1000")
	mode := os.FileMode(0o666)
	spec.Linux.Devices = append(spec.Linux.Devices, specs.LinuxDevice{Path: "/dev/pod-zero", Type: "c", Major: 1, Minor: 5, FileMode: &mode})
	p.create("dev", spec, CreateOptions{})
	if err := p.r.Start(ctx, "dev"); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	code, err := p.r.Exec(ctx, "dev", ExecOptions{
		Process: &specs.Process{Args: []string{"sh", "-c", "ls -l /dev/pod-zero | cut -c1; head -c 3 /dev/pod-zero | wc -c"}, Env: []string{"PATH=/bin"}, Cwd: "/"},
		Stdout:  &out, Stderr: &out,
	})
	if err != nil || code != 0 || strings.Join(strings.Fields(out.String()), " ") != "c 3" {
		t.Errorf("exec = %d, %v, output %q; want a character device giving 3 bytes", code, err, out.String())
	}
}
