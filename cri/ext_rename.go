package cri

import (
	"context"
	"fmt"
	"maps"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/berth-dev/berth/errdefs"
)

// The labels the berth CLI puts on its containers: which ones it made, and
// the docker-style name it shows. A rename changes only the name label;
// the CRI metadata name (kubelet's key for a container) stays as it was.
const (
	cliLabel     = "io.berth.cli"
	cliNameLabel = "io.berth.name"
)

// extRename gives a container made by the CLI a new name, refusing a name
// another container has.
func (x *Extensions) extRename(ctx context.Context, req *structpb.Struct) (*structpb.Struct, error) {
	f := req.GetFields()
	name := f["name"].GetStringValue()
	if name == "" {
		return nil, fmt.Errorf("name is empty: %w", errdefs.ErrInvalidArgument)
	}
	x.renameMu.Lock()
	defer x.renameMu.Unlock()
	e, err := x.s.containers.acquire(f["containerId"].GetStringValue())
	if err != nil {
		return nil, err
	}
	defer e.mu.Unlock()
	if e.rec.Labels[cliLabel] != "true" {
		return nil, fmt.Errorf("container %s was not made by the berth CLI; its name is kubelet's: %w", e.rec.ID, errdefs.ErrFailedPrecondition)
	}
	for _, rec := range x.s.containers.list() {
		if rec.ID != e.rec.ID && rec.Labels[cliLabel] == "true" && rec.Labels[cliNameLabel] == name {
			return nil, &kindError{fmt.Sprintf("Conflict. The container name \"/%s\" is already in use by container %q. You have to remove (or rename) that container to be able to reuse that name.", name, rec.ID), errdefs.ErrAlreadyExists}
		}
	}
	rec := *e.rec
	rec.Labels = maps.Clone(rec.Labels)
	rec.Labels[cliNameLabel] = name
	if err := x.s.containers.replace(e, &rec); err != nil {
		return nil, err
	}
	return structOf(map[string]any{})
}
