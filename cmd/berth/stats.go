package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/docker/go-units"
	"github.com/spf13/cobra"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// statsRow is one line of `berth stats`, with docker's field names.
type statsRow struct {
	ID        string
	Container string
	Name      string
	CPUPerc   string
	MemUsage  string
	MemPerc   string
	NetIO     string
	BlockIO   string
	PIDs      string
}

var statsHeaders = map[string]string{
	"ID": "CONTAINER ID", "Container": "CONTAINER", "Name": "NAME", "CPUPerc": "CPU %",
	"MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O", "BlockIO": "BLOCK I/O", "PIDs": "PIDS",
}

const statsDefaultFormat = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}"

// cpuSample is a container's cumulative CPU time at one moment.
type cpuSample struct {
	at    int64 // ns
	usage uint64
}

// cpuPercent is docker's CPU %: CPU time used over wall time, where 100% is
// one CPU.
func cpuPercent(prev, cur cpuSample) float64 {
	if prev.at == 0 || cur.at <= prev.at || cur.usage < prev.usage {
		return 0
	}
	return float64(cur.usage-prev.usage) / float64(cur.at-prev.at) * 100
}

func binarySize(n uint64) string { return units.BytesSize(float64(n)) }

// hostMemory is the limit shown for containers without one, as docker shows
// the host's memory.
func hostMemory() uint64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		var kb uint64
		if _, err := fmt.Sscanf(l, "MemTotal: %d kB", &kb); err == nil {
			return kb * 1024
		}
	}
	return 0
}

func newStatsCommand(c *cli) *cobra.Command {
	var all, noStream, noTrunc bool
	var format string
	cmd := &cobra.Command{
		Use:   "stats [OPTIONS] [CONTAINER...]",
		Short: "Display a live stream of container(s) resource usage statistics",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			rt, err := c.runtime(ctx)
			if err != nil {
				return err
			}
			if format == "" {
				format = statsDefaultFormat
			}
			prev := map[string]cpuSample{}
			out := cmd.OutOrStdout()
			live := !noStream && isTerminal(out)
			first := true
			for {
				rows, err := statsOnce(ctx, rt, args, all, noTrunc, prev)
				if err != nil {
					return err
				}
				// The first sample has no CPU rate yet: take a second one a
				// second later (docker does the same for --no-stream).
				if first {
					first = false
					select {
					case <-ctx.Done():
						return ctx.Err()
					case <-time.After(time.Second):
					}
					continue
				}
				if live {
					io.WriteString(out, "\033[2J\033[H")
				}
				if err := (table{format: format, headers: statsHeaders}).write(out, rows); err != nil {
					return err
				}
				if noStream {
					return nil
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(time.Second):
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "Show all containers (default shows just running)")
	cmd.Flags().BoolVar(&noStream, "no-stream", false, "Disable streaming stats and only pull the first result")
	cmd.Flags().BoolVar(&noTrunc, "no-trunc", false, "Do not truncate output")
	cmd.Flags().StringVar(&format, "format", "", "Format output using a Go template")
	return cmd
}

func statsOnce(ctx context.Context, rt runtimeapi.RuntimeServiceClient, args []string, all, noTrunc bool, prev map[string]cpuSample) ([]any, error) {
	l := lister{rt: rt}
	var targets []*container
	if len(args) > 0 {
		for _, a := range args {
			ct, err := l.resolve(ctx, a)
			if err != nil {
				return nil, err
			}
			targets = append(targets, ct)
		}
	} else {
		var state *runtimeapi.ContainerStateValue
		if !all {
			state = &runtimeapi.ContainerStateValue{State: runtimeapi.ContainerState_CONTAINER_RUNNING}
		}
		list, err := l.list(ctx, false, state)
		if err != nil {
			return nil, err
		}
		targets = list
	}
	resp, err := rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{})
	if err != nil {
		return nil, rpcError("ListContainerStats", err)
	}
	byID := map[string]*runtimeapi.ContainerStats{}
	for _, s := range resp.GetStats() {
		byID[s.GetAttributes().GetId()] = s
	}
	podStats := map[string]*runtimeapi.PodSandboxStats{}
	if pr, err := rt.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{}); err == nil {
		for _, s := range pr.GetStats() {
			podStats[s.GetAttributes().GetId()] = s
		}
	}
	hostMem := hostMemory()
	var rows []any
	for _, ct := range targets {
		id := truncID(ct.ID)
		if noTrunc {
			id = ct.ID
		}
		row := statsRow{ID: id, Container: id, Name: ct.Name, CPUPerc: "--", MemUsage: "-- / --", MemPerc: "--", NetIO: "--", BlockIO: "--", PIDs: "--"}
		if s := byID[ct.ID]; s != nil {
			if cpu := s.GetCpu(); cpu != nil {
				var pct float64
				if n := cpu.GetUsageNanoCores(); n != nil {
					pct = float64(n.GetValue()) / 1e7
				} else if u := cpu.GetUsageCoreNanoSeconds(); u != nil {
					cur := cpuSample{at: cpu.GetTimestamp(), usage: u.GetValue()}
					if cur.at == 0 {
						cur.at = time.Now().UnixNano()
					}
					pct = cpuPercent(prev[ct.ID], cur)
					prev[ct.ID] = cur
				}
				row.CPUPerc = fmt.Sprintf("%.2f%%", pct)
			}
			if mem := s.GetMemory(); mem != nil && mem.GetWorkingSetBytes() != nil {
				used := mem.GetWorkingSetBytes().GetValue()
				limit := uint64(ct.status.GetResources().GetLinux().GetMemoryLimitInBytes())
				if limit == 0 {
					limit = hostMem
				}
				row.MemUsage = binarySize(used) + " / " + binarySize(limit)
				if limit > 0 {
					row.MemPerc = fmt.Sprintf("%.2f%%", float64(used)/float64(limit)*100)
				}
			}
		}
		if ps := podStats[ct.PodID]; ps != nil {
			var rx, tx uint64
			for _, iface := range ps.GetLinux().GetNetwork().GetInterfaces() {
				rx += iface.GetRxBytes().GetValue()
				tx += iface.GetTxBytes().GetValue()
			}
			if def := ps.GetLinux().GetNetwork().GetDefaultInterface(); def != nil {
				rx += def.GetRxBytes().GetValue()
				tx += def.GetTxBytes().GetValue()
			}
			if ps.GetLinux().GetNetwork() != nil {
				row.NetIO = humanSize(rx) + " / " + humanSize(tx)
			}
			if p := ps.GetLinux().GetProcess(); p != nil && p.GetProcessCount() != nil {
				row.PIDs = fmt.Sprint(p.GetProcessCount().GetValue())
			}
		}
		rows = append(rows, row)
	}
	return rows, nil
}
