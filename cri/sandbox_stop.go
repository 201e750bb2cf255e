package cri

import (
	"context"
	"fmt"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/failpoint"
)

// StopPodSandbox kills the pod's containers and tears down its network.
// Per api.proto it "is idempotent, and must not return an error if all
// relevant resources have already been reclaimed": an unknown pod is OK.
func (s *Service) StopPodSandbox(ctx context.Context, req *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	id, err := s.resolvePod(req.GetPodSandboxId())
	if errdefs.IsNotFound(err) {
		return &runtimeapi.StopPodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	for _, rec := range s.containers.list() {
		if rec.PodID != id {
			continue
		}
		// The sandbox is going: no grace period, as containerd does.
		if err := s.stopContainer(ctx, rec.ID, 0); err != nil && !errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("stop container %s of pod %s: %w", rec.ID, id, err)
		}
	}
	s.deps.Failpoints.Hit(failpoint.PodStopAfterContainer)
	if err := s.deps.Pods.Stop(ctx, id); err != nil && !errdefs.IsNotFound(err) {
		return nil, err
	}
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

// RemovePodSandbox removes the pod's containers and everything the pod
// holds. Per api.proto, removing a removed sandbox is not an error.
func (s *Service) RemovePodSandbox(ctx context.Context, req *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	id, err := s.resolvePod(req.GetPodSandboxId())
	if errdefs.IsNotFound(err) {
		return &runtimeapi.RemovePodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, err
	}
	for _, rec := range s.containers.list() {
		if rec.PodID != id {
			continue
		}
		if err := s.removeContainer(ctx, rec.ID); err != nil && !errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("remove container %s of pod %s: %w", rec.ID, id, err)
		}
	}
	s.deps.Failpoints.Hit(failpoint.PodRemoveAfterCtrs)
	if err := s.deps.Pods.Remove(ctx, id); err != nil && !errdefs.IsNotFound(err) {
		return nil, err
	}
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}

// resolvePod turns an ID or unique prefix into the pod's full ID.
func (s *Service) resolvePod(idOrPrefix string) (string, error) {
	if idOrPrefix == "" {
		return "", fmt.Errorf("pod_sandbox_id is empty: %w", errdefs.ErrInvalidArgument)
	}
	p, err := s.deps.Pods.Status(idOrPrefix)
	if err != nil {
		return "", err
	}
	return p.ID, nil
}
