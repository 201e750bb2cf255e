package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protojson"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func newStopCommand(c *cli) *cobra.Command {
	var timeout int64
	cmd := &cobra.Command{
		Use:   "stop [OPTIONS] CONTAINER [CONTAINER...]",
		Short: "Stop one or more running containers",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			rt, err := c.runtime(ctx)
			if err != nil {
				return err
			}
			return eachContainer(ctx, lister{rt: rt}, args, func(s string) { fmt.Fprintln(cmd.OutOrStdout(), s) },
				func(ctx context.Context, ct *container) error {
					_, err := rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: ct.ID, Timeout: timeout})
					return rpcError("StopContainer", err)
				})
		},
	}
	cmd.Flags().Int64VarP(&timeout, "time", "t", 10, "Seconds to wait before killing the container")
	cmd.Flags().Int64Var(&timeout, "timeout", 10, "Seconds to wait before killing the container")
	_ = cmd.Flags().MarkHidden("timeout")
	return cmd
}

// parseSignal parses docker's --signal: a name with or without SIG
// (KILL, SIGTERM, term) or a number.
func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > 64 {
			return 0, invalid("invalid signal: %s", s)
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	sig := unix.SignalNum(name)
	if sig == 0 {
		return 0, invalid("invalid signal: %s", s)
	}
	return sig, nil
}

func newKillCommand(c *cli) *cobra.Command {
	var sigName string
	cmd := &cobra.Command{
		Use:   "kill [OPTIONS] CONTAINER [CONTAINER...]",
		Short: "Kill one or more running containers",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sig, err := parseSignal(sigName)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			rt, err := c.runtime(ctx)
			if err != nil {
				return err
			}
			return eachContainer(ctx, lister{rt: rt}, args, func(s string) { fmt.Fprintln(cmd.OutOrStdout(), s) },
				func(ctx context.Context, ct *container) error {
					if ct.status.GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
						return fmt.Errorf("cannot kill container: %s: container %s is not running", ct.Name, ct.ID)
					}
					_, err := c.callExt(ctx, extKillMethod, map[string]any{"containerId": ct.ID, "signal": float64(sig)})
					if !isUnimplemented(err) {
						if err != nil {
							return fmt.Errorf("cannot kill container: %s: %s", ct.Name, daemonMessage(err))
						}
						return nil
					}
					if sig != syscall.SIGKILL {
						// CRI can stop a container (its stop signal, then
						// SIGKILL) or kill it (a zero timeout); it has no
						// call to send a signal.
						return fmt.Errorf("cannot kill container: %s: this berthd can only send SIGKILL (no signal extension)", ct.Name)
					}
					_, err = rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: ct.ID, Timeout: 0})
					return rpcError("StopContainer", err)
				})
		},
	}
	cmd.Flags().StringVarP(&sigName, "signal", "s", "KILL", "Signal to send to the container")
	return cmd
}

func newStartCommand(c *cli) *cobra.Command {
	var attach, interactive bool
	var detachKeys string
	cmd := &cobra.Command{
		Use:   "start [OPTIONS] CONTAINER [CONTAINER...]",
		Short: "Start one or more stopped containers",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			rt, err := c.runtime(ctx)
			if err != nil {
				return err
			}
			if attach || interactive {
				if len(args) > 1 {
					return invalid("you cannot start and attach multiple containers at once")
				}
				ct, err := lister{rt: rt}.resolve(ctx, args[0])
				if err != nil {
					return err
				}
				offset := logSize(ct.status.GetLogPath())
				id, err := startContainer(ctx, rt, ct, false)
				if err != nil {
					return err
				}
				o := &runOptions{interactive: interactive, detachKeys: detachKeys, sigProxy: true, logOffset: offset}
				if s := ct.anno(annoConfig); s != "" {
					var cc runtimeapi.ContainerConfig
					if protojson.Unmarshal([]byte(s), &cc) == nil {
						o.tty = cc.GetTty()
						o.interactive = interactive && cc.GetStdin()
					}
				}
				st, detached, err := c.attachAndWait(ctx, rt, id, o, false)
				if err != nil || detached {
					return err
				}
				return exitFromStatus(st)
			}
			return eachContainer(ctx, lister{rt: rt}, args, func(s string) { fmt.Fprintln(cmd.OutOrStdout(), s) },
				func(ctx context.Context, ct *container) error {
					_, err := startContainer(ctx, rt, ct, true)
					return err
				})
		},
	}
	cmd.Flags().BoolVarP(&attach, "attach", "a", false, "Attach STDOUT/STDERR and forward signals")
	cmd.Flags().BoolVarP(&interactive, "interactive", "i", false, "Attach container's STDIN")
	cmd.Flags().StringVar(&detachKeys, "detach-keys", "ctrl-p,ctrl-q", "Override the key sequence for detaching a container")
	return cmd
}

// startContainer starts a created container, or brings back an exited one.
// CRI cannot start a container twice, so an exited CLI container is
// re-created in its pod from the config berth kept (as kubelet restarts a
// container: a new attempt; the container gets a new ID).
func startContainer(ctx context.Context, rt runtimeapi.RuntimeServiceClient, ct *container, quietRunning bool) (string, error) {
	switch ct.status.GetState() {
	case runtimeapi.ContainerState_CONTAINER_RUNNING:
		return ct.ID, nil
	case runtimeapi.ContainerState_CONTAINER_CREATED:
		_, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ct.ID})
		if err != nil {
			return "", startError(rpcError("StartContainer", err))
		}
		return ct.ID, nil
	}
	if !ct.isCLI() || ct.anno(annoConfig) == "" {
		return "", fmt.Errorf("container %s was not made by berth run and cannot be restarted from here", ct.Name)
	}
	var cfg runtimeapi.ContainerConfig
	var podCfg runtimeapi.PodSandboxConfig
	if err := protojson.Unmarshal([]byte(ct.anno(annoConfig)), &cfg); err != nil {
		return "", fmt.Errorf("container %s: stored config: %w", ct.Name, err)
	}
	if err := protojson.Unmarshal([]byte(ct.anno(annoPodConfig)), &podCfg); err != nil {
		return "", fmt.Errorf("container %s: stored pod config: %w", ct.Name, err)
	}
	cfg.Annotations[annoConfig] = ct.anno(annoConfig)
	if cfg.Labels == nil {
		cfg.Labels = map[string]string{}
	}
	// The stored config has the name it was created with; a rename since
	// changed only the label.
	cfg.Labels[labelName] = ct.Name
	cfg.Annotations[annoPodConfig] = ct.anno(annoPodConfig)
	cfg.Metadata.Attempt = ct.status.GetMetadata().GetAttempt() + 1
	if _, err := rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: ct.ID}); err != nil {
		return "", rpcError("RemoveContainer", err)
	}
	cr, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: ct.PodID, Config: &cfg, SandboxConfig: &podCfg})
	if err != nil {
		return "", rpcError("CreateContainer", err)
	}
	if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.GetContainerId()}); err != nil {
		return "", startError(rpcError("StartContainer", err))
	}
	return cr.GetContainerId(), nil
}

func newRestartCommand(c *cli) *cobra.Command {
	var timeout int64
	cmd := &cobra.Command{
		Use:   "restart [OPTIONS] CONTAINER [CONTAINER...]",
		Short: "Restart one or more containers",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			rt, err := c.runtime(ctx)
			if err != nil {
				return err
			}
			l := lister{rt: rt}
			return eachContainer(ctx, l, args, func(s string) { fmt.Fprintln(cmd.OutOrStdout(), s) },
				func(ctx context.Context, ct *container) error {
					if ct.status.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING {
						if _, err := rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: ct.ID, Timeout: timeout}); err != nil {
							return rpcError("StopContainer", err)
						}
						st, err := rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ct.ID})
						if err != nil {
							return rpcError("ContainerStatus", err)
						}
						ct.status = st.GetStatus()
					}
					_, err := startContainer(ctx, rt, ct, true)
					return err
				})
		},
	}
	cmd.Flags().Int64VarP(&timeout, "time", "t", 10, "Seconds to wait before killing the container")
	return cmd
}

func newRmCommand(c *cli) *cobra.Command {
	var force, volumes bool
	cmd := &cobra.Command{
		Use:   "rm [OPTIONS] CONTAINER [CONTAINER...]",
		Short: "Remove one or more containers",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			rt, err := c.runtime(ctx)
			if err != nil {
				return err
			}
			return eachContainer(ctx, lister{rt: rt}, args, func(s string) { fmt.Fprintln(cmd.OutOrStdout(), s) },
				func(ctx context.Context, ct *container) error {
					return removeContainer(ctx, rt, ct, force, "")
				})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "Force the removal of a running container")
	cmd.Flags().BoolVarP(&volumes, "volumes", "v", false, "Remove anonymous volumes (berth has none)")
	return cmd
}

func newContainerPruneCommand(c *cli) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "prune [OPTIONS]",
		Short: "Remove all stopped containers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !force && !confirm(cmd, "WARNING! This will remove all stopped containers.") {
				return nil
			}
			ctx := cmd.Context()
			rt, err := c.runtime(ctx)
			if err != nil {
				return err
			}
			list, err := lister{rt: rt}.list(ctx, false, nil)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "Deleted Containers:")
			for _, ct := range list {
				if ct.status.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING {
					continue
				}
				if err := removeContainer(ctx, rt, ct, false, ""); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), ct.ID)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "\nTotal reclaimed space: %s\n", humanSize(0))
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "Do not prompt for confirmation")
	return cmd
}
