package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/failpoint"
)

// StartContainer lets a created container exec its program. Starting a
// container twice, or one that exited, is FailedPrecondition (the runtime's
// state machine says so).
func (s *Service) StartContainer(ctx context.Context, req *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	e, err := s.containers.acquire(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	s.deps.Failpoints.Hit(failpoint.CtrStartBefore)
	if err := s.deps.Runtime.Start(ctx, e.rec.ID); err != nil {
		return nil, err
	}
	s.deps.Failpoints.Hit(failpoint.CtrStartAfter)
	s.emit(ctx, e.rec, runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT)
	s.watchExit(e.rec)
	return &runtimeapi.StartContainerResponse{}, nil
}
