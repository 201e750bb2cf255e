package container

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"

	"github.com/berth-dev/berth/runtime/nsexec"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// ExecProcess is the content of exec's --process file: an OCI process, plus
// the container's seccomp profile (the OCI process has no field for it; the
// runtime spec keeps it in linux.seccomp). A plain specs.Process JSON is
// valid too: then the profile is the linux.seccomp of the config.json in the
// process file's directory (the bundle), if there is one.
type ExecProcess struct {
	specs.Process
	Seccomp *specs.LinuxSeccomp `json:"seccomp,omitempty"`
}

// ExitSetupFailed is the exit status of `berth-shim exec` when it could not
// set the process up (docker uses 125 for a failure of the runtime itself).
const ExitSetupFailed = 125

// ExecMain is `berth-shim exec --pid PID --process FILE`. By the time it runs,
// the nsexec constructor has joined every namespace and cgroup of PID and
// forked: this is the child, inside the container, while the parent waits
// and exits with the child's status (128+n for death by signal n). FILE holds
// a JSON specs.Process, applied like the container's own process.
func ExecMain(args []string) int {
	fs := flag.NewFlagSet("exec", flag.ContinueOnError)
	fs.Int("pid", 0, "pid (host) of the container's process")
	fs.String("process", "", "file with the JSON OCI process to run")
	consoleFD := fs.Int("console-fd", -1, "a unix socket to send the master of the terminal made inside the container to (with a terminal)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := execInContainer(*consoleFD); err != nil {
		fmt.Fprintf(os.Stderr, "berth-shim exec: %v\n", err)
		var ee *ExecError
		if errors.As(err, &ee) {
			return ee.Code
		}
		return ExitSetupFailed
	}
	return 0 // not reached: execute returns only on failure
}

func execInContainer(consoleFD int) error {
	if !nsexec.ExecJoined() {
		return errors.New("the container's namespaces were not joined (binary built without cgo?)")
	}
	runtime.LockOSThread()
	f := os.NewFile(uintptr(nsexec.ExecProcessFD()), "process")
	var ep ExecProcess
	err := json.NewDecoder(f).Decode(&ep)
	f.Close()
	if err != nil {
		return fmt.Errorf("read process: %w", err)
	}
	if ep.Seccomp == nil {
		if ep.Seccomp, err = bundleSeccomp(); err != nil {
			return err
		}
	}
	root, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	p := &ep.Process
	err = enterCwd(root, p.Cwd, false)
	unix.Close(root)
	if err != nil {
		return err
	}
	if err := setOOMScoreAdj(p); err != nil {
		return err
	}
	if p.Terminal && consoleFD >= 0 {
		if err := terminalInContainer(consoleFD); err != nil {
			return err
		}
	}
	pr, err := prepareProcess(p, ep.Seccomp)
	if err != nil {
		return err
	}
	return pr.execute()
}

// bundleSeccomp reads linux.seccomp from the config.json beside the process
// file (opened by nsexec before the mount namespace changed).
func bundleSeccomp() (*specs.LinuxSeccomp, error) {
	fd := nsexec.ExecConfigFD()
	if fd < 0 {
		return nil, nil
	}
	f := os.NewFile(uintptr(fd), "config.json")
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("bundle config.json is not a regular file")
	}
	var spec struct {
		Linux *struct {
			Seccomp *specs.LinuxSeccomp `json:"seccomp"`
		} `json:"linux"`
	}
	if err := json.NewDecoder(f).Decode(&spec); err != nil {
		return nil, fmt.Errorf("read bundle config.json: %w", err)
	}
	if spec.Linux == nil {
		return nil, nil
	}
	return spec.Linux.Seccomp, nil
}

// terminalInContainer makes the exec'd process's terminal from the
// container's own devpts, as runc's console socket does, so that it is a
// /dev/pts/N of the container (ttyname works; a host pty would not be
// found there). The master goes to the caller over the socket at consoleFD;
// the slave becomes fds 0-2.
func terminalInContainer(consoleFD int) error {
	defer unix.Close(consoleFD)
	master, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the container's /dev/ptmx: %w", err)
	}
	defer unix.Close(master)
	if err := unix.IoctlSetPointerInt(master, unix.TIOCSPTLCK, 0); err != nil {
		return fmt.Errorf("unlock pty: %w", err)
	}
	slave, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(master), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY))
	if errno != 0 {
		return fmt.Errorf("open pty slave: %w", errno)
	}
	if err := unix.Sendmsg(consoleFD, []byte{0}, unix.UnixRights(master), nil, 0); err != nil {
		unix.Close(int(slave))
		return fmt.Errorf("send the terminal master: %w", err)
	}
	for fd := 0; fd < 3; fd++ {
		if err := unix.Dup3(int(slave), fd, 0); err != nil {
			unix.Close(int(slave))
			return fmt.Errorf("terminal as fd %d: %w", fd, err)
		}
	}
	return unix.Close(int(slave))
}
