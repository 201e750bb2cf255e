package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	criclient "k8s.io/cri-client/pkg"

	"github.com/berth-dev/berth/test/harness"
)

// Pods are created and removed at concurrency 8 while berthd is SIGKILLed
// and restarted at random moments. Each worker behaves as kubelet does: a
// failed call is retried, after finding out from List what the failed call
// did. In the end no pod or container is left and nothing leaks.
//
// CI runs 32 pods; BERTH_CHURN_PODS=200 runs the larger figure.
func TestChurnWithCrashes(t *testing.T) {
	const workers = 8
	podsPerWorker := 4
	if n, err := strconv.Atoi(os.Getenv("BERTH_CHURN_PODS")); err == nil && n > 0 {
		podsPerWorker = (n + workers - 1) / workers
	}
	e := startIsolatedPodEnv(t, harness.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var wg sync.WaitGroup
	var running atomic.Int32
	var cycles, retries, succeeded atomic.Int64
	for w := range workers {
		// Each worker has its own connection, which outlives restarts
		// (gRPC reconnects); the harness's client is closed at each one.
		client, err := criclient.NewRemoteRuntimeService(ctx, e.d.Endpoint(), time.Minute, nil, false)
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close(context.Background())
		wg.Add(1)
		running.Add(1)
		go func() {
			defer wg.Done()
			defer running.Add(-1)
			cw := &churnWorker{t: t, e: e, rt: client, retries: &retries, succeeded: &succeeded}
			for i := range podsPerWorker {
				if !cw.cycle(ctx, fmt.Sprintf("churn-%d-%d", w, i)) {
					return
				}
				cycles.Add(1)
			}
		}()
	}

	// Crash berthd at random moments while the workers run. Before each
	// crash some call must have succeeded since the last restart: gRPC
	// clients back off longer after each failed reconnect, and a berthd
	// killed faster than they come back would starve them, which tests
	// nothing.
	kills := 0
	for running.Load() > 0 {
		before := succeeded.Load()
		time.Sleep(time.Duration(150+rand.IntN(600)) * time.Millisecond)
		for succeeded.Load() == before && running.Load() > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		if running.Load() == 0 {
			break
		}
		e.d.Restart(t, true)
		kills++
	}
	wg.Wait()
	t.Logf("%d pod cycles, %d berthd crashes, %d retried calls", cycles.Load(), kills, retries.Load())
	if t.Failed() {
		return
	}
	if kills == 0 || retries.Load() == 0 {
		t.Fatalf("the churn never met a crash (%d kills, %d retries)", kills, retries.Load())
	}
	// One more crash: the reconciled state has nothing left either.
	e.d.Restart(t, true)
	if pods, err := e.d.Runtime.ListPodSandbox(ctx, nil); err != nil || len(pods) != 0 {
		t.Fatalf("pods after the churn: %+v %v", pods, err)
	}
	if cs, err := e.d.Runtime.ListContainers(ctx, nil); err != nil || len(cs) != 0 {
		t.Fatalf("containers after the churn: %+v %v", cs, err)
	}
	assertNoLeaks(t, e)
}

type churnWorker struct {
	t         *testing.T
	e         *podEnv
	rt        internalapi.RuntimeService
	retries   *atomic.Int64
	succeeded *atomic.Int64 // calls that succeeded, across workers
}

// retry runs f until it succeeds, as kubelet retries a failed call. Calls
// fail while berthd is down or starting; anything else that persists is a
// bug. The budget is generous: a gRPC client that failed to reconnect a few
// times in a row waits seconds before its next try.
func (w *churnWorker) retry(ctx context.Context, what string, f func() error) bool {
	var err error
	for start := time.Now(); time.Since(start) < 2*time.Minute; {
		if err = f(); err == nil {
			w.succeeded.Add(1)
			return true
		}
		w.retries.Add(1)
		if ctx.Err() != nil {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	w.t.Errorf("%s keeps failing: %v", what, err)
	return false
}

// cycle runs one pod with a container, stops and removes it.
func (w *churnWorker) cycle(ctx context.Context, name string) bool {
	podCfg := podConfig(w.t, name)
	var podID string
	ok := w.retry(ctx, "RunPodSandbox "+name, func() error {
		id, err := w.rt.RunPodSandbox(ctx, podCfg, "")
		if err == nil {
			podID = id
			return nil
		}
		// The failed call may have made the pod (a crash after its
		// record): kubelet finds it by its metadata.
		pods, lerr := w.rt.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"app": name}})
		if lerr == nil && len(pods) == 1 && pods[0].Metadata.Uid == podCfg.Metadata.Uid {
			podID = pods[0].Id
			return nil
		}
		return err
	})
	if !ok {
		return false
	}
	cfg := w.e.containerConfig("c", "sh", "-c", "echo churn; exec sleep 1000")
	var ctrID string
	ok = w.retry(ctx, "CreateContainer in "+name, func() error {
		id, err := w.rt.CreateContainer(ctx, podID, cfg, podCfg)
		if err == nil {
			ctrID = id
			return nil
		}
		cs, lerr := w.rt.ListContainers(ctx, &runtimeapi.ContainerFilter{PodSandboxId: podID})
		if lerr == nil && len(cs) == 1 {
			ctrID = cs[0].Id
			return nil
		}
		return err
	})
	if !ok {
		return false
	}
	ok = w.retry(ctx, "StartContainer in "+name, func() error {
		err := w.rt.StartContainer(ctx, ctrID)
		if err == nil {
			return nil
		}
		st, serr := w.rt.ContainerStatus(ctx, ctrID, false)
		if serr == nil && st.Status.State != runtimeapi.ContainerState_CONTAINER_CREATED {
			return nil // the failed call started it (or it ran and exited)
		}
		return err
	})
	if !ok {
		return false
	}
	ok = w.retry(ctx, "status of "+name, func() error {
		st, err := w.rt.ContainerStatus(ctx, ctrID, false)
		if err != nil {
			return err
		}
		if s := st.Status.State; s != runtimeapi.ContainerState_CONTAINER_RUNNING {
			w.t.Errorf("container of %s is %v after its start, reason %q", name, s, st.Status.Reason)
		}
		return nil
	})
	if !ok {
		return false
	}
	ok = w.retry(ctx, "StopPodSandbox "+name, func() error { return w.rt.StopPodSandbox(ctx, podID) })
	ok = ok && w.retry(ctx, "RemovePodSandbox "+name, func() error { return w.rt.RemovePodSandbox(ctx, podID) })
	if !ok {
		return false
	}
	// Remove said OK: the pod must stay gone, crash or not.
	return w.retry(ctx, "status of removed "+name, func() error {
		_, err := w.rt.PodSandboxStatus(ctx, podID, false)
		if err == nil {
			w.t.Errorf("pod %s is there after RemovePodSandbox succeeded", name)
			return nil
		}
		if strings.Contains(err.Error(), "NotFound") {
			return nil
		}
		return err
	})
}
