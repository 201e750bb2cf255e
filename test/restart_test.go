package e2e

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"syscall"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A berthd restart, clean or a crash, between calls changes nothing a
// kubelet can observe: pods and containers keep running, exits that happen
// while berthd is down are recorded, and stop and remove still work.
func TestRestartKeepsPodsAndContainers(t *testing.T) {
	for _, crash := range []bool{false, true} {
		name := "sigterm"
		if crash {
			name = "sigkill"
		}
		t.Run(name, func(t *testing.T) {
			e := startPodEnv(t)
			ctx := context.Background()
			podCfg := podConfig(t, "restart-"+name)
			podID := e.runPod(t, podCfg)
			before, err := e.d.Runtime.PodSandboxStatus(ctx, podID, false)
			if err != nil {
				t.Fatal(err)
			}
			long := e.startContainer(t, podID, podCfg, e.containerConfig("long", "sh", "-c", "echo first; exec sleep 1000"))
			short := e.startContainer(t, podID, podCfg, e.containerConfig("short", "sleep", "1000"))
			created, err := e.d.Runtime.CreateContainer(ctx, podID, e.containerConfig("created", "true"), podCfg)
			if err != nil {
				t.Fatal(err)
			}

			e.d.Restart(t, crash)

			after, err := e.d.Runtime.PodSandboxStatus(ctx, podID, false)
			if err != nil {
				t.Fatalf("PodSandboxStatus after restart: %v", err)
			}
			if after.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY || after.Status.Network.Ip != before.Status.Network.Ip {
				t.Fatalf("pod after restart: %+v (before %+v)", after.Status, before.Status)
			}
			st, err := e.d.Runtime.ContainerStatus(ctx, long, false)
			if err != nil || st.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
				t.Fatalf("long-running container after restart: %+v %v", st, err)
			}
			if out := e.execOut(t, long, "echo", "alive"); out != "alive\n" {
				t.Fatalf("exec after restart: %q", out)
			}
			// A container created before the restart can still be started.
			if err := e.d.Runtime.StartContainer(ctx, created); err != nil {
				t.Fatalf("start a container created before the restart: %v", err)
			}
			if st := e.waitExited(t, created); st.ExitCode != 0 {
				t.Fatalf("created-then-started container: %+v", st)
			}
			// Make "short" exit while berthd is down: its exit is recorded
			// by the monitor, not lost.
			pid := containerPid(t, e, short)
			e.d.Kill(t)
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatalf("kill container process %d: %v", pid, err)
			}
			e.d.Restart(t, false)
			if st := e.waitExited(t, short); st.ExitCode != 137 || st.FinishedAt == 0 {
				t.Fatalf("exit while berthd was down: %+v", st)
			}
			// Logs written before and after the restart are all there.
			log, err := os.ReadFile(st.Status.LogPath)
			if err != nil || !strings.Contains(string(log), "first") {
				t.Fatalf("log after restart: %q %v", log, err)
			}
			if err := e.d.Runtime.StopPodSandbox(ctx, podID); err != nil {
				t.Fatalf("StopPodSandbox after restart: %v", err)
			}
			if err := e.d.Runtime.RemovePodSandbox(ctx, podID); err != nil {
				t.Fatalf("RemovePodSandbox after restart: %v", err)
			}
		})
	}
}

// containerPid reads the container's host pid from ContainerStatus's
// verbose info.
func containerPid(t *testing.T, e *podEnv, id string) int {
	t.Helper()
	st, err := e.d.Runtime.ContainerStatus(context.Background(), id, true)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(st.Info["info"]), &info); err != nil || info.Pid <= 0 {
		t.Fatalf("verbose info %q: %v", st.Info["info"], err)
	}
	return info.Pid
}
