package cri

import (
	"context"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/version"
)

// criAPIVersion is the CRI version berth implements.
const criAPIVersion = "v1"

// Version returns the runtime name and version. Per api.proto, "version" is
// the kubelet's API version, answered with 0.1.0 as other runtimes do.
func (s *Service) Version(ctx context.Context, req *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{
		Version:           "0.1.0",
		RuntimeName:       version.Name,
		RuntimeVersion:    version.Version(),
		RuntimeApiVersion: criAPIVersion,
	}, nil
}
