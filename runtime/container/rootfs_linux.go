package container

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"github.com/berth-dev/berth/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// setup is the state of one container's init while it builds the rootfs.
type setup struct {
	spec        *specs.Spec
	root        int // O_PATH fd of the rootfs (after it was bound onto itself)
	newUTS      bool
	newCgroupNS bool
	hasNS       map[specs.LinuxNamespaceType]bool
	// mountFds are the detached bind mounts the first stage made for a
	// container in a user namespace, by index in spec.Mounts.
	mountFds map[int]int
}

type device struct {
	path         string
	kind         uint32
	major, minor int64
	mode         uint32
}

// The devices every container gets in its /dev (as runc and Docker do).
var defaultDevices = []device{
	{"/dev/null", unix.S_IFCHR, 1, 3, 0o666},
	{"/dev/zero", unix.S_IFCHR, 1, 5, 0o666},
	{"/dev/full", unix.S_IFCHR, 1, 7, 0o666},
	{"/dev/random", unix.S_IFCHR, 1, 8, 0o666},
	{"/dev/urandom", unix.S_IFCHR, 1, 9, 0o666},
	{"/dev/tty", unix.S_IFCHR, 5, 0, 0o666},
}

var devLinks = [][2]string{
	{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"},
	{"/proc/self/fd/2", "stderr"}, {"pts/ptmx", "ptmx"},
}

// prepareRootfs runs in the container's fresh mount namespace, before
// pivot_root: it makes the rootfs a mount of its own, performs the spec's
// mounts and creates the devices.
func (s *setup) prepareRootfs() error {
	prop := uintptr(unix.MS_REC | unix.MS_PRIVATE)
	if p := s.spec.Linux.RootfsPropagation; p != "" {
		o := parseMountOpts([]string{p})
		if o.propagation == 0 {
			return fmt.Errorf("rootfsPropagation %q: %w", p, errdefs.ErrInvalidArgument)
		}
		prop = uintptr(o.propagation)
		if o.recProp {
			prop |= unix.MS_REC
		}
	}
	// Nothing done below may leak back into the host's mount namespace.
	if err := unix.Mount("", "/", "", prop, ""); err != nil {
		return fmt.Errorf("make / %s: %w", s.spec.Linux.RootfsPropagation, err)
	}
	rootPath := s.spec.Root.Path
	if prop&unix.MS_SHARED != 0 {
		// pivot_root refuses a new root whose parent mount is shared, and a
		// bind of a shared mount would be shared too.
		if err := parentMountPrivate(rootPath); err != nil {
			return err
		}
	}
	if err := unix.Mount(rootPath, rootPath, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind rootfs %s: %w", rootPath, err)
	}
	root, err := unix.Open(rootPath, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open rootfs: %w", err)
	}
	s.root = root
	// Devices get exactly the modes given.
	unix.Umask(0)
	devMounted := false
	for i, m := range s.spec.Mounts {
		var err error
		if tree, ok := s.mountFds[i]; ok {
			err = s.attachBind(m, tree)
		} else {
			err = s.mountOne(m)
		}
		if err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.Type, m.Destination, err)
		}
		if path.Clean(m.Destination) == "/dev" && m.Type != "bind" {
			devMounted = true
		}
	}
	var devs []device
	if devMounted {
		devs = append(devs, defaultDevices...)
	}
	for _, d := range s.spec.Linux.Devices {
		kind, err := deviceKind(d.Type)
		if err != nil {
			return err
		}
		mode := uint32(0o666)
		if d.FileMode != nil {
			mode = uint32(*d.FileMode) & 0o7777
		}
		devs = append(devs, device{d.Path, kind, d.Major, d.Minor, mode})
	}
	for _, d := range devs {
		var err error
		if s.hasNS[specs.UserNamespace] {
			// No device can be made in a user namespace: the host's
			// device node is bound instead, as runc does.
			err = s.bindDevice(d)
		} else {
			err = s.mknod(d, s.spec.Linux.Devices)
		}
		if err != nil {
			return err
		}
	}
	if devMounted {
		dev, err := openIn(s.root, "/dev", unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return err
		}
		defer unix.Close(dev)
		for _, l := range devLinks {
			if err := unix.Symlinkat(l[0], dev, l[1]); err != nil && err != unix.EEXIST {
				return fmt.Errorf("symlink /dev/%s: %w", l[1], err)
			}
		}
	}
	if s.spec.Process.Terminal {
		if err := s.bindConsole(); err != nil {
			return err
		}
	}
	return nil
}

// parentMountPrivate makes the mount that contains dir private (only it).
func parentMountPrivate(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	best := "/"
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 {
			continue
		}
		// Mount points are octal-escaped; berth's own paths have no spaces.
		mp := f[4]
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > len(best) {
			best = mp
		}
	}
	if err := unix.Mount("", best, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s private: %w", best, err)
	}
	return nil
}

func deviceKind(t string) (uint32, error) {
	switch t {
	case "c", "u":
		return unix.S_IFCHR, nil
	case "b":
		return unix.S_IFBLK, nil
	case "p":
		return unix.S_IFIFO, nil
	}
	return 0, fmt.Errorf("device type %q: %w", t, errdefs.ErrInvalidArgument)
}

// mknod creates device d inside the rootfs, replacing whatever the image had
// at that name (a symlink there must not redirect anything).
func (s *setup) mknod(d device, specDevs []specs.LinuxDevice) error {
	dir, base := path.Split(path.Clean("/" + d.path))
	parent, err := mkdirAllIn(s.root, dir, 0o755)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	if err := unix.Unlinkat(parent, base, 0); err != nil && err != unix.ENOENT {
		return fmt.Errorf("replace %s: %w", d.path, err)
	}
	dev := int(unix.Mkdev(uint32(d.major), uint32(d.minor)))
	if err := unix.Mknodat(parent, base, d.kind|d.mode, dev); err != nil {
		return fmt.Errorf("mknod %s: %w", d.path, err)
	}
	uid, gid := 0, 0
	for _, sd := range specDevs {
		if path.Clean(sd.Path) == path.Clean(d.path) {
			if sd.UID != nil {
				uid = int(*sd.UID)
			}
			if sd.GID != nil {
				gid = int(*sd.GID)
			}
		}
	}
	if err := unix.Fchownat(parent, base, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("chown %s: %w", d.path, err)
	}
	return nil
}

// bindDevice binds the host's device node for d over an empty file at
// d.path in the rootfs. The host node is the one at the same path if it is
// the device asked for, else one found under the host's /dev by its type
// and numbers (a device the pod names differently, as CRI's container_path
// allows).
func (s *setup) bindDevice(d device) error {
	p := path.Clean("/" + d.path)
	src, err := openHostDevice(p, d)
	if err != nil {
		return err
	}
	defer unix.Close(src)
	if err := s.mknodPlaceholder(p); err != nil {
		return err
	}
	dst, err := openIn(s.root, p, unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return err
	}
	defer unix.Close(dst)
	if err := bindFd(src, dst, false); err != nil {
		return fmt.Errorf("bind device %s: %w", p, err)
	}
	return nil
}

// bindConsole makes /dev/console the terminal the monitor gave us on fd 0.
func (s *setup) bindConsole() error {
	var st unix.Stat_t
	if err := unix.Fstat(0, &st); err != nil {
		return fmt.Errorf("stat terminal: %w", err)
	}
	// Unix98 pty slaves have majors 136-143.
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) < 136 || unix.Major(st.Rdev) > 143 {
		return fmt.Errorf("process.terminal is set but stdin is not a pty slave: %w", errdefs.ErrInvalidArgument)
	}
	// fd 0 was opened in the host's mount namespace; the same device file
	// is reachable by path in our copy of it, and open_tree needs that.
	p, err := os.Readlink("/proc/self/fd/0")
	if err != nil {
		return err
	}
	src, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("open terminal %s: %w", p, err)
	}
	defer unix.Close(src)
	var st2 unix.Stat_t
	if err := unix.Fstat(src, &st2); err != nil || st2.Rdev != st.Rdev {
		return fmt.Errorf("terminal %s is not our stdin", p)
	}
	if err := s.mknodPlaceholder("/dev/console"); err != nil {
		return err
	}
	dst, err := openIn(s.root, "/dev/console", unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return err
	}
	defer unix.Close(dst)
	if err := bindFd(src, dst, false); err != nil {
		return fmt.Errorf("bind /dev/console: %w", err)
	}
	return nil
}

// mknodPlaceholder replaces p with an empty regular file to mount over.
func (s *setup) mknodPlaceholder(p string) error {
	dir, base := path.Split(p)
	parent, err := mkdirAllIn(s.root, dir, 0o755)
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	if err := unix.Unlinkat(parent, base, 0); err != nil && err != unix.ENOENT {
		return fmt.Errorf("replace %s: %w", p, err)
	}
	fd, err := unix.Openat(parent, base, unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", p, err)
	}
	return unix.Close(fd)
}

// nullDevice opens the container's /dev/null after checking it really is the
// null device: it is the source for masking files.
func (s *setup) nullDevice() (int, error) {
	fd, err := openIn(s.root, "/dev/null", unix.O_PATH|unix.O_NOFOLLOW)
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) {
		unix.Close(fd)
		return -1, fmt.Errorf("/dev/null in the container is not the null device: %w", errdefs.ErrInvalidArgument)
	}
	return fd, nil
}

// pivot makes the rootfs the process's root and drops the old one.
func (s *setup) pivot() error {
	if err := unix.Fchdir(s.root); err != nil {
		return fmt.Errorf("chdir rootfs: %w", err)
	}
	// pivot_root(".", ".") stacks the old root on top of the new one;
	// detaching it leaves the new root alone, with no directory needed.
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	// Unmounting must not propagate to the host's mounts.
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make old root rslave: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("chdir /: %w", err)
	}
	return nil
}

// maskPaths hides each path: a file gets the null device bound over it, a
// directory an empty read-only tmpfs. Missing paths are skipped.
func (s *setup) maskPaths(null int) error {
	for _, p := range s.spec.Linux.MaskedPaths {
		fd, err := openIn(s.root, p, unix.O_PATH|unix.O_NOFOLLOW)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return err
		}
		var st unix.Stat_t
		err = unix.Fstat(fd, &st)
		switch {
		case err != nil:
		case st.Mode&unix.S_IFMT == unix.S_IFLNK:
			// Nothing to hide behind a symlink we don't follow; its
			// target, if listed, is masked by its own entry.
		case st.Mode&unix.S_IFMT == unix.S_IFDIR:
			var mfd int
			mfd, err = newFS("tmpfs", "tmpfs", []string{"size=0", "mode=0"},
				unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC})
			if err == nil {
				err = moveMountOnto(mfd, fd)
				unix.Close(mfd)
			}
		default:
			err = bindFd(null, fd, false)
		}
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("mask %s: %w", p, err)
		}
	}
	return nil
}

// readonlyPaths binds each path onto itself read-only (recursively).
func (s *setup) readonlyPaths() error {
	for _, p := range s.spec.Linux.ReadonlyPaths {
		fd, err := openIn(s.root, p, unix.O_PATH)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err != nil {
			return err
		}
		err = readonlyBind(fd)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("readonly %s: %w", p, err)
		}
	}
	return nil
}

func readonlyBind(fd int) error {
	tree, err := unix.OpenTree(fd, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("open_tree: %w", err)
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		return fmt.Errorf("mount_setattr: %w", err)
	}
	return moveMountOnto(tree, fd)
}

// Sysctls that belong to a namespace, and which one.
var ipcSysctls = map[string]bool{
	"kernel.msgmax": true, "kernel.msgmnb": true, "kernel.msgmni": true, "kernel.sem": true,
	"kernel.shmall": true, "kernel.shmmax": true, "kernel.shmmni": true, "kernel.shm_rmid_forced": true,
}

func (s *setup) checkSysctl(key string) error {
	switch {
	case ipcSysctls[key] || strings.HasPrefix(key, "fs.mqueue."):
		if s.hasNS[specs.IPCNamespace] {
			return nil
		}
	case strings.HasPrefix(key, "net."):
		if s.hasNS[specs.NetworkNamespace] {
			return nil
		}
	case key == "kernel.hostname" || key == "kernel.domainname":
		if s.hasNS[specs.UTSNamespace] {
			return nil
		}
	default:
		return fmt.Errorf("sysctl %q is not namespaced: %w", key, errdefs.ErrInvalidArgument)
	}
	return fmt.Errorf("sysctl %q needs the container to have its namespace: %w", key, errdefs.ErrInvalidArgument)
}

// writeSysctls writes the spec's sysctls through the container's own /proc.
func (s *setup) writeSysctls() error {
	for key, val := range s.spec.Linux.Sysctl {
		if err := s.checkSysctl(key); err != nil {
			return err
		}
		rel := strings.ReplaceAll(key, ".", "/")
		if strings.Contains(rel, "..") {
			return fmt.Errorf("sysctl %q: %w", key, errdefs.ErrInvalidArgument)
		}
		fd, err := openIn(s.root, "/proc/sys/"+rel, unix.O_WRONLY|unix.O_TRUNC)
		if err != nil {
			return fmt.Errorf("sysctl %s: %w", key, err)
		}
		_, err = unix.Write(fd, []byte(val))
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", key, val, err)
		}
	}
	return nil
}

// openHostDevice opens (O_PATH) the host's node of device d, looking first
// at p, then under /dev.
func openHostDevice(p string, d device) (int, error) {
	if fd, ok := openIfDevice(p, d); ok {
		return fd, nil
	}
	if d.kind != unix.S_IFIFO {
		if fd, ok := findHostDevice("/dev", d, 3); ok {
			return fd, nil
		}
	}
	return -1, fmt.Errorf("no host device node %d:%d (looked at %s and under /dev): %w", d.major, d.minor, p, errdefs.ErrInvalidArgument)
}

// openIfDevice opens p if it is device d's node.
func openIfDevice(p string, d device) (int, bool) {
	fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0)
	if err != nil {
		return -1, false
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != d.kind ||
		(d.kind != unix.S_IFIFO && st.Rdev != unix.Mkdev(uint32(d.major), uint32(d.minor))) {
		unix.Close(fd)
		return -1, false
	}
	return fd, true
}

// findHostDevice looks for device d's node in dir and its subdirectories,
// depth levels down (not following symlinks).
func findHostDevice(dir string, d device, depth int) (int, bool) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return -1, false
	}
	for _, e := range ents {
		p := path.Join(dir, e.Name())
		switch {
		case e.Type()&os.ModeDevice != 0:
			if fd, ok := openIfDevice(p, d); ok {
				return fd, true
			}
		case e.IsDir() && depth > 1:
			if fd, ok := findHostDevice(p, d, depth-1); ok {
				return fd, true
			}
		}
	}
	return -1, false
}
