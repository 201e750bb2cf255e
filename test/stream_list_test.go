package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	criclient "k8s.io/cri-client/pkg"
)

// kubelet's client, in streaming mode, lists through the Stream* RPCs.
func TestStreamingLists(t *testing.T) {
	e := startPodEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	podCfg := podConfig(t, "streamlist")
	podID := e.runPod(t, podCfg)
	id := e.startContainer(t, podID, podCfg, e.containerConfig("c", "sleep", "1000"))

	rt, err := criclient.NewRemoteRuntimeService(ctx, e.d.Endpoint(), time.Minute, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(ctx)
	pods, err := rt.ListPodSandbox(ctx, nil)
	if err != nil || len(pods) != 1 || pods[0].Id != podID {
		t.Fatalf("streamed ListPodSandbox: %v %v", pods, err)
	}
	ctrs, err := rt.ListContainers(ctx, nil)
	if err != nil || len(ctrs) != 1 || ctrs[0].Id != id {
		t.Fatalf("streamed ListContainers: %v %v", ctrs, err)
	}
	stats, err := rt.ListContainerStats(ctx, nil)
	if err != nil || len(stats) != 1 {
		t.Fatalf("streamed ListContainerStats: %v %v", stats, err)
	}
	img, err := criclient.NewRemoteImageService(ctx, e.d.Endpoint(), time.Minute, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close(ctx)
	imgs, err := img.ListImages(ctx, nil)
	if err != nil || len(imgs) != 1 {
		t.Fatalf("streamed ListImages: %v %v", imgs, err)
	}
	// The answers came through the Stream* calls, not the unary ones.
	for _, m := range []string{"StreamPodSandboxes", "StreamContainers", "StreamContainerStats", "StreamImages"} {
		if !strings.Contains(e.d.Log(), "/runtime.v1.RuntimeService/"+m) && !strings.Contains(e.d.Log(), "/runtime.v1.ImageService/"+m) {
			t.Errorf("berthd served no %s call", m)
		}
	}
}
