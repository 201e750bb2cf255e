package cri

import (
	"context"
	"encoding/json"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/runtime"
)

// Status reports the RuntimeReady and NetworkReady conditions kubelet gates on.
func (s *Service) Status(ctx context.Context, req *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	network := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: true}
	if s.deps.Network == nil {
		network.Status = false
		network.Reason = "NetworkPluginNotReady"
		network.Message = "no CNI manager configured"
	} else if ready, reason := s.deps.Network.Status(); !ready {
		network.Status = false
		network.Reason = "NetworkPluginNotReady"
		network.Message = reason
	}
	resp := &runtimeapi.StatusResponse{
		Status: &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
			{Type: runtimeapi.RuntimeReady, Status: true},
			network,
		}},
	}
	if req.GetVerbose() {
		cfg, err := json.Marshal(s.deps.Config)
		if err != nil {
			return nil, err
		}
		resp.Info = map[string]string{"config": string(cfg)}
	}
	for _, name := range s.deps.RuntimeHandlers {
		f := runtime.Features{RecursiveReadOnlyMounts: true}
		if hf, ok := s.deps.Runtime.(handlerFeatures); ok {
			f, _ = hf.HandlerFeatures(name)
		}
		resp.RuntimeHandlers = append(resp.RuntimeHandlers, &runtimeapi.RuntimeHandler{
			Name: name,
			Features: &runtimeapi.RuntimeHandlerFeatures{
				RecursiveReadOnlyMounts: f.RecursiveReadOnlyMounts,
				UserNamespaces:          f.UserNamespaces,
			},
		})
	}
	return resp, nil
}

// handlerFeatures is the part of *runtime.Runtime that knows what each
// runtime handler supports (an OCI runtime tells with its features
// command). Optional, so fakes of ContainerRuntime need not have it.
type handlerFeatures interface {
	HandlerFeatures(name string) (runtime.Features, bool)
}

// RuntimeConfig tells kubelet which cgroup driver berth uses: there is no
// systemd here, so cgroupfs.
func (s *Service) RuntimeConfig(ctx context.Context, req *runtimeapi.RuntimeConfigRequest) (*runtimeapi.RuntimeConfigResponse, error) {
	return &runtimeapi.RuntimeConfigResponse{
		Linux: &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: runtimeapi.CgroupDriver_CGROUPFS},
	}, nil
}
