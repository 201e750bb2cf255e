package container

import (
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// PodInitMain is `berth-shim podinit`: pid 1 of a pod's shared pid namespace.
// It only reaps orphans and exits 0 on SIGTERM or SIGINT.
func PodInitMain(args []string) int {
	// Containers that share our pid namespace must not reach the host
	// through our /proc/1/{cwd,root,fd}.
	unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
	unix.Chdir("/")
	unix.CloseRange(3, ^uint(0), 0)
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

func reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
