package cri

import (
	"context"
	"fmt"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/failpoint"
	"github.com/berth-dev/berth/podsandbox"
)

// RunPodSandbox creates and starts a pod sandbox: its namespaces, cgroup,
// files, monitor and network. A failure at any step undoes all of them.
func (s *Service) RunPodSandbox(ctx context.Context, req *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	cfg := req.GetConfig()
	if cfg == nil {
		return nil, fmt.Errorf("config is required: %w", errdefs.ErrInvalidArgument)
	}
	if !slices.Contains(s.deps.RuntimeHandlers, req.GetRuntimeHandler()) {
		return nil, fmt.Errorf("runtime_handler %q is not configured (have %q): %w", req.GetRuntimeHandler(), s.deps.RuntimeHandlers, errdefs.ErrInvalidArgument)
	}
	rr, err := runRequest(cfg, req.GetRuntimeHandler())
	if err != nil {
		return nil, err
	}
	pod, err := s.deps.Pods.Run(ctx, rr)
	if err != nil {
		return nil, err
	}
	s.deps.Failpoints.Hit(failpoint.PodRunAfterRecord)
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: pod.ID}, nil
}

// runRequest translates a CRI PodSandboxConfig to podsandbox's request.
func runRequest(cfg *runtimeapi.PodSandboxConfig, handler string) (podsandbox.RunRequest, error) {
	md := cfg.GetMetadata()
	linux := cfg.GetLinux()
	sc := linux.GetSecurityContext()
	ns := sc.GetNamespaceOptions()
	rr := podsandbox.RunRequest{
		Name:           md.GetName(),
		Namespace:      md.GetNamespace(),
		UID:            md.GetUid(),
		Attempt:        md.GetAttempt(),
		Hostname:       cfg.GetHostname(),
		LogDirectory:   cfg.GetLogDirectory(),
		Labels:         cfg.GetLabels(),
		Annotations:    cfg.GetAnnotations(),
		RuntimeHandler: handler,
		CgroupParent:   linux.GetCgroupParent(),
		Sysctls:        linux.GetSysctls(),
		HostNetwork:    ns.GetNetwork() == runtimeapi.NamespaceMode_NODE,
		HostIPC:        ns.GetIpc() == runtimeapi.NamespaceMode_NODE,
		HostPID:        ns.GetPid() == runtimeapi.NamespaceMode_NODE,
		SharePID:       ns.GetPid() == runtimeapi.NamespaceMode_POD,
	}
	if md == nil {
		return rr, fmt.Errorf("config.metadata is required: %w", errdefs.ErrInvalidArgument)
	}
	if ns.GetNetwork() == runtimeapi.NamespaceMode_TARGET || ns.GetIpc() == runtimeapi.NamespaceMode_TARGET || ns.GetPid() == runtimeapi.NamespaceMode_TARGET {
		return rr, fmt.Errorf("linux.security_context.namespace_options: TARGET is only valid for containers: %w", errdefs.ErrInvalidArgument)
	}
	if u := ns.GetUsernsOptions(); u != nil && u.GetMode() == runtimeapi.NamespaceMode_POD {
		return rr, fmt.Errorf("linux.security_context.namespace_options.userns_options: user namespaces are not supported yet: %w", errdefs.ErrNotImplemented)
	}
	if dns := cfg.GetDnsConfig(); dns != nil {
		rr.DNS = &podsandbox.DNSConfig{Servers: dns.GetServers(), Searches: dns.GetSearches(), Options: dns.GetOptions()}
	}
	for i, pm := range cfg.GetPortMappings() {
		proto := strings.ToUpper(pm.GetProtocol().String())
		if _, ok := runtimeapi.Protocol_value[proto]; !ok {
			return rr, fmt.Errorf("port_mappings[%d].protocol %v is unknown: %w", i, pm.GetProtocol(), errdefs.ErrInvalidArgument)
		}
		rr.PortMappings = append(rr.PortMappings, podsandbox.PortMapping{
			HostPort:      pm.GetHostPort(),
			ContainerPort: pm.GetContainerPort(),
			Protocol:      proto,
			HostIP:        pm.GetHostIp(),
		})
	}
	if res := linux.GetResources(); res != nil {
		rr.Resources = specResources(res)
	} else if ov := linux.GetOverhead(); ov != nil {
		rr.Resources = specResources(ov)
	}
	rr.Security = podsandbox.SecurityContext{
		Privileged:         sc.GetPrivileged(),
		ReadonlyRootfs:     sc.GetReadonlyRootfs(),
		SupplementalGroups: sc.GetSupplementalGroups(),
	}
	if sc.GetSupplementalGroupsPolicy() == runtimeapi.SupplementalGroupsPolicy_Strict {
		rr.Security.SupplementalGroupsPolicy = "Strict"
	}
	if u := sc.GetRunAsUser(); u != nil {
		v := u.GetValue()
		rr.Security.RunAsUser = &v
	}
	if g := sc.GetRunAsGroup(); g != nil {
		v := g.GetValue()
		rr.Security.RunAsGroup = &v
	}
	return rr, nil
}

// specResources converts CRI resources to the OCI form cgroupmgr applies.
func specResources(res *runtimeapi.LinuxContainerResources) *specs.LinuxResources {
	s := &specs.Spec{Process: &specs.Process{}, Linux: &specs.Linux{Resources: &specs.LinuxResources{}}}
	applyResources(s, res)
	return s.Linux.Resources
}
