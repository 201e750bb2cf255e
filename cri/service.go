// Package cri serves the Kubernetes CRI (RuntimeService and ImageService, v1)
// on top of berth's core. It validates requests, translates CRI types to the
// core's plain Go types and maps the core's error kinds to gRPC status codes.
// Nothing below this package sees a CRI type.
package cri

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/failpoint"
	"github.com/berth-dev/berth/imageservice"
	"github.com/berth-dev/berth/podsandbox"
	"github.com/berth-dev/berth/runtime"
)

// NetworkStatus reports whether pod networking is usable.
type NetworkStatus interface {
	Status() (ready bool, reason string)
}

// PodManager runs pod sandboxes (*podsandbox.Manager).
type PodManager interface {
	Run(ctx context.Context, req podsandbox.RunRequest) (*podsandbox.Pod, error)
	Stop(ctx context.Context, idOrPrefix string) error
	Remove(ctx context.Context, idOrPrefix string) error
	Status(idOrPrefix string) (*podsandbox.Pod, error)
	List(f podsandbox.ListFilter) []*podsandbox.Pod
}

// ContainerRuntime runs container processes (*runtime.Runtime).
type ContainerRuntime interface {
	Create(ctx context.Context, podID, id string, spec *specs.Spec, opts runtime.CreateOptions) error
	Start(ctx context.Context, id string) error
	State(ctx context.Context, id string) (runtime.State, error)
	Kill(ctx context.Context, id string, sig syscall.Signal) error
	Wait(ctx context.Context, id string) (runtime.State, error)
	Delete(ctx context.Context, id string) error
	Exec(ctx context.Context, id string, opts runtime.ExecOptions) (int, error)
	Attach(ctx context.Context, id string, stdin io.Reader, stdout, stderr io.Writer, resize <-chan runtime.TermSize) error
	ReopenLog(ctx context.Context, id string) error
	UpdateResources(ctx context.Context, id string, res *specs.LinuxResources) error
}

// ImageStore pulls and keeps images and makes container rootfs
// (*imageservice.Service).
type ImageStore interface {
	Pull(ctx context.Context, ref string, auth *imageservice.Auth, progress func(imageservice.Progress)) (*imageservice.Image, error)
	Get(ctx context.Context, ref string) (*imageservice.Image, error)
	List(ctx context.Context, filter string) ([]*imageservice.Image, error)
	Remove(ctx context.Context, ref string) error
	FsInfo(ctx context.Context) (imageservice.FsUsage, error)
	PrepareRootfs(ctx context.Context, containerID, imageID string) (string, error)
	RemoveRootfs(ctx context.Context, containerID string) error
}

// Deps are the parts of the core the CRI services use.
type Deps struct {
	Network NetworkStatus
	Pods    PodManager
	Runtime ContainerRuntime
	Images  ImageStore
	Cgroups Cgroups
	// RootDir keeps the container records (RootDir/containers).
	RootDir string
	// RuntimeHandlers are the handler names Status lists; "" is the default.
	RuntimeHandlers []string
	// Config is berthd's configuration, shown by Status's verbose info
	// (crictl info).
	Config any
	// DefaultSeccomp is the RuntimeDefault seccomp profile.
	DefaultSeccomp func() *specs.LinuxSeccomp
	// Failpoints crash berthd between steps, for crash tests; nil in
	// production.
	Failpoints *failpoint.Set
}

// Service implements runtimeapi.RuntimeServiceServer and
// runtimeapi.ImageServiceServer. Methods not built yet fall through to the
// embedded Unimplemented servers, which answer codes.Unimplemented.
type Service struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	deps       Deps
	containers *containerStore
	stream     StreamServer
	events     *eventBus
	metrics    *Metrics // nil without [metrics] address
	grantable  []string
	closing    chan struct{} // closed by Shutdown
}

// New returns the CRI services over deps, loading the container records.
func New(deps Deps) (*Service, error) {
	if len(deps.RuntimeHandlers) == 0 {
		deps.RuntimeHandlers = []string{""}
	}
	store, err := newContainerStore(filepath.Join(deps.RootDir, "containers"))
	if err != nil {
		return nil, fmt.Errorf("cri: %w", err)
	}
	return &Service{deps: deps, containers: store, grantable: grantableCapabilities(), events: newEventBus(), closing: make(chan struct{})}, nil
}

// Shutdown ends the long-lived streams (container events) so that the gRPC
// server can stop gracefully. Call it once.
func (s *Service) Shutdown() { close(s.closing) }

// Register adds both CRI services to srv.
func (s *Service) Register(srv *grpc.Server) {
	runtimeapi.RegisterRuntimeServiceServer(srv, s)
	runtimeapi.RegisterImageServiceServer(srv, s)
}
