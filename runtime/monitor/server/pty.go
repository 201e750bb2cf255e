package server

import (
	"os"

	"golang.org/x/sys/unix"
)

// OpenPTY allocates a pseudo-terminal pair from the host's /dev/ptmx. The
// master is non-blocking (served by Go's poller); the slave is opened through
// TIOCGPTPEER, so no /dev/pts path lookup can be redirected.
func OpenPTY() (master, slave *os.File, err error) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, wrap("open /dev/ptmx", err)
	}
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(m)
		return nil, nil, wrap("unlock pty", err)
	}
	s, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(m), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	if errno != 0 {
		unix.Close(m)
		return nil, nil, wrap("open pty slave", errno)
	}
	return os.NewFile(uintptr(m), "/dev/ptmx"), os.NewFile(s, "pty-slave"), nil
}

// SetWinsize sets a terminal's window size (the kernel sends SIGWINCH to its
// foreground process group).
func SetWinsize(f *os.File, width, height uint16) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	err = rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Col: width, Row: height})
	})
	if err == nil {
		err = ierr
	}
	return err
}
