// Package container is berth's container init and exec entry: the code that
// runs inside `berth-shim init`, `exec`, `pin`, `unpin` and `podinit`. It
// turns an OCI runtime spec into a process in its own pid and mount
// namespaces, waiting before exec until the monitor starts it.
//
// It is linked into the small berth-shim binary, so it imports no logging,
// RPC or Kubernetes packages.
package container

import (
	"bufio"
	"encoding/json"
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
	_ "github.com/berth-dev/berth/runtime/nsexec" // runs init and exec from a sealed copy
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// SyncMessage is one line of the newline-delimited JSON that init writes on
// its sync pipe (fd 3).
type SyncMessage struct {
	// Type is "pid", "created" or "error".
	Type string `json:"type"`
	// Pid is the host pid of the container process (Type "pid").
	Pid int `json:"pid,omitempty"`
	// Message describes the failure (Type "error").
	Message string `json:"message,omitempty"`
	// Code, for an error, is the exit status that stands for it when the
	// program could not be run: ExitNotFound or ExitNotExecutable.
	Code int `json:"code,omitempty"`
}

const (
	// ExecFifo is the name, in the bundle, of the FIFO the container process
	// opens for writing and blocks on until start.
	ExecFifo = "exec.fifo"

	syncFd = 3
	// The child's private pipes to the first stage: the go-ahead it waits
	// for, and the status it reports back.
	goFd     = 4
	statusFd = 5
	// The bundle (an O_PATH fd) and its config.json, opened by the first
	// stage.
	bundleFd = 6
	configFd = 7

	childEnv       = "_BERTH_INIT_CHILD"
	statusCreated  = 'c'
	statusReported = 'e'
)

func writeSync(w io.Writer, m SyncMessage) {
	b, _ := json.Marshal(m)
	w.Write(append(b, '\n'))
}

func reportError(w io.Writer, err error) int {
	m := SyncMessage{Type: "error", Message: err.Error()}
	code := 1
	var ee *ExecError
	if errors.As(err, &ee) {
		m.Code, code = ee.Code, ee.Code
	}
	writeSync(w, m)
	return code
}

// LoadSpec reads bundle/config.json.
func LoadSpec(bundle string) (*specs.Spec, error) {
	f, err := os.Open(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, err
	}
	return readSpec(f)
}

// readSpec reads and checks a config.json from f, and closes f.
func readSpec(f *os.File) (*specs.Spec, error) {
	b, err := io.ReadAll(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("config.json: %w: %w", errdefs.ErrInvalidArgument, err)
	}
	if s.Root == nil || !filepath.IsAbs(s.Root.Path) {
		return nil, fmt.Errorf("config.json: root.path must be absolute: %w", errdefs.ErrInvalidArgument)
	}
	if s.Process == nil || len(s.Process.Args) == 0 {
		return nil, fmt.Errorf("config.json: process.args is empty: %w", errdefs.ErrInvalidArgument)
	}
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	return &s, nil
}

var cloneFlags = map[specs.LinuxNamespaceType]uintptr{
	specs.PIDNamespace: unix.CLONE_NEWPID, specs.NetworkNamespace: unix.CLONE_NEWNET,
	specs.IPCNamespace: unix.CLONE_NEWIPC, specs.UTSNamespace: unix.CLONE_NEWUTS,
	specs.CgroupNamespace: unix.CLONE_NEWCGROUP, specs.MountNamespace: unix.CLONE_NEWNS,
}

// InitMain is `berth-shim init --bundle B`. It runs in two processes. This
// first stage (in the caller's namespaces) joins the namespaces the spec
// names by path, joins the container's cgroup, and clones the container
// process into new pid and mount namespaces (and whichever others the spec
// asks for). It reports the container's pid, then exits 0 once the
// container process reports "created", or non-zero if it failed.
func InitMain(args []string) int {
	if os.Getenv(childEnv) == "1" {
		return initChild(args)
	}
	sync := os.NewFile(syncFd, "sync")
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	bundle := fs.String("bundle", "", "bundle directory with config.json and exec.fifo")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *bundle == "" {
		return reportError(sync, fmt.Errorf("init: --bundle is required: %w", errdefs.ErrInvalidArgument))
	}
	code, err := startInit(*bundle, sync)
	if err != nil {
		return reportError(sync, fmt.Errorf("init: %w", err))
	}
	return code
}

func startInit(bundle string, sync *os.File) (int, error) {
	spec, err := LoadSpec(bundle)
	if err != nil {
		return 1, err
	}
	// Handed to the child, which may not reach them by path (in a user
	// namespace it is no longer host root).
	bundleDir, err := os.OpenFile(bundle, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return 1, fmt.Errorf("open bundle: %w", err)
	}
	defer bundleDir.Close()
	config, err := os.Open(filepath.Join(bundle, "config.json"))
	if err != nil {
		return 1, err
	}
	defer config.Close()
	flags := uintptr(unix.CLONE_NEWNS)
	var join []nsFile
	var userns *nsFile
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == specs.UserNamespace {
			if ns.Path == "" {
				return 1, fmt.Errorf("a user namespace of the container's own: %w", errdefs.ErrNotImplemented)
			}
			f, err := os.Open(ns.Path)
			if err != nil {
				return 1, fmt.Errorf("open user namespace: %w", err)
			}
			defer f.Close()
			userns = &nsFile{f, ns.Type}
			continue
		}
		f, ok := cloneFlags[ns.Type]
		if !ok {
			return 1, fmt.Errorf("%s namespace: %w", ns.Type, errdefs.ErrNotImplemented)
		}
		if ns.Path == "" {
			flags |= f
			continue
		}
		if ns.Type == specs.MountNamespace {
			return 1, fmt.Errorf("joining a mount namespace: %w", errdefs.ErrNotImplemented)
		}
		nf, err := os.Open(ns.Path)
		if err != nil {
			return 1, fmt.Errorf("open %s namespace: %w", ns.Type, err)
		}
		defer nf.Close()
		join = append(join, nsFile{nf, ns.Type})
	}
	if err := joinCgroup(spec.Linux.CgroupsPath); err != nil {
		return 1, err
	}
	goR, goW, err := os.Pipe()
	if err != nil {
		return 1, err
	}
	stR, stW, err := os.Pipe()
	if err != nil {
		return 1, err
	}
	cmd := &exec.Cmd{
		// /proc/self/exe is the sealed memfd copy we run from (nsexec).
		Path:       "/proc/self/exe",
		Args:       []string{"berth-shim", "init", "--bundle", bundle},
		Env:        []string{childEnv + "=1"},
		Stdin:      os.Stdin,
		Stdout:     os.Stdout,
		Stderr:     os.Stderr,
		ExtraFiles: []*os.File{sync, goR, stW, bundleDir, config}, // fds 3-7
	}
	var pid int
	if userns != nil {
		pid, err = startInUserns(cmd, spec, bundle, flags, *userns, join)
	} else {
		pid, err = startInNamespaces(cmd, flags, join)
	}
	goR.Close()
	stW.Close()
	if err != nil {
		return 1, err
	}
	writeSync(sync, SyncMessage{Type: "pid", Pid: pid})
	// Only now may the child speak on the sync pipe.
	goW.Write([]byte{1})
	goW.Close()
	var b [1]byte
	n, _ := stR.Read(b[:])
	if n == 1 && b[0] == statusCreated {
		// The container process lives on; the monitor (a subreaper)
		// inherits it when we exit.
		return 0, nil
	}
	if n == 1 && b[0] == statusReported {
		return 1, nil
	}
	if userns == nil {
		state, _ := cmd.Process.Wait()
		return 1, fmt.Errorf("container process died during setup: %v", state)
	}
	// Not our child (the monitor reaps it).
	return 1, errors.New("container process died during setup")
}

// nsFile is a namespace to join.
type nsFile struct {
	f    *os.File
	kind specs.LinuxNamespaceType
}

// startInNamespaces clones the container process into new namespaces
// (flags) after joining the given ones on this thread, and returns its pid.
func startInNamespaces(cmd *exec.Cmd, flags uintptr, join []nsFile) (int, error) {
	// setns of these kinds works per thread; the child is cloned from this
	// thread and inherits them. The thread is never unlocked, so the Go
	// runtime retires it instead of reusing it.
	runtime.LockOSThread()
	for _, j := range join {
		if err := unix.Setns(int(j.f.Fd()), int(cloneFlags[j.kind])); err != nil {
			return 0, fmt.Errorf("join %s namespace: %w", j.kind, err)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("clone container process: %w", err)
	}
	return cmd.Process.Pid, nil
}

// startInUserns starts the container process of a pod with a user
// namespace: the child's nsexec constructor joins userns and then the other
// namespaces, unshares flags and forks the container process, whose pid it
// reports (see init_in_userns in nsexec.c). What the container's root must
// reach but may not by path is prepared here, as host root: its exec FIFO
// is given to it, and bind mount sources are opened as detached mounts it
// only attaches.
func startInUserns(cmd *exec.Cmd, spec *specs.Spec, bundle string, flags uintptr, userns nsFile, join []nsFile) (int, error) {
	uid, uok := hostID(spec.Linux.UIDMappings, 0)
	gid, gok := hostID(spec.Linux.GIDMappings, 0)
	if !uok || !gok {
		return 0, fmt.Errorf("a user namespace needs uid and gid mappings of root: %w", errdefs.ErrInvalidArgument)
	}
	if err := unix.Fchownat(unix.AT_FDCWD, filepath.Join(bundle, ExecFifo), int(uid), int(gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return 0, fmt.Errorf("give the exec fifo to the container's root: %w", err)
	}
	repR, repW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer repR.Close()
	cmd.ExtraFiles = append(cmd.ExtraFiles, repW) // fd 8
	env := fmt.Sprintf("%s=%d,%d", usernsEnv, 2+len(cmd.ExtraFiles), flags)
	for _, j := range append([]nsFile{userns}, join...) {
		cmd.ExtraFiles = append(cmd.ExtraFiles, j.f)
		env += "," + strconv.Itoa(2+len(cmd.ExtraFiles))
	}
	var mounts []string
	for i, m := range spec.Mounts {
		if !isBind(m) {
			continue
		}
		tree, err := detachedBind(m)
		if err != nil {
			repW.Close()
			return 0, fmt.Errorf("mount %s: %w", m.Destination, err)
		}
		defer tree.Close()
		cmd.ExtraFiles = append(cmd.ExtraFiles, tree)
		mounts = append(mounts, fmt.Sprintf("%d:%d", i, 2+len(cmd.ExtraFiles)))
	}
	cmd.Env = append(cmd.Env, env, mountsEnv+"="+strings.Join(mounts, ","))
	err = cmd.Start()
	repW.Close()
	if err != nil {
		return 0, fmt.Errorf("start container process: %w", err)
	}
	// The child writes one line and exits; it is ours to reap.
	line, rerr := bufio.NewReader(repR).ReadString('\n')
	werr := cmd.Wait()
	if msg, ok := strings.CutPrefix(strings.TrimSpace(line), "error "); ok {
		return 0, fmt.Errorf("container process: %s", msg)
	}
	var pid int
	if _, err := fmt.Sscanf(line, "pid %d", &pid); err != nil || pid <= 0 {
		return 0, fmt.Errorf("container process in the user namespace did not start (%v, %v)", werr, rerr)
	}
	return pid, nil
}

// Environment of init's child in a user namespace: for nsexec, what to
// join and unshare; for the Go side, the detached bind mounts by index in
// spec.Mounts ("I:FD,...").
const (
	usernsEnv = "_BERTH_INIT_USERNS"
	mountsEnv = "_BERTH_INIT_MOUNTS"
)

// parseMountFds reads mountsEnv: spec.Mounts index to detached mount fd.
func parseMountFds(v string) (map[int]int, error) {
	fds := map[int]int{}
	for _, kv := range strings.Split(v, ",") {
		if kv == "" {
			continue
		}
		var i, fd int
		if _, err := fmt.Sscanf(kv, "%d:%d", &i, &fd); err != nil {
			return nil, fmt.Errorf("%s %q: %w", mountsEnv, v, err)
		}
		unix.CloseOnExec(fd)
		fds[i] = fd
	}
	return fds, nil
}

// hostID is the host id that id maps to.
func hostID(maps []specs.LinuxIDMapping, id uint32) (uint32, bool) {
	for _, m := range maps {
		if id >= m.ContainerID && uint64(id) < uint64(m.ContainerID)+uint64(m.Size) {
			return m.HostID + id - m.ContainerID, true
		}
	}
	return 0, false
}

func isBind(m specs.Mount) bool {
	if m.Type == "bind" {
		return true
	}
	o := parseMountOpts(m.Options)
	return o.bind && m.Type != "cgroup" && m.Type != "cgroup2"
}

// detachedBind clones the mount source of bind mount m into a detached
// mount (the whole tree below it for rbind), for the container to attach.
func detachedBind(m specs.Mount) (*os.File, error) {
	flags := uint(unix.OPEN_TREE_CLONE | unix.OPEN_TREE_CLOEXEC)
	if parseMountOpts(m.Options).rbind {
		flags |= unix.AT_RECURSIVE
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, m.Source, flags)
	if err != nil {
		return nil, &os.PathError{Op: "open_tree", Path: m.Source, Err: err}
	}
	return os.NewFile(uintptr(fd), m.Source), nil
}

// joinCgroup moves this process (and so the container it clones) into
// cgroupsPath in every hierarchy where berthd has created it, so that the
// container is born inside its limits.
func joinCgroup(cgroupsPath string) error {
	if cgroupsPath == "" {
		return nil
	}
	if !filepath.IsAbs(cgroupsPath) {
		return fmt.Errorf("cgroupsPath %q must be absolute (cgroupfs driver): %w", cgroupsPath, errdefs.ErrInvalidArgument)
	}
	dirs, err := filepath.Glob("/sys/fs/cgroup/*")
	if err != nil {
		return err
	}
	dirs = append(dirs, "/sys/fs/cgroup")
	joined := false
	for _, d := range dirs {
		procs := filepath.Join(d, cgroupsPath, "cgroup.procs")
		f, err := os.OpenFile(procs, os.O_WRONLY, 0)
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
			continue // not created in this hierarchy, or not a hierarchy
		}
		if err != nil {
			return fmt.Errorf("join cgroup: %w", err)
		}
		_, err = f.WriteString("0")
		f.Close()
		if err != nil {
			return fmt.Errorf("join cgroup %s: %w", procs, err)
		}
		joined = true
	}
	if !joined {
		return fmt.Errorf("cgroup %s does not exist in any hierarchy: %w", cgroupsPath, errdefs.ErrNotFound)
	}
	return nil
}

// initChild is the container process: pid 1 of its pid namespace, in its
// own mount namespace, running from the sealed copy of berth-shim.
func initChild(args []string) int {
	runtime.LockOSThread()
	sync := os.NewFile(syncFd, "sync")
	status := os.NewFile(statusFd, "status")
	fail := func(err error) int {
		code := reportError(sync, fmt.Errorf("init: %w", err))
		status.Write([]byte{statusReported})
		return code
	}
	// Until exec, nothing else in the container (a shared pid namespace)
	// may ptrace us or open our /proc/<pid>/fd, cwd or root.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fail(err)
	}
	goR := os.NewFile(goFd, "go")
	var b [1]byte
	if n, _ := goR.Read(b[:]); n != 1 {
		return 1 // first stage died; nobody is listening
	}
	goR.Close()
	pr, fifo, err := createContainer()
	if err != nil {
		return fail(err)
	}
	writeSync(sync, SyncMessage{Type: "created"})
	status.Write([]byte{statusCreated})
	status.Close()

	// Block until start opens the FIFO for reading.
	wfd, err := unix.Openat(fifo, ExecFifo, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return reportError(sync, fmt.Errorf("open %s: %w", ExecFifo, err))
	}
	unix.Write(wfd, []byte{'0'})
	unix.Close(wfd)
	unix.Close(fifo)
	return reportError(sync, pr.execute())
}

// createContainer builds the container around the process and returns it
// ready to execute, plus an O_PATH fd of the bundle to find the FIFO in.
func createContainer() (*prepared, int, error) {
	// The first stage's fds: kept for after pivot_root, when the bundle is
	// out of reach by path (and in a user namespace, out of reach anyway).
	unix.CloseOnExec(bundleFd)
	unix.CloseOnExec(configFd)
	fifo := bundleFd
	spec, err := readSpec(os.NewFile(configFd, "config.json"))
	if err != nil {
		return nil, -1, err
	}
	s := &setup{spec: spec, root: -1, hasNS: map[specs.LinuxNamespaceType]bool{}}
	for _, ns := range spec.Linux.Namespaces {
		s.hasNS[ns.Type] = true
		if ns.Path == "" {
			s.newUTS = s.newUTS || ns.Type == specs.UTSNamespace
			s.newCgroupNS = s.newCgroupNS || ns.Type == specs.CgroupNamespace
		}
	}
	if s.hasNS[specs.UserNamespace] {
		if s.mountFds, err = parseMountFds(os.Getenv(mountsEnv)); err != nil {
			return nil, -1, err
		}
	}
	if err := s.prepareRootfs(); err != nil {
		return nil, -1, err
	}
	null := -1
	if len(spec.Linux.MaskedPaths) > 0 {
		if null, err = s.nullDevice(); err != nil {
			return nil, -1, err
		}
		defer unix.Close(null)
	}
	if err := setOOMScoreAdj(spec.Process); err != nil {
		return nil, -1, err
	}
	if err := s.pivot(); err != nil {
		return nil, -1, err
	}
	if s.newUTS {
		if spec.Hostname != "" {
			if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
				return nil, -1, fmt.Errorf("sethostname: %w", err)
			}
		}
		if spec.Domainname != "" {
			if err := unix.Setdomainname([]byte(spec.Domainname)); err != nil {
				return nil, -1, fmt.Errorf("setdomainname: %w", err)
			}
		}
	}
	if err := s.writeSysctls(); err != nil {
		return nil, -1, err
	}
	if err := s.maskPaths(null); err != nil {
		return nil, -1, err
	}
	if err := s.readonlyPaths(); err != nil {
		return nil, -1, err
	}
	if spec.Root.Readonly {
		attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
		if err := unix.MountSetattr(s.root, "", unix.AT_EMPTY_PATH, &attr); err != nil {
			return nil, -1, fmt.Errorf("make rootfs read-only: %w", err)
		}
	}
	if err := enterCwd(s.root, spec.Process.Cwd, true); err != nil {
		return nil, -1, err
	}
	unix.Close(s.root)
	pr, err := prepareProcess(spec.Process, spec.Linux.Seccomp)
	if err != nil {
		return nil, -1, err
	}
	return pr, fifo, nil
}

// enterCwd changes into the process's working directory inside the root
// (making it if asked), and checks that the result is inside the root.
func enterCwd(root int, cwd string, create bool) error {
	if cwd == "" {
		cwd = "/"
	}
	if !filepath.IsAbs(cwd) {
		return fmt.Errorf("process.cwd %q must be absolute: %w", cwd, errdefs.ErrInvalidArgument)
	}
	var fd int
	var err error
	if create {
		fd, err = mkdirAllIn(root, cwd, 0o755)
	} else {
		fd, err = openIn(root, cwd, unix.O_PATH|unix.O_DIRECTORY)
	}
	if err != nil {
		return fmt.Errorf("cwd: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Fchdir(fd); err != nil {
		return fmt.Errorf("chdir %s: %w", cwd, err)
	}
	// getcwd reports "(unreachable)..." (an error here) for a directory
	// outside our root: the CVE-2024-21626 check.
	wd, err := unix.Getwd()
	if err != nil || !filepath.IsAbs(wd) {
		return fmt.Errorf("cwd %q is outside the container root: %v", cwd, err)
	}
	return nil
}
