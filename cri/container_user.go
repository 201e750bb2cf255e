package cri

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/errdefs"
)

// passwdEntry is one line of an image's /etc/passwd.
type passwdEntry struct {
	name     string
	uid, gid uint32
}

// maxImageFileSize bounds what berthd reads of a file the container owns.
const maxImageFileSize = 1 << 20

// readImageFile reads a file of the container's rootfs. Resolution is
// confined to the rootfs (os.Root), so a symlinked /etc/passwd in the image
// cannot make berthd read a host file. A running container can replace the
// file: only a regular file is read (never a FIFO, which would block
// berthd, or a device node, which would have berthd read a host device),
// and only its first MiB.
func readImageFile(rootfs, name string) ([]string, error) {
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	f, err := root.OpenFile(name, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s in the container is not a regular file (%v): %w", name, fi.Mode().Type(), errdefs.ErrInvalidArgument)
	}
	var lines []string
	sc := bufio.NewScanner(io.LimitReader(f, maxImageFileSize))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines, sc.Err()
}

func lookupPasswd(rootfs string, match func(passwdEntry) bool) (*passwdEntry, error) {
	lines, err := readImageFile(rootfs, "etc/passwd")
	if err != nil {
		return nil, err
	}
	for _, l := range lines {
		f := strings.Split(l, ":")
		if len(f) < 4 {
			continue
		}
		uid, err1 := strconv.ParseUint(f[2], 10, 32)
		gid, err2 := strconv.ParseUint(f[3], 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		e := passwdEntry{name: f[0], uid: uint32(uid), gid: uint32(gid)}
		if match(e) {
			return &e, nil
		}
	}
	return nil, fs.ErrNotExist
}

// lookupGroup finds a group by name or number in the image's /etc/group.
func lookupGroup(rootfs, nameOrID string) (uint32, error) {
	if id, err := strconv.ParseUint(nameOrID, 10, 32); err == nil {
		return uint32(id), nil
	}
	lines, err := readImageFile(rootfs, "etc/group")
	if err != nil {
		return 0, err
	}
	for _, l := range lines {
		f := strings.Split(l, ":")
		if len(f) >= 3 && f[0] == nameOrID {
			id, err := strconv.ParseUint(f[2], 10, 32)
			if err == nil {
				return uint32(id), nil
			}
		}
	}
	return 0, fs.ErrNotExist
}

// memberGroups lists the gids of the image's /etc/group entries naming user.
func memberGroups(rootfs, user string) []uint32 {
	lines, err := readImageFile(rootfs, "etc/group")
	if err != nil || user == "" {
		return nil
	}
	var gids []uint32
	for _, l := range lines {
		f := strings.Split(l, ":")
		if len(f) < 4 {
			continue
		}
		for _, m := range strings.Split(f[3], ",") {
			if m == user {
				if id, err := strconv.ParseUint(f[2], 10, 32); err == nil {
					gids = append(gids, uint32(id))
				}
			}
		}
	}
	return gids
}

// resolveUser works out uid, gid and additional gids from the security
// context, falling back to the image's USER, resolving names in the image's
// /etc/passwd and /etc/group. SupplementalGroupsPolicy Merge (the default)
// adds the groups /etc/group gives the user; Strict uses only the listed ones.
func resolveUser(rootfs string, sc *runtimeapi.LinuxContainerSecurityContext, imageUser string) (specs.User, error) {
	var u specs.User
	var entry *passwdEntry
	userPart, groupPart, _ := strings.Cut(imageUser, ":")

	switch {
	case sc.GetRunAsUser() != nil:
		v := sc.GetRunAsUser().GetValue()
		if v < 0 || v > 1<<32-2 {
			return u, fmt.Errorf("security_context.run_as_user %d out of range: %w", v, errdefs.ErrInvalidArgument)
		}
		u.UID = uint32(v)
		entry, _ = lookupPasswd(rootfs, func(e passwdEntry) bool { return e.uid == u.UID })
		groupPart = ""
	case sc.GetRunAsUsername() != "":
		name := sc.GetRunAsUsername()
		e, err := lookupPasswd(rootfs, func(e passwdEntry) bool { return e.name == name })
		if err != nil {
			return u, fmt.Errorf("security_context.run_as_username %q not found in the image's /etc/passwd: %w", name, errdefs.ErrInvalidArgument)
		}
		entry, u.UID = e, e.uid
		groupPart = ""
	case userPart != "":
		if id, err := strconv.ParseUint(userPart, 10, 32); err == nil {
			u.UID = uint32(id)
			entry, _ = lookupPasswd(rootfs, func(e passwdEntry) bool { return e.uid == u.UID })
		} else {
			e, err := lookupPasswd(rootfs, func(e passwdEntry) bool { return e.name == userPart })
			if err != nil {
				return u, fmt.Errorf("image user %q not found in the image's /etc/passwd: %w", userPart, errdefs.ErrInvalidArgument)
			}
			entry, u.UID = e, e.uid
		}
	}
	if entry != nil {
		u.GID = entry.gid
	}
	switch {
	case sc.GetRunAsGroup() != nil:
		v := sc.GetRunAsGroup().GetValue()
		if v < 0 || v > 1<<32-2 {
			return u, fmt.Errorf("security_context.run_as_group %d out of range: %w", v, errdefs.ErrInvalidArgument)
		}
		u.GID = uint32(v)
	case groupPart != "":
		gid, err := lookupGroup(rootfs, groupPart)
		if err != nil {
			return u, fmt.Errorf("image group %q not found in the image's /etc/group: %w", groupPart, errdefs.ErrInvalidArgument)
		}
		u.GID = gid
	}

	seen := map[uint32]bool{u.GID: true}
	add := func(g uint32) {
		if !seen[g] {
			seen[g] = true
			u.AdditionalGids = append(u.AdditionalGids, g)
		}
	}
	if sc.GetSupplementalGroupsPolicy() != runtimeapi.SupplementalGroupsPolicy_Strict && entry != nil {
		for _, g := range memberGroups(rootfs, entry.name) {
			add(g)
		}
	}
	for _, g := range sc.GetSupplementalGroups() {
		if g < 0 || g > 1<<32-2 {
			return u, fmt.Errorf("security_context.supplemental_groups: %d out of range: %w", g, errdefs.ErrInvalidArgument)
		}
		add(uint32(g))
	}
	sort.Slice(u.AdditionalGids, func(i, j int) bool { return u.AdditionalGids[i] < u.AdditionalGids[j] })
	return u, nil
}

// loadSeccompFile reads a Localhost seccomp profile in the OCI format.
func loadSeccompFile(path string) (*specs.LinuxSeccomp, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("seccomp.localhost_ref %s: %w", path, errdefs.ErrInvalidArgument)
		}
		return nil, fmt.Errorf("seccomp profile %s: %w", path, err)
	}
	var p specs.LinuxSeccomp
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("seccomp profile %s: %v: %w", path, err, errdefs.ErrInvalidArgument)
	}
	return &p, nil
}

// deviceFromHost describes a host device node for the spec.
func deviceFromHost(hostPath, containerPath string) (specs.LinuxDevice, error) {
	var st unix.Stat_t
	if err := unix.Stat(hostPath, &st); err != nil {
		return specs.LinuxDevice{}, fmt.Errorf("host_path %s: %v: %w", hostPath, err, errdefs.ErrInvalidArgument)
	}
	var typ string
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		typ = "c"
	case unix.S_IFBLK:
		typ = "b"
	default:
		return specs.LinuxDevice{}, fmt.Errorf("host_path %s is not a device: %w", hostPath, errdefs.ErrInvalidArgument)
	}
	if containerPath == "" {
		containerPath = hostPath
	}
	mode := os.FileMode(st.Mode & 0o777)
	return specs.LinuxDevice{
		Path:     containerPath,
		Type:     typ,
		Major:    int64(unix.Major(st.Rdev)),
		Minor:    int64(unix.Minor(st.Rdev)),
		FileMode: &mode,
		UID:      ptr(st.Uid),
		GID:      ptr(st.Gid),
	}, nil
}
