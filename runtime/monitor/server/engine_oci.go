package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Files an OCI runtime leaves in the container's bundle.
const (
	ociPidFile = "oci.pid"
	ociLogFile = "oci-log.json"
	ociConsole = "console.sock"
)

// ociEngine runs containers through an OCI runtime's command line. The
// monitor runs `create` itself with the container's stdio, so the runtime's
// container process, once `create` has exited, is re-parented to the
// monitor (a subreaper), which reaps it and records its exit as for its own
// containers. The runtime keeps its own state under its --root; berthd
// removes it with `delete` when the container is removed.
type ociEngine struct {
	s  *server
	rt OCIRuntime
}

// create runs `RUNTIME create --bundle B --pid-file P [--console-socket S] ID`.
func (e *ociEngine) create(ctx context.Context, c *ctr, stdio []*os.File) (retMaster *os.File, retErr error) {
	s := e.s
	logPath := filepath.Join(c.bundle, ociLogFile)
	pidFile := filepath.Join(c.bundle, ociPidFile)
	args := []string{"create", "--bundle", c.bundle, "--pid-file", pidFile}
	files := make([]uintptr, 0, 4)
	var consoleC chan consoleResult
	if c.tty {
		// The runtime sends the terminal's master over a unix socket. The
		// socket lives in the bundle; a path too long for sun_path is
		// reached through the bundle's descriptor, which the runtime
		// inherits as fd 3 (it dials the path itself).
		ln, sockPath, dirFd, err := listenConsole(c.bundle)
		if err != nil {
			return nil, err
		}
		defer ln.Close()
		if dirFd != nil {
			defer dirFd.Close()
		}
		null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
		if err != nil {
			return nil, err
		}
		defer null.Close()
		files = append(files, null.Fd(), null.Fd(), null.Fd())
		if dirFd != nil {
			files = append(files, dirFd.Fd())
		}
		args = append(args, "--console-socket", sockPath)
		consoleC = make(chan consoleResult, 1)
		go func() { consoleC <- recvConsole(ln) }()
		defer func() {
			if consoleC == nil {
				return // collected
			}
			// Create failed: stop waiting, and close a master that came.
			ln.Close()
			if r := <-consoleC; r.f != nil {
				r.f.Close()
			}
		}()
	} else {
		for _, f := range stdio {
			files = append(files, f.Fd())
		}
	}
	args = append(args, c.id)
	ws, err := e.run(ctx, e.rt.CommandLog(logPath, args...), files)
	if err != nil {
		return nil, err
	}
	// A failed create may have left the runtime's state: remove it (which
	// also kills a process it made).
	defer func() {
		if retErr != nil {
			e.run(context.WithoutCancel(ctx), e.rt.Command("delete", "--force", c.id), nil)
		}
	}()
	if !ws.Exited() || ws.ExitStatus() != 0 {
		msg := ErrorFromLog(logPath)
		if msg == "" {
			msg = describe(ws)
		}
		return nil, errors.New(filepath.Base(e.rt.Path) + " create: " + msg)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return nil, wrap(filepath.Base(e.rt.Path)+" create", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return nil, errors.New(filepath.Base(e.rt.Path) + " create: pid file says " + quote(string(b)))
	}
	s.adoptPid(c, pid, 0, nil)
	if consoleC != nil {
		// A successful create has sent the master already.
		r := <-consoleC
		consoleC = nil
		if r.err != nil {
			return nil, wrap("receive the terminal of container "+quote(c.id), r.err)
		}
		retMaster = r.f
	}
	return retMaster, nil
}

// start runs `RUNTIME start ID`.
func (e *ociEngine) start(ctx context.Context, c *ctr) error {
	return e.check(ctx, "start", c.id)
}

// kill runs `RUNTIME kill ID SIGNAL`. A container that stopped meanwhile is
// not an error.
func (e *ociEngine) kill(ctx context.Context, c *ctr, sig syscall.Signal) error {
	err := e.check(ctx, "kill", c.id, strconv.Itoa(int(sig)))
	if err != nil {
		e.s.mu.Lock()
		reaped := c.reaped
		e.s.mu.Unlock()
		if reaped || strings.Contains(err.Error(), "not running") {
			return nil
		}
	}
	return err
}

// check runs a runtime command and turns a failure into an error with the
// runtime's own message.
func (e *ociEngine) check(ctx context.Context, args ...string) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		r.Close()
		w.Close()
		return err
	}
	var out bytes.Buffer
	copied := make(chan struct{})
	go func() {
		io.Copy(&out, io.LimitReader(r, 64<<10))
		r.Close()
		close(copied)
	}()
	ws, err := e.run(ctx, e.rt.Command(args...), []uintptr{null.Fd(), w.Fd(), w.Fd()})
	null.Close()
	w.Close()
	if err != nil {
		// The runtime may have left a child holding the pipe: do not
		// wait for its EOF.
		return err
	}
	<-copied
	if ws.Exited() && ws.ExitStatus() == 0 {
		return nil
	}
	msg := strings.TrimSpace(out.String())
	if msg == "" {
		msg = describe(ws)
	}
	return errors.New(filepath.Base(e.rt.Path) + " " + args[0] + ": " + msg)
}

// run runs argv with files as its descriptors 0, 1, ... and returns how it
// exited. Ending ctx kills it.
func (e *ociEngine) run(ctx context.Context, argv []string, files []uintptr) (syscall.WaitStatus, error) {
	if files == nil {
		null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
		if err != nil {
			return 0, err
		}
		defer null.Close()
		files = []uintptr{null.Fd(), null.Fd(), null.Fd()}
	}
	pid, done, err := e.s.spawn(argv, files)
	if err != nil {
		return 0, wrap("run "+argv[0], err)
	}
	select {
	case ws := <-done:
		return ws, nil
	case <-ctx.Done():
	}
	e.s.mu.Lock()
	if _, ok := e.s.inits[pid]; ok {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	e.s.mu.Unlock()
	<-done
	return 0, ctx.Err()
}

type consoleResult struct {
	f   *os.File
	err error
}

// listenConsole listens on bundle/console.sock. If that path is too long for
// a socket address, the returned path goes through /proc/self/fd/3 and dirFd
// must be the runtime's descriptor 3.
func listenConsole(bundle string) (ln *os.File, path string, dirFd *os.File, err error) {
	path = filepath.Join(bundle, ociConsole)
	os.Remove(path)
	if len(path) > maxSunPath {
		d, err := os.OpenFile(bundle, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return nil, "", nil, err
		}
		dirFd = d
		path = "/proc/self/fd/3/" + ociConsole
	}
	err = WithShortPath(bundle, ociConsole, func(p string) error {
		l, err := listenUnix(p)
		ln = l
		return err
	})
	if err != nil {
		if dirFd != nil {
			dirFd.Close()
		}
		return nil, "", nil, wrap("console socket", err)
	}
	return ln, path, dirFd, nil
}

// recvConsole accepts the runtime's connection and receives the terminal
// master it sends (SCM_RIGHTS), as a non-blocking file for Go's poller.
func recvConsole(ln *os.File) consoleResult {
	conn, err := accept(ln)
	if err != nil {
		return consoleResult{err: err}
	}
	defer conn.Close()
	fd, err := recvFd(conn)
	if err != nil {
		return consoleResult{err: wrap("receive terminal", err)}
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return consoleResult{err: err}
	}
	return consoleResult{f: os.NewFile(uintptr(fd), "pty-master")}
}
