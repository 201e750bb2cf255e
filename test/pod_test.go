package e2e

import (
	"context"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/test/harness"
)

var criLogLine = regexp.MustCompile(`^(\S+) (stdout|stderr) (F|P) (.*)$`)

func TestPodAndContainerLifecycle(t *testing.T) {
	e := startPodEnv(t)
	ctx := context.Background()
	rt := e.d.Runtime

	podCfg := podConfig(t, "life")
	podID := e.runPod(t, podCfg)

	ps, err := rt.PodSandboxStatus(ctx, podID, false)
	if err != nil {
		t.Fatalf("PodSandboxStatus: %v", err)
	}
	if ps.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY {
		t.Fatalf("pod state %v", ps.Status.State)
	}
	ip := net.ParseIP(ps.Status.GetNetwork().GetIp())
	_, subnet, _ := net.ParseCIDR(e.subnet)
	if ip == nil || !subnet.Contains(ip) {
		t.Fatalf("pod IP %q not in %s", ps.Status.GetNetwork().GetIp(), e.subnet)
	}

	// A prefix of the ID works as the ID does.
	if _, err := rt.PodSandboxStatus(ctx, podID[:12], false); err != nil {
		t.Fatalf("PodSandboxStatus by prefix: %v", err)
	}

	// As pid 1, sh only dies of SIGTERM through its trap.
	cfg := e.containerConfig("main", "sh", "-c", "trap 'exit 143' TERM; echo hello; echo oops >&2; while :; do sleep 0.1; done")
	id := e.startContainer(t, podID, podCfg, cfg)

	st, err := rt.ContainerStatus(ctx, id, false)
	if err != nil {
		t.Fatalf("ContainerStatus: %v", err)
	}
	if st.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING || st.Status.StartedAt == 0 || st.Status.ImageId == "" {
		t.Fatalf("status after start: %+v", st.Status)
	}

	// The container is pid 1 of its own pid namespace, in the pod's netns.
	if got := strings.TrimSpace(e.execOut(t, id, "cat", "/proc/1/cmdline")); !strings.HasPrefix(got, "sh\x00-c\x00trap") {
		t.Errorf("pid 1 in the container is %q, want the container's sh", got)
	}
	if got := e.execOut(t, id, "hostname"); strings.TrimSpace(got) != "life" {
		t.Errorf("hostname = %q", got)
	}
	if got := e.execOut(t, id, "ip", "-4", "addr", "show", "eth0"); !strings.Contains(got, ip.String()) {
		t.Errorf("eth0 in the container lacks the pod IP %s:\n%s", ip, got)
	}

	// The log is in the CRI format, with both streams.
	logPath := st.Status.LogPath
	deadline := time.Now().Add(10 * time.Second)
	var data []byte
	for time.Now().Before(deadline) {
		data, _ = os.ReadFile(logPath)
		if strings.Count(string(data), "\n") >= 2 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2 {
		t.Fatalf("log %s has %d lines: %q", logPath, len(lines), data)
	}
	streams := map[string]string{}
	for _, l := range lines {
		m := criLogLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("log line not in CRI format: %q", l)
		}
		if _, err := time.Parse(time.RFC3339Nano, m[1]); err != nil {
			t.Errorf("log timestamp %q: %v", m[1], err)
		}
		streams[m[2]] = m[4]
	}
	if streams["stdout"] != "hello" || streams["stderr"] != "oops" {
		t.Errorf("log streams = %v", streams)
	}

	// Stop with a grace period: the trap ends it with 143 before SIGKILL.
	if err := rt.StopContainer(ctx, id, 10); err != nil {
		t.Fatalf("StopContainer: %v", err)
	}
	fin := e.waitExited(t, id)
	if fin.ExitCode != 143 || fin.FinishedAt == 0 || fin.Reason != "Error" {
		t.Errorf("after stop: exit %d reason %q finished %d", fin.ExitCode, fin.Reason, fin.FinishedAt)
	}
	// Idempotent.
	if err := rt.StopContainer(ctx, id, 10); err != nil {
		t.Errorf("second StopContainer: %v", err)
	}
	if err := rt.RemoveContainer(ctx, id); err != nil {
		t.Fatalf("RemoveContainer: %v", err)
	}
	if err := rt.RemoveContainer(ctx, id); err != nil {
		t.Errorf("second RemoveContainer: %v", err)
	}
	if _, err := rt.ContainerStatus(ctx, id, false); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("status of a removed container: %v", err)
	}

	if err := rt.StopPodSandbox(ctx, podID); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	if err := rt.StopPodSandbox(ctx, podID); err != nil {
		t.Fatalf("second StopPodSandbox: %v", err)
	}
	if err := rt.RemovePodSandbox(ctx, podID); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
	if err := rt.RemovePodSandbox(ctx, podID); err != nil {
		t.Fatalf("second RemovePodSandbox: %v", err)
	}
	if left := harness.MountsUnder(e.d.State); len(left) > 0 {
		t.Errorf("mounts left under the state dir: %v", left)
	}
}

func TestExitCodesAndReasons(t *testing.T) {
	e := startPodEnv(t)
	ctx := context.Background()
	podCfg := podConfig(t, "exits")
	podID := e.runPod(t, podCfg)

	ok := e.startContainer(t, podID, podCfg, e.containerConfig("ok", "true"))
	fail := e.startContainer(t, podID, podCfg, e.containerConfig("fail", "sh", "-c", "exit 3"))
	for id, want := range map[string]struct {
		code   int32
		reason string
	}{ok: {0, "Completed"}, fail: {3, "Error"}} {
		st := e.waitExited(t, id)
		if st.ExitCode != want.code || st.Reason != want.reason || st.FinishedAt < st.StartedAt {
			t.Errorf("container %s: exit %d reason %q (started %d finished %d), want %d %q", id[:12], st.ExitCode, st.Reason, st.StartedAt, st.FinishedAt, want.code, want.reason)
		}
	}

	// A name is unique within a pod.
	if _, err := e.d.Runtime.CreateContainer(ctx, podID, e.containerConfig("ok", "true"), podCfg); err == nil || !strings.Contains(err.Error(), "AlreadyExists") {
		t.Errorf("duplicate name: %v", err)
	}
	// Bad input names the field.
	bad := e.containerConfig("bad", "true")
	bad.Image = nil
	if _, err := e.d.Runtime.CreateContainer(ctx, podID, bad, podCfg); err == nil || !strings.Contains(err.Error(), "InvalidArgument") || !strings.Contains(err.Error(), "image") {
		t.Errorf("missing image: %v", err)
	}
	if _, err := e.d.Runtime.ContainerStatus(ctx, "nosuchcontainer", false); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("unknown container: %v", err)
	}
}
