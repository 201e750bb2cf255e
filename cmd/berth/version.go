package main

import (
	"fmt"
	"runtime"
	"text/tabwriter"

	"github.com/spf13/cobra"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/version"
)

func newVersionCommand(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Show the berth client and berthd versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			w := tabwriter.NewWriter(out, 0, 0, 1, ' ', 0)
			fmt.Fprintf(w, "Client:\n")
			fmt.Fprintf(w, " Version:\t%s\n", version.Version())
			fmt.Fprintf(w, " API version:\tv1 (CRI)\n")
			fmt.Fprintf(w, " Go version:\t%s\n", runtime.Version())
			fmt.Fprintf(w, " OS/Arch:\t%s/%s\n", runtime.GOOS, runtime.GOARCH)
			w.Flush()

			rt, err := c.runtime(cmd.Context())
			if err != nil {
				return err
			}
			v, err := rt.Version(cmd.Context(), &runtimeapi.VersionRequest{})
			if err != nil {
				return fmt.Errorf("query berthd version: %w", err)
			}
			fmt.Fprintf(w, "\nServer: %s\n", v.RuntimeName)
			fmt.Fprintf(w, " Engine:\n")
			fmt.Fprintf(w, "  Version:\t%s\n", v.RuntimeVersion)
			fmt.Fprintf(w, "  API version:\t%s (CRI)\n", v.RuntimeApiVersion)
			fmt.Fprintf(w, "  Host:\t%s\n", c.host)
			return w.Flush()
		},
	}
}
