package container

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/runtime/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Exit codes for a program that cannot be run, as docker and runc report them.
const (
	ExitNotExecutable = 126
	ExitNotFound      = 127
)

// ExecError is a failure to run the user's program; Code is the exit status
// that stands for it (ExitNotFound or ExitNotExecutable).
type ExecError struct {
	Path string
	Code int
	Err  error
}

func (e *ExecError) Error() string { return fmt.Sprintf("exec %q: %v", e.Path, e.Err) }
func (e *ExecError) Unwrap() error { return e.Err }

const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// prepared is a process ready to be started: everything that can fail for
// reasons of the spec has been checked.
type prepared struct {
	proc   *specs.Process
	path   string
	env    []string
	filter *seccomp.Filter
	caps   *capSets
}

// prepareProcess resolves the program and compiles what is applied last. It
// runs inside the container (after pivot_root or setns).
func prepareProcess(p *specs.Process, sc *specs.LinuxSeccomp) (*prepared, error) {
	if p == nil || len(p.Args) == 0 {
		return nil, fmt.Errorf("process.args is empty: %w", errdefs.ErrInvalidArgument)
	}
	pr := &prepared{proc: p, env: p.Env}
	pathEnv, hasPath := "", false
	for _, e := range p.Env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathEnv, hasPath = v, true
		}
	}
	if !hasPath {
		pathEnv = defaultPath
		pr.env = append(append([]string(nil), p.Env...), "PATH="+defaultPath)
	}
	if !slices.ContainsFunc(p.Env, func(e string) bool { return strings.HasPrefix(e, "HOME=") }) {
		pr.env = append(slices.Clip(pr.env), "HOME="+homeDir(p.User.UID))
	}
	var err error
	if pr.path, err = lookPath(p.Args[0], pathEnv); err != nil {
		return nil, err
	}
	if p.Capabilities != nil {
		if pr.caps, err = parseCaps(p.Capabilities); err != nil {
			return nil, err
		}
	}
	if sc != nil {
		if pr.filter, err = seccomp.Compile(sc); err != nil {
			return nil, err
		}
	}
	for _, r := range p.Rlimits {
		if _, ok := rlimits[r.Type]; !ok {
			return nil, fmt.Errorf("rlimit %q: %w", r.Type, errdefs.ErrInvalidArgument)
		}
	}
	return pr, nil
}

// homeDir is uid's home in the container's /etc/passwd, "/" if it has none
// (as runc sets HOME when the spec does not).
func homeDir(uid uint32) string {
	// Non-blocking and regular files only: the image could make it a FIFO.
	f, err := os.OpenFile("/etc/passwd", os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return "/"
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "/"
	}
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return "/"
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, ":")
		if len(f) >= 6 && f[2] == strconv.FormatUint(uint64(uid), 10) && f[5] != "" {
			return f[5]
		}
	}
	return "/"
}

// lookPath finds file the way execvp(3) does, but in the container and with
// the container's PATH, and tells "not found" from "not executable".
func lookPath(file, pathEnv string) (string, error) {
	check := func(p string) error {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return unix.EISDIR
		}
		if st.Mode&0o111 == 0 {
			return unix.EACCES
		}
		return nil
	}
	if strings.Contains(file, "/") {
		if err := check(file); err != nil {
			return "", execErr(file, err)
		}
		return file, nil
	}
	var denied error
	for _, dir := range strings.Split(pathEnv, ":") {
		if dir == "" {
			dir = "."
		}
		p := path.Join(dir, file)
		err := check(p)
		if err == nil {
			return p, nil
		}
		if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) && denied == nil {
			denied = err
		}
	}
	if denied != nil {
		return "", execErr(file, denied)
	}
	return "", &ExecError{Path: file, Code: ExitNotFound, Err: errors.New("executable file not found in $PATH")}
}

func execErr(file string, err error) error {
	code := ExitNotExecutable
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		code = ExitNotFound
	}
	return &ExecError{Path: file, Code: code, Err: err}
}

var rlimits = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE,
	"RLIMIT_NICE": unix.RLIMIT_NICE, "RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC,
	"RLIMIT_RSS": unix.RLIMIT_RSS, "RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME,
	"RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING, "RLIMIT_STACK": unix.RLIMIT_STACK,
}

// setOOMScoreAdj writes the score through /proc/self. Lowering it needs
// CAP_SYS_RESOURCE; the kernel's refusal is returned as is.
func setOOMScoreAdj(p *specs.Process) error {
	if p.OOMScoreAdj == nil {
		return nil
	}
	f, err := os.OpenFile("/proc/self/oom_score_adj", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteString(strconv.Itoa(*p.OOMScoreAdj)); err != nil {
		return fmt.Errorf("set oom_score_adj to %d: %w", *p.OOMScoreAdj, err)
	}
	return nil
}

// execute applies the process's identity and restrictions to the calling
// (locked) thread and execs the program. It returns only on failure. The
// order matters: the bounding set is dropped while we still hold
// CAP_SETPCAP; seccomp is loaded last, after no_new_privs, or — when the
// spec keeps no_new_privs off — first, while CAP_SYS_ADMIN still allows it.
func (pr *prepared) execute() error {
	p := pr.proc
	if _, err := unix.Setsid(); err != nil {
		return fmt.Errorf("setsid: %w", err)
	}
	if p.Terminal {
		if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
			return fmt.Errorf("make the terminal controlling: %w", err)
		}
		if cs := p.ConsoleSize; cs != nil {
			ws := unix.Winsize{Row: uint16(cs.Height), Col: uint16(cs.Width)}
			if err := unix.IoctlSetWinsize(0, unix.TIOCSWINSZ, &ws); err != nil {
				return fmt.Errorf("set the terminal size: %w", err)
			}
		}
	}
	for _, r := range p.Rlimits {
		lim := unix.Rlimit{Cur: r.Soft, Max: r.Hard}
		if err := unix.Prlimit(0, rlimits[r.Type], &lim, nil); err != nil {
			return fmt.Errorf("set %s: %w", r.Type, err)
		}
	}
	umask := 0o022
	if p.User.Umask != nil {
		umask = int(*p.User.Umask)
	}
	unix.Umask(umask)
	if pr.filter != nil && !p.NoNewPrivileges {
		if err := pr.filter.Load(); err != nil {
			return err
		}
	}
	if pr.caps != nil {
		if err := pr.caps.dropBounding(); err != nil {
			return err
		}
		if err := unix.Prctl(unix.PR_SET_KEEPCAPS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("keepcaps: %w", err)
		}
	}
	// A change of credentials clears the parent-death signal (exec's
	// child has SIGKILL there, so that killing berth-shim exec kills it).
	var pdeath int32
	if err := unix.Prctl(unix.PR_GET_PDEATHSIG, uintptr(unsafe.Pointer(&pdeath)), 0, 0, 0); err != nil {
		return fmt.Errorf("get parent-death signal: %w", err)
	}
	ppid := unix.Getppid()
	if err := setUser(p.User); err != nil {
		return err
	}
	// Changing ids resets "dumpable" to fs.suid_dumpable: off again until
	// execve, so processes of the same uid in the container cannot ptrace
	// this one while it holds berth's descriptors.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE): %w", err)
	}
	if pdeath != 0 {
		if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(pdeath), 0, 0, 0); err != nil {
			return fmt.Errorf("restore parent-death signal: %w", err)
		}
		// The parent may have died while the signal was unset; we would
		// have been re-parented then.
		if unix.Getppid() != ppid {
			return errors.New("berth-shim exec's parent died")
		}
	}
	if pr.caps != nil {
		if err := pr.caps.apply(); err != nil {
			return err
		}
	}
	if p.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("no_new_privs: %w", err)
		}
	}
	if err := defaultIgnoredSignals(); err != nil {
		return err
	}
	// No descriptor but stdio may reach the program (CVE-2024-21626).
	// Close-on-exec rather than close: the sync pipe still reports a failed
	// execve, and closes by itself on success.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("close_range: %w", err)
	}
	if pr.filter != nil && p.NoNewPrivileges {
		if err := pr.filter.Load(); err != nil {
			return err
		}
	}
	err := unix.Exec(pr.path, p.Args, pr.env)
	return execErr(pr.path, err)
}

// setUser switches the calling thread only (raw system calls): it is the one
// that execs, and Go's runtime would otherwise broadcast to every thread.
func setUser(u specs.User) error {
	gids := u.AdditionalGids
	var ptr unsafe.Pointer
	if len(gids) > 0 {
		ptr = unsafe.Pointer(&gids[0])
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gids)), uintptr(ptr), 0); e != 0 {
		return fmt.Errorf("setgroups %v: %w", gids, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(u.GID), uintptr(u.GID), uintptr(u.GID)); e != 0 {
		return fmt.Errorf("setgid %d: %w", u.GID, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(u.UID), uintptr(u.UID), uintptr(u.UID)); e != 0 {
		return fmt.Errorf("setuid %d: %w", u.UID, e)
	}
	return nil
}

// kernelSigaction is the kernel's struct sigaction (the same layout on
// amd64 and arm64).
type kernelSigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

// sigIgn is SIG_IGN; sigDfl, SIG_DFL.
const sigIgn, sigDfl = 1, 0

// defaultIgnoredSignals gives back their default action to the signals this
// process ignores. Ignored signals stay ignored across execve, and the
// monitor ignores SIGHUP and SIGINT (berthd may too): without this the
// program would start deaf to them, where a program under docker or runc
// starts with every signal at its default. Caught signals need nothing:
// execve resets them.
func defaultIgnoredSignals() error {
	for sig := 1; sig < 65; sig++ {
		if sig == int(unix.SIGKILL) || sig == int(unix.SIGSTOP) {
			continue
		}
		var old kernelSigaction
		if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), 0, uintptr(unsafe.Pointer(&old)), 8, 0, 0); e != 0 {
			if e == unix.EINVAL {
				continue // a signal number this kernel does not have
			}
			return fmt.Errorf("read the action of signal %d: %w", sig, e)
		}
		if old.handler != sigIgn {
			continue
		}
		dfl := kernelSigaction{handler: sigDfl}
		if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&dfl)), 0, 8, 0, 0); e != 0 {
			return fmt.Errorf("reset signal %d to its default action: %w", sig, e)
		}
	}
	return nil
}
