package cri

import (
	"context"
	"errors"
	"time"

	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/runtime"
)

// Reconciler is what start-up reconciliation needs beyond the CRI paths.
type Reconciler interface {
	// ListRuntime lists the containers the runtime has state for.
	ListRuntime(ctx context.Context) ([]runtime.Container, error)
	// RootfsIDs lists the containers with a prepared rootfs.
	RootfsIDs(ctx context.Context) ([]string, error)
	// CleanupPodOrphans undoes pods a crash left half-made.
	CleanupPodOrphans(ctx context.Context, perPod time.Duration) error
}

// perObjectTimeout bounds the clean-up of one object at start-up, so one
// broken container cannot block the others or berthd's readiness.
const perObjectTimeout = time.Minute

// Reconcile compares what berth recorded with what is there after a
// restart, and removes what a crash left half-made: runtime state and
// rootfs with no container record (a CreateContainer that died before its
// record was written), containers whose pod record is gone (a
// RemovePodSandbox that died after removing the pod), and half-made pods.
//
// Recovery contract: a container exists for the CRI exactly when its record
// exists (CreateContainer writes it last, RemoveContainer deletes it last);
// everything else is derived and can be rebuilt or dropped.
func (s *Service) Reconcile(ctx context.Context, r Reconciler) error {
	var errs []error
	if err := r.CleanupPodOrphans(ctx, perObjectTimeout); err != nil {
		errs = append(errs, err)
	}
	known := map[string]bool{}
	for _, rec := range s.containers.list() {
		if _, err := s.deps.Pods.Status(rec.PodID); errdefs.IsNotFound(err) {
			klog.InfoS("Removing container of a removed pod", "containerID", rec.ID, "podSandboxID", rec.PodID)
			cctx, cancel := context.WithTimeout(ctx, perObjectTimeout)
			err := s.removeContainer(cctx, rec.ID)
			cancel()
			if err != nil {
				errs = append(errs, err)
			}
			continue
		}
		known[rec.ID] = true
		for _, key := range rec.ImageVolumes {
			known[key] = true
		}
	}
	ctrs, err := r.ListRuntime(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	for _, c := range ctrs {
		if known[c.ID] {
			continue
		}
		klog.InfoS("Deleting runtime state of an unrecorded container", "containerID", c.ID, "podSandboxID", c.PodID)
		cctx, cancel := context.WithTimeout(ctx, perObjectTimeout)
		if err := s.deps.Runtime.Delete(cctx, c.ID); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
		cancel()
	}
	ids, err := r.RootfsIDs(ctx)
	if err != nil {
		errs = append(errs, err)
	}
	for _, id := range ids {
		if known[id] {
			continue
		}
		klog.InfoS("Removing the rootfs of an unrecorded container", "containerID", id)
		cctx, cancel := context.WithTimeout(ctx, perObjectTimeout)
		if err := s.deps.Images.RemoveRootfs(cctx, id); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
		cancel()
	}
	s.watchRunning(ctx)
	return errors.Join(errs...)
}
