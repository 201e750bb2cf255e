package cri

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/errdefs"
)

// Annotations and labels by which berth's CLI asks for docker's --rm.
const (
	// AutoRemoveAnnotation on a container asks berthd to remove it when it
	// exits, as dockerd does for `docker run --rm`, so that `berth run -d
	// --rm` works with no client left to do it.
	AutoRemoveAnnotation = "io.berth.auto-remove"
	// CLILabel marks the one-container pods berth's CLI makes; auto-remove
	// removes such a pod with its last container.
	CLILabel = "io.berth.cli"
)

// autoRemove removes an exited container that asked for it, and its pod
// when the pod is the CLI's and now empty. It removes the container's log
// file and the log dir only if that is then empty: berthd never deletes a
// tree a client named.
func (s *Service) autoRemove(rec *containerRecord) {
	if rec.Annotations[AutoRemoveAnnotation] != "true" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.removeContainer(ctx, rec.ID); err != nil && !errdefs.IsNotFound(err) {
		klog.ErrorS(err, "Auto-remove of an exited container failed", "containerID", rec.ID, "podSandboxID", rec.PodID)
		return
	}
	if rec.LogPath != "" {
		if err := os.Remove(rec.LogPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			klog.ErrorS(err, "Removing the log of an auto-removed container failed", "containerID", rec.ID)
		}
	}
	p, err := s.deps.Pods.Status(rec.PodID)
	if err != nil || p.Labels[CLILabel] != "true" {
		return
	}
	for _, other := range s.containers.list() {
		if other.PodID == p.ID {
			return
		}
	}
	if err := s.deps.Pods.Stop(ctx, p.ID); err != nil && !errdefs.IsNotFound(err) {
		klog.ErrorS(err, "Auto-remove: stopping the pod failed", "podSandboxID", p.ID)
		return
	}
	if err := s.deps.Pods.Remove(ctx, p.ID); err != nil && !errdefs.IsNotFound(err) {
		klog.ErrorS(err, "Auto-remove: removing the pod failed", "podSandboxID", p.ID)
		return
	}
	if p.LogDirectory != "" && rec.LogPath != "" && filepath.Dir(rec.LogPath) == filepath.Clean(p.LogDirectory) {
		_ = os.Remove(p.LogDirectory) // only if empty
	}
	klog.InfoS("Auto-removed an exited container and its pod", "containerID", rec.ID, "podSandboxID", p.ID)
}
