package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// execCommandLine wraps cmd for the options CRI's ExecRequest has no field
// for: -e through env(1) and -w through sh's cd. Both need the programs in
// the image (busybox and most distributions have them); -u has no such
// route and is refused. berthd could take them as an extension.
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

func newExecCommand(c *cli) *cobra.Command {
	var interactive, tty, detach bool
	var env []string
	var user, workdir, detachKeys string
	cmd := &cobra.Command{
		Use:   "exec [OPTIONS] CONTAINER COMMAND [ARG...]",
		Short: "Execute a command in a running container",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if detach {
				// CRI has no detached exec: Exec streams and ExecSync waits,
				// and both end the process when the client goes.
				return withCode(125, invalid("exec -d: CRI has no detached exec"))
			}
			if user != "" {
				return withCode(125, invalid("exec -u: CRI's Exec has no user field; berthd runs exec as the container's user"))
			}
			kvs, err := parseEnv(env, os.LookupEnv)
			if err != nil {
				return withCode(125, err)
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
			argv := execCommandLine(args[1:], kvs, workdir)
			req := &runtimeapi.ExecRequest{ContainerId: ct.ID, Cmd: argv, Tty: tty, Stdin: interactive, Stdout: true, Stderr: !tty}
			resp, err := rt.Exec(ctx, req)
			if isUnimplemented(err) && !interactive && !tty {
				// Without streams ExecSync does: it buffers the output.
				r, serr := rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: ct.ID, Cmd: argv})
				if serr != nil {
					return withCode(126, rpcError("ExecSync", serr))
				}
				_, _ = os.Stdout.Write(r.GetStdout())
				_, _ = os.Stderr.Write(r.GetStderr())
				if r.GetExitCode() != 0 {
					return &exitError{code: int(r.GetExitCode()), silent: true}
				}
				return nil
			}
			if err != nil {
				return withCode(126, rpcError("Exec", err))
			}
			_, err = stream(ctx, resp.GetUrl(), streamOpts{stdin: interactive, stdout: true, stderr: !tty, tty: tty, detachKeys: detachKeys})
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
	fl.BoolVarP(&interactive, "interactive", "i", false, "Keep STDIN open even if not attached")
	fl.BoolVarP(&tty, "tty", "t", false, "Allocate a pseudo-TTY")
	fl.BoolVarP(&detach, "detach", "d", false, "Detached mode: run command in the background")
	fl.StringArrayVarP(&env, "env", "e", nil, "Set environment variables")
	fl.StringVarP(&user, "user", "u", "", "Username or UID (not supported by CRI exec)")
	fl.StringVarP(&workdir, "workdir", "w", "", "Working directory inside the container")
	fl.StringVar(&detachKeys, "detach-keys", "ctrl-p,ctrl-q", "Override the key sequence for detaching a container")
	return cmd
}
