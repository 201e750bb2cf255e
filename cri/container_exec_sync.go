package cri

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/runtime"
)

// maxExecSyncOutput caps what ExecSync returns of each stream, as kubelet
// does for probes: a runaway command must not fill berthd's memory.
const maxExecSyncOutput = 16 << 20

// cappedBuffer keeps the first max bytes written and drops the rest.
type cappedBuffer struct {
	buf bytes.Buffer
	max int
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); room > 0 {
		if len(p) > room {
			c.buf.Write(p[:room])
		} else {
			c.buf.Write(p)
		}
	}
	return len(p), nil
}

// ExecSync runs a command in a running container and returns its output
// and exit code, killing it when the timeout passes.
func (s *Service) ExecSync(ctx context.Context, req *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	if len(req.GetCmd()) == 0 {
		return nil, fmt.Errorf("cmd is empty: %w", errdefs.ErrInvalidArgument)
	}
	if req.GetTimeout() < 0 {
		return nil, fmt.Errorf("timeout %d is negative: %w", req.GetTimeout(), errdefs.ErrInvalidArgument)
	}
	rec, err := s.containers.record(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	if req.GetTimeout() > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(req.GetTimeout())*time.Second)
		defer cancel()
	}
	stdout := &cappedBuffer{max: maxExecSyncOutput}
	stderr := &cappedBuffer{max: maxExecSyncOutput}
	code, err := s.deps.Runtime.Exec(ctx, rec.ID, runtime.ExecOptions{
		Process: execProcess(rec, req.GetCmd(), false),
		Stdout:  stdout,
		Stderr:  stderr,
	})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("command %q timed out after %ds: %w", req.GetCmd(), req.GetTimeout(), errdefs.ErrDeadlineExceeded)
		}
		return nil, err
	}
	return &runtimeapi.ExecSyncResponse{Stdout: stdout.buf.Bytes(), Stderr: stderr.buf.Bytes(), ExitCode: int32(code)}, nil
}

// execProcess is the container's process spec with cmd as its args: an
// exec'd process runs as the container's user, with its capabilities,
// no_new_privs, env and cwd.
func execProcess(rec *containerRecord, cmd []string, tty bool) *processSpec {
	var p processSpec
	if rec.Process != nil {
		p = *rec.Process
	}
	p.Args = append([]string(nil), cmd...)
	p.Terminal = tty
	p.ConsoleSize = nil
	return &p
}
