package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/atomicfile"
	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/runtime/monitor"
)

// CreateOptions are the per-container settings that are not in the spec.
type CreateOptions struct {
	// LogPath is the CRI log file for the container's stdout and stderr
	// ("" discards them).
	LogPath string
	// Stdin keeps a stdin open for Attach; StdinOnce closes it when the
	// first attach session detaches.
	Stdin, StdinOnce bool
	// Tty gives the container a terminal (its master stays in the monitor).
	// It should match spec.Process.Terminal.
	Tty bool
	// CgroupPath is the container's cgroup, made here from
	// spec.Linux.Resources ("" leaves it in the monitor's cgroup).
	CgroupPath string
	// Handler names the OCI runtime that runs the container (the pod's
	// RuntimeClass handler); "" is berth's built-in runtime.
	Handler string
}

// Create makes container id of pod podID from spec: it writes the bundle,
// makes the cgroup, has the pod monitor start the container's init, and puts
// the container process into the cgroup. The process is left blocked before
// exec'ing the user program until Start. On error everything is rolled back.
func (r *Runtime) Create(ctx context.Context, podID, id string, spec *specs.Spec, opts CreateOptions) (retErr error) {
	if err := validID("pod", podID); err != nil {
		return err
	}
	if err := validID("container", id); err != nil {
		return err
	}
	if spec == nil || spec.Process == nil || spec.Root == nil || !filepath.IsAbs(spec.Root.Path) {
		return fmt.Errorf("container %s: spec needs a process and an absolute root path: %w", id, errdefs.ErrInvalidArgument)
	}
	var oci *monitor.OCIRuntime
	if opts.Handler != DefaultHandler {
		h, ok := r.handlers[opts.Handler]
		if !ok {
			return fmt.Errorf("container %s: runtime handler %q is not configured: %w", id, opts.Handler, errdefs.ErrInvalidArgument)
		}
		rt := h.rt
		oci = &rt
	}
	bundle := r.bundleDir(id)
	if err := os.Mkdir(bundle, 0o711); err != nil { // see New
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("container %s: %w", id, errdefs.ErrAlreadyExists)
		}
		return err
	}
	// Rollbacks run on a context that the caller's cancel does not stop.
	cleanCtx := context.WithoutCancel(ctx)
	var undo []func()
	// stillMounted is set when an idmapped mount (of the image's layers or
	// of a host volume) would not go: the bundle is then left for the next
	// Delete rather than deleted through it.
	stillMounted := false
	defer func() {
		if retErr == nil {
			return
		}
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		if stillMounted {
			klog.ErrorS(nil, "Rollback: idmapped mounts remain in the bundle; it is left for Delete", "podID", podID, "containerID", id, "bundle", bundle)
			return
		}
		os.RemoveAll(bundle)
	}()

	if oci == nil {
		// The built-in init blocks on it until Start (an OCI runtime
		// keeps its own).
		if err := unix.Mkfifo(filepath.Join(bundle, "exec.fifo"), 0o600); err != nil {
			return fmt.Errorf("container %s: make exec fifo: %w", id, err)
		}
	}
	m := &meta{PodID: podID, LogPath: opts.LogPath, Tty: opts.Tty, Stdin: opts.Stdin, StdinOnce: opts.StdinOnce, Handler: opts.Handler, Runtime: oci}
	// The container's init joins spec.Linux.CgroupsPath before it clones
	// the container process, so the process is born inside its limits.
	sp := *spec
	if sp.Linux != nil {
		l := *sp.Linux
		sp.Linux = &l
	} else {
		sp.Linux = &specs.Linux{}
	}
	sp.Linux.CgroupsPath = ""
	var cg Cgroup
	if r.cfg.Cgroups != nil && opts.CgroupPath != "" {
		var res *specs.LinuxResources
		if spec.Linux != nil {
			res = spec.Linux.Resources
		}
		var err error
		cg, err = r.cfg.Cgroups.Create(ctx, opts.CgroupPath, res)
		if err != nil {
			return fmt.Errorf("container %s: cgroup: %w", id, err)
		}
		undo = append(undo, func() {
			if err := cg.Delete(cleanCtx); err != nil {
				klog.ErrorS(err, "Rollback: delete container cgroup", "podID", podID, "containerID", id)
			}
		})
		m.CgroupPath = opts.CgroupPath
		sp.Linux.CgroupsPath = opts.CgroupPath
	}
	if userns := usernsPath(&sp); userns != "" {
		// The rootfs is seen through an idmapped mount: files owned by
		// host root there belong to the pod's root, and what the pod
		// writes lands on disk as the pod's ids.
		root := filepath.Join(bundle, idmappedRootfs)
		err := idmapRootfs(sp.Root.Path, bundle, userns, sp.Linux.UIDMappings[0].HostID, sp.Linux.GIDMappings[0].HostID)
		undo = append(undo, func() {
			if err := unmountIdmapped(bundle); err != nil {
				klog.ErrorS(err, "Rollback: unmount idmapped mounts", "podID", podID, "containerID", id)
				stillMounted = true
			}
		})
		if err != nil {
			return fmt.Errorf("container %s: idmapped rootfs: %w", id, err)
		}
		r := *sp.Root
		r.Path = root
		sp.Root = &r
	}
	// Volumes idmapped as asked; the mounts are the spec's own copy.
	sp.Mounts = slices.Clone(sp.Mounts)
	if err := idmapVolumes(&sp, bundle, usernsPath(&sp)); err != nil {
		// Anything mounted is unmounted by the idmapped rootfs's undo.
		return fmt.Errorf("container %s: %w", id, err)
	}
	b, err := json.Marshal(&sp)
	if err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		return err
	}
	// meta.json last among the files: its presence says the bundle is
	// whole. Written atomically: a crash mid-write must not leave an empty
	// meta.json, which would make the bundle unreadable and never removed.
	mb, _ := json.Marshal(m)
	if err := atomicfile.WriteFile(filepath.Join(bundle, metaFile), mb, 0o600); err != nil {
		return err
	}

	mon := r.monitor(podID)
	resp, err := mon.Do(ctx, &monitor.Request{
		Op: monitor.OpCreate, ID: id, Bundle: bundle, LogPath: opts.LogPath,
		Stdin: opts.Stdin, StdinOnce: opts.StdinOnce, Tty: opts.Tty, Runtime: oci,
	})
	if err != nil {
		if errors.Is(err, errdefs.ErrUnavailable) {
			return fmt.Errorf("container %s: pod %s has no running monitor: %w", id, podID, errdefs.ErrFailedPrecondition)
		}
		return fmt.Errorf("create container %s: %w", id, err)
	}
	undo = append(undo, func() {
		if _, err := mon.Do(cleanCtx, &monitor.Request{Op: monitor.OpDelete, ID: id}); err != nil {
			klog.ErrorS(err, "Rollback: delete container in monitor", "podID", podID, "containerID", id)
		}
	})
	if cg != nil {
		// Normally a no-op (init joined already); it makes sure of it.
		if err := cg.AddProc(resp.State.Pid); err != nil {
			return fmt.Errorf("container %s: join cgroup: %w", id, err)
		}
	}
	klog.V(2).InfoS("Created container", "podID", podID, "containerID", id, "pid", resp.State.Pid)
	return nil
}

// idmappedRootfs is the bundle's idmapped view of a user-namespace
// container's rootfs.
const idmappedRootfs = "rootfs"

// usernsPath is the user namespace the spec joins, if it has mappings too.
func usernsPath(s *specs.Spec) string {
	if s.Linux == nil || len(s.Linux.UIDMappings) == 0 || len(s.Linux.GIDMappings) == 0 {
		return ""
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == specs.UserNamespace {
			return ns.Path
		}
	}
	return ""
}

// unmountAll detaches every mount stacked on p; a p that is not a mount
// point (or is missing) is not an error.
func unmountAll(p string) error {
	for {
		switch err := unix.Unmount(p, unix.MNT_DETACH); err {
		case nil:
			continue
		case unix.EINVAL, unix.ENOENT:
			return nil
		default:
			return fmt.Errorf("unmount %s: %w", p, err)
		}
	}
}

// Start lets a created container exec its program. Starting a container that
// is not in the created state is errdefs.ErrFailedPrecondition.
func (r *Runtime) Start(ctx context.Context, id string) error {
	m, err := r.readMeta(id)
	if err != nil {
		return err
	}
	if _, err := r.monitor(m.PodID).Do(ctx, &monitor.Request{Op: monitor.OpStart, ID: id}); err != nil {
		return r.monitorErr(id, err)
	}
	return nil
}

// monitorErr gives a dead monitor's error the kind callers act on: nothing
// can be done to a container whose monitor is gone but Delete.
func (r *Runtime) monitorErr(id string, err error) error {
	if errors.Is(err, errdefs.ErrUnavailable) {
		return fmt.Errorf("container %s: %s: %w", id, MessageMonitorDied, errdefs.ErrFailedPrecondition)
	}
	return fmt.Errorf("container %s: %w", id, err)
}

// State returns the container's state. A running container's state comes
// from its exit watch (see exitWatches), without asking the monitor. It
// does not report a container as running once its monitor is known dead:
// the watch learns of a monitor's death from its broken connection, at
// once, and StopMonitor drops the pod's watches before it returns.
func (r *Runtime) State(ctx context.Context, id string) (State, error) {
	m, err := r.readMeta(id)
	if err != nil {
		return State{}, err
	}
	if w := r.watching(id); w != nil {
		if st, ok := w.cachedState(); ok {
			return st, nil
		}
	}
	resp, err := r.monitor(m.PodID).Do(ctx, &monitor.Request{Op: monitor.OpState, ID: id})
	switch {
	case err == nil:
		st := r.toState(ctx, m, resp.State)
		if st.Status == StatusRunning {
			r.watch(id, m, st)
		}
		return st, nil
	case errdefs.IsNotFound(err):
		// A monitor that does not know the container (a new monitor of
		// the same pod): the state file has the last word.
		return r.stateFromFile(ctx, id, m)
	case errors.Is(err, errdefs.ErrUnavailable):
		// A broken connection is not a dead monitor: only one that no
		// longer listens is.
		if !r.monitorGone(ctx, m.PodID) {
			return State{}, fmt.Errorf("container %s: %w", id, err)
		}
		return r.stateFromFile(ctx, id, m)
	}
	return State{}, fmt.Errorf("container %s: %w", id, err)
}

// monitorGone tells whether pod podID's monitor no longer listens.
func (r *Runtime) monitorGone(ctx context.Context, podID string) bool {
	conn, err := monitor.Dial(ctx, r.podDir(podID))
	if err != nil {
		return errors.Is(err, errdefs.ErrUnavailable)
	}
	conn.Close()
	return false
}

// orphanKillTimeout bounds waiting for an orphaned container process to die
// after SIGKILL (one stuck in the kernel must not hang State).
const orphanKillTimeout = 5 * time.Second

// stateFromFile reads state.json of a container whose monitor is gone. If
// the monitor died before the container stopped, the container's process,
// if it outlived the monitor, is killed (nobody copies its logs or records
// its exit any more), and the file is rewritten as stopped with reason
// Unknown, so that the report is true and later calls agree.
func (r *Runtime) stateFromFile(ctx context.Context, id string, m *meta) (State, error) {
	bundle := r.bundleDir(id)
	st, err := monitor.ReadStateFile(bundle)
	if errors.Is(err, os.ErrNotExist) {
		return State{ID: id, PodID: m.PodID, Status: StatusUnknown, Reason: ReasonUnknown, LogPath: m.LogPath}, nil
	}
	if err != nil {
		return State{}, err
	}
	if st.Status != monitor.StatusStopped {
		kctx, cancel := context.WithTimeout(ctx, orphanKillTimeout)
		err := r.killOrphan(kctx, id, syscall.SIGKILL, true)
		cancel()
		if err != nil {
			return State{}, fmt.Errorf("container %s: kill the process its dead monitor left: %w", id, err)
		}
		st.Status = monitor.StatusStopped
		st.ExitCode = unknownExitCode
		st.Reason = ReasonUnknown
		st.Message = MessageMonitorDied
		st.FinishedAt = time.Now()
		if err := monitor.WriteStateFile(bundle, st); err != nil {
			klog.ErrorS(err, "Record container of a dead monitor as stopped", "podID", m.PodID, "containerID", id)
		}
	}
	return r.toState(ctx, m, st), nil
}

func (r *Runtime) toState(ctx context.Context, m *meta, st *monitor.State) State {
	s := State{
		ID: st.ID, PodID: m.PodID, Status: Status(st.Status), Pid: st.Pid,
		ExitCode: st.ExitCode, Signal: st.Signal, Reason: st.Reason, Message: st.Message,
		LogPath: m.LogPath, CreatedAt: st.CreatedAt, StartedAt: st.StartedAt, FinishedAt: st.FinishedAt,
	}
	if s.Status != StatusStopped || s.Reason != "" {
		return s
	}
	s.Reason = ReasonError
	if s.ExitCode == 0 {
		s.Reason = ReasonCompleted
	}
	// The OOM killer sends SIGKILL; a kill while the cgroup has seen an
	// OOM kill is taken for one (the process killed may be a child).
	if s.Signal == int(syscall.SIGKILL) && r.cfg.Cgroups != nil && m.CgroupPath != "" {
		if cg, err := r.cfg.Cgroups.Load(ctx, m.CgroupPath); err == nil {
			if n, err := cg.OOMKillCount(); err == nil && n > 0 {
				s.Reason = ReasonOOMKilled
			}
		}
	}
	return s
}

// Wait blocks until the container stops (or ctx ends) and returns its state.
// A running container's wait is its exit watch, shared by every caller.
func (r *Runtime) Wait(ctx context.Context, id string) (State, error) {
	m, err := r.readMeta(id)
	if err != nil {
		return State{}, err
	}
	w := r.watching(id)
	if w == nil {
		st, err := r.State(ctx, id)
		if err != nil {
			return State{}, err
		}
		if st.Status == StatusStopped {
			return st, nil
		}
		if w = r.watching(id); w == nil {
			// Created, not started yet: wait on the monitor directly.
			st, _, err := r.waitMonitor(ctx, id, m)
			return st, err
		}
	}
	select {
	case <-w.done:
		if w.err != nil {
			return State{}, w.err
		}
		return w.final, nil
	case <-ctx.Done():
		return State{}, ctx.Err()
	}
}

// Kill sends sig to the container's process. Signalling a container that
// has already stopped does nothing and is not an error (a stop racing with
// the exit must not fail); nor is it when the monitor is gone, in which case
// a process that outlived its monitor is still signalled.
func (r *Runtime) Kill(ctx context.Context, id string, sig syscall.Signal) error {
	m, err := r.readMeta(id)
	if err != nil {
		return err
	}
	_, err = r.monitor(m.PodID).Do(ctx, &monitor.Request{Op: monitor.OpKill, ID: id, Signal: int(sig)})
	if errors.Is(err, errdefs.ErrUnavailable) {
		err = r.killOrphan(ctx, id, sig, false)
	}
	if err != nil {
		return fmt.Errorf("kill container %s: %w", id, err)
	}
	// A paused container gets the signal once thawed: a stop or kill
	// unpauses it, as docker's does.
	r.thawIfPaused(ctx, m, id)
	return nil
}

// killOrphan signals the process recorded for a container whose monitor is
// gone, if that pid still belongs to it (same start time). With wait, it
// returns once the process has exited.
func (r *Runtime) killOrphan(ctx context.Context, id string, sig syscall.Signal, wait bool) error {
	st, err := monitor.ReadStateFile(r.bundleDir(id))
	if err != nil || st.Pid <= 0 || st.PidStart == 0 {
		return nil
	}
	// A pidfd pins the process: checked after opening, the start time
	// proves the pidfd is the container's process, and signals through it
	// cannot reach a later process that reuses the pid.
	pfd, err := unix.PidfdOpen(st.Pid, 0)
	if err != nil {
		return nil // gone already
	}
	closePfd := true
	defer func() {
		if closePfd {
			unix.Close(pfd)
		}
	}()
	if monitor.PidStart(st.Pid) != st.PidStart {
		return nil
	}
	if err := unix.PidfdSendSignal(pfd, sig, nil, 0); err != nil {
		if err == unix.ESRCH {
			return nil
		}
		return fmt.Errorf("kill orphaned process %d of container %s: %w", st.Pid, id, err)
	}
	if !wait {
		return nil
	}
	closePfd = false
	return waitPidfd(ctx, pfd)
}

// waitPidfd waits until the process of pidfd pfd has exited (the pidfd turns
// readable), or ctx ends. It takes ownership of pfd.
func waitPidfd(ctx context.Context, pfd int) error {
	exited := make(chan struct{})
	go func() {
		// Owned here: the poll ends when the process does.
		defer close(exited)
		defer unix.Close(pfd)
		fds := []unix.PollFd{{Fd: int32(pfd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); err != unix.EINTR {
				return
			}
		}
	}()
	select {
	case <-exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Delete removes the container: kills it if needed, waits for its exit to be
// recorded, removes its cgroup (killing stragglers) and its bundle.
// Deleting an unknown container is not an error.
func (r *Runtime) Delete(ctx context.Context, id string) error {
	if err := validID("container", id); err != nil {
		return err
	}
	bundle := r.bundleDir(id)
	m, err := r.readMeta(id)
	if errdefs.IsNotFound(err) || errors.Is(err, errBadMeta) {
		// Nothing, or a Create that died before writing meta.json (it
		// started no process then, but may have mounted an idmapped
		// rootfs, with the image's layers below: never delete through it).
		// A meta.json that cannot be read names no pod or cgroup either:
		// the bundle is all that can be removed.
		if err != nil && !errdefs.IsNotFound(err) {
			klog.ErrorS(err, "Removing a container bundle with unreadable metadata", "containerID", id)
		}
		if err := unmountIdmapped(bundle); err != nil {
			return fmt.Errorf("delete container %s: %w", id, err)
		}
		return os.RemoveAll(bundle)
	}
	if err != nil {
		return err
	}
	// The monitor kills the container and waits for it: not while frozen.
	r.thawIfPaused(ctx, m, id)
	_, err = r.monitor(m.PodID).Do(ctx, &monitor.Request{Op: monitor.OpDelete, ID: id})
	r.forget(id, nil)
	if errors.Is(err, errdefs.ErrUnavailable) {
		err = r.killOrphan(ctx, id, syscall.SIGKILL, true)
	}
	if err != nil {
		return fmt.Errorf("delete container %s: %w", id, err)
	}
	if m.Runtime != nil {
		// The OCI runtime's own state of the stopped container (and its
		// cgroup, if the runtime removes it).
		if err := ociDelete(ctx, m.Runtime, id); err != nil {
			return fmt.Errorf("delete container %s: %w", id, err)
		}
	}
	if r.cfg.Cgroups != nil && m.CgroupPath != "" {
		cg, err := r.cfg.Cgroups.Load(ctx, m.CgroupPath)
		if err == nil {
			err = cg.Delete(ctx)
		}
		if err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("delete container %s: cgroup: %w", id, err)
		}
	}
	// The bundle holds files the runtime and the monitor wrote, and the
	// idmapped rootfs of a user-namespace pod's container: unmounted first,
	// never deleted through.
	if err := unmountIdmapped(bundle); err != nil {
		return fmt.Errorf("delete container %s: %w", id, err)
	}
	if err := os.RemoveAll(bundle); err != nil {
		return fmt.Errorf("delete container %s: %w", id, err)
	}
	klog.V(2).InfoS("Deleted container", "podID", m.PodID, "containerID", id)
	return nil
}

// ReopenLog makes the monitor close and reopen the container's log file
// (after kubelet renamed it for rotation).
func (r *Runtime) ReopenLog(ctx context.Context, id string) error {
	m, err := r.readMeta(id)
	if err != nil {
		return err
	}
	if _, err := r.monitor(m.PodID).Do(ctx, &monitor.Request{Op: monitor.OpReopen, ID: id}); err != nil {
		return r.monitorErr(id, err)
	}
	return nil
}

// UpdateResources changes the container's cgroup limits.
func (r *Runtime) UpdateResources(ctx context.Context, id string, res *specs.LinuxResources) error {
	m, err := r.readMeta(id)
	if err != nil {
		return err
	}
	if m.Runtime != nil {
		// Through the runtime, which keeps the resources in its state too.
		b, err := json.Marshal(res)
		if err != nil {
			return err
		}
		if err := ociRun(ctx, m.Runtime, b, "update", "--resources", "-", id); err != nil {
			return fmt.Errorf("container %s: update resources: %w", id, err)
		}
		return nil
	}
	if r.cfg.Cgroups == nil || m.CgroupPath == "" {
		return fmt.Errorf("container %s has no cgroup of its own: %w", id, errdefs.ErrFailedPrecondition)
	}
	cg, err := r.cfg.Cgroups.Load(ctx, m.CgroupPath)
	if err != nil {
		return fmt.Errorf("container %s: %w", id, err)
	}
	if err := cg.Update(res); err != nil {
		return fmt.Errorf("container %s: update resources: %w", id, err)
	}
	return nil
}
