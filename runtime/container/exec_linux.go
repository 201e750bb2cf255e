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
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := execInContainer(); err != nil {
		fmt.Fprintf(os.Stderr, "berth-shim exec: %v\n", err)
		var ee *ExecError
		if errors.As(err, &ee) {
			return ee.Code
		}
		return ExitSetupFailed
	}
	return 0 // not reached: execute returns only on failure
}

func execInContainer() error {
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
