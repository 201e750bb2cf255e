package e2e

import (
	"context"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/cni"
	"github.com/berth-dev/berth/test/harness"
	"github.com/berth-dev/berth/test/testimages"
	"github.com/berth-dev/berth/test/testregistry"
)

// podEnv is a berthd with a pod network and a registry holding busybox.
type podEnv struct {
	d        *harness.Daemon
	reg      *testregistry.Registry
	busybox  string
	leaseDir string
	// bridge and subnet are the test's own pod network (testNetwork).
	bridge string
	subnet string
}

func startPodEnv(t testing.TB) *podEnv {
	t.Helper()
	bridge, subnet := testNetwork(t)
	return startPodEnvNet(t, harness.Options{}, bridge, subnet)
}

// testNetwork names a bridge and a /24 of its own for one test, so that
// tests (and test runs of several people on one machine) never share a
// bridge that another's cleanup deletes.
func testNetwork(t testing.TB) (bridge, subnet string) {
	h := fnv.New32a()
	fmt.Fprintf(h, "%d/%s/%d", os.Getpid(), t.Name(), time.Now().UnixNano())
	n := h.Sum32()
	return fmt.Sprintf("be2e%08x", n), fmt.Sprintf("10.%d.%d.0/24", 64+n%64, (n>>8)%256)
}

// startPodEnvNet is startPodEnv with daemon options (CNIConfDir is set here)
// and a pod network on bridge with subnet.
func startPodEnvNet(t testing.TB, opts harness.Options, bridge, subnetCIDR string) *podEnv {
	t.Helper()
	confDir := t.TempDir()
	leaseDir := t.TempDir()
	conf, err := cni.DefaultConflist("berth-e2e", bridge, subnetCIDR, leaseDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(confDir, "10-e2e.conflist"), conf, 0o644); err != nil {
		t.Fatal(err)
	}
	// The bridge plugin leaves its bridge behind on DEL, and berth keeps one
	// masquerade rule per pod subnet: remove both last.
	_, subnet, _ := net.ParseCIDR(subnetCIDR)
	t.Cleanup(func() {
		_ = cni.RemoveMasquerade(context.Background(), subnet)
		_ = exec.Command("ip", "link", "del", bridge).Run()
	})
	reg := testregistry.Start(t, testregistry.Options{})
	img, err := testimages.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.MustPush(t, "library/busybox:latest", img)
	_ = ref
	opts.CNIConfDir = confDir
	d := harness.Start(t, bins, opts)
	env := &podEnv{d: d, reg: reg, busybox: reg.Ref("library/busybox:latest"), leaseDir: leaseDir, bridge: bridge, subnet: subnetCIDR}
	if _, err := d.ImageService(t).PullImage(context.Background(), &runtimeapi.ImageSpec{Image: env.busybox}, nil, nil); err != nil {
		t.Fatalf("pull busybox: %v", err)
	}
	// Runs after the test's own clean-ups (registered later), before the
	// daemon goes: every pod test checks that removing its pods left
	// nothing, IPAM leases and veths included.
	t.Cleanup(func() {
		if d.Runtime != nil && !t.Failed() && !d.AllowLeftovers {
			assertNoLeaks(t, env)
		}
	})
	return env
}

// podConfig is a kubelet-like pod sandbox config.
func podConfig(t testing.TB, name string) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "e2e", Uid: fmt.Sprintf("uid-%s-%d", name, time.Now().UnixNano()), Attempt: 0},
		Hostname:     name,
		LogDirectory: t.TempDir(),
		Labels:       map[string]string{"app": name},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
			},
		},
	}
}

// containerConfig is a kubelet-like container config running cmd in busybox.
func (e *podEnv) containerConfig(name string, cmd ...string) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: name},
		Image:    &runtimeapi.ImageSpec{Image: e.busybox},
		Command:  cmd,
		LogPath:  name + ".log",
		Linux: &runtimeapi.LinuxContainerConfig{
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER},
			},
		},
	}
}

// runPod runs a pod and removes it when the test ends.
func (e *podEnv) runPod(t *testing.T, cfg *runtimeapi.PodSandboxConfig) string {
	t.Helper()
	return e.runPodOn(t, cfg, "")
}

// runPodOn is runPod with a runtime handler.
func (e *podEnv) runPodOn(t *testing.T, cfg *runtimeapi.PodSandboxConfig, handler string) string {
	t.Helper()
	ctx := context.Background()
	id, err := e.d.Runtime.RunPodSandbox(ctx, cfg, handler)
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	t.Cleanup(func() {
		if e.d.Runtime == nil {
			return
		}
		if err := e.d.Runtime.StopPodSandbox(ctx, id); err != nil {
			t.Errorf("cleanup StopPodSandbox: %v", err)
		}
		if err := e.d.Runtime.RemovePodSandbox(ctx, id); err != nil {
			t.Errorf("cleanup RemovePodSandbox: %v", err)
		}
	})
	return id
}

// startContainer creates and starts a container in pod.
func (e *podEnv) startContainer(t *testing.T, podID string, podCfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) string {
	t.Helper()
	ctx := context.Background()
	id, err := e.d.Runtime.CreateContainer(ctx, podID, cfg, podCfg)
	if err != nil {
		t.Fatalf("CreateContainer %s: %v", cfg.Metadata.Name, err)
	}
	if err := e.d.Runtime.StartContainer(ctx, id); err != nil {
		t.Fatalf("StartContainer %s: %v", cfg.Metadata.Name, err)
	}
	return id
}

// waitExited waits for a container to exit and returns its status.
func (e *podEnv) waitExited(t *testing.T, id string) *runtimeapi.ContainerStatus {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := e.d.Runtime.ContainerStatus(context.Background(), id, false)
		if err != nil {
			t.Fatalf("ContainerStatus: %v", err)
		}
		if st.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED {
			return st.Status
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s did not exit: %+v", id, st.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// execOut runs cmd in a container and returns its stdout, failing on a
// non-zero exit.
func (e *podEnv) execOut(t *testing.T, id string, cmd ...string) string {
	t.Helper()
	stdout, stderr, err := e.d.Runtime.ExecSync(context.Background(), id, cmd, 30*time.Second)
	if err != nil {
		t.Fatalf("ExecSync %v: %v (stderr %q)", cmd, err, stderr)
	}
	return string(stdout)
}

// statusField returns the value of a "Key:" line of /proc/PID/status text.
func statusField(status, key string) string {
	for _, l := range strings.Split(status, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
