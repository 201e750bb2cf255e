package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/podsandbox"
)

// PodSandboxStatus reports a pod's state, IPs and namespaces.
func (s *Service) PodSandboxStatus(ctx context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	if req.GetPodSandboxId() == "" {
		return nil, fmt.Errorf("pod_sandbox_id is empty: %w", errdefs.ErrInvalidArgument)
	}
	p, err := s.deps.Pods.Status(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	resp := &runtimeapi.PodSandboxStatusResponse{Status: podStatus(p), Timestamp: time.Now().UnixNano()}
	if req.GetVerbose() {
		info, err := json.Marshal(p)
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"info": string(info)}
	}
	for _, rec := range s.containers.list() {
		if rec.PodID == p.ID {
			st, err := s.containerStatus(ctx, rec)
			if err == nil {
				resp.ContainersStatuses = append(resp.ContainersStatuses, st)
			}
		}
	}
	return resp, nil
}

func podState(p *podsandbox.Pod) runtimeapi.PodSandboxState {
	if p.State == podsandbox.StateReady {
		return runtimeapi.PodSandboxState_SANDBOX_READY
	}
	return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
}

func namespaceMode(host bool) runtimeapi.NamespaceMode {
	if host {
		return runtimeapi.NamespaceMode_NODE
	}
	return runtimeapi.NamespaceMode_POD
}

func podStatus(p *podsandbox.Pod) *runtimeapi.PodSandboxStatus {
	st := &runtimeapi.PodSandboxStatus{
		Id:             p.ID,
		Metadata:       &runtimeapi.PodSandboxMetadata{Name: p.Name, Namespace: p.Namespace, Uid: p.UID, Attempt: p.Attempt},
		State:          podState(p),
		CreatedAt:      p.CreatedAt.UnixNano(),
		Network:        &runtimeapi.PodSandboxNetworkStatus{},
		Labels:         p.Labels,
		Annotations:    p.Annotations,
		RuntimeHandler: p.RuntimeHandler,
	}
	pid := runtimeapi.NamespaceMode_CONTAINER
	switch {
	case p.HostPID:
		pid = runtimeapi.NamespaceMode_NODE
	case p.SharePID:
		pid = runtimeapi.NamespaceMode_POD
	}
	st.Linux = &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: &runtimeapi.NamespaceOption{
		Network: namespaceMode(p.HostNetwork),
		Ipc:     namespaceMode(p.HostIPC),
		Pid:     pid,
	}}}
	if len(p.IPs) > 0 {
		st.Network.Ip = p.IPs[0]
		for _, ip := range p.IPs[1:] {
			st.Network.AdditionalIps = append(st.Network.AdditionalIps, &runtimeapi.PodIP{Ip: ip})
		}
	}
	return st
}

// ListPodSandbox lists pods, filtered by ID prefix, state and labels.
func (s *Service) ListPodSandbox(ctx context.Context, req *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f := req.GetFilter()
	var lf podsandbox.ListFilter
	lf.ID = f.GetId()
	if f.GetState() != nil {
		lf.State = podsandbox.StateNotReady
		if f.GetState().GetState() == runtimeapi.PodSandboxState_SANDBOX_READY {
			lf.State = podsandbox.StateReady
		}
	}
	resp := &runtimeapi.ListPodSandboxResponse{}
	for _, p := range s.deps.Pods.List(lf) {
		if !matchLabels(p.Labels, f.GetLabelSelector()) {
			continue
		}
		st := podStatus(p)
		resp.Items = append(resp.Items, &runtimeapi.PodSandbox{
			Id: st.Id, Metadata: st.Metadata, State: st.State, CreatedAt: st.CreatedAt,
			Labels: st.Labels, Annotations: st.Annotations, RuntimeHandler: st.RuntimeHandler,
		})
	}
	return resp, nil
}

// matchLabels reports whether have carries every key of want with its value.
func matchLabels(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func podListFilter(idPrefix string) podsandbox.ListFilter {
	return podsandbox.ListFilter{ID: idPrefix}
}

func (s *Service) podStats(ctx context.Context, id string) *runtimeapi.PodSandboxStats {
	p, err := s.deps.Pods.Status(id)
	if err != nil {
		return &runtimeapi.PodSandboxStats{Attributes: &runtimeapi.PodSandboxAttributes{Id: id}}
	}
	st := podStatus(p)
	out := &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{Id: p.ID, Metadata: st.Metadata, Labels: p.Labels, Annotations: p.Annotations},
		Linux:      &runtimeapi.LinuxPodSandboxStats{},
	}
	if cs, err := s.deps.Cgroups.Stats(ctx, p.CgroupParent); err == nil {
		out.Linux.Cpu, out.Linux.Memory = cpuMemory(cs)
		out.Linux.Process = &runtimeapi.ProcessUsage{Timestamp: cs.Timestamp.UnixNano(), ProcessCount: &runtimeapi.UInt64Value{Value: cs.PidsCurrent}}
	}
	for _, rec := range s.containers.list() {
		if rec.PodID == p.ID {
			out.Linux.Containers = append(out.Linux.Containers, s.containerStats(ctx, rec))
		}
	}
	return out
}
