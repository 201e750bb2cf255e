package cri

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/runtime"
)

// UpdateContainerResources changes a container's cgroup limits in place.
func (s *Service) UpdateContainerResources(ctx context.Context, req *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	if req.GetLinux() == nil {
		return nil, fmt.Errorf("linux resources are required: %w", errdefs.ErrInvalidArgument)
	}
	e, err := s.containers.acquire(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	if err := s.deps.Runtime.UpdateResources(ctx, e.rec.ID, specResources(req.GetLinux())); err != nil {
		return nil, err
	}
	// ContainerStatus reports the resources in force: kubelet's in-place
	// resize reads them back.
	cfg, err := containerConfig(e.rec)
	if err != nil {
		return nil, err
	}
	if cfg.Linux == nil {
		cfg.Linux = &runtimeapi.LinuxContainerConfig{}
	}
	cfg.Linux.Resources = req.GetLinux()
	raw, err := proto.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	rec := *e.rec
	rec.Config = raw
	if err := s.containers.replace(e, &rec); err != nil {
		return nil, err
	}
	return &runtimeapi.UpdateContainerResourcesResponse{}, nil
}

// ReopenContainerLog makes the monitor reopen the container's log file,
// after kubelet renamed it for rotation. The container must be running.
func (s *Service) ReopenContainerLog(ctx context.Context, req *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	rec, err := s.containers.record(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	st, err := s.deps.Runtime.State(ctx, rec.ID)
	if err != nil {
		return nil, err
	}
	if st.Status != runtime.StatusRunning {
		return nil, fmt.Errorf("container %s is not running: %w", rec.ID, errdefs.ErrFailedPrecondition)
	}
	if err := s.deps.Runtime.ReopenLog(ctx, rec.ID); err != nil {
		return nil, err
	}
	return &runtimeapi.ReopenContainerLogResponse{}, nil
}
