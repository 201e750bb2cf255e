package cri

import (
	"context"
	"fmt"
	"syscall"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/berth-dev/berth/errdefs"
)

// extKill sends a signal to a running container's process, which the CRI
// cannot (StopContainer is the stop signal, a grace period, then SIGKILL).
// The monitor records the exit as for any other, so ContainerStatus and the
// container events report it.
func (x *Extensions) extKill(ctx context.Context, req *structpb.Struct) (*structpb.Struct, error) {
	f := req.GetFields()
	n := f["signal"].GetNumberValue()
	if n < 1 || n > 64 || n != float64(int(n)) {
		return nil, fmt.Errorf("signal %v is not a signal number: %w", n, errdefs.ErrInvalidArgument)
	}
	id, err := x.s.runningContainer(ctx, f["containerId"].GetStringValue())
	if err != nil {
		return nil, err
	}
	if err := x.s.deps.Runtime.Kill(ctx, id, syscall.Signal(int(n))); err != nil {
		return nil, err
	}
	return structOf(map[string]any{})
}
