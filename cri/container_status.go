package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/runtime"
)

// ContainerStatus reports a container's state, times, exit code and reason.
func (s *Service) ContainerStatus(ctx context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	rec, err := s.containers.record(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	st, err := s.containerStatus(ctx, rec)
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.ContainerStatusResponse{Status: st}
	if req.GetVerbose() {
		info, err := json.Marshal(map[string]any{
			"id":          rec.ID,
			"sandboxID":   rec.PodID,
			"pid":         s.pid(ctx, rec.ID),
			"rootfs":      rec.Rootfs,
			"cgroupsPath": rec.CgroupPath,
			"process":     rec.Process,
		})
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"info": string(info)}
	}
	return resp, nil
}

func (s *Service) pid(ctx context.Context, id string) int {
	st, err := s.deps.Runtime.State(ctx, id)
	if err != nil {
		return 0
	}
	return st.Pid
}

// containerConfig decodes the ContainerConfig kept with the record.
func containerConfig(rec *containerRecord) (*runtimeapi.ContainerConfig, error) {
	var cfg runtimeapi.ContainerConfig
	if err := proto.Unmarshal(rec.Config, &cfg); err != nil {
		return nil, fmt.Errorf("container %s: stored config: %w", rec.ID, err)
	}
	return &cfg, nil
}

func (s *Service) containerStatus(ctx context.Context, rec *containerRecord) (*runtimeapi.ContainerStatus, error) {
	cfg, err := containerConfig(rec)
	if err != nil {
		return nil, err
	}
	status := &runtimeapi.ContainerStatus{
		Id:          rec.ID,
		Metadata:    &runtimeapi.ContainerMetadata{Name: rec.Name, Attempt: rec.Attempt},
		CreatedAt:   rec.CreatedAt.UnixNano(),
		Image:       &runtimeapi.ImageSpec{Image: rec.Image, UserSpecifiedImage: cfg.GetImage().GetUserSpecifiedImage()},
		ImageRef:    rec.ImageRef,
		ImageId:     rec.ImageID,
		Labels:      rec.Labels,
		Annotations: rec.Annotations,
		Mounts:      cfg.GetMounts(),
		LogPath:     rec.LogPath,
	}
	if res := cfg.GetLinux().GetResources(); res != nil {
		status.Resources = &runtimeapi.ContainerResources{Linux: res}
	}
	st, err := s.deps.Runtime.State(ctx, rec.ID)
	switch {
	case errdefs.IsNotFound(err):
		// The runtime's state is gone (a reboot cleared the state dir):
		// the container cannot be running.
		status.State = runtimeapi.ContainerState_CONTAINER_EXITED
		status.Reason = runtime.ReasonUnknown
		status.Message = "the container's runtime state is gone (node rebooted?)"
		status.ExitCode = 255
		return status, nil
	case err != nil:
		return nil, err
	}
	status.State = criState(st.Status)
	if !st.StartedAt.IsZero() {
		status.StartedAt = st.StartedAt.UnixNano()
	}
	if st.Status == runtime.StatusStopped || st.Status == runtime.StatusUnknown {
		status.FinishedAt = nonZeroNano(st.FinishedAt)
		status.ExitCode = int32(st.ExitCode)
		status.Reason = st.Reason
		status.Message = st.Message
	}
	return status, nil
}

func nonZeroNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func criState(s runtime.Status) runtimeapi.ContainerState {
	switch s {
	case runtime.StatusCreated:
		return runtimeapi.ContainerState_CONTAINER_CREATED
	case runtime.StatusRunning:
		return runtimeapi.ContainerState_CONTAINER_RUNNING
	case runtime.StatusStopped:
		return runtimeapi.ContainerState_CONTAINER_EXITED
	}
	return runtimeapi.ContainerState_CONTAINER_UNKNOWN
}

// ListContainers lists containers, filtered by ID prefix, state, pod and
// labels.
func (s *Service) ListContainers(ctx context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	f := req.GetFilter()
	resp := &runtimeapi.ListContainersResponse{}
	for _, rec := range s.containers.list() {
		if !hasPrefix(rec.ID, f.GetId()) || !hasPrefix(rec.PodID, f.GetPodSandboxId()) || !matchLabels(rec.Labels, f.GetLabelSelector()) {
			continue
		}
		st, err := s.containerStatus(ctx, rec)
		if err != nil {
			return nil, err
		}
		if f.GetState() != nil && f.GetState().GetState() != st.State {
			continue
		}
		resp.Containers = append(resp.Containers, &runtimeapi.Container{
			Id: rec.ID, PodSandboxId: rec.PodID, Metadata: st.Metadata, Image: st.Image,
			ImageRef: st.ImageRef, ImageId: st.ImageId, State: st.State, CreatedAt: st.CreatedAt,
			Labels: st.Labels, Annotations: st.Annotations,
		})
	}
	return resp, nil
}

func hasPrefix(id, prefix string) bool { return len(prefix) <= len(id) && id[:len(prefix)] == prefix }
