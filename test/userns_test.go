package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/test/harness"
)

// A pod with a user namespace (hostUsers: false), on the runc handler: root
// inside, an unprivileged uid outside, and what it writes in a hostPath
// volume belongs on the host to the mapped uid.
func TestUserNamespacePod(t *testing.T) {
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
	if userns[""] || !userns["runc"] {
		t.Errorf("Status user_namespaces by handler: %v, want only runc", userns)
	}

	const base = 1 << 20 // host ids base .. base+65535
	podCfg := podConfig(t, "userns")
	podCfg.Linux.SecurityContext.NamespaceOptions.UsernsOptions = &runtimeapi.UserNamespace{
		Mode: runtimeapi.NamespaceMode_POD,
		Uids: []*runtimeapi.IDMapping{{HostId: base, ContainerId: 0, Length: 65536}},
		Gids: []*runtimeapi.IDMapping{{HostId: base, ContainerId: 0, Length: 65536}},
	}
	if _, err := rt.RunPodSandbox(ctx, podCfg, ""); status.Code(err) != codes.Unimplemented {
		t.Errorf("user namespace on the built-in runtime: %v, want Unimplemented", err)
	}
	podID, err := rt.RunPodSandbox(ctx, podCfg, "runc")
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	t.Cleanup(func() {
		if e.d.Runtime == nil {
			return
		}
		if err := e.d.Runtime.StopPodSandbox(context.Background(), podID); err != nil {
			t.Errorf("cleanup StopPodSandbox: %v", err)
		}
		if err := e.d.Runtime.RemovePodSandbox(context.Background(), podID); err != nil {
			t.Errorf("cleanup RemovePodSandbox: %v", err)
		}
	})

	vol := t.TempDir()
	if err := os.Chmod(vol, 0o777); err != nil {
		t.Fatal(err)
	}
	cfg := e.containerConfig("box", "sh", "-c", "echo from-pod > /vol/f; exec sleep 1000")
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/vol", HostPath: vol}}
	id := e.startContainer(t, podID, podCfg, cfg)

	// The container wrote /vol/f before it became sleep.
	for e.execOut(t, id, "cat", "/proc/1/comm") != "sleep\n" {
		time.Sleep(20 * time.Millisecond)
	}
	if out := e.execOut(t, id, "id", "-u"); out != "0\n" {
		t.Errorf("uid inside: %q, want 0", out)
	}
	// The image's files (host root's on disk) are the pod root's, through
	// the idmapped rootfs, and root can write where the image lets root.
	if out := e.execOut(t, id, "sh", "-c", "stat -c %u:%g /bin/busybox && touch /etc/ok && echo wrote"); out != "0:0\nwrote\n" {
		t.Errorf("rootfs inside: %q", out)
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
	for _, name := range []string{"f", "g"} {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(vol, name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != base || st.Gid != base {
			t.Errorf("volume file %s on the host belongs to %d:%d, want %d:%d", name, st.Uid, st.Gid, base, base)
		}
	}
	if err := rt.StopContainer(ctx, id, 1); err != nil {
		t.Fatal(err)
	}
	if err := rt.RemoveContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
}
