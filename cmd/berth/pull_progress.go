package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// pullProgressMethod is berthd's pull-with-progress stream (cri.PullProgressMethod).
const pullProgressMethod = "/berth.v1.Images/PullWithProgress"

// imagesClient is the CRI image client plus berthd's progress stream.
type imagesClient struct {
	runtimeapi.ImageServiceClient
	conn grpc.ClientConnInterface
}

// layerProgress is one progress message of the stream.
type layerProgress struct {
	digest, status string
	total, done    int64
}

// pullWithProgress pulls ref through berthd's progress stream, calling
// onProgress per message; it returns the image ID.
func (ic imagesClient) pullWithProgress(ctx context.Context, ref string, onProgress func(layerProgress)) (string, error) {
	stream, err := ic.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, pullProgressMethod)
	if err != nil {
		return "", err
	}
	req, err := structpb.NewStruct(map[string]any{"image": ref})
	if err != nil {
		return "", err
	}
	if err := stream.SendMsg(req); err != nil {
		return "", err
	}
	if err := stream.CloseSend(); err != nil {
		return "", err
	}
	imageRef := ""
	for {
		m := new(structpb.Struct)
		err := stream.RecvMsg(m)
		if errors.Is(err, io.EOF) {
			return imageRef, nil
		}
		if err != nil {
			return "", err
		}
		f := m.GetFields()
		if id := f["imageRef"].GetStringValue(); id != "" {
			imageRef = id
			continue
		}
		onProgress(layerProgress{
			digest: f["digest"].GetStringValue(),
			status: f["status"].GetStringValue(),
			total:  int64(f["total"].GetNumberValue()),
			done:   int64(f["done"].GetNumberValue()),
		})
	}
}

// layerBars draws one bar per layer, as docker pull does: "ID: Downloading
// [====>   ] 12.3MiB / 40.1MiB", then "ID: Pull complete". Without a
// terminal it prints each layer's final line only.
type layerBars struct {
	w    io.Writer
	p    *mpb.Progress // nil without a terminal
	mu   sync.Mutex
	bars map[string]*mpb.Bar
	done map[string]bool
}

func newLayerBars(ctx context.Context, w io.Writer) *layerBars {
	lb := &layerBars{w: w, bars: map[string]*mpb.Bar{}, done: map[string]bool{}}
	if isTerminal(w) {
		lb.p = mpb.NewWithContext(ctx, mpb.WithOutput(w), mpb.WithWidth(30), mpb.WithRefreshRate(120*time.Millisecond))
	}
	return lb
}

func shortDigest(d string) string {
	_, hex, ok := strings.Cut(d, ":")
	if !ok {
		hex = d
	}
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return hex
}

func (lb *layerBars) update(p layerProgress) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	id := shortDigest(p.digest)
	if lb.done[id] {
		return
	}
	final := ""
	switch p.status {
	case "done":
		final = "Pull complete"
	case "exists":
		final = "Already exists"
	}
	if lb.p == nil {
		if final != "" {
			lb.done[id] = true
			fmt.Fprintf(lb.w, "%s: %s\n", id, final)
		}
		return
	}
	bar, ok := lb.bars[id]
	if !ok {
		// A layer the store has is "Already exists" from its first event;
		// any other ends "Pull complete".
		onDone := "Pull complete"
		if p.status == "exists" {
			onDone = "Already exists"
		}
		bar = lb.p.New(p.total, mpb.BarStyle().Lbound("[").Rbound("]"),
			mpb.PrependDecorators(decor.Name(id+": "), decor.OnComplete(decor.Name("Downloading"), onDone)),
			mpb.AppendDecorators(decor.OnComplete(decor.CountersKibiByte("% .1f / % .1f"), "")),
			mpb.BarFillerClearOnComplete(),
		)
		lb.bars[id] = bar
	}
	if p.total > 0 {
		bar.SetTotal(p.total, false)
	}
	bar.SetCurrent(p.done)
	if final != "" {
		lb.done[id] = true
		bar.SetTotal(-1, true)
	}
}

// finish completes every bar (an aborted pull leaves them as they were).
func (lb *layerBars) finish(ok bool) {
	if lb.p == nil {
		return
	}
	lb.mu.Lock()
	for id, bar := range lb.bars {
		if !lb.done[id] {
			if ok {
				bar.SetTotal(-1, true)
			} else {
				bar.Abort(false)
			}
		}
	}
	lb.mu.Unlock()
	lb.p.Wait()
}
