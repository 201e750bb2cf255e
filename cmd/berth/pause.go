package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// newPauseCommand is `berth pause` (pause true) or `berth unpause`: the
// container's processes frozen or thawed through berthd's extension (the
// CRI has no such call).
func newPauseCommand(c *cli, pause bool) *cobra.Command {
	use, short, method, verb := "pause", "Pause all processes within one or more containers", extPauseMethod, "pause"
	if !pause {
		use, short, method, verb = "unpause", "Unpause all processes within one or more containers", extUnpauseMethod, "unpause"
	}
	return &cobra.Command{
		Use:   use + " CONTAINER [CONTAINER...]",
		Short: short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			rt, err := c.runtime(ctx)
			if err != nil {
				return err
			}
			return eachContainer(ctx, lister{rt: rt}, args, func(s string) { fmt.Fprintln(cmd.OutOrStdout(), s) },
				func(ctx context.Context, ct *container) error {
					if pause && ct.status.GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
						return fmt.Errorf("Container %s is not running", ct.ID)
					}
					if _, err := c.callExt(ctx, method, map[string]any{"containerId": ct.ID}); err != nil {
						if isUnimplemented(err) {
							return fmt.Errorf("cannot %s container %s: this berthd cannot pause containers", verb, ct.Name)
						}
						return fmt.Errorf("%s", daemonMessage(err))
					}
					return nil
				})
		},
	}
}

// pausedIDs asks berthd which containers are paused; an older berthd, or
// an error, gives none.
func (c *cli) pausedIDs(ctx context.Context) map[string]bool {
	out, err := c.callExt(ctx, extPausedMethod, map[string]any{})
	if err != nil {
		return nil
	}
	ids := map[string]bool{}
	for _, v := range out.GetFields()["ids"].GetListValue().GetValues() {
		ids[v.GetStringValue()] = true
	}
	return ids
}
