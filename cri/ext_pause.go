package cri

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/berth-dev/berth/errdefs"
)

// pauser is what pausing needs of the runtime (the cgroup freezer).
type pauser interface {
	Pause(ctx context.Context, id string) error
	Resume(ctx context.Context, id string) error
	Paused(ctx context.Context, id string) (bool, error)
}

func (x *Extensions) pauser() (pauser, error) {
	p, ok := x.s.deps.Runtime.(pauser)
	if !ok {
		return nil, fmt.Errorf("this runtime cannot pause containers: %w", errdefs.ErrNotImplemented)
	}
	return p, nil
}

// extPause freezes a running container, as docker pause does. The CRI has
// no paused state: ContainerStatus keeps saying RUNNING, and Paused tells.
func (x *Extensions) extPause(ctx context.Context, req *structpb.Struct) (*structpb.Struct, error) {
	p, err := x.pauser()
	if err != nil {
		return nil, err
	}
	id, err := x.s.runningContainer(ctx, req.GetFields()["containerId"].GetStringValue())
	if err != nil {
		return nil, err
	}
	if paused, err := p.Paused(ctx, id); err == nil && paused {
		return nil, fmt.Errorf("container %s is already paused: %w", id, errdefs.ErrFailedPrecondition)
	}
	if err := p.Pause(ctx, id); err != nil {
		return nil, err
	}
	return structOf(map[string]any{})
}

// extUnpause thaws a paused container.
func (x *Extensions) extUnpause(ctx context.Context, req *structpb.Struct) (*structpb.Struct, error) {
	p, err := x.pauser()
	if err != nil {
		return nil, err
	}
	rec, err := x.s.containers.record(req.GetFields()["containerId"].GetStringValue())
	if err != nil {
		return nil, err
	}
	if err := p.Resume(ctx, rec.ID); err != nil {
		return nil, err
	}
	return structOf(map[string]any{})
}

// extPaused lists the IDs of the paused containers.
func (x *Extensions) extPaused(ctx context.Context, _ *structpb.Struct) (*structpb.Struct, error) {
	p, err := x.pauser()
	if err != nil {
		return nil, err
	}
	ids := []any{}
	for _, rec := range x.s.containers.list() {
		if paused, err := p.Paused(ctx, rec.ID); err == nil && paused {
			ids = append(ids, rec.ID)
		}
	}
	return structOf(map[string]any{"ids": ids})
}
