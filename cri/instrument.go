package cri

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/errdefs"
)

// UnaryInterceptor is the one decorator around every unary CRI call: it logs
// the call with the IDs it names, maps the core's error kinds to gRPC
// status codes (so handlers return plain wrapped errors) and counts it.
func (s *Service) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	ids := idsOf(req)
	klog.V(4).InfoS("CRI call", append([]any{"method", info.FullMethod}, ids...)...)
	resp, err := handler(ctx, req)
	err = ToStatus(err)
	s.metrics.observe(info.FullMethod, err, time.Since(start))
	if err != nil {
		klog.ErrorS(err, "CRI call failed", append([]any{"method", info.FullMethod, "duration", time.Since(start)}, ids...)...)
		return nil, err
	}
	klog.V(4).InfoS("CRI call done", append([]any{"method", info.FullMethod, "duration", time.Since(start)}, ids...)...)
	return resp, nil
}

// StreamInterceptor does for streaming calls what UnaryInterceptor does.
func (s *Service) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	klog.V(4).InfoS("CRI stream", "method", info.FullMethod)
	err := ToStatus(handler(srv, ss))
	s.metrics.observe(info.FullMethod, err, time.Since(start))
	if err != nil {
		klog.ErrorS(err, "CRI stream failed", "method", info.FullMethod)
		return err
	}
	return nil
}

// ToStatus converts an error of the core into a gRPC status error. Errors that
// already carry a status keep it.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	kinds := []struct {
		kind error
		code codes.Code
	}{
		{errdefs.ErrNotFound, codes.NotFound},
		{errdefs.ErrAlreadyExists, codes.AlreadyExists},
		{errdefs.ErrInvalidArgument, codes.InvalidArgument},
		{errdefs.ErrFailedPrecondition, codes.FailedPrecondition},
		{errdefs.ErrUnavailable, codes.Unavailable},
		{errdefs.ErrNotImplemented, codes.Unimplemented},
		{errdefs.ErrDeadlineExceeded, codes.DeadlineExceeded},
		{errdefs.ErrResourceExhausted, codes.ResourceExhausted},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{context.Canceled, codes.Canceled},
	}
	for _, k := range kinds {
		if errors.Is(err, k.kind) {
			return status.Error(k.code, err.Error())
		}
	}
	return status.Error(codes.Unknown, err.Error())
}

// idsOf returns the pod and container IDs a request names, as log key/values.
func idsOf(req any) []any {
	var kv []any
	if r, ok := req.(interface{ GetPodSandboxId() string }); ok && r.GetPodSandboxId() != "" {
		kv = append(kv, "podSandboxID", r.GetPodSandboxId())
	}
	if r, ok := req.(interface{ GetContainerId() string }); ok && r.GetContainerId() != "" {
		kv = append(kv, "containerID", r.GetContainerId())
	}
	return kv
}
