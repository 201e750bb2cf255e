package main

import (
	"fmt"
	"runtime"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/version"
)

func newInfoCommand(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "info",
		Short: "Display system-wide information",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			rt, err := c.runtime(ctx)
			if err != nil {
				return err
			}
			is, err := c.images(ctx)
			if err != nil {
				return err
			}
			v, err := rt.Version(ctx, &runtimeapi.VersionRequest{})
			if err != nil {
				return rpcError("Version", err)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Client:\n Version:    %s\n Context:    %s\n\n", version.Version(), c.host)
			fmt.Fprintf(w, "Server:\n")
			// Each part degrades on its own: a berthd that lacks one call
			// still shows the rest.
			if list, err := (lister{rt: rt}).list(ctx, false, nil); err == nil {
				var running, stopped int
				for _, ct := range list {
					if ct.status.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING {
						running++
					} else {
						stopped++
					}
				}
				fmt.Fprintf(w, " Containers: %d\n  Running: %d\n  Paused: 0\n  Stopped: %d\n", len(list), running, stopped)
			} else {
				fmt.Fprintf(w, " Containers: unknown (%v)\n", err)
			}
			if imgs, err := is.ListImages(ctx, &runtimeapi.ListImagesRequest{}); err == nil {
				fmt.Fprintf(w, " Images: %d\n", len(imgs.GetImages()))
			} else {
				fmt.Fprintf(w, " Images: unknown (%v)\n", rpcError("ListImages", err))
			}
			fmt.Fprintf(w, " Server Version: %s\n", v.GetRuntimeVersion())
			fmt.Fprintf(w, " Runtime: %s (CRI %s)\n", v.GetRuntimeName(), v.GetRuntimeApiVersion())
			if st, err := rt.Status(ctx, &runtimeapi.StatusRequest{}); err == nil {
				for _, cond := range st.GetStatus().GetConditions() {
					line := fmt.Sprintf(" %s: %v", cond.GetType(), cond.GetStatus())
					if cond.GetReason() != "" {
						line += fmt.Sprintf(" (%s: %s)", cond.GetReason(), cond.GetMessage())
					}
					fmt.Fprintln(w, line)
				}
				for _, h := range st.GetRuntimeHandlers() {
					fmt.Fprintf(w, " Runtime handler: %s\n", orDefault(h.GetName(), "default"))
				}
			}
			cgroup := "1"
			if fs := new(unix.Statfs_t); unix.Statfs("/sys/fs/cgroup", fs) == nil && fs.Type == unix.CGROUP2_SUPER_MAGIC {
				cgroup = "2"
			}
			fmt.Fprintf(w, " Cgroup Driver: cgroupfs\n Cgroup Version: %s\n", cgroup)
			var u unix.Utsname
			if unix.Uname(&u) == nil {
				fmt.Fprintf(w, " Kernel Version: %s\n", unix.ByteSliceToString(u.Release[:]))
			}
			fmt.Fprintf(w, " OSType: %s\n Architecture: %s\n CPUs: %d\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
			if m := hostMemory(); m > 0 {
				fmt.Fprintf(w, " Total Memory: %s\n", binarySize(m))
			}
			return nil
		},
	}
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func newSystemDfCommand(c *cli) *cobra.Command {
	return &cobra.Command{
		Use:   "df",
		Short: "Show berth disk usage",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			rt, err := c.runtime(ctx)
			if err != nil {
				return err
			}
			is, err := c.images(ctx)
			if err != nil {
				return err
			}
			imgs, err := is.ListImages(ctx, &runtimeapi.ListImagesRequest{})
			if err != nil {
				return rpcError("ListImages", err)
			}
			used, err := imagesInUse(ctx, rt)
			if err != nil {
				return err
			}
			var imgSize, imgReclaim uint64
			active := 0
			for _, img := range imgs.GetImages() {
				imgSize += img.GetSize()
				if len(used[img.GetId()]) > 0 {
					active++
				} else {
					imgReclaim += img.GetSize()
				}
			}
			list, err := lister{rt: rt}.list(ctx, false, nil)
			if err != nil {
				return err
			}
			var ctrSize, ctrReclaim uint64
			running := 0
			if stats, err := rt.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{}); err == nil {
				byID := map[string]uint64{}
				for _, s := range stats.GetStats() {
					byID[s.GetAttributes().GetId()] = s.GetWritableLayer().GetUsedBytes().GetValue()
				}
				for _, ct := range list {
					ctrSize += byID[ct.ID]
					if ct.status.GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
						ctrReclaim += byID[ct.ID]
					}
				}
			}
			for _, ct := range list {
				if ct.status.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING {
					running++
				}
			}
			pct := func(part, whole uint64) string {
				if whole == 0 {
					return ""
				}
				return fmt.Sprintf(" (%d%%)", part*100/whole)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 10, 1, 3, ' ', 0)
			fmt.Fprintln(tw, "TYPE\tTOTAL\tACTIVE\tSIZE\tRECLAIMABLE")
			fmt.Fprintf(tw, "Images\t%d\t%d\t%s\t%s%s\n", len(imgs.GetImages()), active, humanSize(imgSize), humanSize(imgReclaim), pct(imgReclaim, imgSize))
			fmt.Fprintf(tw, "Containers\t%d\t%d\t%s\t%s%s\n", len(list), running, humanSize(ctrSize), humanSize(ctrReclaim), pct(ctrReclaim, ctrSize))
			if fs, err := is.ImageFsInfo(ctx, &runtimeapi.ImageFsInfoRequest{}); err == nil {
				var total uint64
				var mounts []string
				for _, u := range fs.GetImageFilesystems() {
					total += u.GetUsedBytes().GetValue()
					mounts = append(mounts, u.GetFsId().GetMountpoint())
				}
				fmt.Fprintf(tw, "Image filesystem\t%d\t\t%s\t%s\n", len(fs.GetImageFilesystems()), humanSize(total), strings.Join(mounts, ","))
			}
			return tw.Flush()
		},
	}
}
