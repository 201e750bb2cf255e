package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func newAttachCommand(c *cli) *cobra.Command {
	var noStdin, sigProxy bool
	var detachKeys string
	cmd := &cobra.Command{
		Use:   "attach [OPTIONS] CONTAINER",
		Short: "Attach local standard input, output, and error streams to a running container",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			rt, err := c.runtime(ctx)
			if err != nil {
				return err
			}
			ct, err := lister{rt: rt}.resolve(ctx, args[0])
			if err != nil {
				return err
			}
			if ct.status.GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
				return errors.New("You cannot attach to a stopped container, start it first")
			}
			// Output from now on: what the container wrote before is
			// for logs, as with docker.
			o := &runOptions{detachKeys: detachKeys, sigProxy: sigProxy, logOffset: logSize(ct.status.GetLogPath())}
			if s := ct.anno(annoConfig); s != "" {
				var cc runtimeapi.ContainerConfig
				if protojson.Unmarshal([]byte(s), &cc) == nil {
					o.tty = cc.GetTty()
					o.interactive = !noStdin && cc.GetStdin()
				}
			}
			st, detached, err := c.attachAndWait(ctx, rt, ct.ID, o, false)
			if err != nil || detached {
				return err
			}
			return exitFromStatus(st)
		},
	}
	cmd.Flags().BoolVar(&noStdin, "no-stdin", false, "Do not attach STDIN")
	cmd.Flags().StringVar(&detachKeys, "detach-keys", "ctrl-p,ctrl-q", "Override the key sequence for detaching a container")
	cmd.Flags().BoolVar(&sigProxy, "sig-proxy", true, "Proxy all received signals to the process")
	return cmd
}

func newWaitCommand(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "wait CONTAINER [CONTAINER...]",
		Short: "Block until one or more containers stop, then print their exit codes",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			rt, err := c.runtime(ctx)
			if err != nil {
				return err
			}
			return eachContainer(ctx, lister{rt: rt}, args, nil, func(ctx context.Context, ct *container) error {
				st, err := waitExited(ctx, rt, ct.ID)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), st.GetExitCode())
				return nil
			})
		},
	}
}

func newRenameCommand(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "rename CONTAINER NEW_NAME",
		Short: "Rename a container",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			newName := args[1]
			if !validName.MatchString(newName) {
				return invalid("Invalid container name (%s), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed", newName)
			}
			rt, err := c.runtime(ctx)
			if err != nil {
				return err
			}
			ct, err := lister{rt: rt}.resolve(ctx, args[0])
			if err != nil {
				return err
			}
			if ct.Name == newName {
				return errors.New("Renaming a container with the same name as its current name")
			}
			if _, err := c.callExt(ctx, extRenameMethod, map[string]any{"containerId": ct.ID, "name": newName}); err != nil {
				if isUnimplemented(err) {
					return errors.New("this berthd cannot rename containers (no rename extension)")
				}
				return fmt.Errorf("Error when allocating new name: %s", daemonMessage(err))
			}
			return nil
		},
	}
}
