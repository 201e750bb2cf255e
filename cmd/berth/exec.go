package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// execCommandLine wraps cmd for the options CRI's ExecRequest has no field
// for: -e through env(1) and -w through sh's cd. Only for a berthd without
// the exec extension: both need the programs in the image (busybox and most
// distributions have them).
func execCommandLine(cmd []string, env []*runtimeapi.KeyValue, workdir string) []string {
	if len(env) > 0 {
		pre := []string{"env"}
		for _, kv := range env {
			pre = append(pre, kv.Key+"="+string(kv.Value))
		}
		cmd = append(pre, cmd...)
	}
	if workdir != "" {
		cmd = append([]string{"sh", "-c", `cd "$0" && exec "$@"`, workdir}, cmd...)
	}
	return cmd
}

// execOptions are exec's flags.
type execOptions struct {
	interactive, tty, detach bool
	env                      []*runtimeapi.KeyValue
	user, workdir            string
	detachKeys               string
}

// extExec starts the exec through berthd's extension, which takes user,
// env, working directory and detach. It returns the streaming URL ("" when
// detached).
func (c *cli) extExec(ctx context.Context, id string, argv []string, o execOptions) (string, error) {
	cmd := make([]any, len(argv))
	for i, a := range argv {
		cmd[i] = a
	}
	env := make([]any, len(o.env))
	for i, kv := range o.env {
		env[i] = kv.Key + "=" + string(kv.Value)
	}
	resp, err := c.callExt(ctx, extExecMethod, map[string]any{
		"containerId": id, "cmd": cmd, "env": env, "user": o.user, "workdir": o.workdir,
		"tty": o.tty, "stdin": o.interactive, "detach": o.detach,
	})
	if err != nil {
		return "", err
	}
	return resp.GetFields()["url"].GetStringValue(), nil
}

// criExec starts the exec through CRI's Exec, for a berthd without the
// extension: -u and -d cannot be done there.
func (c *cli) criExec(ctx context.Context, rt runtimeapi.RuntimeServiceClient, id string, argv []string, o execOptions) (url string, err error) {
	if o.detach {
		return "", withCode(125, invalid("exec -d: this berthd has no detached exec (CRI's Exec ends the process with the client)"))
	}
	if o.user != "" {
		return "", withCode(125, invalid("exec -u: this berthd has no exec extension and CRI's Exec has no user field"))
	}
	argv = execCommandLine(argv, o.env, o.workdir)
	req := &runtimeapi.ExecRequest{ContainerId: id, Cmd: argv, Tty: o.tty, Stdin: o.interactive, Stdout: true, Stderr: !o.tty}
	resp, err := rt.Exec(ctx, req)
	if isUnimplemented(err) && !o.interactive && !o.tty {
		// Without streams ExecSync does: it buffers the output.
		r, serr := rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: id, Cmd: argv})
		if serr != nil {
			return "", withCode(126, rpcError("ExecSync", serr))
		}
		_, _ = os.Stdout.Write(r.GetStdout())
		_, _ = os.Stderr.Write(r.GetStderr())
		if r.GetExitCode() != 0 {
			return "", &exitError{code: int(r.GetExitCode()), silent: true}
		}
		return "", nil
	}
	if err != nil {
		return "", withCode(126, rpcError("Exec", err))
	}
	return resp.GetUrl(), nil
}

func newExecCommand(c *cli) *cobra.Command {
	var o execOptions
	var env []string
	cmd := &cobra.Command{
		Use:   "exec [OPTIONS] CONTAINER COMMAND [ARG...]",
		Short: "Execute a command in a running container",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			kvs, err := parseEnv(env, os.LookupEnv)
			if err != nil {
				return withCode(125, err)
			}
			o.env = kvs
			if o.tty && o.interactive && !o.detach && !term.IsTerminal(int(os.Stdin.Fd())) {
				return withCode(125, errors.New("the input device is not a TTY"))
			}
			rt, err := c.runtime(ctx)
			if err != nil {
				return withCode(125, err)
			}
			ct, err := lister{rt: rt}.resolve(ctx, args[0])
			if err != nil {
				return err
			}
			if ct.status.GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
				return fmt.Errorf("container %s is not running", ct.ID)
			}
			url, err := c.extExec(ctx, ct.ID, args[1:], o)
			if status.Code(err) == codes.Unimplemented {
				url, err = c.criExec(ctx, rt, ct.ID, args[1:], o)
				if err != nil || url == "" {
					return err
				}
			} else if err != nil {
				var ee *exitError
				if errors.As(err, &ee) {
					return err
				}
				// docker: an exec that cannot start (an unknown user, a
				// bad working directory) is 126.
				return withCode(126, errors.New(daemonMessage(err)))
			}
			if o.detach {
				return nil
			}
			_, err = stream(ctx, url, streamOpts{stdin: o.interactive, stdout: true, stderr: !o.tty, tty: o.tty, detachKeys: o.detachKeys})
			if code, ok := exitStatus(err); ok {
				return &exitError{code: code, silent: true}
			}
			if err != nil {
				return withCode(126, err)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.SetInterspersed(false)
	fl.BoolVarP(&o.interactive, "interactive", "i", false, "Keep STDIN open even if not attached")
	fl.BoolVarP(&o.tty, "tty", "t", false, "Allocate a pseudo-TTY")
	fl.BoolVarP(&o.detach, "detach", "d", false, "Detached mode: run command in the background")
	fl.StringArrayVarP(&env, "env", "e", nil, "Set environment variables")
	fl.StringVarP(&o.user, "user", "u", "", "Username or UID (format: \"<name|uid>[:<group|gid>]\")")
	fl.StringVarP(&o.workdir, "workdir", "w", "", "Working directory inside the container")
	fl.StringVar(&o.detachKeys, "detach-keys", "ctrl-p,ctrl-q", "Override the key sequence for detaching a container")
	return cmd
}
