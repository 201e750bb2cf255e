package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/test/harness"
)

// A pod with a user namespace (hostUsers: false), on the built-in runtime
// and on runc: root inside and an unprivileged uid outside, for the
// container and for an exec; what it writes in its rootfs and in a hostPath
// volume belongs on the host to the mapped uid; a volume kubelet asks to be
// idmapped shows host root's files as the pod root's.
func TestUsernsPod(t *testing.T) {
	if _, err := os.Stat(runcPath); err != nil {
		t.Skip("no runc (apt-get install runc)")
	}
	bridge, subnet := testNetwork(t)
	e := startPodEnvNet(t, harness.Options{Config: fmt.Sprintf("[runtime.handlers.runc]\npath = %q\n", runcPath)}, bridge, subnet)
	// The container's root (an unprivileged host uid) reaches its idmapped
	// rootfs under the state dir, as under /run/berth: the test's temp dirs
	// are 0700.
	for d := e.d.State; d != "/tmp"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rt := e.d.Runtime

	st, err := rt.Status(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	userns := map[string]bool{}
	for _, h := range st.RuntimeHandlers {
		userns[h.Name] = h.GetFeatures().GetUserNamespaces()
	}
	if !userns[""] || !userns["runc"] {
		t.Errorf("Status user_namespaces by handler: %v, want both", userns)
	}

	mapping := func(host, ctr uint32) []*runtimeapi.IDMapping {
		return []*runtimeapi.IDMapping{{HostId: host, ContainerId: ctr, Length: 65536}}
	}
	invalid := map[string]*runtimeapi.UserNamespace{
		"CONTAINER":        {Mode: runtimeapi.NamespaceMode_CONTAINER, Uids: mapping(1<<20, 0), Gids: mapping(1<<20, 0)},
		"TARGET":           {Mode: runtimeapi.NamespaceMode_TARGET, Uids: mapping(1<<20, 0), Gids: mapping(1<<20, 0)},
		"several mappings": {Mode: runtimeapi.NamespaceMode_POD, Uids: append(mapping(1<<20, 0), mapping(1<<21, 65536)...), Gids: mapping(1<<20, 0)},
		"unmapped root":    {Mode: runtimeapi.NamespaceMode_POD, Uids: mapping(1<<20, 1), Gids: mapping(1<<20, 1)},
	}
	for name, u := range invalid {
		for _, handler := range []string{"", "runc"} {
			cfg := podConfig(t, "userns-bad")
			cfg.Linux.SecurityContext.NamespaceOptions.UsernsOptions = u
			if id, err := rt.RunPodSandbox(ctx, cfg, handler); status.Code(err) != codes.InvalidArgument {
				t.Errorf("user namespace %s on handler %q: %v, want InvalidArgument", name, handler, err)
				if err == nil {
					rt.StopPodSandbox(ctx, id)
					rt.RemovePodSandbox(ctx, id)
				}
			}
		}
	}

	for i, handler := range []string{"", "runc"} {
		t.Run("handler="+handler, func(t *testing.T) {
			testUsernsPod(t, e, handler, uint32(1+i)<<20)
		})
		t.Run("shared-pid/handler="+handler, func(t *testing.T) {
			testUsernsSharedPID(t, e, handler, uint32(3+i)<<20)
		})
	}
}

// testUsernsSharedPID runs a pod with a user namespace and a shared pid
// namespace (shareProcessNamespace) on handler, with host ids base ..
// base+65535: its two containers see each other's processes and the pod
// init as pid 1, are root inside and base outside, and so is the pod init,
// which goes with the pod.
func testUsernsSharedPID(t *testing.T, e *podEnv, handler string, base uint32) {
	ctx := context.Background()
	rt := e.d.Runtime
	ids := []*runtimeapi.IDMapping{{HostId: base, ContainerId: 0, Length: 65536}}
	userns := &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD, Uids: ids, Gids: ids}
	podCfg := podConfig(t, "userns-shared-pid")
	podCfg.Linux.SecurityContext.NamespaceOptions = &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD, UsernsOptions: userns}
	podID := e.runPodOn(t, podCfg, handler)
	// As kubelet sends them for a container of such a pod.
	ctrNS := &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_POD, UsernsOptions: userns}
	var ctrs []string
	for _, c := range []struct{ name, arg string }{{"a", "1001"}, {"b", "1002"}} {
		cfg := e.containerConfig(c.name, "sleep", c.arg)
		cfg.Linux.SecurityContext.NamespaceOptions = ctrNS
		ctrs = append(ctrs, e.startContainer(t, podID, podCfg, cfg))
	}
	script := `id -u
tr '\0' ' ' < /proc/1/cmdline; echo
for d in /proc/[0-9]*; do tr '\0' ' ' < $d/cmdline; echo; done | grep '^sleep ' | sort
grep '^proc /proc proc' /proc/self/mounts | cut -d' ' -f1-3
`
	got := strings.Split(strings.TrimSpace(e.execOut(t, ctrs[1], "sh", "-c", script)), "\n")
	for i := range got {
		got[i] = strings.TrimSpace(got[i])
	}
	if want := []string{"0", "berth-shim podinit", "sleep 1001", "sleep 1002", "proc /proc proc"}; !slices.Equal(got, want) {
		t.Errorf("in container b:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// berthd killed and restarted: a container started after it joins the
	// same pod init's pid namespace, in the pod's user namespace.
	e.d.Restart(t, true)
	rt = e.d.Runtime
	cfg := e.containerConfig("c", "sleep", "1003")
	cfg.Linux.SecurityContext.NamespaceOptions = ctrNS
	ctrs = append(ctrs, e.startContainer(t, podID, podCfg, cfg))
	got = strings.Split(strings.TrimSpace(e.execOut(t, ctrs[2], "sh", "-c", script)), "\n")
	for i := range got {
		got[i] = strings.TrimSpace(got[i])
	}
	if want := []string{"0", "berth-shim podinit", "sleep 1001", "sleep 1002", "sleep 1003", "proc /proc proc"}; !slices.Equal(got, want) {
		t.Errorf("in container c, after a restart:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// On the host: container a and the pod init (pid 1 of a's pid
	// namespace) run as base.
	pid := containerPid(t, e, ctrs[0])
	var pidns syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/pid", pid), &pidns); err != nil {
		t.Fatal(err)
	}
	initPid := 0
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		var st syscall.Stat_t
		if syscall.Stat("/proc/"+p.Name()+"/ns/pid", &st) != nil || st.Ino != pidns.Ino {
			continue
		}
		s, err := os.ReadFile("/proc/" + p.Name() + "/status")
		if f := strings.Fields(statusField(string(s), "NSpid")); err == nil && len(f) == 2 && f[1] == "1" {
			fmt.Sscan(f[0], &initPid)
		}
	}
	if initPid == 0 {
		t.Fatal("no pid 1 in the pod's pid namespace")
	}
	for _, p := range []int{pid, initPid} {
		s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			t.Fatal(err)
		}
		if f := strings.Fields(statusField(string(s), "Uid")); len(f) == 0 || f[0] != fmt.Sprint(base) {
			t.Errorf("host uid of pid %d: %q, want %d", p, f, base)
		}
	}

	// The pod init goes with the pod.
	pfd, err := unix.PidfdOpen(initPid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pfd)
	if err := rt.StopPodSandbox(ctx, podID); err != nil {
		t.Fatal(err)
	}
	if err := unix.PidfdSendSignal(pfd, 0, nil, 0); err != unix.ESRCH {
		t.Errorf("pod init after StopPodSandbox: signal 0 = %v, want ESRCH", err)
	}
	for _, id := range ctrs {
		if err := rt.RemoveContainer(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
}

// testUsernsPod runs a pod on handler with host ids base .. base+65535.
func testUsernsPod(t *testing.T, e *podEnv, handler string, base uint32) {
	ctx := context.Background()
	rt := e.d.Runtime
	podCfg := podConfig(t, "userns")
	ids := []*runtimeapi.IDMapping{{HostId: base, ContainerId: 0, Length: 65536}}
	podCfg.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtimeapi.UserNamespace{
		Mode: runtimeapi.NamespaceMode_POD, Uids: ids, Gids: ids,
	}
	podID := e.runPodOn(t, podCfg, handler)

	vol := t.TempDir()
	if err := os.Chmod(vol, 0o777); err != nil {
		t.Fatal(err)
	}
	// Kubelet sets a volume's mappings (the pod's) for the runtime to idmap
	// it: host root's files there are the pod root's.
	idvol := t.TempDir()
	if err := os.WriteFile(filepath.Join(idvol, "hostroot"), []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := e.containerConfig("box", "sh", "-c", "echo from-pod > /vol/f; exec sleep 1000")
	cfg.Mounts = []*runtimeapi.Mount{
		{ContainerPath: "/vol", HostPath: vol},
		{ContainerPath: "/idvol", HostPath: idvol, UidMappings: ids, GidMappings: ids},
	}
	id := e.startContainer(t, podID, podCfg, cfg)

	// The container wrote /vol/f before it became sleep.
	for e.execOut(t, id, "cat", "/proc/1/comm") != "sleep\n" {
		time.Sleep(20 * time.Millisecond)
	}
	if out := e.execOut(t, id, "id", "-u"); out != "0\n" {
		t.Errorf("uid inside: %q, want 0", out)
	}
	if out, want := strings.Fields(e.execOut(t, id, "cat", "/proc/self/uid_map")), []string{"0", fmt.Sprint(base), "65536"}; !slices.Equal(out, want) {
		t.Errorf("uid_map inside: %q, want %q", out, want)
	}
	// The image's files (host root's on disk) are the pod root's, through
	// the idmapped rootfs, and root can write where the image lets root.
	if out := e.execOut(t, id, "sh", "-c", "stat -c %u:%g /bin/busybox && touch /etc/ok && echo wrote"); out != "0:0\nwrote\n" {
		t.Errorf("rootfs inside: %q", out)
	}
	if out := e.execOut(t, id, "sh", "-c", "cat /idvol/hostroot && stat -c %u:%g /idvol/hostroot && echo x > /idvol/new"); out != "secret\n0:0\n" {
		t.Errorf("idmapped volume inside: %q", out)
	}
	pid := containerPid(t, e, id)
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	if f := strings.Fields(statusField(string(s), "Uid")); len(f) == 0 || f[0] != fmt.Sprint(base) {
		t.Errorf("host uid of the container: %q, want %d", f, base)
	}
	e.execOut(t, id, "sh", "-c", "echo from-exec > /vol/g")
	// The rootfs file as the host sees the container's rootfs.
	owners := map[string]uint32{
		filepath.Join(vol, "f"): base, filepath.Join(vol, "g"): base,
		fmt.Sprintf("/proc/%d/root/etc/ok", pid): base,
		filepath.Join(idvol, "new"):              0,
	}
	for name, want := range owners {
		var st syscall.Stat_t
		if err := syscall.Stat(name, &st); err != nil {
			t.Error(err)
			continue
		}
		if st.Uid != want || st.Gid != want {
			t.Errorf("%s on the host belongs to %d:%d, want %d:%d", name, st.Uid, st.Gid, want, want)
		}
	}
	if err := rt.StopContainer(ctx, id, 1); err != nil {
		t.Fatal(err)
	}
	if err := rt.RemoveContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
}
