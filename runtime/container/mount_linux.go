package container

import (
	"bufio"
	"fmt"
	"os"
	"path"
	"strings"

	"github.com/berth-dev/berth/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// mountOpts is an OCI mount's option list, sorted into what the new mount
// API wants: per-mount attributes (set on the top mount or the whole tree),
// propagation, and the file system's own options.
type mountOpts struct {
	bind, rbind bool
	attr        unix.MountAttr // applied to the top mount
	recAttr     unix.MountAttr // applied to every mount in the tree
	propagation uint64
	recProp     bool
	data        []string
}

var attrFlags = map[string]struct {
	flag  uint64
	clear bool
}{
	"ro": {unix.MOUNT_ATTR_RDONLY, false}, "rw": {unix.MOUNT_ATTR_RDONLY, true},
	"nosuid": {unix.MOUNT_ATTR_NOSUID, false}, "suid": {unix.MOUNT_ATTR_NOSUID, true},
	"nodev": {unix.MOUNT_ATTR_NODEV, false}, "dev": {unix.MOUNT_ATTR_NODEV, true},
	"noexec": {unix.MOUNT_ATTR_NOEXEC, false}, "exec": {unix.MOUNT_ATTR_NOEXEC, true},
	"nodiratime": {unix.MOUNT_ATTR_NODIRATIME, false}, "diratime": {unix.MOUNT_ATTR_NODIRATIME, true},
	"nosymfollow": {unix.MOUNT_ATTR_NOSYMFOLLOW, false}, "symfollow": {unix.MOUNT_ATTR_NOSYMFOLLOW, true},
}

var atimeFlags = map[string]uint64{
	"relatime": unix.MOUNT_ATTR_RELATIME, "noatime": unix.MOUNT_ATTR_NOATIME,
	"strictatime": unix.MOUNT_ATTR_STRICTATIME,
}

var propFlags = map[string]uint64{
	"private": unix.MS_PRIVATE, "slave": unix.MS_SLAVE, "shared": unix.MS_SHARED,
	"unbindable": unix.MS_UNBINDABLE,
}

// Options that only matter to mount(8) or to the old API.
var ignoredOpts = map[string]bool{"defaults": true, "async": true, "loud": true, "auto": true, "noauto": true, "user": false}

func parseMountOpts(opts []string) mountOpts {
	var o mountOpts
	for _, opt := range opts {
		switch {
		case opt == "bind":
			o.bind = true
		case opt == "rbind":
			o.bind, o.rbind = true, true
		case ignoredOpts[opt]:
		case propFlags[opt] != 0:
			o.propagation = propFlags[opt]
		case strings.HasPrefix(opt, "r") && propFlags[opt[1:]] != 0:
			o.propagation, o.recProp = propFlags[opt[1:]], true
		case atimeFlags[opt] != 0:
			o.attr.Attr_set |= atimeFlags[opt]
			o.attr.Attr_clr |= unix.MOUNT_ATTR__ATIME
		case strings.HasPrefix(opt, "r") && atimeFlags[opt[1:]] != 0:
			o.recAttr.Attr_set |= atimeFlags[opt[1:]]
			o.recAttr.Attr_clr |= unix.MOUNT_ATTR__ATIME
		default:
			if f, ok := attrFlags[opt]; ok {
				setAttr(&o.attr, f.flag, f.clear)
			} else if f, ok := attrFlags[strings.TrimPrefix(opt, "r")]; ok && strings.HasPrefix(opt, "r") {
				setAttr(&o.recAttr, f.flag, f.clear)
			} else {
				o.data = append(o.data, opt)
			}
		}
	}
	return o
}

func setAttr(a *unix.MountAttr, flag uint64, clear bool) {
	if clear {
		a.Attr_clr |= flag
		a.Attr_set &^= flag
	} else {
		a.Attr_set |= flag
		a.Attr_clr &^= flag
	}
}

// applyAttrs sets the attributes and propagation on the mount whose root is
// target (an fd opened after the mount was attached).
func (o *mountOpts) applyAttrs(target int) error {
	if o.attr.Attr_set|o.attr.Attr_clr != 0 {
		if err := unix.MountSetattr(target, "", unix.AT_EMPTY_PATH, &o.attr); err != nil {
			return fmt.Errorf("mount_setattr: %w", err)
		}
	}
	if o.recAttr.Attr_set|o.recAttr.Attr_clr != 0 {
		if err := unix.MountSetattr(target, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &o.recAttr); err != nil {
			return fmt.Errorf("mount_setattr recursive: %w", err)
		}
	}
	if o.propagation != 0 {
		flags := uint(unix.AT_EMPTY_PATH)
		if o.recProp {
			flags |= unix.AT_RECURSIVE
		}
		if err := unix.MountSetattr(target, "", flags, &unix.MountAttr{Propagation: o.propagation}); err != nil {
			return fmt.Errorf("mount_setattr propagation: %w", err)
		}
	}
	return nil
}

// newFS creates a detached mount of a fresh file system of type fstype.
func newFS(fstype, source string, data []string, attr unix.MountAttr) (int, error) {
	fsfd, err := unix.Fsopen(fstype, unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("fsopen %s: %w", fstype, err)
	}
	defer unix.Close(fsfd)
	if source != "" {
		if err := unix.FsconfigSetString(fsfd, "source", source); err != nil {
			return -1, fmt.Errorf("fsconfig source=%s: %w", source, err)
		}
	}
	for _, d := range data {
		k, v, hasValue := strings.Cut(d, "=")
		if hasValue {
			err = unix.FsconfigSetString(fsfd, k, v)
		} else {
			err = unix.FsconfigSetFlag(fsfd, k)
		}
		if err != nil {
			return -1, fmt.Errorf("%s option %q: %w", fstype, d, err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("create %s superblock: %w", fstype, err)
	}
	// Only flags that set an attribute are meaningful for a fresh mount.
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, int(attr.Attr_set))
	if err != nil {
		return -1, fmt.Errorf("fsmount %s: %w", fstype, err)
	}
	return mfd, nil
}

// mountOne performs one of the spec's mounts below root.
func (s *setup) mountOne(m specs.Mount) error {
	o := parseMountOpts(m.Options)
	if m.Type == "bind" {
		o.bind = true
	}
	if m.Type == "cgroup" || m.Type == "cgroup2" {
		return s.mountCgroup(m, o)
	}
	if o.bind {
		return s.bindMount(m, o)
	}
	target, err := mkdirAllIn(s.root, m.Destination, 0o755)
	if err != nil {
		return err
	}
	defer unix.Close(target)
	mfd, err := newFS(m.Type, m.Source, o.data, o.attr)
	if err != nil {
		return err
	}
	defer unix.Close(mfd)
	if err := moveMountOnto(mfd, target); err != nil {
		return fmt.Errorf("move_mount: %w", err)
	}
	// Attributes were set by fsmount; what is left is propagation and the
	// recursive attributes (which on a fresh mount mean the same).
	o.attr = unix.MountAttr{}
	return s.afterMount(m.Destination, o)
}

func (s *setup) afterMount(dest string, o mountOpts) error {
	if o.propagation == 0 && o.attr.Attr_set|o.attr.Attr_clr|o.recAttr.Attr_set|o.recAttr.Attr_clr == 0 {
		return nil
	}
	fd, err := openIn(s.root, dest, unix.O_PATH)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return o.applyAttrs(fd)
}

func (s *setup) bindMount(m specs.Mount, o mountOpts) error {
	if len(o.data) > 0 {
		return fmt.Errorf("bind mount options %v: %w", o.data, errdefs.ErrInvalidArgument)
	}
	// The source is a host path chosen by berthd, not by the image.
	src, err := unix.Open(m.Source, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open bind source", Path: m.Source, Err: err}
	}
	defer unix.Close(src)
	target, err := s.mountTargetFor(src, m.Destination)
	if err != nil {
		return err
	}
	defer unix.Close(target)
	if err := bindFd(src, target, o.rbind); err != nil {
		return err
	}
	return s.afterMount(m.Destination, o)
}

// attachBind attaches tree, the detached clone of bind mount m's source
// that the first stage made, at m's destination.
func (s *setup) attachBind(m specs.Mount, tree int) error {
	defer unix.Close(tree)
	o := parseMountOpts(m.Options)
	if len(o.data) > 0 {
		return fmt.Errorf("bind mount options %v: %w", o.data, errdefs.ErrInvalidArgument)
	}
	target, err := s.mountTargetFor(tree, m.Destination)
	if err != nil {
		return err
	}
	defer unix.Close(target)
	if err := moveMountOnto(tree, target); err != nil {
		return fmt.Errorf("move_mount: %w", err)
	}
	return s.afterMount(m.Destination, o)
}

// mountCgroup gives the container a view of its own cgroups. On a cgroup v2
// host that is a cgroup2 mount (rooted at the container's cgroup when it has
// a cgroup namespace). On a v1 or hybrid host it is a tmpfs with, for each
// hierarchy, a bind mount of the container's own cgroup directory.
func (s *setup) mountCgroup(m specs.Mount, o mountOpts) error {
	target, err := mkdirAllIn(s.root, m.Destination, 0o755)
	if err != nil {
		return err
	}
	defer unix.Close(target)
	hier, err := ownCgroupDirs()
	if err != nil {
		return err
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
		if !s.newCgroupNS {
			// Without a cgroup namespace a fresh mount would show the
			// host's whole tree: bind the container's own cgroup instead.
			src, err := unix.Open(path.Join("/sys/fs/cgroup", hier.v2), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("open own cgroup: %w", err)
			}
			defer unix.Close(src)
			if err := bindFd(src, target, false); err != nil {
				return err
			}
			return s.afterMount(m.Destination, o)
		}
		mfd, err := newFS("cgroup2", "cgroup", nil, o.attr)
		if err != nil {
			return err
		}
		defer unix.Close(mfd)
		if err := moveMountOnto(mfd, target); err != nil {
			return fmt.Errorf("move_mount cgroup2: %w", err)
		}
		return nil
	}
	tfd, err := newFS("tmpfs", "cgroup", []string{"mode=755"}, unix.MountAttr{Attr_set: o.attr.Attr_set &^ unix.MOUNT_ATTR_RDONLY})
	if err != nil {
		return err
	}
	defer unix.Close(tfd)
	if err := moveMountOnto(tfd, target); err != nil {
		return fmt.Errorf("move_mount cgroup tmpfs: %w", err)
	}
	top, err := openIn(s.root, m.Destination, unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return err
	}
	defer unix.Close(top)
	for _, h := range hier.dirs {
		if err := unix.Mkdirat(top, h.name, 0o755); err != nil {
			return fmt.Errorf("mkdir cgroup %s: %w", h.name, err)
		}
		src, err := unix.Open(h.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return &os.PathError{Op: "open", Path: h.dir, Err: err}
		}
		dst, err := openIn(s.root, path.Join(m.Destination, h.name), unix.O_PATH|unix.O_DIRECTORY)
		if err == nil {
			err = bindFd(src, dst, false)
			if err == nil {
				sub := o
				sub.propagation = 0
				err = s.afterMount(path.Join(m.Destination, h.name), sub)
			}
			unix.Close(dst)
		}
		unix.Close(src)
		if err != nil {
			return fmt.Errorf("cgroup %s: %w", h.name, err)
		}
	}
	return s.afterMount(m.Destination, o)
}

type cgroupDir struct{ name, dir string }

type ownCgroups struct {
	dirs []cgroupDir // per hierarchy mounted below /sys/fs/cgroup
	v2   string      // the cgroup v2 path, from /proc/self/cgroup
}

// ownCgroupDirs lists, for every cgroup hierarchy mounted under
// /sys/fs/cgroup, the directory of this process's cgroup in it.
func ownCgroupDirs() (*ownCgroups, error) {
	own := map[string]string{} // controller list (or "" for v2) -> path
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) == 3 {
			own[parts[1]] = parts[2]
		}
	}
	out := &ownCgroups{v2: own[""]}
	mi, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer mi.Close()
	sc = bufio.NewScanner(mi)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [tags...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f1, f2 := strings.Fields(pre), strings.Fields(post)
		if len(f1) < 5 || len(f2) < 3 || path.Dir(f1[4]) != "/sys/fs/cgroup" {
			continue
		}
		var p string
		switch f2[0] {
		case "cgroup2":
			p, ok = own[""]
		case "cgroup":
			p, ok = matchV1(own, strings.Split(f2[2], ","))
		default:
			continue
		}
		if ok {
			out.dirs = append(out.dirs, cgroupDir{name: path.Base(f1[4]), dir: path.Join(f1[4], p)})
		}
	}
	return out, sc.Err()
}

func matchV1(own map[string]string, superOpts []string) (string, bool) {
	opts := map[string]bool{}
	for _, o := range superOpts {
		opts[o] = true
	}
	for ctrls, p := range own {
		if ctrls == "" {
			continue
		}
		all := true
		for _, c := range strings.Split(ctrls, ",") {
			all = all && opts[c]
		}
		if all {
			return p, true
		}
	}
	return "", false
}

// mountTargetFor makes (or opens) dest in the rootfs as what is mounted
// there needs: a directory for a directory source, a file for any other.
func (s *setup) mountTargetFor(src int, dest string) (int, error) {
	dir, err := isDirFd(src)
	if err != nil {
		return -1, err
	}
	if dir {
		return mkdirAllIn(s.root, dest, 0o755)
	}
	return mkfileIn(s.root, dest)
}
