// Command berth is the Docker-style CLI for berthd: a client of its CRI socket.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// defaultHost is berthd's default CRI socket.
const defaultHost = "unix:///run/berth/berth.sock"

// exitError carries a process exit status out of a command, as docker's
// StatusError does (125 when berth itself fails, the container's code otherwise).
// A silent one (the container's own non-zero exit) prints nothing.
type exitError struct {
	code   int
	err    error
	silent bool
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

func main() {
	os.Exit(execute(os.Args[1:]))
}

func execute(args []string) int {
	cli := &cli{}
	root := newRootCommand(cli)
	root.SetArgs(args)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) && ee.silent {
		return ee.code
	}
	fmt.Fprintf(os.Stderr, "Error: %v\n", err)
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

func newRootCommand(c *cli) *cobra.Command {
	root := &cobra.Command{
		Use:           "berth",
		Short:         "Run and manage containers on berthd",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRun: func(cmd *cobra.Command, args []string) {
			if c.host == "" {
				c.host = os.Getenv("BERTH_HOST")
			}
			if c.host == "" {
				c.host = defaultHost
			}
		},
	}
	// Docker exits 125 on a bad flag: berth itself failed, not a container.
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &exitError{code: 125, err: fmt.Errorf("%w\nSee '%s --help'", err, cmd.CommandPath())}
	})
	root.PersistentFlags().StringVarP(&c.host, "host", "H", "", "berthd socket to connect to (env BERTH_HOST, default "+defaultHost+")")
	container := &cobra.Command{Use: "container", Short: "Manage containers"}
	container.AddCommand(newContainerPruneCommand(c), newRunCommand(c), newCreateCommand(c), newPsCommand(c),
		newStopCommand(c), newStartCommand(c), newRestartCommand(c), newRmCommand(c), newKillCommand(c),
		newLogsCommand(c), newExecCommand(c), newInspectCommand(c), newStatsCommand(c), newTopCommand(c), newCpCommand(c),
		newAttachCommand(c), newWaitCommand(c), newRenameCommand(c), newPauseCommand(c, true), newPauseCommand(c, false))
	image := &cobra.Command{Use: "image", Short: "Manage images"}
	imageLs := newImagesCommand(c)
	imageLs.Use, imageLs.Aliases = "ls [OPTIONS] [REPOSITORY[:TAG]]", []string{"list"}
	imageRm := newRmiCommand(c)
	imageRm.Use = "rm [OPTIONS] IMAGE [IMAGE...]"
	image.AddCommand(newImagePruneCommand(c), newPullCommand(c), imageLs, imageRm, newInspectCommand(c))
	system := &cobra.Command{Use: "system", Short: "Manage berth"}
	system.AddCommand(newSystemDfCommand(c), newInfoCommand(c))
	root.AddCommand(
		newVersionCommand(c), newInfoCommand(c),
		newRunCommand(c), newCreateCommand(c), newPsCommand(c), newStartCommand(c), newStopCommand(c),
		newRestartCommand(c), newKillCommand(c), newRmCommand(c), newExecCommand(c), newLogsCommand(c),
		newInspectCommand(c), newStatsCommand(c), newTopCommand(c), newCpCommand(c),
		newAttachCommand(c), newWaitCommand(c), newRenameCommand(c), newPauseCommand(c, true), newPauseCommand(c, false),
		newImagesCommand(c), newPullCommand(c), newRmiCommand(c),
		container, image, system,
	)
	return root
}
