// Package cri serves the Kubernetes CRI (RuntimeService and ImageService, v1)
// on top of berth's core. It validates requests, translates CRI types to the
// core's plain Go types and maps the core's error kinds to gRPC status codes.
// Nothing below this package sees a CRI type.
package cri

import (
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// NetworkStatus reports whether pod networking is usable.
type NetworkStatus interface {
	Status() (ready bool, reason string)
}

// Deps are the parts of the core the CRI services use.
type Deps struct {
	Network NetworkStatus
	// RuntimeHandlers are the handler names Status lists; "" is the default.
	RuntimeHandlers []string
}

// Service implements runtimeapi.RuntimeServiceServer and
// runtimeapi.ImageServiceServer. Methods not built yet fall through to the
// embedded Unimplemented servers, which answer codes.Unimplemented.
type Service struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	deps Deps
}

// New returns the CRI services over deps.
func New(deps Deps) *Service {
	if len(deps.RuntimeHandlers) == 0 {
		deps.RuntimeHandlers = []string{""}
	}
	return &Service{deps: deps}
}

// Register adds both CRI services to srv.
func (s *Service) Register(srv *grpc.Server) {
	runtimeapi.RegisterRuntimeServiceServer(srv, s)
	runtimeapi.RegisterImageServiceServer(srv, s)
}
