package container

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/berth-dev/berth/errdefs"
	"golang.org/x/sys/unix"
)

// Namespaces a pod pins (DESIGN.md decision 2), and its user namespace
// (hostUsers: false), which then owns the others.
var pinnable = map[string]uintptr{
	"net": unix.CLONE_NEWNET, "ipc": unix.CLONE_NEWIPC, "uts": unix.CLONE_NEWUTS,
	"user": unix.CLONE_NEWUSER,
}

// pinHoldEnv makes `berth-shim pin` only hold the namespaces it was born
// in until its stdin closes (see pinWithUserns).
const pinHoldEnv = "_BERTH_PIN_HOLD"

// PinMain is `berth-shim pin --dir D --ns net,ipc,uts [--hostname H]`: it
// creates new namespaces of the listed kinds and keeps each alive with a
// bind mount of its nsfs file onto D/<kind>, as `ip netns add` does. With
// --hostname, the new uts namespace gets that hostname.
func PinMain(args []string) int {
	fs := flag.NewFlagSet("pin", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory for the pin files")
	nsList := fs.String("ns", "net,ipc,uts", "comma-separated namespace kinds: net, ipc, uts")
	hostname := fs.String("hostname", "", "hostname for a new uts namespace")
	uidMap := fs.String("uid-map", "", "uid mapping CONTAINER:HOST:LENGTH of a new user namespace")
	gidMap := fs.String("gid-map", "", "gid mapping CONTAINER:HOST:LENGTH of a new user namespace")
	if os.Getenv(pinHoldEnv) == "1" {
		io.Copy(io.Discard, os.Stdin)
		return 0
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var maps [2][]syscall.SysProcIDMap
	for i, m := range []string{*uidMap, *gidMap} {
		if m == "" {
			continue
		}
		var c, h, n int
		if _, err := fmt.Sscanf(m, "%d:%d:%d", &c, &h, &n); err != nil {
			fmt.Fprintf(os.Stderr, "berth-shim pin: id mapping %q: %v\n", m, err)
			return 2
		}
		maps[i] = []syscall.SysProcIDMap{{ContainerID: c, HostID: h, Size: n}}
	}
	if err := PinUserns(*dir, strings.Split(*nsList, ","), *hostname, maps[0], maps[1]); err != nil {
		fmt.Fprintf(os.Stderr, "berth-shim pin: %v\n", err)
		return 1
	}
	return 0
}

// Pin is PinMain's work. It changes the calling thread's namespaces, so it
// locks the thread for good: call it only in a process that exits after.
func Pin(dir string, kinds []string, hostname string) (retErr error) {
	return PinUserns(dir, kinds, hostname, nil, nil)
}

// PinUserns is Pin where kinds may hold "user": a new user namespace with
// the given mappings, which then owns the other new namespaces.
func PinUserns(dir string, kinds []string, hostname string, uidMap, gidMap []syscall.SysProcIDMap) (retErr error) {
	if dir == "" || !filepath.IsAbs(dir) {
		return fmt.Errorf("--dir must be an absolute path: %w", errdefs.ErrInvalidArgument)
	}
	var flags uintptr
	for _, k := range kinds {
		f, ok := pinnable[k]
		if !ok {
			return fmt.Errorf("namespace kind %q: %w", k, errdefs.ErrInvalidArgument)
		}
		flags |= f
	}
	if hostname != "" && flags&unix.CLONE_NEWUTS == 0 {
		return fmt.Errorf("--hostname needs a uts namespace: %w", errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	if err := sharedMountpoint(dir); err != nil {
		return err
	}
	var made []string
	defer func() {
		if retErr != nil {
			for _, p := range made {
				unmountAll(p)
				os.Remove(p)
			}
		}
	}()
	for _, k := range kinds {
		p := filepath.Join(dir, k)
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("pin %s: %w", p, errdefs.ErrAlreadyExists)
		}
		if err != nil {
			return err
		}
		f.Close()
		made = append(made, p)
	}
	runtime.LockOSThread() // never unlocked: the thread's namespaces changed
	if flags&unix.CLONE_NEWUSER != 0 {
		return pinWithUserns(dir, kinds, flags, hostname, uidMap, gidMap)
	}
	if err := unix.Unshare(int(flags)); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	if hostname != "" {
		if err := unix.Sethostname([]byte(hostname)); err != nil {
			return fmt.Errorf("sethostname: %w", err)
		}
	}
	for _, k := range kinds {
		p := filepath.Join(dir, k)
		if err := unix.Mount("/proc/thread-self/ns/"+k, p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("pin %s namespace on %s: %w", k, p, err)
		}
	}
	return nil
}

// pinWithUserns makes the namespaces in a child, since a multi-threaded
// process cannot unshare a user namespace: the child is cloned into all of
// them at once (so the user namespace owns the others), its maps written by
// this process (root, so any range may be mapped), and it holds them until
// they are pinned from its /proc/PID/ns.
func pinWithUserns(dir string, kinds []string, flags uintptr, hostname string, uidMap, gidMap []syscall.SysProcIDMap) error {
	if len(uidMap) == 0 || len(gidMap) == 0 {
		return fmt.Errorf("a user namespace needs --uid-map and --gid-map: %w", errdefs.ErrInvalidArgument)
	}
	stdin, hold, err := os.Pipe()
	if err != nil {
		return err
	}
	defer stdin.Close()
	cmd := exec.Command("/proc/self/exe", "pin")
	cmd.Env = []string{pinHoldEnv + "=1"}
	cmd.Stdin = stdin
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  flags,
		UidMappings: uidMap, GidMappings: gidMap,
		// Containers set their supplementary groups.
		GidMappingsEnableSetgroups: true,
	}
	if err := cmd.Start(); err != nil {
		hold.Close()
		return fmt.Errorf("start a holder of the new namespaces: %w", err)
	}
	defer cmd.Wait()
	defer hold.Close() // the holder exits
	ns := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/"
	if hostname != "" {
		fd, err := unix.Open(ns+"uts", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		err = unix.Setns(fd, unix.CLONE_NEWUTS) // this thread is locked for good
		unix.Close(fd)
		if err == nil {
			err = unix.Sethostname([]byte(hostname))
		}
		if err != nil {
			return fmt.Errorf("set hostname: %w", err)
		}
	}
	for _, k := range kinds {
		p := filepath.Join(dir, k)
		if err := unix.Mount(ns+k, p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("pin %s namespace on %s: %w", k, p, err)
		}
	}
	return nil
}

// sharedMountpoint makes dir a shared mount of itself (once), as `ip netns`
// does with /run/netns: a later unpin then propagates into any mount
// namespace that copied the pins, so no copy keeps a namespace alive.
func sharedMountpoint(dir string) error {
	isRoot, err := isMountRoot(unix.AT_FDCWD, dir)
	if err != nil || isRoot {
		return err
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s onto itself: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	return nil
}

// unmountAll detaches every mount stacked on p.
func unmountAll(p string) error {
	for {
		err := unix.Unmount(p, unix.MNT_DETACH)
		switch err {
		case nil:
			continue
		case unix.EINVAL, unix.ENOENT:
			return nil // not (or no longer) a mount point
		default:
			return fmt.Errorf("unmount %s: %w", p, err)
		}
	}
}

// UnpinMain is `berth-shim unpin --dir D`: it unmounts and removes the pins
// in D, and undoes pin's self-bind of D. Unpinning what is gone is a success.
func UnpinMain(args []string) int {
	fs := flag.NewFlagSet("unpin", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory with the pin files")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := Unpin(*dir); err != nil {
		fmt.Fprintf(os.Stderr, "berth-shim unpin: %v\n", err)
		return 1
	}
	return 0
}

// Unpin is UnpinMain's work; it needs no namespace changes and can be called
// from any process.
func Unpin(dir string) error {
	if dir == "" || !filepath.IsAbs(dir) {
		return fmt.Errorf("--dir must be an absolute path: %w", errdefs.ErrInvalidArgument)
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	for k := range pinnable {
		p := filepath.Join(dir, k)
		if err := unmountAll(p); err != nil {
			return err
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	// Only a bind of dir onto itself (same file system as its parent) is
	// pin's to undo; any other mount on dir belongs to someone else.
	var st, parent unix.Stat_t
	if unix.Stat(dir, &st) == nil && unix.Stat(filepath.Dir(dir), &parent) == nil && st.Dev == parent.Dev {
		if isRoot, err := isMountRoot(unix.AT_FDCWD, dir); err == nil && isRoot {
			return unmountAll(dir)
		}
	}
	return nil
}
