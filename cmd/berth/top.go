package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// containerPid is the container's init pid on the host, from berthd's
// verbose status ("pid").
func containerPid(ctx context.Context, rt runtimeapi.RuntimeServiceClient, id string) (int, map[string]any, error) {
	resp, err := rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true})
	if err != nil {
		return 0, nil, rpcError("ContainerStatus", err)
	}
	info := verboseInfo(resp.GetInfo())
	pid, _ := info[infoPid].(float64)
	return int(pid), info, nil
}

// pidsInNamespaceOf lists the host pids sharing pid's pid namespace and
// cgroup: the container's processes. The cgroup check keeps a pod-shared
// namespace (--init) from listing the holder's init as the container's.
func pidsInNamespaceOf(procRoot string, pid int) (map[int]bool, error) {
	ns, err := os.Readlink(filepath.Join(procRoot, strconv.Itoa(pid), "ns", "pid"))
	if err != nil {
		return nil, fmt.Errorf("container process %d: %w", pid, err)
	}
	entries, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, err
	}
	out := map[int]bool{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink(filepath.Join(procRoot, e.Name(), "ns", "pid")); err == nil && l == ns {
			out[p] = true
		}
	}
	return out, nil
}

// filterPs keeps ps(1) output lines whose PID column is in pids, as docker
// top does with the host's ps.
func filterPs(out []byte, pids map[int]bool) ([]string, error) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	if !sc.Scan() {
		return nil, fmt.Errorf("ps printed nothing")
	}
	header := sc.Text()
	col := -1
	for i, f := range strings.Fields(header) {
		if f == "PID" {
			col = i
		}
	}
	if col < 0 {
		return nil, fmt.Errorf("couldn't find PID field in ps output")
	}
	lines := []string{header}
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) <= col {
			continue
		}
		if p, err := strconv.Atoi(f[col]); err == nil && pids[p] {
			lines = append(lines, sc.Text())
		}
	}
	return lines, nil
}

// splitFields splits a ps line into n columns, the last (the command)
// keeping its spaces.
func splitFields(l string, n int) []string {
	var out []string
	for len(out) < n-1 {
		l = strings.TrimLeft(l, " ")
		i := strings.IndexByte(l, ' ')
		if i < 0 {
			break
		}
		out = append(out, l[:i])
		l = l[i:]
	}
	if l = strings.TrimSpace(l); l != "" {
		out = append(out, l)
	}
	return out
}

func newTopCommand(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "top CONTAINER [ps OPTIONS]",
		Short: "Display the running processes of a container",
		Args:  cobra.MinimumNArgs(1),
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
				return fmt.Errorf("container %s is not running", ct.ID)
			}
			pid, _, err := containerPid(ctx, rt, ct.ID)
			if err != nil {
				return err
			}
			if pid <= 0 {
				return fmt.Errorf("berthd did not report the pid of container %s (verbose status key %q)", ct.ID, infoPid)
			}
			pids, err := pidsInNamespaceOf("/proc", pid)
			if err != nil {
				return err
			}
			psArgs := args[1:]
			if len(psArgs) == 0 {
				psArgs = []string{"-ef"}
			}
			out, err := exec.CommandContext(ctx, "ps", psArgs...).Output()
			if err != nil {
				return fmt.Errorf("ps %s: %w", strings.Join(psArgs, " "), err)
			}
			lines, err := filterPs(out, pids)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 20, 1, 3, ' ', 0)
			n := len(strings.Fields(lines[0]))
			for _, l := range lines {
				fmt.Fprintln(w, strings.Join(splitFields(l, n), "\t"))
			}
			return w.Flush()
		},
	}
	cmd.Flags().SetInterspersed(false)
	return cmd
}
