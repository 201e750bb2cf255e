package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/test/harness"
)

// Events arrive in order for a whole container lifecycle, each with the
// pod's status, for every subscriber.
func TestContainerEvents(t *testing.T) {
	e := startPodEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	subscribe := func() chan *runtimeapi.ContainerEventResponse {
		ch := make(chan *runtimeapi.ContainerEventResponse, 100)
		ready := make(chan struct{})
		go func() {
			_ = e.d.Runtime.GetContainerEvents(ctx, ch, func(runtimeapi.RuntimeService_GetContainerEventsClient) { close(ready) })
		}()
		select {
		case <-ready:
		case <-ctx.Done():
			t.Fatal("event stream not established")
		}
		return ch
	}
	subs := []chan *runtimeapi.ContainerEventResponse{subscribe(), subscribe()}

	podCfg := podConfig(t, "events")
	podID := e.runPod(t, podCfg)
	id := e.startContainer(t, podID, podCfg, e.containerConfig("once", "sh", "-c", "exit 2"))
	e.waitExited(t, id)
	if err := e.d.Runtime.RemoveContainer(ctx, id); err != nil {
		t.Fatal(err)
	}

	want := []runtimeapi.ContainerEventType{
		runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT,
		runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT,
		runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT,
		runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT,
	}
	for i, ch := range subs {
		for _, w := range want {
			select {
			case ev := <-ch:
				if ev.ContainerId != id || ev.ContainerEventType != w {
					t.Fatalf("subscriber %d: got %v for %s, want %v", i, ev.ContainerEventType, ev.ContainerId, w)
				}
				if ev.PodSandboxStatus.GetId() != podID || ev.CreatedAt == 0 {
					t.Errorf("subscriber %d: event %v lacks the pod status: %+v", i, w, ev.PodSandboxStatus)
				}
				if w == runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT {
					if len(ev.ContainersStatuses) != 1 || ev.ContainersStatuses[0].ExitCode != 2 {
						t.Errorf("stopped event statuses: %+v", ev.ContainersStatuses)
					}
				}
			case <-ctx.Done():
				t.Fatalf("subscriber %d: no %v event", i, w)
			}
		}
	}
}

func TestMetrics(t *testing.T) {
	port := freeTCPPort(t)
	d := harness.Start(t, bins, harness.Options{Config: fmt.Sprintf("[metrics]\naddress = \"127.0.0.1:%d\"\n", port)})
	if _, err := d.Runtime.Version(context.Background(), "v1"); err != nil {
		t.Fatal(err)
	}
	body := httpGet(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	for _, want := range []string{
		`berth_cri_requests_total{code="OK",method="/runtime.v1.RuntimeService/Version"} `,
		`berth_pods{state="ready"} 0`,
		`berth_cri_request_duration_seconds_bucket`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestPodMetricsAndResize(t *testing.T) {
	e := startPodEnv(t)
	ctx := context.Background()
	podCfg := podConfig(t, "metrics")
	podID := e.runPod(t, podCfg)
	id := e.startContainer(t, podID, podCfg, e.containerConfig("c", "sleep", "1000"))

	descs, err := e.d.Runtime.ListMetricDescriptors(ctx)
	if err != nil || len(descs) == 0 {
		t.Fatalf("ListMetricDescriptors: %v %v", descs, err)
	}
	pms, err := e.d.Runtime.ListPodSandboxMetrics(ctx)
	if err != nil || len(pms) != 1 || pms[0].PodSandboxId != podID || len(pms[0].ContainerMetrics) != 1 || pms[0].ContainerMetrics[0].ContainerId != id {
		t.Fatalf("ListPodSandboxMetrics: %+v %v", pms, err)
	}
	found := false
	for _, m := range pms[0].ContainerMetrics[0].Metrics {
		if m.Name == "container_memory_working_set_bytes" && m.GetValue().GetValue() > 0 {
			found = true
		}
	}
	if !found {
		t.Errorf("no non-zero working set among %v", pms[0].ContainerMetrics[0].Metrics)
	}

	if _, err := e.d.Runtime.UpdatePodSandboxResources(ctx, &runtimeapi.UpdatePodSandboxResourcesRequest{
		PodSandboxId: podID, Resources: &runtimeapi.LinuxContainerResources{CpuShares: 333},
	}); err != nil {
		t.Fatalf("UpdatePodSandboxResources: %v", err)
	}
	dir := filepath.Dir(cgroupDir(t, containerPid(t, e, id), "cpu"))
	if b, _ := os.ReadFile(filepath.Join(dir, "cpu.shares")); strings.TrimSpace(string(b)) != "333" {
		t.Errorf("pod cgroup %s cpu.shares = %q", dir, b)
	}
	if err := e.d.Runtime.CheckpointContainer(ctx, &runtimeapi.CheckpointContainerRequest{ContainerId: id}); err == nil || !strings.Contains(err.Error(), "Unimplemented") || !strings.Contains(err.Error(), "checkpoint") {
		t.Errorf("CheckpointContainer: %v", err)
	}
}
