package cri

import (
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/imageservice"
)

// PullProgressMethod is berth's own streaming RPC beside the CRI services:
// an image pull that reports each layer's progress, for the CLI's progress
// bars (the CRI's PullImage is one blocking call). Messages are
// google.protobuf.Struct, so no generated code is needed:
//
//	request:   {"image": "busybox", "username": "", "password": ""}
//	responses: {"digest": "sha256:…", "status": "downloading", "total": N, "done": N}
//	last:      {"imageRef": "sha256:…"}
const PullProgressMethod = "/berth.v1.Images/PullWithProgress"

// progressInterval throttles a layer's "downloading" updates.
const progressInterval = 100 * time.Millisecond

// pullProgressServer is the handler type RegisterService checks.
type pullProgressServer interface {
	PullWithProgress(req *structpb.Struct, stream grpc.ServerStream) error
}

// pullProgressDesc describes the service as generated code would.
var pullProgressDesc = grpc.ServiceDesc{
	ServiceName: "berth.v1.Images",
	HandlerType: (*pullProgressServer)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "PullWithProgress",
		ServerStreams: true,
		Handler: func(srv any, stream grpc.ServerStream) error {
			req := new(structpb.Struct)
			if err := stream.RecvMsg(req); err != nil {
				return err
			}
			return srv.(pullProgressServer).PullWithProgress(req, stream)
		},
	}},
}

// RegisterPullProgress adds the pull-progress service to srv.
func (s *Service) RegisterPullProgress(srv *grpc.Server) { srv.RegisterService(&pullProgressDesc, s) }

// PullWithProgress pulls an image, streaming per-layer progress.
func (s *Service) PullWithProgress(req *structpb.Struct, stream grpc.ServerStream) error {
	f := req.GetFields()
	ref := f["image"].GetStringValue()
	if ref == "" {
		return fmt.Errorf("image is empty: %w", errdefs.ErrInvalidArgument)
	}
	var auth *imageservice.Auth
	if u := f["username"].GetStringValue(); u != "" {
		auth = &imageservice.Auth{Username: u, Password: f["password"].GetStringValue()}
	}
	type seen struct {
		status imageservice.ProgressStatus
		at     time.Time
	}
	last := map[string]seen{}
	// layers are the digests announced as layers. imageservice announces
	// each layer ("waiting", or "exists" when the store has it) before it
	// downloads; the config blob is only ever "downloading". docker shows
	// layers alone, so a digest not announced is not passed on.
	layers := map[string]bool{}
	var sendErr error
	// imageservice calls progress from one goroutine at a time.
	progress := func(p imageservice.Progress) {
		if sendErr != nil || p.Digest == "" {
			return
		}
		if p.Status == imageservice.ProgressWaiting || p.Status == imageservice.ProgressExists {
			layers[p.Digest] = true
		}
		if !layers[p.Digest] {
			return
		}
		prev := last[p.Digest]
		now := time.Now()
		if p.Status == prev.status && now.Sub(prev.at) < progressInterval {
			return
		}
		last[p.Digest] = seen{p.Status, now}
		msg, err := structpb.NewStruct(map[string]any{
			"digest": p.Digest, "status": string(p.Status), "total": float64(p.Total), "done": float64(p.Done),
		})
		if err == nil {
			sendErr = stream.SendMsg(msg)
		}
	}
	start := time.Now()
	img, err := s.deps.Images.Pull(stream.Context(), ref, auth, progress)
	if err != nil {
		return err
	}
	s.metrics.pulled(img.Size, time.Since(start))
	if sendErr != nil {
		return sendErr
	}
	msg, err := structpb.NewStruct(map[string]any{"imageRef": img.ID})
	if err != nil {
		return err
	}
	return stream.SendMsg(msg)
}
