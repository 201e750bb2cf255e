package container

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// Every path inside the container's rootfs is resolved with openat2
// RESOLVE_IN_ROOT: symlinks (absolute or "..") in an image are followed as if
// the rootfs were "/", so a hostile image can never steer a mount, mknod or
// write to a host path (CVE-2025-31133 class). Magic links (/proc/self/fd/N
// and friends) are refused on the way.
const inRoot = unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS

// openIn opens p below root (an O_PATH directory fd) with flags.
func openIn(root int, p string, flags uint64) (int, error) {
	rel := strings.TrimLeft(path.Clean("/"+p), "/")
	if rel == "" {
		rel = "."
	}
	for {
		fd, err := unix.Openat2(root, rel, &unix.OpenHow{Flags: flags | unix.O_CLOEXEC, Resolve: inRoot})
		if err == unix.EINTR || err == unix.EAGAIN {
			continue // openat2 asks for a retry when a rename raced with it
		}
		if err != nil {
			return -1, &os.PathError{Op: "openat2", Path: p, Err: err}
		}
		return fd, nil
	}
}

// mkdirAllIn makes directory p (and its parents) below root and returns an
// O_PATH fd of it. Dangling symlinks on the way are followed, inside root.
func mkdirAllIn(root int, p string, mode uint32) (int, error) {
	return mkdirAllDepth(root, p, mode, 0)
}

// Linux's own limit on symlinks followed in one lookup.
const maxSymlinks = 40

func mkdirAllDepth(root int, p string, mode uint32, depth int) (int, error) {
	fd, err := openIn(root, p, unix.O_PATH|unix.O_DIRECTORY)
	if err == nil || !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	if depth > maxSymlinks {
		return -1, &os.PathError{Op: "mkdir", Path: p, Err: unix.ELOOP}
	}
	parentPath, base := path.Split(path.Clean("/" + p))
	parent, err := mkdirAllDepth(root, parentPath, mode, depth+1)
	if err != nil {
		return -1, err
	}
	defer unix.Close(parent)
	if err := unix.Mkdirat(parent, base, mode); err != nil && err != unix.EEXIST {
		return -1, &os.PathError{Op: "mkdirat", Path: p, Err: err}
	}
	if next, ok := danglingLink(parent, parentPath, base); ok {
		return mkdirAllDepth(root, next, mode, depth+1)
	}
	// Re-resolve from the root: base may have been created as a symlink by
	// someone else meanwhile, and that must still resolve inside.
	return openIn(root, p, unix.O_PATH|unix.O_DIRECTORY)
}

// danglingLink reports where base (in parent, at parentPath) points if it is
// a symlink, as a path to resolve again below the root.
func danglingLink(parent int, parentPath, base string) (string, bool) {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(parent, base, buf)
	if err != nil {
		return "", false
	}
	target := string(buf[:n])
	if !path.IsAbs(target) {
		target = path.Join(parentPath, target)
	}
	return target, true
}

// mkfileIn makes sure a non-directory exists at p below root (creating an
// empty regular file) and returns an O_PATH fd of it.
func mkfileIn(root int, p string) (int, error) {
	for depth := 0; ; depth++ {
		fd, err := openIn(root, p, unix.O_PATH)
		if err == nil || !errors.Is(err, unix.ENOENT) {
			return fd, err
		}
		if depth > maxSymlinks {
			return -1, &os.PathError{Op: "create", Path: p, Err: unix.ELOOP}
		}
		parentPath, base := path.Split(path.Clean("/" + p))
		parent, err := mkdirAllIn(root, parentPath, 0o755)
		if err != nil {
			return -1, err
		}
		f, err := unix.Openat(parent, base, unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err == nil {
			unix.Close(f)
		} else if err != unix.EEXIST {
			unix.Close(parent)
			return -1, &os.PathError{Op: "create", Path: p, Err: err}
		} else if next, ok := danglingLink(parent, parentPath, base); ok {
			p = next
		}
		unix.Close(parent)
	}
}

// isDirFd reports whether fd is a directory.
func isDirFd(fd int) (bool, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, err
	}
	return st.Mode&unix.S_IFMT == unix.S_IFDIR, nil
}

// moveMountOnto attaches the detached mount tree onto target.
func moveMountOnto(tree, target int) error {
	return unix.MoveMount(tree, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH)
}

// bindFd bind-mounts the object behind src onto target (both fds), the
// whole tree below it when recursive. open_tree clones the mount without a
// path lookup, so what is mounted is exactly what src was checked to be.
func bindFd(src, target int, recursive bool) error {
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC | unix.AT_EMPTY_PATH)
	if recursive {
		flags |= unix.AT_RECURSIVE
	}
	tree, err := unix.OpenTree(src, "", flags)
	if err != nil {
		return fmt.Errorf("open_tree: %w", err)
	}
	defer unix.Close(tree)
	if err := moveMountOnto(tree, target); err != nil {
		return fmt.Errorf("move_mount: %w", err)
	}
	return nil
}

// isMountRoot reports whether p is the root of a mount.
func isMountRoot(dirfd int, p string) (bool, error) {
	var stx unix.Statx_t
	if err := unix.Statx(dirfd, p, unix.AT_SYMLINK_NOFOLLOW|unix.AT_EMPTY_PATH, unix.STATX_BASIC_STATS, &stx); err != nil {
		return false, err
	}
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		return false, fmt.Errorf("statx %s: kernel does not report mount roots", p)
	}
	return stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, nil
}
