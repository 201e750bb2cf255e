package cri

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/errdefs"
)

// defaultExecPath is the PATH searched when the process sets none (as
// runc and docker do).
const defaultExecPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// checkStartable tells, before a detached exec is started, whether its
// working directory and program exist in the container, with docker's
// words if not: nobody is there to read the exec's own error once it runs
// detached. The container's files are seen through /proc/PID/root of its
// process, so its volumes count too; resolution stays inside it.
func checkStartable(pid int, proc *processSpec) error {
	root, err := os.OpenRoot("/proc/" + strconv.Itoa(pid) + "/root")
	if err != nil {
		return fmt.Errorf("open the container's root: %w", err)
	}
	defer root.Close()
	cwd := proc.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if fi, err := root.Stat(inRoot(cwd)); err != nil || !fi.IsDir() {
		return &kindError{fmt.Sprintf("chdir to cwd (%q) set in config.json failed: no such file or directory", cwd), errdefs.ErrInvalidArgument}
	}
	prog := proc.Args[0]
	notFound := &kindError{fmt.Sprintf("exec: %q: executable file not found in $PATH", prog), errdefs.ErrNotFound}
	if strings.Contains(prog, "/") {
		p := prog
		if !path.IsAbs(p) {
			p = path.Join(cwd, p)
		}
		switch err := executable(root, p); {
		case errors.Is(err, fs.ErrNotExist):
			return &kindError{fmt.Sprintf("exec: %q: stat %s: no such file or directory", prog, prog), errdefs.ErrNotFound}
		case err != nil:
			return &kindError{fmt.Sprintf("exec: %q: %v", prog, err), errdefs.ErrInvalidArgument}
		}
		return nil
	}
	pathEnv := defaultExecPath
	for _, kv := range proc.Env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathEnv = v
		}
	}
	for _, dir := range strings.Split(pathEnv, ":") {
		if dir == "" || !path.IsAbs(dir) {
			continue
		}
		if executable(root, path.Join(dir, prog)) == nil {
			return nil
		}
	}
	return notFound
}

// executable checks that p (absolute in the container) is a file someone
// may execute.
func executable(root *os.Root, p string) error {
	fi, err := root.Stat(inRoot(p))
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return errors.New("permission denied")
	}
	return nil
}

// inRoot makes an absolute container path relative, for os.Root.
func inRoot(p string) string {
	p = strings.TrimLeft(path.Clean("/"+p), "/")
	if p == "" {
		return "."
	}
	return p
}
