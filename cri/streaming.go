package cri

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	goruntime "runtime"
	"strconv"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remotecommandserver "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/runtime"
)

// StreamServer hands out streaming URLs (k8s.io/cri-streaming's Server).
type StreamServer interface {
	GetExec(*runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error)
	GetAttach(*runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error)
	GetPortForward(*runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error)
}

// SetStreamServer connects the streaming server, which is built over the
// Service's StreamRuntime and so comes after it.
func (s *Service) SetStreamServer(ss StreamServer) { s.stream = ss }

// Exec returns a URL on the streaming server that runs cmd in the container.
func (s *Service) Exec(ctx context.Context, req *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if len(req.GetCmd()) == 0 {
		return nil, fmt.Errorf("cmd is empty: %w", errdefs.ErrInvalidArgument)
	}
	if !req.GetStdin() && !req.GetStdout() && !req.GetStderr() {
		return nil, fmt.Errorf("one of stdin, stdout and stderr must be set: %w", errdefs.ErrInvalidArgument)
	}
	if req.GetTty() && req.GetStderr() {
		return nil, fmt.Errorf("tty and stderr cannot both be set: %w", errdefs.ErrInvalidArgument)
	}
	id, err := s.runningContainer(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	req.ContainerId = id
	return s.stream.GetExec(req)
}

// Attach returns a URL on the streaming server attached to the container's
// stdio.
func (s *Service) Attach(ctx context.Context, req *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	if !req.GetStdin() && !req.GetStdout() && !req.GetStderr() {
		return nil, fmt.Errorf("one of stdin, stdout and stderr must be set: %w", errdefs.ErrInvalidArgument)
	}
	id, err := s.runningContainer(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	req.ContainerId = id
	return s.stream.GetAttach(req)
}

// PortForward returns a URL on the streaming server that forwards to ports
// of the pod's network namespace.
func (s *Service) PortForward(ctx context.Context, req *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	id, err := s.resolvePod(req.GetPodSandboxId())
	if err != nil {
		return nil, err
	}
	for _, p := range req.GetPort() {
		if p <= 0 || p > 65535 {
			return nil, fmt.Errorf("port %d out of range: %w", p, errdefs.ErrInvalidArgument)
		}
	}
	req.PodSandboxId = id
	return s.stream.GetPortForward(req)
}

func (s *Service) runningContainer(ctx context.Context, idOrPrefix string) (string, error) {
	e, err := s.containers.lookup(idOrPrefix)
	if err != nil {
		return "", err
	}
	st, err := s.deps.Runtime.State(ctx, e.rec.ID)
	if err != nil {
		return "", err
	}
	if st.Status != runtime.StatusRunning {
		return "", fmt.Errorf("container %s is not running (%s): %w", e.rec.ID, st.Status, errdefs.ErrFailedPrecondition)
	}
	return e.rec.ID, nil
}

// StreamRuntime is what the streaming server runs requests on.
func (s *Service) StreamRuntime() streamRuntime { return streamRuntime{s} }

type streamRuntime struct{ s *Service }

func resizeChan(ctx context.Context, in <-chan remotecommandserver.TerminalSize) <-chan runtime.TermSize {
	if in == nil {
		return nil
	}
	out := make(chan runtime.TermSize)
	go func() {
		defer close(out)
		for {
			select {
			case sz, ok := <-in:
				if !ok {
					return
				}
				select {
				case out <- runtime.TermSize{Width: sz.Width, Height: sz.Height}:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// Exec runs cmd in the container with the streams; a non-zero exit becomes
// an ExitError so the client sees the code.
func (r streamRuntime) Exec(ctx context.Context, containerID string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommandserver.TerminalSize) error {
	e, err := r.s.containers.lookup(containerID)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	opts := runtime.ExecOptions{Process: execProcess(e.rec, cmd, tty), Tty: tty, Resize: resizeChan(ctx, resize)}
	// Leave interface fields nil rather than holding typed nils.
	if in != nil {
		opts.Stdin = in
	}
	if out != nil {
		opts.Stdout = out
	}
	if errw != nil {
		opts.Stderr = errw
	}
	code, err := r.s.deps.Runtime.Exec(ctx, e.rec.ID, opts)
	if err != nil {
		return err
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command %q exited with %d", cmd, code), Code: code}
	}
	return nil
}

// Attach connects the streams to the container's stdio.
func (r streamRuntime) Attach(ctx context.Context, containerID string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommandserver.TerminalSize) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stdout, stderr io.Writer
	if out != nil {
		stdout = out
	}
	if errw != nil {
		stderr = errw
	}
	return r.s.deps.Runtime.Attach(ctx, containerID, in, stdout, stderr, resizeChan(ctx, resize))
}

// PortForward connects stream to 127.0.0.1:port in the pod's network
// namespace (the node's for a host-network pod).
func (r streamRuntime) PortForward(ctx context.Context, podSandboxID string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close()
	p, err := r.s.deps.Pods.Status(podSandboxID)
	if err != nil {
		return err
	}
	conn, err := dialInNetNS(ctx, p.NetNSPath, net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
	if err != nil {
		return fmt.Errorf("port-forward to %d in pod %s: %w", port, p.ID, err)
	}
	defer conn.Close()
	done := make(chan error, 2)
	go func() { _, err := io.Copy(conn, stream); closeWrite(conn); done <- err }()
	go func() { _, err := io.Copy(stream, conn); done <- err }()
	select {
	case err = <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		err = nil
	}
	return err
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

// dialInNetNS connects to addr from inside the network namespace at path
// ("" is the node's). The socket is made on a thread that joins the
// namespace and is then thrown away (never unlocked back into Go's pool),
// so no other goroutine ever runs in the pod's namespace; a socket keeps
// the namespace it was made in.
func dialInNetNS(ctx context.Context, nsPath, addr string) (net.Conn, error) {
	if nsPath == "" {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	type result struct {
		conn net.Conn
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		goruntime.LockOSThread()
		// No UnlockOSThread: the thread exits with this goroutine.
		ns, err := os.Open(nsPath)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer ns.Close()
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("join netns %s: %w", nsPath, err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.conn, r.err
}
