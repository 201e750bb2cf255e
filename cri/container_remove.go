package cri

import (
	"context"
	"fmt"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/failpoint"
)

// RemoveContainer removes a container, killing it first if it runs. Per
// api.proto, removing a removed container "must not return an error".
func (s *Service) RemoveContainer(ctx context.Context, req *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	if err := s.removeContainer(ctx, req.GetContainerId()); err != nil && !errdefs.IsNotFound(err) {
		return nil, err
	}
	return &runtimeapi.RemoveContainerResponse{}, nil
}

func (s *Service) removeContainer(ctx context.Context, idOrPrefix string) error {
	e, err := s.containers.acquire(idOrPrefix)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	id := e.rec.ID
	if err := s.stopLocked(ctx, e, 0); err != nil {
		return fmt.Errorf("kill before remove: %w", err)
	}
	if err := s.deps.Runtime.Delete(ctx, id); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("delete container: %w", err)
	}
	s.deps.Failpoints.Hit(failpoint.CtrRemoveAfterDelete)
	// The runtime unmounted nothing of the rootfs; the image service
	// unmounts the overlay before it deletes the upper dir.
	for _, key := range append([]string{id}, e.rec.ImageVolumes...) {
		if err := s.deps.Images.RemoveRootfs(ctx, key); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("remove rootfs %s: %w", key, err)
		}
	}
	s.deps.Failpoints.Hit(failpoint.CtrRemoveAfterRootfs)
	if err := s.containers.delete(e); err != nil {
		return err
	}
	klog.InfoS("Removed container", "containerID", id, "podSandboxID", e.rec.PodID)
	s.events.waitStopped(id)
	s.emit(ctx, e.rec, runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT)
	return nil
}
