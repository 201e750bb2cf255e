package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/cgroupmgr"
	"github.com/berth-dev/berth/cni"
	"github.com/berth-dev/berth/config"
	"github.com/berth-dev/berth/cri"
	"github.com/berth-dev/berth/imageservice"
	"github.com/berth-dev/berth/podsandbox"
	"github.com/berth-dev/berth/runtime"
	"github.com/berth-dev/berth/runtime/seccomp"
)

// core is berthd's wired-up core.
type core struct {
	svc    *cri.Service
	images *imageservice.Service
}

func (c *core) Close() error {
	if c.images != nil {
		return c.images.Close()
	}
	return nil
}

// shimPath is the configured berth-shim, or the one beside berthd.
func shimPath(cfg config.Config) (string, error) {
	if cfg.Runtime.ShimPath != "" {
		return cfg.Runtime.ShimPath, nil
	}
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find berth-shim: %w", err)
	}
	return filepath.Join(filepath.Dir(self), "berth-shim"), nil
}

// wire builds the core from the config: explicit dependencies, no
// registration side effects (STYLE.md).
func wire(ctx context.Context, cfg config.Config) (_ *core, retErr error) {
	network, err := cni.New(cni.Config{
		ConfDir:  cfg.CNI.ConfDir,
		BinDirs:  cfg.CNI.BinDirs,
		CacheDir: filepath.Join(cfg.Root, "cni"),
	})
	if err != nil {
		return nil, err
	}
	cgroups, err := cgroupmgr.New()
	if err != nil {
		return nil, err
	}
	shim, err := shimPath(cfg)
	if err != nil {
		return nil, err
	}
	rt, err := runtime.New(runtime.Config{
		StateDir: filepath.Join(cfg.State, "runtime"),
		ShimPath: shim,
		Cgroups:  runtime.CgroupsFrom[*cgroupmgr.Cgroup](cgroups),
	})
	if err != nil {
		return nil, err
	}
	images, err := imageservice.New(ctx, imageservice.Config{
		Root:                   filepath.Join(cfg.Root, "images"),
		RegistryConfigPath:     cfg.Registry.ConfigPath,
		PullProgressTimeout:    cfg.Registry.PullProgressTimeout.Duration,
		MaxConcurrentDownloads: cfg.Registry.MaxConcurrentPulls,
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			images.Close()
		}
	}()
	pods, err := podsandbox.New(podsandbox.Config{
		RootDir:      filepath.Join(cfg.Root, "pods"),
		StateDir:     filepath.Join(cfg.State, "pods"),
		CgroupParent: cfg.Runtime.CgroupParent,
		Namespaces:   rt,
		Monitor:      rt,
		Cgroups:      podCgroups{cgroups},
		Network:      network,
	})
	if err != nil {
		return nil, err
	}
	handlers := []string{""}
	for name := range cfg.Runtime.Handlers {
		handlers = append(handlers, name)
	}
	svc, err := cri.New(cri.Deps{
		Network:         network,
		Pods:            pods,
		Runtime:         rt,
		Images:          images,
		Cgroups:         cgroups,
		RootDir:         cfg.Root,
		RuntimeHandlers: handlers,
		DefaultSeccomp:  seccomp.DefaultProfile,
	})
	if err != nil {
		return nil, err
	}
	return &core{svc: svc, images: images}, nil
}

// podCgroups adapts cgroupmgr to podsandbox's CgroupManager.
type podCgroups struct{ m *cgroupmgr.Manager }

func (p podCgroups) Create(ctx context.Context, path string, res *specs.LinuxResources) error {
	_, err := p.m.Create(ctx, path, res)
	return err
}

func (p podCgroups) Delete(ctx context.Context, path string) error { return p.m.Delete(ctx, path) }
