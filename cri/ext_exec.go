package cri

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/structpb"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming"
	remotecommandserver "k8s.io/cri-streaming/pkg/streaming/remotecommand"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/runtime"
)

// The streaming library hands its runtime only the container ID and the
// command of the ExecRequest it cached for a URL. An extended exec's
// options therefore stay in berthd, under a random token, and the cached
// command is execTokenArg0 followed by that token. No real command can
// start with execTokenArg0 (execve takes no NUL in a path), and only the
// caller of the extension learns the token, so a CRI client cannot reach
// someone else's options; each token is taken once.
const execTokenArg0 = "\x00berth-exec"

// execGrantTTL bounds how long an unused token is kept: a little over the
// streaming server's own cache TTL (one minute), after which its URL is dead
// anyway.
const execGrantTTL = 2 * time.Minute

// maxExecGrants caps the tokens kept, as the streaming server caps its
// in-flight requests.
const maxExecGrants = 1000

// execGrant is one extended exec waiting for its URL to be used.
type execGrant struct {
	containerID string
	process     *specs.Process
	expires     time.Time
}

type execGrants struct {
	mu      sync.Mutex
	byToken map[string]execGrant
}

// add keeps g and returns its token.
func (g *execGrants) add(grant execGrant) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	token := hex.EncodeToString(b[:])
	now := time.Now()
	grant.expires = now.Add(execGrantTTL)
	g.mu.Lock()
	defer g.mu.Unlock()
	for t, old := range g.byToken {
		if now.After(old.expires) {
			delete(g.byToken, t)
		}
	}
	if len(g.byToken) >= maxExecGrants {
		return "", fmt.Errorf("too many exec sessions waiting to start: %w", errdefs.ErrResourceExhausted)
	}
	g.byToken[token] = grant
	return token, nil
}

// take removes and returns the grant of token, if it is there and alive.
func (g *execGrants) take(token string) (execGrant, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	grant, ok := g.byToken[token]
	delete(g.byToken, token)
	if !ok || time.Now().After(grant.expires) {
		return execGrant{}, false
	}
	return grant, true
}

// kindError is an error of one of errdefs' kinds whose text is exactly msg,
// for messages the CLI shows as docker words them.
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

// resolveExecUser resolves docker's --user (USER, UID, USER:GROUP,
// UID:GID) inside the container's rootfs, as CreateContainer resolves an
// image's USER: names through the image's /etc/passwd and /etc/group
// (opened confined to the rootfs), a numeric uid without a passwd entry
// taken as it is, with gid 0, and the user's groups from /etc/group added.
func resolveExecUser(rootfs, user string) (specs.User, error) {
	userPart, groupPart, _ := strings.Cut(user, ":")
	if userPart == "" {
		return specs.User{}, fmt.Errorf("user %q has no user part: %w", user, errdefs.ErrInvalidArgument)
	}
	// Check names first, so that an unknown one gets docker's words.
	if _, err := strconv.ParseUint(userPart, 10, 32); err != nil {
		if _, err := lookupPasswd(rootfs, func(e passwdEntry) bool { return e.name == userPart }); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return specs.User{}, &kindError{fmt.Sprintf("unable to find user %s: no matching entries in passwd file", userPart), errdefs.ErrInvalidArgument}
			}
			return specs.User{}, fmt.Errorf("read the container's /etc/passwd: %w", err)
		}
	}
	if groupPart != "" {
		if _, err := lookupGroup(rootfs, groupPart); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return specs.User{}, &kindError{fmt.Sprintf("unable to find group %s: no matching entries in group file", groupPart), errdefs.ErrInvalidArgument}
			}
			return specs.User{}, fmt.Errorf("read the container's /etc/group: %w", err)
		}
	}
	return resolveUser(rootfs, nil, user)
}

// mergeEnv sets each K=V of add in env, replacing an earlier value of K.
func mergeEnv(env, add []string) []string {
	out := append([]string(nil), env...)
	for _, kv := range add {
		k, _, _ := strings.Cut(kv, "=")
		replaced := false
		for i, old := range out {
			if ok, _, _ := strings.Cut(old, "="); ok == k {
				out[i] = kv
				replaced = true
				break
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}

// extExecRequest is an Exec request of the extension.
type extExecRequest struct {
	containerID        string
	cmd, env           []string
	user, workdir      string
	tty, stdin, detach bool
}

func parseExtExec(req *structpb.Struct) (extExecRequest, error) {
	f := req.GetFields()
	r := extExecRequest{
		containerID: f["containerId"].GetStringValue(),
		user:        f["user"].GetStringValue(),
		workdir:     f["workdir"].GetStringValue(),
		tty:         f["tty"].GetBoolValue(),
		stdin:       f["stdin"].GetBoolValue(),
		detach:      f["detach"].GetBoolValue(),
	}
	var err error
	if r.cmd, err = stringList(f["cmd"], "cmd"); err != nil {
		return r, fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	if r.env, err = stringList(f["env"], "env"); err != nil {
		return r, fmt.Errorf("%v: %w", err, errdefs.ErrInvalidArgument)
	}
	if len(r.cmd) == 0 {
		return r, fmt.Errorf("cmd is empty: %w", errdefs.ErrInvalidArgument)
	}
	for _, kv := range r.env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return r, fmt.Errorf("env %q is not KEY=VALUE: %w", kv, errdefs.ErrInvalidArgument)
		}
	}
	if r.workdir != "" && !path.IsAbs(r.workdir) {
		return r, &kindError{fmt.Sprintf("the working directory '%s' is invalid, it needs to be an absolute path", r.workdir), errdefs.ErrInvalidArgument}
	}
	return r, nil
}

// extExec starts an exec with the options CRI's ExecRequest lacks. It
// returns a streaming URL, or nothing for a detached exec, which runs on in
// berthd with its stdio on /dev/null.
func (x *Extensions) extExec(ctx context.Context, req *structpb.Struct) (*structpb.Struct, error) {
	r, err := parseExtExec(req)
	if err != nil {
		return nil, err
	}
	id, err := x.s.runningContainer(ctx, r.containerID)
	if err != nil {
		return nil, err
	}
	rec, err := x.s.containers.record(id)
	if err != nil {
		return nil, err
	}
	if p, ok := x.s.deps.Runtime.(pauser); ok {
		if paused, err := p.Paused(ctx, id); err == nil && paused {
			return nil, fmt.Errorf("Container %s is paused, unpause the container before exec: %w", id, errdefs.ErrFailedPrecondition)
		}
	}
	proc := execProcess(rec, r.cmd, r.tty)
	if r.user != "" {
		u, err := resolveExecUser(rec.Rootfs, r.user)
		if err != nil {
			return nil, err
		}
		proc.User = u
	}
	proc.Env = mergeEnv(proc.Env, r.env)
	if r.workdir != "" {
		proc.Cwd = r.workdir
	}
	if r.detach {
		st, err := x.s.deps.Runtime.State(ctx, id)
		if err != nil {
			return nil, err
		}
		if err := checkStartable(st.Pid, proc); err != nil {
			return nil, err
		}
		// The exec outlives this call and the client: only berthd's end
		// stops waiting for it.
		go func() {
			code, err := x.s.deps.Runtime.Exec(context.Background(), id, runtime.ExecOptions{Process: proc, Tty: r.tty})
			if err != nil {
				klog.ErrorS(err, "Detached exec failed", "containerID", id, "cmd", r.cmd)
				return
			}
			klog.V(2).InfoS("Detached exec exited", "containerID", id, "cmd", r.cmd, "exitCode", code)
		}()
		return structOf(map[string]any{})
	}
	token, err := x.execs.add(execGrant{containerID: id, process: proc})
	if err != nil {
		return nil, err
	}
	resp, err := x.s.stream.GetExec(&runtimeapi.ExecRequest{
		ContainerId: id, Cmd: []string{execTokenArg0, token},
		Tty: r.tty, Stdin: r.stdin, Stdout: true, Stderr: !r.tty,
	})
	if err != nil {
		x.execs.take(token)
		return nil, err
	}
	return structOf(map[string]any{"url": resp.GetUrl()})
}

// StreamRuntime is the runtime to build the streaming server over: the
// Service's, with extended execs recognised by their token.
func (x *Extensions) StreamRuntime() streaming.Runtime {
	return extStreamRuntime{streamRuntime: x.s.StreamRuntime(), x: x}
}

type extStreamRuntime struct {
	streamRuntime
	x *Extensions
}

// Exec runs an extended exec's process for a token command and hands any
// other command to the Service's runtime.
func (r extStreamRuntime) Exec(ctx context.Context, containerID string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommandserver.TerminalSize) error {
	if len(cmd) == 0 || cmd[0] != execTokenArg0 {
		return r.streamRuntime.Exec(ctx, containerID, cmd, in, out, errw, tty, resize)
	}
	var grant execGrant
	ok := len(cmd) == 2
	if ok {
		grant, ok = r.x.execs.take(cmd[1])
	}
	if !ok || grant.containerID != containerID {
		return fmt.Errorf("exec in %s: unknown or used exec token: %w", containerID, errdefs.ErrInvalidArgument)
	}
	return r.execStreams(ctx, containerID, grant.process, in, out, errw, tty, resize)
}
