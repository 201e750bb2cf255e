package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/cgroupmgr"
	"github.com/berth-dev/berth/cni"
	"github.com/berth-dev/berth/config"
	"github.com/berth-dev/berth/cri"
	"github.com/berth-dev/berth/failpoint"
	"github.com/berth-dev/berth/imageservice"
	"github.com/berth-dev/berth/podsandbox"
	"github.com/berth-dev/berth/runtime"
	"github.com/berth-dev/berth/runtime/seccomp"
)

// core is berthd's wired-up core.
type core struct {
	svc    *cri.Service
	images *imageservice.Service
	stream *streamServer
	rt     *runtime.Runtime
	ext    *cri.Extensions
}

func (c *core) Close() error {
	if c.stream != nil {
		_ = c.stream.Stop()
	}
	return errors.Join(c.rt.Close(), c.images.Close())
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

// monitorPath is the cgo-free berth-monitor beside berth-shim, if there is
// one; otherwise berth-shim runs the monitors.
func monitorPath(shim string) string {
	p := filepath.Join(filepath.Dir(shim), "berth-monitor")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// wire builds the core from the config: explicit dependencies, no
// registration side effects (STYLE.md).
func wire(ctx context.Context, cfg config.Config) (_ *core, retErr error) {
	// Crash tests arm failpoints through the environment; off otherwise.
	fps := failpoint.FromEnv()
	if fps != nil {
		klog.InfoS("Failpoints armed: berthd will SIGKILL itself at them", "failpoints", fps.Names())
	}
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
		StateDir:    filepath.Join(cfg.State, "runtime"),
		ShimPath:    shim,
		MonitorPath: monitorPath(shim),
		Handlers:    runtimeHandlers(cfg.Runtime.Handlers),
		Cgroups:     runtime.CgroupsFrom[*cgroupmgr.Cgroup](cgroups),
	})
	if err != nil {
		return nil, err
	}
	images, err := imageservice.New(ctx, imageservice.Config{
		Root:                   filepath.Join(cfg.Root, "images"),
		RegistryConfigPath:     cfg.Registry.ConfigPath,
		PullProgressTimeout:    cfg.Registry.PullProgressTimeout.Duration,
		MaxConcurrentDownloads: cfg.Registry.MaxConcurrentPulls,
		Failpoints:             fps,
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
		Failpoints:   fps,
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
		Cgroups:         criCgroups{cgroups},
		RootDir:         cfg.Root,
		RuntimeHandlers: handlers,
		DefaultSeccomp:  seccomp.DefaultProfile,
		Config:          cfg,
		Failpoints:      fps,
	})
	if err != nil {
		return nil, err
	}
	// The extensions stand in front of the stream runtime: an extended
	// exec's options reach the streaming server's Exec through them.
	ext := cri.NewExtensions(svc)
	stream, err := newStreamServer(cfg.Stream, ext.StreamRuntime())
	if err != nil {
		return nil, err
	}
	svc.SetStreamServer(stream)
	// Serve only once what a crash left is reconciled (RuntimeReady).
	if err := svc.Reconcile(ctx, reconciler{rt, images, pods}); err != nil {
		klog.ErrorS(err, "Start-up reconciliation left some objects; they are retried at the next start")
	}
	return &core{svc: svc, images: images, stream: stream, rt: rt, ext: ext}, nil
}

// streamServer is the Exec/Attach/PortForward server on [stream]. berthd
// listens itself, so the URLs it hands out carry the real port even when
// the config asks for port 0, from the first request on.
type streamServer struct {
	streaming.Server
	lis  net.Listener
	http *http.Server
	tls  bool
}

func newStreamServer(cfg config.Stream, rt streaming.Runtime) (*streamServer, error) {
	sc := streaming.DefaultConfig
	if cfg.IdleTimeout.Duration > 0 {
		sc.StreamIdleTimeout = cfg.IdleTimeout.Duration
	}
	if cfg.TLSCertFile != "" || cfg.TLSKeyFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("stream TLS: %w", err)
		}
		sc.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	lis, err := net.Listen("tcp", net.JoinHostPort(cfg.Address, cfg.Port))
	if err != nil {
		return nil, fmt.Errorf("stream server: %w", err)
	}
	sc.Addr = lis.Addr().String()
	scheme := "http"
	if sc.TLSConfig != nil {
		scheme = "https"
	}
	sc.BaseURL = &url.URL{Scheme: scheme, Host: sc.Addr}
	inner, err := streaming.NewServer(sc, rt)
	if err != nil {
		lis.Close()
		return nil, fmt.Errorf("stream server: %w", err)
	}
	// cri-streaming serves SPDY and the WebSocket protocols up to
	// v4.channel.k8s.io; the bridge adds v5.channel.k8s.io and
	// port-forward tunnelled over WebSocket, which kubectl speaks.
	srv := cri.NewStreamBridge(inner, sc.StreamIdleTimeout)
	// Every request here is an HTTP/1.1 upgrade (SPDY or WebSocket),
	// which HTTP/2 cannot carry: do not offer h2 over TLS.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	return &streamServer{
		Server: srv,
		lis:    lis,
		http:   &http.Server{Handler: srv, TLSConfig: sc.TLSConfig, ReadHeaderTimeout: 30 * time.Second, Protocols: &protocols},
		tls:    sc.TLSConfig != nil,
	}, nil
}

// Serve serves until Stop.
func (s *streamServer) Serve() error {
	var err error
	if s.tls {
		err = s.http.ServeTLS(s.lis, "", "")
	} else {
		err = s.http.Serve(s.lis)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Stop closes the listener and every stream.
func (s *streamServer) Stop() error { return s.http.Close() }

// podCgroups adapts cgroupmgr to podsandbox's CgroupManager.
type podCgroups struct{ m *cgroupmgr.Manager }

func (p podCgroups) Create(ctx context.Context, path string, res *specs.LinuxResources) error {
	_, err := p.m.Create(ctx, path, res)
	return err
}

func (p podCgroups) Delete(ctx context.Context, path string) error { return p.m.Delete(ctx, path) }

// reconciler gathers what cri.Reconcile needs from the core.
type reconciler struct {
	rt     *runtime.Runtime
	images *imageservice.Service
	pods   *podsandbox.Manager
}

func (r reconciler) ListRuntime(ctx context.Context) ([]runtime.Container, error) {
	return r.rt.List(ctx)
}

func (r reconciler) RootfsIDs(ctx context.Context) ([]string, error) { return r.images.RootfsIDs(ctx) }

func (r reconciler) CleanupPodOrphans(ctx context.Context, perPod time.Duration) error {
	return r.pods.CleanupOrphans(ctx, perPod)
}

// criCgroups adapts cgroupmgr to cri's Cgroups.
type criCgroups struct{ *cgroupmgr.Manager }

func (c criCgroups) Update(ctx context.Context, path string, res *specs.LinuxResources) error {
	cg, err := c.Load(ctx, path)
	if err != nil {
		return err
	}
	return cg.Update(res)
}

// runtimeHandlers converts the [runtime.handlers] config section.
func runtimeHandlers(in map[string]config.Handler) map[string]runtime.Handler {
	out := make(map[string]runtime.Handler, len(in))
	for name, h := range in {
		out[name] = runtime.Handler{Path: h.Path, Args: h.Args, Root: h.Root}
	}
	return out
}
