package runtime

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/errdefs"
)

// Pause freezes a running container's processes (its cgroup's freezer), as
// docker pause does. A container without a cgroup cannot be paused.
func (r *Runtime) Pause(ctx context.Context, id string) error {
	cg, err := r.containerCgroup(ctx, id)
	if err != nil {
		return err
	}
	st, err := r.State(ctx, id)
	if err != nil {
		return err
	}
	if st.Status != StatusRunning {
		return fmt.Errorf("container %s is not running: %w", id, errdefs.ErrFailedPrecondition)
	}
	err = cg.Freeze()
	if errors.Is(err, errdefs.ErrDeadlineExceeded) {
		// A process caught mid-execve (waiting for its other, frozen,
		// threads to die) holds the freezer in FREEZING; Freeze gave up
		// and thawed, which lets the execve finish. Once more.
		err = cg.Freeze()
	}
	if err != nil {
		return fmt.Errorf("pause container %s: %w", id, err)
	}
	return nil
}

// Resume thaws a paused container.
func (r *Runtime) Resume(ctx context.Context, id string) error {
	cg, err := r.containerCgroup(ctx, id)
	if err != nil {
		return err
	}
	frozen, err := cg.Frozen()
	if err != nil {
		return err
	}
	if !frozen {
		return fmt.Errorf("container %s is not paused: %w", id, errdefs.ErrFailedPrecondition)
	}
	if err := cg.Thaw(); err != nil {
		return fmt.Errorf("unpause container %s: %w", id, err)
	}
	return nil
}

// Paused tells whether the container is paused.
func (r *Runtime) Paused(ctx context.Context, id string) (bool, error) {
	m, err := r.readMeta(id)
	if err != nil {
		return false, err
	}
	return r.paused(ctx, m, id)
}

// paused is Paused for a container whose meta is read.
func (r *Runtime) paused(ctx context.Context, m *meta, id string) (bool, error) {
	cg, err := r.metaCgroup(ctx, m, id)
	if errdefs.IsNotFound(err) || errors.Is(err, errdefs.ErrFailedPrecondition) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return cg.Frozen()
}

// containerCgroup loads container id's cgroup.
func (r *Runtime) containerCgroup(ctx context.Context, id string) (Cgroup, error) {
	m, err := r.readMeta(id)
	if err != nil {
		return nil, err
	}
	return r.metaCgroup(ctx, m, id)
}

// metaCgroup loads the cgroup recorded in container id's meta.
func (r *Runtime) metaCgroup(ctx context.Context, m *meta, id string) (Cgroup, error) {
	if r.cfg.Cgroups == nil || m.CgroupPath == "" {
		return nil, fmt.Errorf("container %s has no cgroup to freeze: %w", id, errdefs.ErrFailedPrecondition)
	}
	return r.cfg.Cgroups.Load(ctx, m.CgroupPath)
}

// thawIfPaused thaws a paused container, so that a signal sent to it acts
// and its processes can exit (the freezer holds even SIGKILL until thawed).
func (r *Runtime) thawIfPaused(ctx context.Context, m *meta, id string) {
	cg, err := r.metaCgroup(ctx, m, id)
	if err != nil {
		return
	}
	if frozen, err := cg.Frozen(); err != nil || !frozen {
		return
	}
	if err := cg.Thaw(); err != nil {
		klog.ErrorS(err, "Thaw a paused container", "podID", m.PodID, "containerID", id)
	}
}
