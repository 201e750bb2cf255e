package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// BenchmarkPodReady measures pod-ready latency as kubelet sees it:
// RunPodSandbox start → the container running, with its phases, for a
// host-network pod and a CNI (bridge) pod. Teardown is outside the timing.
//
//	go test -run '^$' -bench PodReady -benchtime 20x ./test/
func BenchmarkPodReady(b *testing.B) {
	for _, hostNet := range []bool{true, false} {
		name := "cni"
		if hostNet {
			name = "hostnetwork"
		}
		b.Run(name, func(b *testing.B) {
			e := startPodEnv(b)
			ctx := context.Background()
			var run, create, start time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				cfg := podConfig(b, fmt.Sprintf("bench-%s-%d", name, i))
				if hostNet {
					cfg.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
				}
				t0 := time.Now()
				podID, err := e.d.Runtime.RunPodSandbox(ctx, cfg, "")
				if err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				id, err := e.d.Runtime.CreateContainer(ctx, podID, e.containerConfig("c", "sleep", "1000"), cfg)
				if err != nil {
					b.Fatal(err)
				}
				t2 := time.Now()
				if err := e.d.Runtime.StartContainer(ctx, id); err != nil {
					b.Fatal(err)
				}
				t3 := time.Now()
				run += t1.Sub(t0)
				create += t2.Sub(t1)
				start += t3.Sub(t2)
				b.StopTimer()
				if err := e.d.Runtime.StopPodSandbox(ctx, podID); err != nil {
					b.Fatal(err)
				}
				if err := e.d.Runtime.RemovePodSandbox(ctx, podID); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			n := float64(b.N)
			b.ReportMetric(float64(run.Microseconds())/n/1000, "run-ms/op")
			b.ReportMetric(float64(create.Microseconds())/n/1000, "create-ms/op")
			b.ReportMetric(float64(start.Microseconds())/n/1000, "start-ms/op")
		})
	}
}
