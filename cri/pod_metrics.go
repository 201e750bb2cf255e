package cri

import (
	"context"
	"fmt"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/cgroupmgr"
	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/podsandbox"
)

// metricDef is one cadvisor-compatible metric berth reports for pods and
// containers, with how to read it from cgroup stats.
type metricDef struct {
	name, help string
	typ        runtimeapi.MetricType
	value      func(*cgroupmgr.Stats) uint64
}

// cadvisor's names, so dashboards built on kubelet's /metrics/cadvisor keep
// working when kubelet takes pod metrics from the CRI.
var podMetricDefs = []metricDef{
	{"container_cpu_usage_seconds_total", "Cumulative cpu time consumed in nanoseconds.", runtimeapi.MetricType_COUNTER, func(s *cgroupmgr.Stats) uint64 { return s.CPUUsageNanos }},
	{"container_cpu_user_seconds_total", "Cumulative user cpu time consumed in nanoseconds.", runtimeapi.MetricType_COUNTER, func(s *cgroupmgr.Stats) uint64 { return s.CPUUserNanos }},
	{"container_cpu_system_seconds_total", "Cumulative system cpu time consumed in nanoseconds.", runtimeapi.MetricType_COUNTER, func(s *cgroupmgr.Stats) uint64 { return s.CPUSystemNanos }},
	{"container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed.", runtimeapi.MetricType_GAUGE, func(s *cgroupmgr.Stats) uint64 { return s.MemoryUsageBytes }},
	{"container_memory_working_set_bytes", "Current working set in bytes.", runtimeapi.MetricType_GAUGE, func(s *cgroupmgr.Stats) uint64 { return s.MemoryWorkingSetBytes }},
	{"container_memory_rss", "Size of RSS in bytes.", runtimeapi.MetricType_GAUGE, func(s *cgroupmgr.Stats) uint64 { return s.MemoryRSSBytes }},
	{"container_oom_events_total", "Count of out of memory events observed for the container.", runtimeapi.MetricType_COUNTER, func(s *cgroupmgr.Stats) uint64 { return s.OOMKillCount }},
	{"container_processes", "Number of processes running inside the container.", runtimeapi.MetricType_GAUGE, func(s *cgroupmgr.Stats) uint64 { return s.PidsCurrent }},
}

var metricLabelKeys = []string{"id", "name", "image", "pod", "namespace"}

// ListMetricDescriptors describes the metrics ListPodSandboxMetrics reports.
func (s *Service) ListMetricDescriptors(ctx context.Context, req *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	resp := &runtimeapi.ListMetricDescriptorsResponse{}
	for _, d := range podMetricDefs {
		resp.Descriptors = append(resp.Descriptors, &runtimeapi.MetricDescriptor{Name: d.name, Help: d.help, LabelKeys: metricLabelKeys})
	}
	return resp, nil
}

// ListPodSandboxMetrics reports the metrics of every ready pod and its
// containers, read from their cgroups.
func (s *Service) ListPodSandboxMetrics(ctx context.Context, req *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	resp := &runtimeapi.ListPodSandboxMetricsResponse{}
	for _, p := range s.deps.Pods.List(podsandbox.ListFilter{State: podsandbox.StateReady}) {
		pm := &runtimeapi.PodSandboxMetrics{PodSandboxId: p.ID}
		if st, err := s.deps.Cgroups.Stats(ctx, p.CgroupParent); err == nil {
			pm.Metrics = metricsOf(st, []string{p.CgroupParent, "", "", p.Name, p.Namespace})
		}
		for _, rec := range s.containers.list() {
			if rec.PodID != p.ID {
				continue
			}
			st, err := s.deps.Cgroups.Stats(ctx, rec.CgroupPath)
			if err != nil {
				continue // exited and gone
			}
			pm.ContainerMetrics = append(pm.ContainerMetrics, &runtimeapi.ContainerMetrics{
				ContainerId: rec.ID,
				Metrics:     metricsOf(st, []string{rec.CgroupPath, rec.Name, rec.Image, p.Name, p.Namespace}),
			})
		}
		resp.PodMetrics = append(resp.PodMetrics, pm)
	}
	return resp, nil
}

func metricsOf(st *cgroupmgr.Stats, labels []string) []*runtimeapi.Metric {
	out := make([]*runtimeapi.Metric, 0, len(podMetricDefs))
	for _, d := range podMetricDefs {
		out = append(out, &runtimeapi.Metric{
			Name: d.name, Timestamp: st.Timestamp.UnixNano(), MetricType: d.typ,
			LabelValues: labels, Value: &runtimeapi.UInt64Value{Value: d.value(st)},
		})
	}
	return out
}

// UpdatePodSandboxResources applies kubelet's pod-level resources to the
// pod's cgroup (in-place pod resize).
func (s *Service) UpdatePodSandboxResources(ctx context.Context, req *runtimeapi.UpdatePodSandboxResourcesRequest) (*runtimeapi.UpdatePodSandboxResourcesResponse, error) {
	p, err := s.deps.Pods.Status(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	res := req.GetResources()
	if res == nil {
		res = req.GetOverhead()
	}
	if res == nil {
		return nil, fmt.Errorf("resources or overhead is required: %w", errdefs.ErrInvalidArgument)
	}
	if err := s.deps.Cgroups.Update(ctx, p.CgroupParent, specResources(res)); err != nil {
		return nil, err
	}
	return &runtimeapi.UpdatePodSandboxResourcesResponse{}, nil
}

// CheckpointContainer is not built yet; say so plainly.
func (s *Service) CheckpointContainer(ctx context.Context, req *runtimeapi.CheckpointContainerRequest) (*runtimeapi.CheckpointContainerResponse, error) {
	return nil, fmt.Errorf("CheckpointContainer: berth cannot checkpoint containers yet (no CRIU support): %w", errdefs.ErrNotImplemented)
}

// cgroupUpdater is the part of Cgroups UpdatePodSandboxResources uses.
type cgroupUpdater interface {
	Update(ctx context.Context, path string, res *specs.LinuxResources) error
}
