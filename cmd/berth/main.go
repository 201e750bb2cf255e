// Command berth is the Docker-style CLI for berthd: a client of its CRI socket.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// defaultHost is berthd's default CRI socket.
const defaultHost = "unix:///run/berth/berth.sock"

// exitError carries a process exit status out of a command, as docker's
// StatusError does (125 when berth itself fails, the container's code otherwise).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func main() {
	os.Exit(execute(os.Args[1:]))
}

func execute(args []string) int {
	cli := &cli{}
	root := newRootCommand(cli)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	fmt.Fprintf(os.Stderr, "Error: %v\n", err)
	var ee *exitError
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
	root.PersistentFlags().StringVarP(&c.host, "host", "H", "", "berthd socket to connect to (env BERTH_HOST, default "+defaultHost+")")
	root.AddCommand(newVersionCommand(c))
	return root
}
