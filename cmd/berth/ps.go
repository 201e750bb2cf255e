package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// psFilter is docker's --filter for ps: label=K[=V], name=, status=, id=,
// ancestor=. Several values of one key are ORed, different keys ANDed.
type psFilter map[string][]string

func parsePsFilters(vals []string) (psFilter, error) {
	f := psFilter{}
	for _, v := range vals {
		k, val, ok := strings.Cut(v, "=")
		if !ok {
			return nil, invalid("bad format of filter (expected name=value)")
		}
		switch k {
		case "label", "name", "status", "id", "ancestor":
		default:
			return nil, invalid("invalid filter '%s'", k)
		}
		if k == "status" {
			switch val {
			case "created", "running", "exited", "unknown":
			default:
				return nil, invalid("invalid filter 'status=%s'", val)
			}
		}
		f[k] = append(f[k], val)
	}
	return f, nil
}

func (f psFilter) match(c *container) bool {
	anyOf := func(key string, pred func(string) bool) bool {
		vals, ok := f[key]
		if !ok {
			return true
		}
		for _, v := range vals {
			if pred(v) {
				return true
			}
		}
		return false
	}
	// Every label filter must hold (docker ANDs labels).
	for _, l := range f["label"] {
		k, v, hasV := strings.Cut(l, "=")
		got, ok := c.status.GetLabels()[k]
		if !ok || (hasV && got != v) {
			return false
		}
	}
	return anyOf("name", func(v string) bool { return strings.Contains(c.Name, strings.TrimPrefix(v, "/")) }) &&
		anyOf("status", func(v string) bool { return stateString(c.status.GetState()) == v }) &&
		anyOf("id", func(v string) bool { return strings.HasPrefix(c.ID, v) }) &&
		anyOf("ancestor", func(v string) bool {
			return c.image() == v || shortImageName(c.status.GetImage().GetImage()) == v || strings.HasPrefix(strings.TrimPrefix(c.status.GetImageRef(), "sha256:"), strings.TrimPrefix(v, "sha256:"))
		})
}

// makePsRow renders one container as docker's ps does.
func makePsRow(c *container, noTrunc bool, now time.Time) psRow {
	id := truncID(c.ID)
	if noTrunc {
		id = c.ID
	}
	created := time.Unix(0, c.status.GetCreatedAt())
	var mounts []string
	for _, m := range c.status.GetMounts() {
		mounts = append(mounts, m.GetHostPath())
	}
	return psRow{
		ID:         id,
		Image:      c.image(),
		Command:    displayCommand(c.command(), !noTrunc),
		CreatedAt:  created.Format("2006-01-02 15:04:05 -0700 MST"),
		RunningFor: since(now, created) + " ago",
		Ports:      c.anno(annoPorts),
		State:      stateString(c.status.GetState()),
		Status:     statusString(c.status, now),
		Names:      c.Name,
		Labels:     formatLabels(c.status.GetLabels()),
		Mounts:     strings.Join(mounts, ","),
		labels:     c.status.GetLabels(),
	}
}

func newPsCommand(c *cli) *cobra.Command {
	var all, quiet, noTrunc, allNamespaces, latest bool
	var filters []string
	var format string
	var last int
	cmd := &cobra.Command{
		Use:   "ps [OPTIONS]",
		Short: "List containers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			f, err := parsePsFilters(filters)
			if err != nil {
				return err
			}
			rt, err := c.runtime(ctx)
			if err != nil {
				return err
			}
			var state *runtimeapi.ContainerStateValue
			if !all && len(f["status"]) == 0 && last < 0 && !latest {
				state = &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}
			}
			list, err := lister{rt: rt}.list(ctx, allNamespaces, state)
			if err != nil {
				return err
			}
			now := time.Now()
			paused := c.pausedIDs(ctx)
			var rows []any
			for _, ct := range list {
				if !f.match(ct) {
					continue
				}
				row := makePsRow(ct, noTrunc, now)
				if paused[ct.ID] && ct.status.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING {
					row.Status += " (Paused)"
					row.State = "paused"
				}
				rows = append(rows, row)
			}
			if latest {
				last = 1
			}
			if last >= 0 && len(rows) > last {
				rows = rows[:last]
			}
			if quiet {
				for _, r := range rows {
					fmt.Fprintln(cmd.OutOrStdout(), r.(psRow).ID)
				}
				return nil
			}
			if format == "" {
				format = psDefaultFormat
			}
			return table{format: format, headers: psHeaders}.write(cmd.OutOrStdout(), rows)
		},
	}
	fl := cmd.Flags()
	fl.BoolVarP(&all, "all", "a", false, "Show all containers (default shows just running)")
	fl.BoolVarP(&quiet, "quiet", "q", false, "Only display container IDs")
	fl.BoolVar(&noTrunc, "no-trunc", false, "Don't truncate output")
	fl.StringArrayVarP(&filters, "filter", "f", nil, "Filter output based on conditions provided")
	fl.StringVar(&format, "format", "", "Format output using a Go template")
	fl.BoolVar(&allNamespaces, "all-namespaces", false, "Include containers made by kubelet")
	fl.IntVarP(&last, "last", "n", -1, "Show n last created containers (includes all states)")
	fl.BoolVarP(&latest, "latest", "l", false, "Show the latest created container (includes all states)")
	return cmd
}
