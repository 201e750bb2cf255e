package cri

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/failpoint"
	"github.com/berth-dev/berth/podsandbox"
	"github.com/berth-dev/berth/runtime"
)

// cleanupTimeout bounds the rollback of a failed create, which runs on a
// fresh context: the caller's may be what failed.
const cleanupTimeout = 30 * time.Second

func newID() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// CreateContainer makes a container in a pod: its rootfs, runtime spec and
// a process waiting to be started. It is transactional: every step made is
// undone when a later one fails.
func (s *Service) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (_ *runtimeapi.CreateContainerResponse, retErr error) {
	cfg := req.GetConfig()
	switch {
	case cfg == nil:
		return nil, fmt.Errorf("config is required: %w", errdefs.ErrInvalidArgument)
	case cfg.GetMetadata().GetName() == "":
		return nil, fmt.Errorf("config.metadata.name is required: %w", errdefs.ErrInvalidArgument)
	case cfg.GetImage().GetImage() == "":
		return nil, fmt.Errorf("config.image.image is required: %w", errdefs.ErrInvalidArgument)
	case req.GetPodSandboxId() == "":
		return nil, fmt.Errorf("pod_sandbox_id is empty: %w", errdefs.ErrInvalidArgument)
	}
	pod, err := s.deps.Pods.Status(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	if pod.State != podsandbox.StateReady {
		return nil, fmt.Errorf("pod sandbox %s is not ready: %w", pod.ID, errdefs.ErrFailedPrecondition)
	}
	img, err := s.deps.Images.Get(ctx, cfg.GetImage().GetImage())
	if err != nil {
		return nil, fmt.Errorf("config.image %q: %w", cfg.GetImage().GetImage(), err)
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}
	rawConfig, err := proto.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	rec := &containerRecord{
		ID:          id,
		PodID:       pod.ID,
		Name:        cfg.GetMetadata().GetName(),
		Attempt:     cfg.GetMetadata().GetAttempt(),
		Image:       cfg.GetImage().GetImage(),
		ImageRef:    imageRef(img),
		ImageID:     img.ID,
		Labels:      cfg.GetLabels(),
		Annotations: cfg.GetAnnotations(),
		StopSignal:  img.Config.StopSignal,
		CreatedAt:   time.Now(),
		Config:      rawConfig,
	}
	if cfg.GetLogPath() != "" && pod.LogDirectory != "" {
		rec.LogPath = filepath.Join(pod.LogDirectory, cfg.GetLogPath())
	}
	e, err := s.containers.reserve(rec)
	if err != nil {
		return nil, err
	}
	defer e.mu.Unlock()

	var undo []func(context.Context) error
	defer func() {
		if retErr == nil {
			return
		}
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		for i := len(undo) - 1; i >= 0; i-- {
			if err := undo[i](cctx); err != nil {
				klog.ErrorS(err, "Rollback of a failed CreateContainer step failed", "containerID", id, "podSandboxID", pod.ID)
			}
		}
		s.containers.release(rec)
	}()

	t0 := time.Now()
	rootfs, err := s.deps.Images.PrepareRootfs(ctx, id, img.ID)
	if err != nil {
		return nil, fmt.Errorf("prepare rootfs: %w", err)
	}
	undo = append(undo, func(ctx context.Context) error { return s.deps.Images.RemoveRootfs(ctx, id) })
	rec.Rootfs = rootfs

	// Image volumes are read-only rootfs of their images, kept under keys
	// derived from the container's ID and removed with it.
	imageVolumes := map[int]string{}
	for i, m := range cfg.GetMounts() {
		ref := m.GetImage().GetImage()
		if ref == "" {
			continue
		}
		key := imageVolumeKey(id, i)
		path, err := s.deps.Images.PrepareRootfs(ctx, key, ref)
		if err != nil {
			return nil, fmt.Errorf("mounts[%d].image %q: %w", i, ref, err)
		}
		undo = append(undo, func(ctx context.Context) error { return s.deps.Images.RemoveRootfs(ctx, key) })
		imageVolumes[i] = path
		rec.ImageVolumes = append(rec.ImageVolumes, key)
	}
	s.deps.Failpoints.Hit(failpoint.CtrCreateAfterRootfs)

	spec, err := buildSpec(specInput{
		ID:             id,
		Rootfs:         rootfs,
		Sandbox:        sandboxFromPod(pod),
		Image:          imageInfo{ID: img.ID, Config: img.Config},
		ImageVolumes:   imageVolumes,
		Config:         cfg,
		DefaultSeccomp: s.deps.DefaultSeccomp,
		Grantable:      s.grantable,
	})
	if err != nil {
		return nil, err
	}
	rec.CgroupPath = spec.Linux.CgroupsPath
	rec.Process = spec.Process
	if rec.LogPath != "" {
		if err := os.MkdirAll(filepath.Dir(rec.LogPath), 0o755); err != nil {
			return nil, fmt.Errorf("log dir: %w", err)
		}
	}
	t1 := time.Now()
	err = s.deps.Runtime.Create(ctx, pod.ID, id, spec, runtime.CreateOptions{
		LogPath:    rec.LogPath,
		Stdin:      cfg.GetStdin(),
		StdinOnce:  cfg.GetStdinOnce(),
		Tty:        cfg.GetTty(),
		CgroupPath: spec.Linux.CgroupsPath,
		Handler:    pod.RuntimeHandler,
	})
	if err != nil {
		return nil, fmt.Errorf("create container: %w", err)
	}
	undo = append(undo, func(ctx context.Context) error { return s.deps.Runtime.Delete(ctx, id) })
	s.deps.Failpoints.Hit(failpoint.CtrCreateAfterRuntime)

	if err := s.containers.commit(e); err != nil {
		return nil, err
	}
	s.deps.Failpoints.Hit(failpoint.CtrCreateAfterRecord)
	klog.InfoS("Created container", "containerID", id, "podSandboxID", pod.ID, "name", rec.Name,
		"rootfs", t1.Sub(t0), "runtime", time.Since(t1))
	s.emit(ctx, rec, runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT)
	return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
}

// sandboxFromPod is the part of a pod record a container's spec uses.
func sandboxFromPod(p *podsandbox.Pod) sandboxInfo {
	return sandboxInfo{
		ID:             p.ID,
		NetNSPath:      p.NetNSPath,
		IPCNSPath:      p.IPCNSPath,
		UTSNSPath:      p.UTSNSPath,
		PIDNSPath:      p.PIDNSPath,
		HostNetwork:    p.HostNetwork,
		HostIPC:        p.HostIPC,
		HostPID:        p.HostPID,
		HostsPath:      p.HostsPath,
		ResolvConfPath: p.ResolvConfPath,
		HostnamePath:   p.HostnamePath,
		ShmPath:        p.ShmPath,
		Hostname:       p.Hostname,
		CgroupParent:   p.CgroupParent,
		Sysctls:        p.Sysctls,
		UserNSPath:     p.UserNSPath,
		UIDMappings:    p.UIDMappings,
		GIDMappings:    p.GIDMappings,
	}
}

// processSpec is kept for exec: an exec'd process gets the container's user,
// capabilities, no_new_privs, env and cwd.
type processSpec = specs.Process

// imageVolumeKey names the rootfs of a container's i-th mount when it is an
// image volume.
func imageVolumeKey(containerID string, i int) string {
	return fmt.Sprintf("%s-vol%d", containerID, i)
}
