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
	"github.com/berth-dev/berth/runtime"
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
	if rr.UserNS != nil {
		// Status tells kubelet which handlers support user namespaces
		// (the built-in runtime does; an OCI runtime says so itself).
		var f runtime.Features
		if hf, ok := s.deps.Runtime.(handlerFeatures); ok {
			f, _ = hf.HandlerFeatures(req.GetRuntimeHandler())
		}
		if !f.UserNamespaces {
			return nil, fmt.Errorf("runtime handler %q does not support user namespaces: %w", req.GetRuntimeHandler(), errdefs.ErrNotImplemented)
		}
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
	if err := validateUserns(ns.GetUsernsOptions()); err != nil {
		return rr, fmt.Errorf("linux.security_context.namespace_options.userns_options: %w", err)
	}
	if u := ns.GetUsernsOptions(); u != nil && u.GetMode() == runtimeapi.NamespaceMode_POD {
		if rr.HostNetwork || rr.HostIPC || rr.HostPID {
			return rr, fmt.Errorf("linux.security_context.namespace_options: a pod with a user namespace cannot use the node's network, ipc or pid namespace: %w", errdefs.ErrInvalidArgument)
		}
		idmap := func(m *runtimeapi.IDMapping) specs.LinuxIDMapping {
			return specs.LinuxIDMapping{ContainerID: m.GetContainerId(), HostID: m.GetHostId(), Size: m.GetLength()}
		}
		rr.UserNS = &podsandbox.UserNamespace{UID: idmap(u.GetUids()[0]), GID: idmap(u.GetGids()[0])}
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

// validateUserns checks a pod's user namespace options as kubelet sends them
// (hostUsers: false): mode POD with exactly one uid and one gid mapping that
// maps container root. Mode NODE (the host's user namespace) takes no
// mappings; CONTAINER and TARGET are not modes a pod can have.
func validateUserns(u *runtimeapi.UserNamespace) error {
	if u == nil {
		return nil
	}
	switch u.GetMode() {
	case runtimeapi.NamespaceMode_NODE:
		if len(u.GetUids()) != 0 || len(u.GetGids()) != 0 {
			return fmt.Errorf("mode NODE takes no uid or gid mappings: %w", errdefs.ErrInvalidArgument)
		}
		return nil
	case runtimeapi.NamespaceMode_POD:
	default:
		return fmt.Errorf("mode %v is not supported for a pod (only NODE or POD): %w", u.GetMode(), errdefs.ErrInvalidArgument)
	}
	for _, m := range []struct {
		kind string
		maps []*runtimeapi.IDMapping
	}{{"uids", u.GetUids()}, {"gids", u.GetGids()}} {
		// kubelet sends one range per kind; several could overlap or
		// leave holes, which nobody needs.
		if len(m.maps) != 1 {
			return fmt.Errorf("%s: want exactly one mapping, got %d: %w", m.kind, len(m.maps), errdefs.ErrInvalidArgument)
		}
		id := m.maps[0]
		if id.GetLength() == 0 {
			return fmt.Errorf("%s: mapping of length 0: %w", m.kind, errdefs.ErrInvalidArgument)
		}
		if id.GetContainerId() != 0 {
			return fmt.Errorf("%s: container id 0 (root) is not mapped (the mapping starts at %d): %w", m.kind, id.GetContainerId(), errdefs.ErrInvalidArgument)
		}
		if uint64(id.GetHostId())+uint64(id.GetLength()) > 1<<32 {
			return fmt.Errorf("%s: host range %d+%d overflows: %w", m.kind, id.GetHostId(), id.GetLength(), errdefs.ErrInvalidArgument)
		}
		// A range holding host id 0 would overlap the host's root: the
		// user namespace would isolate nothing.
		if id.GetHostId() == 0 {
			return fmt.Errorf("%s: the mapping covers host id 0: %w", m.kind, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// specResources converts CRI resources to the OCI form cgroupmgr applies.
func specResources(res *runtimeapi.LinuxContainerResources) *specs.LinuxResources {
	s := &specs.Spec{Process: &specs.Process{}, Linux: &specs.Linux{Resources: &specs.LinuxResources{}}}
	applyResources(s, res)
	return s.Linux.Resources
}
