package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// berth cp reads and writes the container's files directly on the host (it
// runs as root beside berthd). Every path inside the container is resolved
// through an os.Root opened on the container's root: symlinks and ".." are
// followed only within it, and a link that points out of it (absolute, or
// climbing above the root) is an error rather than a write on the host.
// The host side of a copy goes through an os.Root too, so that links the
// container planted in a copied tree cannot redirect later writes.

// splitCpArg splits "CONTAINER:PATH"; a local path is one with a slash or
// dot before any colon, as docker decides.
func splitCpArg(arg string) (ctr, p string) {
	if filepath.IsAbs(arg) || strings.HasPrefix(arg, ".") {
		return "", arg
	}
	c, rest, ok := strings.Cut(arg, ":")
	if !ok || strings.Contains(c, "/") {
		return "", arg
	}
	return c, rest
}

// inRoot turns an absolute container path into an os.Root name.
func inRoot(p string) string {
	p = strings.TrimLeft(path.Clean("/"+p), "/")
	if p == "" {
		return "."
	}
	return p
}

// escapeError says plainly what os.Root refused.
func escapeError(err error) error {
	if err != nil && strings.Contains(err.Error(), "path escapes from parent") {
		return fmt.Errorf("refusing to follow a link out of the container's root filesystem: %w", err)
	}
	return err
}

// copyTree copies sname under src to dname under dst: directories
// recursively, symlinks as symlinks, regular files with their mode.
// Devices, fifos and sockets are skipped, as docker's archive does not
// restore them either without root in the target.
func copyTree(src *os.Root, sname string, dst *os.Root, dname string, warn io.Writer) error {
	fi, err := src.Lstat(sname)
	if err != nil {
		return escapeError(err)
	}
	switch {
	case fi.IsDir():
		if err := dst.Mkdir(dname, fi.Mode().Perm()); err != nil && !errors.Is(err, fs.ErrExist) {
			return escapeError(err)
		}
		if dfi, err := dst.Stat(dname); err != nil {
			return escapeError(err)
		} else if !dfi.IsDir() {
			return fmt.Errorf("cannot copy directory %s over non-directory %s", sname, dname)
		}
		d, err := src.Open(sname)
		if err != nil {
			return escapeError(err)
		}
		entries, err := d.ReadDir(-1)
		d.Close()
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := copyTree(src, path.Join(sname, e.Name()), dst, path.Join(dname, e.Name()), warn); err != nil {
				return err
			}
		}
		return nil
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := src.Readlink(sname)
		if err != nil {
			return escapeError(err)
		}
		if err := dst.Remove(dname); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return escapeError(err)
		}
		return escapeError(dst.Symlink(target, dname))
	case fi.Mode().IsRegular():
		in, err := src.Open(sname)
		if err != nil {
			return escapeError(err)
		}
		defer in.Close()
		// The entry may have been swapped since the Lstat; whatever was
		// opened is inside src, but must still be a plain file.
		if ifi, err := in.Stat(); err != nil || !ifi.Mode().IsRegular() {
			return fmt.Errorf("%s changed while being copied", sname)
		}
		out, err := dst.OpenFile(dname, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fi.Mode().Perm())
		if err != nil {
			return escapeError(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		if err := out.Chmod(fi.Mode().Perm()); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	}
	fmt.Fprintf(warn, "berth cp: skipping %s: not a regular file, directory or link\n", sname)
	return nil
}

// copyPlan is where a copy goes: the root and name to read, the root and
// name to write.
type copyPlan struct {
	src   *os.Root
	sname string
	dst   *os.Root
	dname string
}

// planDest decides docker's destination rule inside a container: into an
// existing directory under the source's name (or its contents, for
// "SRC/."), or as the named path, whose parent must exist. Names stay
// relative to the container's root (no sub-root is opened) so that
// relative links inside the container resolve as they do in it.
func planDest(dstBase *os.Root, dest string, srcName string, srcIsDir, contentsOnly bool) (string, error) {
	dname := inRoot(dest)
	fi, err := dstBase.Stat(dname)
	switch {
	case err == nil && fi.IsDir():
		if contentsOnly {
			return dname, nil
		}
		return path.Join(dname, path.Base(srcName)), nil
	case err == nil:
		if srcIsDir {
			return "", fmt.Errorf("cannot copy a directory to a file: %s", dest)
		}
		return dname, nil
	case errors.Is(err, fs.ErrNotExist):
		if strings.HasSuffix(dest, "/") && !srcIsDir {
			return "", fmt.Errorf("destination directory %s does not exist", dest)
		}
	default:
		return "", escapeError(err)
	}
	if pfi, err := dstBase.Stat(path.Dir(dname)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("destination directory %s does not exist", path.Dir(dest))
		}
		return "", escapeError(err)
	} else if !pfi.IsDir() {
		return "", fmt.Errorf("destination %s is not a directory", path.Dir(dest))
	}
	return dname, nil
}

// planHostDest is planDest for a host path.
func planHostDest(dest, srcName string, srcIsDir, contentsOnly bool) (*os.Root, string, error) {
	fi, err := os.Stat(dest)
	switch {
	case err == nil && fi.IsDir():
		r, err := os.OpenRoot(dest)
		if err != nil {
			return nil, "", err
		}
		if contentsOnly {
			return r, ".", nil
		}
		return r, path.Base(srcName), nil
	case err == nil:
		if srcIsDir {
			return nil, "", fmt.Errorf("cannot copy a directory to a file: %s", dest)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, "", err
	}
	r, err := os.OpenRoot(filepath.Dir(dest))
	if err != nil {
		return nil, "", fmt.Errorf("destination directory: %w", err)
	}
	return r, filepath.Base(dest), nil
}

// copyOut copies cpath from the container's root to hostDest.
func copyOut(ctrRoot *os.Root, cpath, hostDest string, warn io.Writer) error {
	sname := inRoot(cpath)
	fi, err := ctrRoot.Lstat(sname)
	if err != nil {
		return fmt.Errorf("could not find the file %s in container: %w", cpath, escapeError(err))
	}
	contents := strings.HasSuffix(cpath, "/.")
	absDest, err := filepath.Abs(hostDest)
	if err != nil {
		return err
	}
	// The host path is the user's own: it resolves as any path on the host
	// does; only what is made beneath it goes through an os.Root.
	dst, dname, err := planHostDest(absDest, sname, fi.IsDir(), contents)
	if err != nil {
		return err
	}
	defer dst.Close()
	return copyTree(ctrRoot, sname, dst, dname, warn)
}

// copyIn copies hostSrc into the container's root at cdest.
func copyIn(hostSrc string, ctrRoot *os.Root, cdest string, warn io.Writer) error {
	absSrc, err := filepath.Abs(hostSrc)
	if err != nil {
		return err
	}
	fi, err := os.Lstat(absSrc)
	if err != nil {
		return err
	}
	src, err := os.OpenRoot(filepath.Dir(absSrc))
	if err != nil {
		return err
	}
	defer src.Close()
	sname := filepath.Base(absSrc)
	contents := strings.HasSuffix(hostSrc, "/.")
	if contents {
		src.Close()
		if src, err = os.OpenRoot(absSrc); err != nil {
			return err
		}
		sname = "."
	}
	dname, err := planDest(ctrRoot, cdest, sname, fi.IsDir(), contents)
	if err != nil {
		return err
	}
	return copyTree(src, sname, ctrRoot, dname, warn)
}

// isMountPoint tells whether dir is mounted on (a different device from its
// parent, or the same one bind-mounted: then the mount ID differs).
func isMountPoint(dir string) bool {
	var a, b syscall.Stat_t
	if syscall.Stat(dir, &a) != nil || syscall.Stat(filepath.Dir(dir), &b) != nil {
		return false
	}
	if a.Dev != b.Dev {
		return true
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// containerRoot opens the container's root. A running container's root is
// reached through /proc/PID/root, which also shows its volumes; a stopped
// one's through the rootfs path in berthd's verbose status, which must be
// mounted: writing into an unmounted mountpoint would hide the files under
// the rootfs when it is mounted again.
func containerRoot(ctx context.Context, rt runtimeapi.RuntimeServiceClient, ct *container) (*os.Root, error) {
	pid, info, err := containerPid(ctx, rt, ct.ID)
	if err != nil {
		return nil, err
	}
	if pid > 0 && ct.status.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING {
		return os.OpenRoot(filepath.Join("/proc", strconv.Itoa(pid), "root"))
	}
	rootfs, _ := info[infoRootfs].(string)
	if rootfs == "" {
		return nil, fmt.Errorf("berthd does not report the root filesystem of container %s (verbose status key %q)", ct.ID, infoRootfs)
	}
	if !isMountPoint(rootfs) {
		return nil, fmt.Errorf("the root filesystem of container %s is not mounted", ct.ID)
	}
	return os.OpenRoot(rootfs)
}

func newCpCommand(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cp CONTAINER:SRC_PATH DEST_PATH|-\n  berth cp SRC_PATH|- CONTAINER:DEST_PATH",
		Short: "Copy files/folders between a container and the local filesystem",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			sc, sp := splitCpArg(args[0])
			dc, dp := splitCpArg(args[1])
			switch {
			case sc == "" && dc == "":
				return invalid("must specify at least one container source")
			case sc != "" && dc != "":
				return invalid("copying between containers is not supported")
			case sc != "" && sp == "-", dc != "" && dp == "-":
				return invalid("a container path cannot be \"-\"")
			}
			rt, err := c.runtime(ctx)
			if err != nil {
				return err
			}
			name := sc + dc
			ct, err := lister{rt: rt}.resolve(ctx, name)
			if err != nil {
				return err
			}
			root, err := containerRoot(ctx, rt, ct)
			if err != nil {
				return err
			}
			defer root.Close()
			switch {
			case sc != "" && dp == "-":
				return tarOut(root, sp, cmd.OutOrStdout(), cmd.ErrOrStderr())
			case sc != "":
				return copyOut(root, sp, dp, cmd.ErrOrStderr())
			case sp == "-":
				return untarIn(cmd.InOrStdin(), root, dp, cmd.ErrOrStderr())
			}
			return copyIn(sp, root, dp, cmd.ErrOrStderr())
		},
	}
	return cmd
}
