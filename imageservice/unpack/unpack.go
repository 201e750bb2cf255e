// Package unpack extracts one image layer (an uncompressed tar stream) into an
// empty directory that becomes an overlayfs lower layer.
//
// Whiteouts are converted to what overlayfs expects: ".wh.X" becomes a 0/0
// character device named X, and ".wh..wh..opq" sets trusted.overlay.opaque=y
// on its directory.
//
// Safety: a layer is untrusted input. Every path is resolved inside the
// destination with openat2(RESOLVE_IN_ROOT), and the last component is
// created with *at system calls that never follow it, so symlinks planted by
// the layer (absolute or with "..") are confined to the destination. Entry
// names with ".." that climb above the root are rejected; absolute names are
// taken relative to the root, as tar does. Overlay xattrs in the layer are
// dropped, since they would change how overlayfs reads the layer.
package unpack

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
	// whiteoutMetaPrefix starts AUFS's own bookkeeping entries.
	whiteoutMetaPrefix = ".wh..wh."
)

// ErrUnsafeEntry is returned (wrapped) for an entry that would escape the root.
var ErrUnsafeEntry = errors.New("unsafe layer entry")

// Stats counts what a layer held.
type Stats struct {
	Entries int
	Bytes   int64 // regular file content
}

// Apply extracts the tar stream r into dir, which should be empty. It stops
// at ctx's cancellation. It does not fsync: the caller syncs the filesystem
// once after all layers.
func Apply(ctx context.Context, dir string, r io.Reader) (Stats, error) {
	rootFd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Stats{}, fmt.Errorf("open layer root %s: %w", dir, err)
	}
	x := &extractor{root: rootFd, cacheFd: -1, buf: make([]byte, 1<<20)}
	defer x.close()

	var st Stats
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return st, fmt.Errorf("reading layer tar: %w", err)
		}
		st.Entries++
		n, err := x.entry(hdr, tr)
		st.Bytes += n
		if err != nil {
			return st, fmt.Errorf("layer entry %q: %w", hdr.Name, err)
		}
	}
	// Directory times last: creating children changed them.
	for i := len(x.dirTimes) - 1; i >= 0; i-- {
		d := x.dirTimes[i]
		fd, err := x.openIn(d.rel, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			continue // replaced or removed later in the layer
		}
		_ = futimes(fd, timespecs(d.atime, d.mtime))
		unix.Close(fd)
	}
	return st, nil
}

type dirTime struct {
	rel          string
	atime, mtime time.Time
}

type extractor struct {
	root     int
	cacheRel string // the parent directory opened last, with cacheFd
	cacheFd  int
	dirTimes []dirTime
	buf      []byte
}

func (x *extractor) close() {
	x.dropCache()
	unix.Close(x.root)
}

func (x *extractor) dropCache() {
	if x.cacheFd >= 0 {
		unix.Close(x.cacheFd)
	}
	x.cacheFd, x.cacheRel = -1, ""
}

// cleanName turns a tar name into a path relative to the root, or an error if
// it climbs above the root.
func cleanName(name string) (string, error) {
	rel := path.Clean(strings.TrimLeft(name, "/"))
	if rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("%w: path %q leaves the root", ErrUnsafeEntry, name)
	}
	if rel == "." {
		return "", nil
	}
	return rel, nil
}

// openIn opens rel (a directory path relative to the root) inside the root:
// symlinks on the way resolve as if the root were "/".
func (x *extractor) openIn(rel string, flags uint64) (int, error) {
	if rel == "" {
		rel = "."
	}
	return unix.Openat2(x.root, rel, &unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV,
	})
}

// parent returns an fd of the directory rel (creating missing directories),
// owned by the cache: the caller must not close it.
func (x *extractor) parent(rel string) (int, error) {
	if x.cacheFd >= 0 && x.cacheRel == rel {
		return x.cacheFd, nil
	}
	x.dropCache()
	fd, err := x.openIn(rel, unix.O_PATH|unix.O_DIRECTORY)
	if errors.Is(err, unix.ENOENT) {
		fd, err = x.mkdirAll(rel)
	}
	if err != nil {
		return -1, fmt.Errorf("parent directory %q (resolved inside the layer root, where symlinks cannot lead out): %w", rel, err)
	}
	x.cacheFd, x.cacheRel = fd, rel
	return fd, nil
}

// mkdirAll creates the missing directories of rel (0755, root-owned, as
// docker does for parents a layer does not list) and opens it.
func (x *extractor) mkdirAll(rel string) (int, error) {
	parts := strings.Split(rel, "/")
	cur := ""
	for _, p := range parts {
		next := path.Join(cur, p)
		fd, err := x.openIn(next, unix.O_PATH|unix.O_DIRECTORY)
		if err == nil {
			unix.Close(fd)
			cur = next
			continue
		}
		if !errors.Is(err, unix.ENOENT) {
			return -1, err
		}
		pfd, err := x.openIn(cur, unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return -1, err
		}
		err = unix.Mkdirat(pfd, p, 0o755)
		unix.Close(pfd)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return -1, err
		}
		cur = next
	}
	return x.openIn(rel, unix.O_PATH|unix.O_DIRECTORY)
}

// remove deletes whatever is at name in dirfd (recursively for a directory).
// It never follows symlinks.
func (x *extractor) remove(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) {
		return err
	}
	// The cache holds only the current entry's parent, dirfd itself, never
	// something below name, so it stays valid.
	return removeAllAt(dirfd, name)
}

func removeAllAt(dirfd int, name string) error {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	names, err := f.Readdirnames(-1)
	if err != nil {
		f.Close()
		return err
	}
	for _, n := range names {
		if err := unix.Unlinkat(fd, n, 0); err != nil {
			if !errors.Is(err, unix.EISDIR) {
				f.Close()
				return err
			}
			if err := removeAllAt(fd, n); err != nil {
				f.Close()
				return err
			}
		}
	}
	f.Close()
	return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}

func (x *extractor) entry(hdr *tar.Header, r io.Reader) (int64, error) {
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return 0, err
	}
	if rel == "" {
		return 0, nil // the root itself ("./"): keep the snapshot dir as made
	}
	dirRel, base := path.Split(rel)
	dirRel = strings.TrimSuffix(dirRel, "/")
	if base != opaqueMarker && strings.Contains("/"+rel, "/"+whiteoutMetaPrefix) {
		// AUFS metadata (.wh..wh.plnk, .wh..wh.aufs) has no meaning for
		// overlayfs; docker skips it too.
		return 0, nil
	}
	pfd, err := x.parent(dirRel)
	if err != nil {
		return 0, err
	}

	if base == opaqueMarker {
		// Opaque directory: hide everything below it in lower layers.
		return 0, unix.Setxattr(procPath(pfd, ""), "trusted.overlay.opaque", []byte("y"), 0)
	}
	if strings.HasPrefix(base, whiteoutPrefix) {
		target := base[len(whiteoutPrefix):]
		if target == "" || target == "." || target == ".." {
			return 0, fmt.Errorf("%w: bad whiteout", ErrUnsafeEntry)
		}
		if err := x.remove(pfd, target); err != nil {
			return 0, err
		}
		return 0, unix.Mknodat(pfd, target, unix.S_IFCHR, 0)
	}

	mode := uint32(hdr.Mode) & 0o7777
	var written int64
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
			if !errors.Is(err, unix.EEXIST) {
				return 0, err
			}
			var st unix.Stat_t
			if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return 0, err
			}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				if err := x.remove(pfd, base); err != nil {
					return 0, err
				}
				if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
					return 0, err
				}
			}
		}
		fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return 0, err
		}
		err = x.fdMeta(fd, hdr, mode)
		unix.Close(fd)
		if err != nil {
			return 0, err
		}
		x.dirTimes = append(x.dirTimes, dirTime{rel, hdr.AccessTime, hdr.ModTime})
		return 0, nil

	case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse:
		if err := x.remove(pfd, base); err != nil {
			return 0, err
		}
		fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return 0, err
		}
		f := os.NewFile(uintptr(fd), base)
		written, err = io.CopyBuffer(fileWriter{f}, r, x.buf)
		if err == nil {
			err = x.fdMeta(fd, hdr, mode)
		}
		if err == nil {
			err = futimes(fd, timespecs(hdr.AccessTime, hdr.ModTime))
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return written, err

	case tar.TypeSymlink:
		if err := x.remove(pfd, base); err != nil {
			return 0, err
		}
		// The target is stored verbatim: it is only ever followed inside
		// the container's root (or by us through RESOLVE_IN_ROOT).
		if err := unix.Symlinkat(hdr.Linkname, pfd, base); err != nil {
			return 0, err
		}
		if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return 0, err
		}
		return 0, x.pathMeta(pfd, base, hdr)

	case tar.TypeLink:
		trel, err := cleanName(hdr.Linkname)
		if err != nil {
			return 0, err
		}
		if trel == "" {
			return 0, fmt.Errorf("%w: hardlink to the root", ErrUnsafeEntry)
		}
		tdir, tbase := path.Split(trel)
		tfd, err := x.openIn(strings.TrimSuffix(tdir, "/"), unix.O_PATH|unix.O_DIRECTORY)
		if err != nil {
			return 0, fmt.Errorf("hardlink target %q (resolved inside the layer root): %w", hdr.Linkname, err)
		}
		defer unix.Close(tfd)
		if err := x.remove(pfd, base); err != nil {
			return 0, err
		}
		// No AT_SYMLINK_FOLLOW: a symlink target is linked itself, never
		// the file it points to, so the link cannot reach outside.
		if err := unix.Linkat(tfd, tbase, pfd, base, 0); err != nil {
			return 0, fmt.Errorf("hardlink to %q: %w", hdr.Linkname, err)
		}
		return 0, nil

	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if err := x.remove(pfd, base); err != nil {
			return 0, err
		}
		kind := uint32(unix.S_IFIFO)
		switch hdr.Typeflag {
		case tar.TypeChar:
			kind = unix.S_IFCHR
		case tar.TypeBlock:
			kind = unix.S_IFBLK
		}
		dev := int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
		if err := unix.Mknodat(pfd, base, kind|0o600, dev); err != nil {
			return 0, err
		}
		if err := unix.Fchownat(pfd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return 0, err
		}
		// We just made this node in a directory only we write to, so it
		// is not a symlink: fchmodat (which follows) is safe here.
		if err := unix.Fchmodat(pfd, base, mode, 0); err != nil {
			return 0, err
		}
		return 0, x.pathMeta(pfd, base, hdr)

	case tar.TypeXGlobalHeader:
		return 0, nil
	default:
		return 0, fmt.Errorf("unsupported tar entry type %q", hdr.Typeflag)
	}
}

// fileWriter hides os.File's ReadFrom so io.CopyBuffer uses our buffer.
type fileWriter struct{ f *os.File }

func (w fileWriter) Write(p []byte) (int, error) { return w.f.Write(p) }

// fdMeta sets owner, mode and xattrs on an open file or directory.
func (x *extractor) fdMeta(fd int, hdr *tar.Header, mode uint32) error {
	if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
		return err
	}
	// After chown, which clears setuid/setgid.
	if err := unix.Fchmod(fd, mode); err != nil {
		return err
	}
	for k, v := range xattrs(hdr) {
		if err := unix.Fsetxattr(fd, k, []byte(v), 0); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("xattr %s: %w", k, err)
		}
	}
	return nil
}

// pathMeta sets xattrs and times on name in dirfd without following it.
func (x *extractor) pathMeta(dirfd int, name string, hdr *tar.Header) error {
	for k, v := range xattrs(hdr) {
		if err := unix.Lsetxattr(procPath(dirfd, name), k, []byte(v), 0); err != nil &&
			!errors.Is(err, unix.ENOTSUP) && !errors.Is(err, unix.EPERM) {
			return fmt.Errorf("xattr %s: %w", k, err)
		}
	}
	return unix.UtimesNanoAt(dirfd, name, timespecs(hdr.AccessTime, hdr.ModTime), unix.AT_SYMLINK_NOFOLLOW)
}

// xattrs returns the layer's xattrs for the entry, without overlayfs's own
// (a layer must not steer overlayfs: redirect, metacopy, opaque, ...).
func xattrs(hdr *tar.Header) map[string]string {
	var out map[string]string
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok || strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.") {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = v
	}
	return out
}

// procPath names name inside the directory dirfd through /proc/self/fd, for
// the path-only xattr calls. The directory is the fd itself, not a path
// lookup, so nothing can swap it.
func procPath(dirfd int, name string) string {
	p := "/proc/self/fd/" + strconv.Itoa(dirfd)
	if name != "" {
		p += "/" + name
	}
	return p
}

func timespecs(atime, mtime time.Time) []unix.Timespec {
	if atime.IsZero() {
		atime = mtime
	}
	a, _ := unix.TimeToTimespec(atime)
	m, _ := unix.TimeToTimespec(mtime)
	return []unix.Timespec{a, m}
}

// futimes sets the times of the file fd refers to (also an O_PATH fd).
func futimes(fd int, ts []unix.Timespec) error {
	return unix.UtimesNanoAt(unix.AT_FDCWD, procPath(fd, ""), ts, 0)
}
