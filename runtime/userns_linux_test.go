package runtime

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
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

// TestRuncUserns: a container of a pod with a user namespace, run by runc,
// is root inside and the mapped uid outside; its rootfs is idmapped (host
// root's files are its root's), and a file it writes in a volume belongs on
// the host to the mapped uid.
func TestRuncUserns(t *testing.T) {
	p, _ := startRuncPod(t)
	ctx := context.Background()
	// The container's root must reach its rootfs in the state dir, as in
	// /run/berth/runtime: testing's temp dirs are 0700.
	for d := p.state; d != "/tmp"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(t.TempDir(), "ns")
	t.Cleanup(func() { p.r.UnpinNamespaces(ctx, dir) })
	paths, err := p.r.PinNamespacesUserns(ctx, dir, []string{"user", "net", "ipc", "uts"}, "userns-pod", testUserns.UID, testUserns.GID)
	if err != nil {
		t.Fatal(err)
	}
	vol := t.TempDir()
	if err := os.Chmod(vol, 0o777); err != nil {
		t.Fatal(err)
	}
	spec := runcSpec("sh", "-c", "echo written > /vol/f; sleep 1000")
	spec.Linux.Namespaces = []specs.LinuxNamespace{
		{Type: specs.PIDNamespace}, {Type: specs.MountNamespace},
		{Type: specs.UserNamespace, Path: paths["user"]}, {Type: specs.NetworkNamespace, Path: paths["net"]},
		{Type: specs.IPCNamespace, Path: paths["ipc"]}, {Type: specs.UTSNamespace, Path: paths["uts"]},
	}
	spec.Linux.UIDMappings = []specs.LinuxIDMapping{testUserns.UID}
	spec.Linux.GIDMappings = []specs.LinuxIDMapping{testUserns.GID}
	spec.Hostname = ""
	spec.Mounts = append(spec.Mounts, specs.Mount{Destination: "/vol", Type: "bind", Source: vol, Options: []string{"rbind", "rw"}})
	if err := p.r.Create(ctx, p.id, "plain", spec, CreateOptions{}); err == nil {
		p.ids = append(p.ids, "plain")
		t.Error("the built-in runtime took a user namespace")
	}
	p.create("u", spec, CreateOptions{Handler: "runc", CgroupPath: testCgroup("u")})
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
	var out bytes.Buffer
	code, err := p.r.Exec(ctx, "u", ExecOptions{Process: &specs.Process{Args: []string{"sh", "-c", "grep Uid /proc/self/status; ls -ln /bin/busybox; hostname 2>/dev/null; cat /vol/f"}, Env: []string{"PATH=/bin"}, Cwd: "/"}, Stdout: &out})
	if err != nil || code != 0 {
		t.Fatalf("exec = %d, %v: %q", code, err, out.String())
	}
	lines := strings.Split(out.String(), "\n")
	if f := strings.Fields(lines[0]); len(f) < 2 || f[1] != "0" {
		t.Errorf("uid inside: %q, want 0", lines[0])
	}
	if f := strings.Fields(lines[1]); len(f) < 4 || f[2] != "0" || f[3] != "0" {
		t.Errorf("rootfs file owner inside: %q, want 0 0 (idmapped)", lines[1])
	}
	if !strings.Contains(out.String(), "written") {
		t.Errorf("volume file not written: %q", out.String())
	}
	var fst unix.Stat_t
	if err := unix.Stat(filepath.Join(vol, "f"), &fst); err != nil || fst.Uid != 100000 || fst.Gid != 100000 {
		t.Errorf("volume file on the host: uid %d gid %d, %v; want 100000", fst.Uid, fst.Gid, err)
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
