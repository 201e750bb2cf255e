package cri

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/failpoint"
	"github.com/berth-dev/berth/runtime"
)

// StopContainer sends the image's stop signal (SIGTERM by default), waits up
// to timeout seconds, then SIGKILLs. Per api.proto, stopping a stopped
// container "must not return an error".
func (s *Service) StopContainer(ctx context.Context, req *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	if req.GetTimeout() < 0 {
		return nil, fmt.Errorf("timeout %d is negative: %w", req.GetTimeout(), errdefs.ErrInvalidArgument)
	}
	if err := s.stopContainer(ctx, req.GetContainerId(), time.Duration(req.GetTimeout())*time.Second); err != nil {
		return nil, err
	}
	return &runtimeapi.StopContainerResponse{}, nil
}

func (s *Service) stopContainer(ctx context.Context, idOrPrefix string, grace time.Duration) error {
	e, err := s.containers.acquire(idOrPrefix)
	if err != nil {
		return err
	}
	defer e.mu.Unlock()
	return s.stopLocked(ctx, e, grace)
}

// stopLocked stops a container whose lock the caller holds.
func (s *Service) stopLocked(ctx context.Context, e *containerEntry, grace time.Duration) error {
	id := e.rec.ID
	st, err := s.deps.Runtime.State(ctx, id)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil
		}
		return err
	}
	if st.Status == runtime.StatusStopped || st.Status == runtime.StatusUnknown {
		if st.Message == runtime.MessageMonitorDied {
			// Reported stopped because its monitor died: the process
			// may live on; make sure it does not.
			if err := s.deps.Runtime.Kill(ctx, id, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
				return fmt.Errorf("kill the process of a container whose monitor died: %w", err)
			}
		}
		return nil
	}
	if grace > 0 && st.Status == runtime.StatusRunning {
		sig, err := stopSignal(e.rec.StopSignal)
		if err != nil {
			return err
		}
		if err := s.deps.Runtime.Kill(ctx, id, sig); err != nil && !errdefs.IsNotFound(err) {
			return fmt.Errorf("send %v: %w", sig, err)
		}
		s.deps.Failpoints.Hit(failpoint.CtrStopAfterSignal)
		wctx, cancel := context.WithTimeout(ctx, grace)
		_, err = s.deps.Runtime.Wait(wctx, id)
		cancel()
		if err == nil {
			return nil
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
	}
	if err := s.deps.Runtime.Kill(ctx, id, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("send SIGKILL: %w", err)
	}
	s.deps.Failpoints.Hit(failpoint.CtrStopAfterKill)
	if _, err := s.deps.Runtime.Wait(ctx, id); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("wait after SIGKILL: %w", err)
	}
	return nil
}

// stopSignal parses an image's STOPSIGNAL ("SIGTERM", "TERM", "15").
func stopSignal(name string) (syscall.Signal, error) {
	if name == "" {
		return syscall.SIGTERM, nil
	}
	if n, err := strconv.Atoi(name); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	n := strings.ToUpper(name)
	if !strings.HasPrefix(n, "SIG") {
		n = "SIG" + n
	}
	if sig := unix.SignalNum(n); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("image stop signal %q is unknown: %w", name, errdefs.ErrInvalidArgument)
}
