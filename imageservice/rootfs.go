package imageservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/moby/sys/mountinfo"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/errdefs"
)

// rootfsRecord is what a container rootfs uses, so GC keeps it.
type rootfsRecord struct {
	ImageID string
	DiffIDs []string
}

var containerIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func (s *Service) rootfsDir(id string) string { return filepath.Join(s.containersDir(), id) }

// RootfsPath is where PrepareRootfs mounts a container's rootfs.
func (s *Service) RootfsPath(containerID string) string {
	return filepath.Join(s.rootfsDir(containerID), "rootfs")
}

// PrepareRootfs mounts an overlayfs for the container: the image's layer
// snapshots as lower dirs (top layer first) and a fresh upper and work dir
// under Root/containers/<id>. It returns the mount point. Calling it again
// for a mounted container returns the same path.
//
// The mount is made with the new mount API (fsopen/fsconfig/fsmount), one
// "lowerdir+" per layer, so the number of layers is not limited by the page
// size of a mount option string.
func (s *Service) PrepareRootfs(ctx context.Context, containerID, imageRef string) (_ string, retErr error) {
	if !containerIDRE.MatchString(containerID) {
		return "", fmt.Errorf("container ID %q: %w", containerID, errdefs.ErrInvalidArgument)
	}
	img, err := s.Get(ctx, imageRef)
	if err != nil {
		return "", err
	}
	// Until the rootfs record below names the layers, a lease keeps GC off
	// them (the image may be removed meanwhile).
	var keys []string
	for _, l := range img.Layers {
		keys = append(keys, l.DiffID)
	}
	defer s.lease(keys...)()
	dir := s.rootfsDir(containerID)
	target := filepath.Join(dir, "rootfs")
	if ok, err := isMounted(target); err != nil {
		return "", err
	} else if ok {
		return target, nil
	}

	// Top layer first; a layer that repeats (empty layers often do) is kept
	// only at its topmost position: overlayfs refuses a dir twice, and the
	// lower copy is entirely shadowed by the upper one.
	var lowers, diffIDs []string
	seen := map[string]bool{}
	for i := len(img.Layers) - 1; i >= 0; i-- {
		d := img.Layers[i].DiffID
		if seen[d] {
			continue
		}
		seen[d] = true
		if !s.snapshotExists(d) {
			return "", fmt.Errorf("image %s: layer %s is not unpacked (pull the image again): %w", img.ID, d, errdefs.ErrNotFound)
		}
		lowers = append(lowers, s.snapshotDir(d))
		diffIDs = append(diffIDs, d)
	}

	rec, _ := json.Marshal(rootfsRecord{ImageID: img.ID, DiffIDs: diffIDs})
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketRootfs)).Put([]byte(containerID), rec)
	}); err != nil {
		return "", err
	}
	defer func() {
		if retErr != nil {
			if err := s.RemoveRootfs(context.WithoutCancel(ctx), containerID); err != nil {
				klog.ErrorS(err, "Rolling back rootfs", "containerID", containerID)
			}
		}
	}()
	for _, d := range []string{dir, filepath.Join(dir, "upper"), filepath.Join(dir, "work"), target} {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return "", err
		}
	}
	if len(lowers) == 0 {
		// overlayfs needs a lower dir; an image without layers gets an
		// empty one of its own.
		empty := filepath.Join(dir, "empty")
		if err := os.Mkdir(empty, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return "", err
		}
		lowers = []string{empty}
	}
	if err := mountOverlay(target, lowers, filepath.Join(dir, "upper"), filepath.Join(dir, "work")); err != nil {
		return "", fmt.Errorf("container %s rootfs: %w", containerID, err)
	}
	return target, nil
}

func mountOverlay(target string, lowers []string, upper, work string) error {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fsfd)
	set := func(k, v string) error {
		if err := unix.FsconfigSetString(fsfd, k, v); err != nil {
			return fmt.Errorf("overlay option %s=%s: %w%s", k, v, err, fsLog(fsfd))
		}
		return nil
	}
	if err := set("source", "berth"); err != nil {
		return err
	}
	for _, l := range lowers {
		if err := set("lowerdir+", l); err != nil {
			return err
		}
	}
	if err := set("upperdir", upper); err != nil {
		return err
	}
	if err := set("workdir", work); err != nil {
		return err
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return fmt.Errorf("creating overlay: %w%s", err, fsLog(fsfd))
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fsmount overlay: %w%s", err, fsLog(fsfd))
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount overlay to %s: %w", target, err)
	}
	return nil
}

// fsLog returns the messages the kernel left on an fs context, which say
// why a mount failed better than the errno.
func fsLog(fd int) string {
	var msgs []string
	buf := make([]byte, 4096)
	for range 8 {
		n, err := unix.Read(fd, buf)
		if err != nil || n <= 0 {
			break
		}
		msgs = append(msgs, strings.TrimSpace(string(buf[:n])))
	}
	if len(msgs) == 0 {
		return ""
	}
	return " (" + strings.Join(msgs, "; ") + ")"
}

// RemoveRootfs unmounts and deletes a container's rootfs dirs. It unmounts
// first and deletes nothing while anything is still mounted below the
// container's dir. Removing an absent rootfs is not an error.
func (s *Service) RemoveRootfs(ctx context.Context, containerID string) error {
	if !containerIDRE.MatchString(containerID) {
		return fmt.Errorf("container ID %q: %w", containerID, errdefs.ErrInvalidArgument)
	}
	dir := s.rootfsDir(containerID)
	target := filepath.Join(dir, "rootfs")
	for {
		err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW)
		if err == nil {
			continue // stacked mounts
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break // not (or no longer) a mount point
		}
		if errors.Is(err, unix.EBUSY) {
			// Something in this namespace still uses it; detach it so the
			// dirs below can go. Nothing can reach them through the path.
			if err := unix.Unmount(target, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
				return fmt.Errorf("unmounting %s: %w", target, err)
			}
			continue
		}
		return fmt.Errorf("unmounting %s: %w", target, err)
	}
	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return err
	}
	if len(mounts) > 0 {
		return fmt.Errorf("container %s: %s is still mounted; not deleting: %w", containerID, mounts[0].Mountpoint, errdefs.ErrFailedPrecondition)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing %s: %w", dir, err)
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketRootfs)).Delete([]byte(containerID))
	})
}

// MountedRootfs reports a container's rootfs path and whether it is mounted,
// for reconciliation after a restart.
func (s *Service) MountedRootfs(ctx context.Context, containerID string) (string, bool, error) {
	if !containerIDRE.MatchString(containerID) {
		return "", false, fmt.Errorf("container ID %q: %w", containerID, errdefs.ErrInvalidArgument)
	}
	target := s.RootfsPath(containerID)
	ok, err := isMounted(target)
	return target, ok, err
}

// isMounted reports whether p is a mount point; a missing path is not.
func isMounted(p string) (bool, error) {
	ok, err := mountinfo.Mounted(p)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return ok, err
}

// RootfsIDs lists the containers that have a rootfs record, for
// reconciliation (records whose container is gone should be removed with
// RemoveRootfs).
func (s *Service) RootfsIDs(ctx context.Context) ([]string, error) {
	var ids []string
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketRootfs)).ForEach(func(k, _ []byte) error {
			ids = append(ids, string(k))
			return nil
		})
	})
	return ids, err
}
