package cri

import (
	"context"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/cgroupmgr"
)

// Cgroups reads and updates cgroups by path (cmd/berthd adapts
// *cgroupmgr.Manager).
type Cgroups interface {
	Stats(ctx context.Context, path string) (*cgroupmgr.Stats, error)
	cgroupUpdater
}

// ContainerStats reports a container's CPU, memory and pid usage.
func (s *Service) ContainerStats(ctx context.Context, req *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	rec, err := s.containers.record(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.ContainerStatsResponse{Stats: s.containerStats(ctx, rec)}, nil
}

// ListContainerStats reports the stats of the containers filter selects.
func (s *Service) ListContainerStats(ctx context.Context, req *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	f := req.GetFilter()
	resp := &runtimeapi.ListContainerStatsResponse{}
	for _, rec := range s.containers.list() {
		if !hasPrefix(rec.ID, f.GetId()) || !hasPrefix(rec.PodID, f.GetPodSandboxId()) || !matchLabels(rec.Labels, f.GetLabelSelector()) {
			continue
		}
		resp.Stats = append(resp.Stats, s.containerStats(ctx, rec))
	}
	return resp, nil
}

func (s *Service) containerStats(ctx context.Context, rec *containerRecord) *runtimeapi.ContainerStats {
	out := &runtimeapi.ContainerStats{
		Attributes: &runtimeapi.ContainerAttributes{
			Id:          rec.ID,
			Metadata:    &runtimeapi.ContainerMetadata{Name: rec.Name, Attempt: rec.Attempt},
			Labels:      rec.Labels,
			Annotations: rec.Annotations,
		},
	}
	// An exited container's cgroup may be gone: report attributes only.
	if st, err := s.deps.Cgroups.Stats(ctx, rec.CgroupPath); err == nil {
		out.Cpu, out.Memory = cpuMemory(st)
	}
	return out
}

func cpuMemory(st *cgroupmgr.Stats) (*runtimeapi.CpuUsage, *runtimeapi.MemoryUsage) {
	ts := st.Timestamp.UnixNano()
	if st.Timestamp.IsZero() {
		ts = time.Now().UnixNano()
	}
	return &runtimeapi.CpuUsage{
			Timestamp:            ts,
			UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: st.CPUUsageNanos},
		}, &runtimeapi.MemoryUsage{
			Timestamp:       ts,
			WorkingSetBytes: &runtimeapi.UInt64Value{Value: st.MemoryWorkingSetBytes},
			UsageBytes:      &runtimeapi.UInt64Value{Value: st.MemoryUsageBytes},
			RssBytes:        &runtimeapi.UInt64Value{Value: st.MemoryRSSBytes},
		}
}

// PodSandboxStats reports a pod's cgroup usage and its containers' stats.
func (s *Service) PodSandboxStats(ctx context.Context, req *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	p, err := s.deps.Pods.Status(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	return &runtimeapi.PodSandboxStatsResponse{Stats: s.podStats(ctx, p.ID)}, nil
}

// ListPodSandboxStats reports the stats of the pods filter selects.
func (s *Service) ListPodSandboxStats(ctx context.Context, req *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	f := req.GetFilter()
	resp := &runtimeapi.ListPodSandboxStatsResponse{}
	for _, p := range s.deps.Pods.List(podListFilter(f.GetId())) {
		if !matchLabels(p.Labels, f.GetLabelSelector()) {
			continue
		}
		resp.Stats = append(resp.Stats, s.podStats(ctx, p.ID))
	}
	return resp, nil
}
