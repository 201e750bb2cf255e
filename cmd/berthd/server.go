package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/config"
	"github.com/berth-dev/berth/version"
)

// serve wires the core together and serves the CRI until ctx is cancelled.
func serve(ctx context.Context, cfg config.Config) error {
	for _, dir := range []string{cfg.Root, cfg.State} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		// MkdirAll keeps the mode of an existing dir; tighten it. The
		// state dir is searchable (not listable): a user-namespace
		// container's root, an unprivileged host uid, must reach its
		// idmapped rootfs in it.
		mode := os.FileMode(0o700)
		if dir == cfg.State {
			mode = 0o711
		}
		if err := os.Chmod(dir, mode); err != nil {
			return fmt.Errorf("chmod %s: %w", dir, err)
		}
	}

	// Take the socket first: a second berthd on the same socket must fail
	// on that, before it touches the store the first one holds. Clients that
	// connect while the core starts wait in the listen backlog.
	lis, err := listen(cfg.Socket)
	if err != nil {
		return err
	}
	defer lis.Close()
	c, err := wire(ctx, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	svc := c.svc
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(svc.UnaryInterceptor),
		grpc.ChainStreamInterceptor(svc.StreamInterceptor),
	)
	svc.Register(srv)
	svc.RegisterPullProgress(srv)
	c.ext.Register(srv)

	errc := make(chan error, 3)
	if cfg.Metrics.Address != "" {
		ms, err := serveMetrics(cfg.Metrics.Address, svc, errc)
		if err != nil {
			return err
		}
		defer ms.Close()
	}
	go func() { errc <- srv.Serve(lis) }()
	go func() {
		if err := c.stream.Serve(); err != nil {
			errc <- fmt.Errorf("stream server: %w", err)
		}
	}()
	klog.InfoS("berthd serving the CRI", "socket", cfg.Socket, "version", version.Version(), "root", cfg.Root, "state", cfg.State)

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	klog.InfoS("berthd shutting down; containers keep running")
	svc.Shutdown()
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		srv.Stop()
	}
	return nil
}

// listen opens the CRI socket: 0660, owned by root. A stale socket file is
// replaced; a socket that a live berthd still answers on is an error.
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o711); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		live, err := answers(path)
		if err != nil {
			return nil, fmt.Errorf("probe existing socket %s: %w", path, err)
		}
		if live {
			return nil, fmt.Errorf("socket %s is served by a running berthd", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	// Connecting needs write permission; the umask leaves group and others
	// without it, so nobody else can connect before the chmod below.
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chown(path, 0, 0); err != nil {
		lis.Close()
		return nil, fmt.Errorf("chown socket: %w", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		lis.Close()
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	return lis, nil
}

// answers reports whether a CRI server answers on the socket at path. A
// connect alone is not enough: right after a crash, a child the dead berthd
// had forked may still hold the listening socket for a moment, accepting
// connections nobody will serve.
func answers(path string) (bool, error) {
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOTSOCK) {
			return false, nil
		}
		return false, err
	}
	conn.Close()
	cc, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return false, err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = runtimeapi.NewRuntimeServiceClient(cc).Version(ctx, &runtimeapi.VersionRequest{})
	return err == nil, nil
}
