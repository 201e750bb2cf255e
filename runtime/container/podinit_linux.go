package container

import (
	"os"
	"os/signal"
	"strconv"

	"golang.org/x/sys/unix"
)

// PodInitMain is `berth-shim podinit`: pid 1 of a pod's shared pid namespace.
// It only reaps orphans and exits 0 on SIGTERM or SIGINT.
func PodInitMain(args []string) int {
	// Containers that share our pid namespace must not reach the host
	// through our /proc/1/{cwd,root,fd}.
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	unix.Chdir("/")
	closeInherited()
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, unix.SIGCHLD, unix.SIGTERM, unix.SIGINT)
	for {
		reap()
		if s := <-sigs; s != unix.SIGCHLD {
			reap()
			return 0
		}
	}
}

// closeInherited closes the descriptors the starter leaked to us (those
// without close-on-exec); the Go runtime's own all have it.
func closeInherited() {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 2 {
			continue
		}
		if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err == nil && flags&unix.FD_CLOEXEC == 0 {
			unix.Close(fd)
		}
	}
}

func reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
