package e2e

import (
	"context"
	"fmt"
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
