package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// imageConfig is the part of an image berth needs: its ID and the OCI
// config fields from ImageStatus's verbose info.
type imageConfig struct {
	ID         string
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	User       string
	Created    time.Time
	image      *runtimeapi.Image
	info       map[string]any
}

// imageStatus looks an image up; nil when berthd does not have it.
func imageStatus(ctx context.Context, is runtimeapi.ImageServiceClient, ref string) (*imageConfig, error) {
	resp, err := is.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}, Verbose: true})
	if err != nil {
		return nil, rpcError("ImageStatus", err)
	}
	if resp.GetImage() == nil {
		return nil, nil
	}
	return decodeImage(resp.GetImage(), resp.GetInfo()), nil
}

func decodeImage(img *runtimeapi.Image, info map[string]string) *imageConfig {
	ic := &imageConfig{ID: img.GetId(), image: img, info: verboseInfo(info)}
	// berthd's info: {"id", "config": OCI ImageConfig, "layers", "created"}.
	var v struct {
		Config struct {
			Entrypoint []string `json:"Entrypoint"`
			Cmd        []string `json:"Cmd"`
			Env        []string `json:"Env"`
			WorkingDir string   `json:"WorkingDir"`
			User       string   `json:"User"`
		} `json:"config"`
		Created time.Time `json:"created"`
	}
	if s := info[verboseInfoKey]; s != "" && json.Unmarshal([]byte(s), &v) == nil {
		ic.Entrypoint, ic.Cmd, ic.Env = v.Config.Entrypoint, v.Config.Cmd, v.Config.Env
		ic.WorkingDir, ic.User, ic.Created = v.Config.WorkingDir, v.Config.User, v.Created
	}
	return ic
}

// hasTagOrDigest tells whether a reference names a tag or digest.
func hasTagOrDigest(ref string) bool {
	if strings.Contains(ref, "@") {
		return true
	}
	_, tag := splitRepoTag(ref)
	return tag != "<none>"
}

// ensureImage returns the image, pulling it first when berthd lacks it, as
// `docker run` does; messages go to w (stderr for run).
func ensureImage(ctx context.Context, is runtimeapi.ImageServiceClient, ref string, w io.Writer) (*imageConfig, error) {
	img, err := imageStatus(ctx, is, ref)
	if err != nil || img != nil {
		return img, err
	}
	fmt.Fprintf(w, "Unable to find image '%s' locally\n", ref)
	if err := pullImage(ctx, is, ref, w); err != nil {
		return nil, err
	}
	img, err = imageStatus(ctx, is, ref)
	if err != nil {
		return nil, err
	}
	if img == nil {
		return nil, fmt.Errorf("image %s was pulled but berthd does not report it", ref)
	}
	return img, nil
}

// isTerminal tells whether w is a terminal progress can be drawn on.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// pullImage pulls one image, drawing its progress on w: per-layer bars
// through berthd's pull-progress stream, or, against a CRI runtime without
// it, a spinner around the CRI's PullImage (one blocking call).
func pullImage(ctx context.Context, is runtimeapi.ImageServiceClient, ref string, w io.Writer) error {
	repo, tag := splitRepoTag(ref)
	if !hasTagOrDigest(ref) {
		fmt.Fprintln(w, "Using default tag: latest")
		tag = "latest"
	}
	if strings.Contains(ref, "@") {
		repo, tag, _ = strings.Cut(ref, "@")
	}
	fmt.Fprintf(w, "%s: Pulling from %s\n", tag, shortImageName(repo))

	if ic, ok := is.(imagesClient); ok {
		bars := newLayerBars(ctx, w)
		_, err := ic.pullWithProgress(ctx, ref, bars.update)
		bars.finish(err == nil)
		switch {
		case err == nil:
			printPulled(ctx, is, ref, w)
			return nil
		case status.Code(err) != codes.Unimplemented:
			return rpcError("PullImage", err)
		}
		// Not berthd (another CRI runtime): fall back to the CRI.
	}

	var p *mpb.Progress
	var bar *mpb.Bar
	if isTerminal(w) {
		p = mpb.NewWithContext(ctx, mpb.WithOutput(w), mpb.WithWidth(20), mpb.WithRefreshRate(120*time.Millisecond))
		bar = p.New(0, mpb.SpinnerStyle(),
			mpb.PrependDecorators(decor.Name(truncID(ref)+": ", decor.WCSyncSpaceR), decor.OnComplete(decor.Name("Pulling"), "Pull complete")),
			mpb.AppendDecorators(decor.OnComplete(decor.Elapsed(decor.ET_STYLE_GO, decor.WCSyncSpace), "")),
		)
	}
	resp, err := is.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if p != nil {
		if err != nil {
			bar.Abort(false)
		} else {
			bar.SetTotal(-1, true)
		}
		p.Wait()
	}
	if err != nil {
		return rpcError("PullImage", err)
	}
	_ = resp
	printPulled(ctx, is, ref, w)
	return nil
}

// printPulled prints docker's closing lines of a pull.
func printPulled(ctx context.Context, is runtimeapi.ImageServiceClient, ref string, w io.Writer) {
	if st, serr := imageStatus(ctx, is, ref); serr == nil && st != nil && len(st.image.GetRepoDigests()) > 0 {
		d := st.image.GetRepoDigests()[0]
		if _, dig, ok := strings.Cut(d, "@"); ok {
			fmt.Fprintf(w, "Digest: %s\n", dig)
		}
	}
	fmt.Fprintf(w, "Status: Downloaded newer image for %s\n", refWithTag(ref))
}

func refWithTag(ref string) string {
	if hasTagOrDigest(ref) {
		return ref
	}
	return ref + ":latest"
}

func newPullCommand(c *cli) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "pull [OPTIONS] NAME[:TAG|@DIGEST]",
		Short: "Download an image from a registry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			is, err := c.images(ctx)
			if err != nil {
				return err
			}
			out := io.Writer(os.Stdout)
			if quiet {
				out = io.Discard
			}
			if err := pullImage(ctx, is, args[0], out); err != nil {
				return err
			}
			fmt.Fprintln(os.Stdout, refWithTag(args[0]))
			return nil
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "Suppress verbose output")
	return cmd
}

// resolveImage finds an image by reference, full ID or unique ID prefix.
func resolveImage(ctx context.Context, is runtimeapi.ImageServiceClient, ref string) (*runtimeapi.Image, error) {
	if st, err := imageStatus(ctx, is, ref); err == nil && st != nil {
		return st.image, nil
	}
	resp, err := is.ListImages(ctx, &runtimeapi.ListImagesRequest{})
	if err != nil {
		return nil, rpcError("ListImages", err)
	}
	want := strings.TrimPrefix(ref, "sha256:")
	var found []*runtimeapi.Image
	for _, img := range resp.GetImages() {
		id := strings.TrimPrefix(img.GetId(), "sha256:")
		if len(want) >= 4 && strings.HasPrefix(id, want) {
			found = append(found, img)
			continue
		}
		for _, t := range img.GetRepoTags() {
			if t == ref || shortImageName(t) == ref || shortImageName(t) == ref+":latest" {
				found = append(found, img)
				break
			}
		}
	}
	switch len(found) {
	case 0:
		return nil, errNoSuchImage(ref)
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("multiple images match %s", ref)
}

func newImagesCommand(c *cli) *cobra.Command {
	var quiet, noTrunc, digests, all bool
	var format string
	cmd := &cobra.Command{
		Use:     "images [OPTIONS] [REPOSITORY[:TAG]]",
		Aliases: []string{"image ls"},
		Short:   "List images",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			is, err := c.images(ctx)
			if err != nil {
				return err
			}
			resp, err := is.ListImages(ctx, &runtimeapi.ListImagesRequest{})
			if err != nil {
				return rpcError("ListImages", err)
			}
			var filter string
			if len(args) == 1 {
				filter = args[0]
			}
			rows := imageRows(ctx, is, resp.GetImages(), filter, noTrunc, time.Now())
			if quiet {
				seen := map[string]bool{}
				for _, r := range rows {
					if !seen[r.ID] {
						seen[r.ID] = true
						fmt.Fprintln(cmd.OutOrStdout(), r.ID)
					}
				}
				return nil
			}
			if format == "" {
				format = imagesDefaultFormat
				if digests {
					format = "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
				}
			}
			anyRows := make([]any, len(rows))
			for i := range rows {
				anyRows[i] = rows[i]
			}
			return table{format: format, headers: imageHeaders}.write(cmd.OutOrStdout(), anyRows)
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "Only show image IDs")
	cmd.Flags().BoolVar(&noTrunc, "no-trunc", false, "Don't truncate output")
	cmd.Flags().BoolVar(&digests, "digests", false, "Show digests")
	cmd.Flags().BoolVarP(&all, "all", "a", false, "Show all images (berth keeps no intermediate images)")
	cmd.Flags().StringVar(&format, "format", "", "Format output using a Go template")
	return cmd
}

// imageRows is one row per tag, as docker lists images; an untagged image is
// one <none> row.
func imageRows(ctx context.Context, is runtimeapi.ImageServiceClient, imgs []*runtimeapi.Image, filter string, noTrunc bool, now time.Time) []imageRow {
	var rows []imageRow
	for _, img := range imgs {
		id := truncID(img.GetId())
		if noTrunc {
			id = img.GetId()
		}
		created, createdSince := "", ""
		if st, err := imageStatus(ctx, is, img.GetId()); err == nil && st != nil && !st.Created.IsZero() {
			created = st.Created.Format("2006-01-02 15:04:05 -0700 MST")
			createdSince = since(now, st.Created) + " ago"
		}
		digest := "<none>"
		if len(img.GetRepoDigests()) > 0 {
			_, d, _ := strings.Cut(img.GetRepoDigests()[0], "@")
			digest = d
		}
		tags := img.GetRepoTags()
		if len(tags) == 0 {
			tags = []string{"<none>:<none>"}
		}
		for _, t := range tags {
			repo, tag := splitRepoTag(shortImageName(t))
			if filter != "" && !matchesRepoFilter(filter, repo, tag) {
				continue
			}
			rows = append(rows, imageRow{
				ID: id, Repository: repo, Tag: tag, Digest: digest,
				CreatedSince: createdSince, CreatedAt: created, Size: humanSize(img.GetSize()),
			})
		}
	}
	return rows
}

func matchesRepoFilter(filter, repo, tag string) bool {
	fr, ft := splitRepoTag(shortImageName(filter))
	if fr != repo {
		return false
	}
	return ft == "<none>" || ft == tag
}

// imagesInUse maps image IDs to the containers using them.
func imagesInUse(ctx context.Context, rt runtimeapi.RuntimeServiceClient) (map[string][]string, error) {
	resp, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return nil, rpcError("ListContainers", err)
	}
	used := map[string][]string{}
	for _, ct := range resp.GetContainers() {
		for _, k := range []string{ct.GetImageId(), ct.GetImageRef(), ct.GetImage().GetImage()} {
			if k != "" {
				used[k] = append(used[k], ct.GetId())
			}
		}
	}
	return used, nil
}

func newRmiCommand(c *cli) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rmi [OPTIONS] IMAGE [IMAGE...]",
		Short: "Remove one or more images",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			is, err := c.images(ctx)
			if err != nil {
				return err
			}
			rt, err := c.runtime(ctx)
			if err != nil {
				return err
			}
			used, err := imagesInUse(ctx, rt)
			if err != nil {
				return err
			}
			var errs []string
			for _, ref := range args {
				img, err := resolveImage(ctx, is, ref)
				if err != nil {
					errs = append(errs, err.Error())
					continue
				}
				if users := used[img.GetId()]; len(users) > 0 && !force {
					errs = append(errs, fmt.Sprintf("conflict: unable to remove repository reference %q (must force) - container %s is using its referenced image %s", ref, truncID(users[0]), truncID(img.GetId())))
					continue
				}
				if _, err := is.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: img.GetId()}}); err != nil {
					errs = append(errs, rpcError("RemoveImage", err).Error())
					continue
				}
				for _, t := range img.GetRepoTags() {
					fmt.Fprintf(cmd.OutOrStdout(), "Untagged: %s\n", shortImageName(t))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Deleted: %s\n", img.GetId())
			}
			if len(errs) > 0 {
				return errors.New(strings.Join(errs, "\n"))
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "Force removal of the image")
	return cmd
}

func newImagePruneCommand(c *cli) *cobra.Command {
	var all, force bool
	cmd := &cobra.Command{
		Use:   "prune [OPTIONS]",
		Short: "Remove unused images",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if !force && !confirm(cmd, "WARNING! This will remove all images without at least one container associated to them.") {
				return nil
			}
			is, err := c.images(ctx)
			if err != nil {
				return err
			}
			rt, err := c.runtime(ctx)
			if err != nil {
				return err
			}
			used, err := imagesInUse(ctx, rt)
			if err != nil {
				return err
			}
			resp, err := is.ListImages(ctx, &runtimeapi.ListImagesRequest{})
			if err != nil {
				return rpcError("ListImages", err)
			}
			var reclaimed uint64
			fmt.Fprintln(cmd.OutOrStdout(), "Deleted Images:")
			for _, img := range resp.GetImages() {
				// Without -a only dangling (untagged) images go, as docker's prune.
				if len(used[img.GetId()]) > 0 || img.GetPinned() || (!all && len(img.GetRepoTags()) > 0) {
					continue
				}
				if _, err := is.RemoveImage(ctx, &runtimeapi.RemoveImageRequest{Image: &runtimeapi.ImageSpec{Image: img.GetId()}}); err != nil {
					return rpcError("RemoveImage", err)
				}
				for _, t := range img.GetRepoTags() {
					fmt.Fprintf(cmd.OutOrStdout(), "untagged: %s\n", shortImageName(t))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "deleted: %s\n", img.GetId())
				reclaimed += img.GetSize()
			}
			fmt.Fprintf(cmd.OutOrStdout(), "\nTotal reclaimed space: %s\n", humanSize(reclaimed))
			return nil
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "Remove all unused images, not just dangling ones")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "Do not prompt for confirmation")
	return cmd
}

// confirm asks docker's "Are you sure you want to continue? [y/N]".
func confirm(cmd *cobra.Command, warning string) bool {
	fmt.Fprintf(cmd.OutOrStdout(), "%s\nAre you sure you want to continue? [y/N] ", warning)
	var answer string
	_, _ = fmt.Fscanln(cmd.InOrStdin(), &answer)
	answer = strings.ToLower(strings.TrimSpace(answer))
	return answer == "y" || answer == "yes"
}
