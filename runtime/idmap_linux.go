package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
)

// idmapLayers is the bundle dir holding the idmapped layers of an overlay
// rootfs.
const idmapLayers = "idmap"

// idmapRootfs mounts at bundle/rootfs the view of root that a container of a
// user-namespace pod gets: files of host root are its root's, and what it
// writes lands on disk as its own ids. An overlay mount cannot be idmapped
// itself (the kernel refuses, EINVAL), but its layers can: the overlay is
// mounted again, on idmapped clones of its lower dirs and of the dir of its
// upper and work dirs. Any other root (a plain directory) is idmapped
// directly.
//
// The overlay's own operations on its layers run with the credentials of
// whoever created it; through the idmapped layers those must be the pod
// root's host ids (rootUID, rootGID), or the overlay cannot write its upper
// dir (host root is unmapped there) and falls back to read-only.
func idmapRootfs(root, bundle, usernsPath string, rootUID, rootGID uint32) error {
	userns, err := unix.Open(usernsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open user namespace: %w", err)
	}
	defer unix.Close(userns)
	dst := filepath.Join(bundle, idmappedRootfs)
	mounts, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(root))
	if err != nil {
		return err
	}
	if len(mounts) == 0 || mounts[0].FSType != "overlay" {
		return idmappedBind(root, dst, userns)
	}
	lowers, upper, work, err := overlayLayers(mounts[0].VFSOptions)
	if err != nil {
		return fmt.Errorf("overlay at %s: %w", root, err)
	}
	if filepath.Dir(upper) != filepath.Dir(work) {
		return fmt.Errorf("overlay at %s: upper and work dirs are not siblings", root)
	}
	dir := filepath.Join(bundle, idmapLayers)
	if err := os.Mkdir(dir, 0o711); err != nil {
		return err
	}
	var mapped []string
	for i, l := range lowers {
		p := filepath.Join(dir, "l"+strconv.Itoa(i))
		if err := idmappedBind(l, p, userns); err != nil {
			return err
		}
		mapped = append(mapped, p)
	}
	up := filepath.Join(dir, "u")
	if err := idmappedBind(filepath.Dir(upper), up, userns); err != nil {
		return err
	}
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("fsopen overlay: %w", err)
	}
	defer unix.Close(fsfd)
	set := func(k, v string) error {
		if err := unix.FsconfigSetString(fsfd, k, v); err != nil {
			return fmt.Errorf("overlay option %s=%s: %w", k, v, err)
		}
		return nil
	}
	if err := set("source", "berth"); err != nil {
		return err
	}
	for _, l := range mapped {
		if err := set("lowerdir+", l); err != nil {
			return err
		}
	}
	if err := set("upperdir", filepath.Join(up, filepath.Base(upper))); err != nil {
		return err
	}
	if err := set("workdir", filepath.Join(up, filepath.Base(work))); err != nil {
		return err
	}
	if err := createAs(fsfd, int(rootUID), int(rootGID)); err != nil {
		return fmt.Errorf("creating idmapped overlay: %w", err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fsmount overlay: %w", err)
	}
	defer unix.Close(mfd)
	if err := os.Mkdir(dst, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("mount idmapped overlay on %s: %w", dst, err)
	}
	return nil
}

// createAs creates the file system of fsfd with fsuid and fsgid set to uid
// and gid, keeping every capability: on a thread of its own, locked and
// never unlocked, so the changed credentials die with it (Go ends a locked
// thread whose goroutine exits) and no other goroutine runs with them.
func createAs(fsfd, uid, gid int) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var caps [2]unix.CapUserData
		if err := unix.Capget(&hdr, &caps[0]); err != nil {
			errc <- fmt.Errorf("capget: %w", err)
			return
		}
		// Per-thread system calls (x/sys does not broadcast these).
		unix.Setfsgid(gid)
		unix.Setfsuid(uid)
		// Leaving fsuid 0 drops the file-system capabilities from the
		// effective set; the overlay needs them (copy-up chowns).
		if err := unix.Capset(&hdr, &caps[0]); err != nil {
			errc <- fmt.Errorf("capset: %w", err)
			return
		}
		errc <- unix.FsconfigCreate(fsfd)
	}()
	return <-errc
}

// overlayLayers reads the layer dirs from an overlay's super options
// (mountinfo shows the lower dirs as lowerdir=A:B, ':' in a path as "\:").
func overlayLayers(opts string) (lowers []string, upper, work string, err error) {
	for _, o := range strings.Split(opts, ",") {
		k, v, _ := strings.Cut(o, "=")
		switch k {
		case "lowerdir", "lowerdir+":
			var cur strings.Builder
			for i := 0; i < len(v); i++ {
				switch {
				case v[i] == '\\' && i+1 < len(v):
					i++
					cur.WriteByte(v[i])
				case v[i] == ':' && k == "lowerdir":
					lowers = append(lowers, cur.String())
					cur.Reset()
				default:
					cur.WriteByte(v[i])
				}
			}
			lowers = append(lowers, cur.String())
		case "upperdir":
			upper = v
		case "workdir":
			work = v
		case "datadir+":
			return nil, "", "", errors.New("data-only layers are not supported")
		}
	}
	if len(lowers) == 0 || upper == "" || work == "" {
		return nil, "", "", fmt.Errorf("no lower, upper or work dir in %q", opts)
	}
	return lowers, upper, work, nil
}

// idmappedBind mounts a clone of the mount at src on dst, idmapped with the
// mappings of the user namespace userns. Not recursive: the dir of an upper
// dir also holds the overlay mount, which cannot be idmapped.
func idmappedBind(src, dst string, userns int) error {
	return idmappedClone(src, dst, userns, false, false)
}

// idmappedClone is idmappedBind, of the whole tree below src if recursive,
// idmapping every mount in it if recursiveIdmap (they must all support it
// then). src may be a file.
func idmappedClone(src, dst string, userns int, recursive, recursiveIdmap bool) error {
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	setFlags := uint(unix.AT_EMPTY_PATH)
	if recursive {
		flags |= unix.AT_RECURSIVE
		if recursiveIdmap {
			setFlags |= unix.AT_RECURSIVE
		}
	}
	tree, err := unix.OpenTree(unix.AT_FDCWD, src, flags)
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", src, err)
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(userns)}
	if err := unix.MountSetattr(tree, "", setFlags, &attr); err != nil {
		return fmt.Errorf("idmap %s: %w", src, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(tree, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		err = os.Mkdir(dst, 0o755)
	} else {
		var f *os.File
		if f, err = os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o644); err == nil {
			f.Close()
		}
	}
	if err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := unix.MoveMount(tree, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("mount idmapped %s on %s: %w", src, dst, err)
	}
	return nil
}

// idmapVolumes replaces the source of every mount of s that asks for an
// idmapped mount (uidMappings and gidMappings in the OCI mount, as cri sets
// them from kubelet's volume mappings, or the idmap and ridmap options,
// which without mappings mean the container's) by an idmapped clone of it
// in the bundle, made with the pod's user namespace: files of host root
// there are the pod's root's. Handlers then bind it like any other source
// (runc 1.1 knows no idmapped mounts). Only the pod's own mappings can be
// given. The clone is recursive for rbind; the idmapping is on the top mount
// only with idmap, on every mount with ridmap or with mappings alone.
func idmapVolumes(s *specs.Spec, bundle, usernsPath string) error {
	userns := -1
	defer func() {
		if userns >= 0 {
			unix.Close(userns)
		}
	}()
	for i, m := range s.Mounts {
		idmapOpt, ridmapOpt, rbind := false, false, false
		var opts []string
		for _, o := range m.Options {
			switch o {
			case "idmap":
				idmapOpt = true
				continue
			case "ridmap":
				ridmapOpt = true
				continue
			case "rbind":
				rbind = true
			}
			opts = append(opts, o)
		}
		if len(m.UIDMappings) == 0 && len(m.GIDMappings) == 0 && !idmapOpt && !ridmapOpt {
			continue
		}
		if usernsPath == "" {
			return fmt.Errorf("mount %s: an idmapped mount in a container without a user namespace: %w", m.Destination, errdefs.ErrInvalidArgument)
		}
		if m.Type != "bind" && !slices.Contains(m.Options, "bind") && !rbind {
			return fmt.Errorf("mount %s: only bind mounts can be idmapped: %w", m.Destination, errdefs.ErrInvalidArgument)
		}
		if (len(m.UIDMappings) > 0 || len(m.GIDMappings) > 0) &&
			(!slices.Equal(m.UIDMappings, s.Linux.UIDMappings) || !slices.Equal(m.GIDMappings, s.Linux.GIDMappings)) {
			return fmt.Errorf("mount %s: id mappings other than the pod's user namespace's: %w", m.Destination, errdefs.ErrInvalidArgument)
		}
		if userns < 0 {
			var err error
			if userns, err = unix.Open(usernsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
				return fmt.Errorf("open user namespace: %w", err)
			}
			if err := os.MkdirAll(filepath.Join(bundle, idmapLayers), 0o711); err != nil {
				return err
			}
		}
		dst := filepath.Join(bundle, idmapLayers, "v"+strconv.Itoa(i))
		if err := idmappedClone(m.Source, dst, userns, rbind, !idmapOpt || ridmapOpt); err != nil {
			return fmt.Errorf("mount %s: %w", m.Destination, err)
		}
		s.Mounts[i] = specs.Mount{Destination: m.Destination, Type: m.Type, Source: dst, Options: opts}
	}
	return nil
}

// unmountIdmapped undoes idmapRootfs: the rootfs first, then the layers.
func unmountIdmapped(bundle string) error {
	// Every mount is tried, so one that will not go does not keep the
	// others (whose removal the caller then skips: see Create).
	errs := []error{unmountAll(filepath.Join(bundle, idmappedRootfs))}
	ents, err := os.ReadDir(filepath.Join(bundle, idmapLayers))
	if errors.Is(err, os.ErrNotExist) {
		return errors.Join(errs...)
	}
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, e := range ents {
		errs = append(errs, unmountAll(filepath.Join(bundle, idmapLayers, e.Name())))
	}
	return errors.Join(errs...)
}
