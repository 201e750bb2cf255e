package server

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
)

// syncMsg is one message of `berth-shim init` on its sync pipe (fd 3), a
// JSON line (runtime/container's SyncMessage).
type syncMsg struct {
	Type    string // "pid", "created" or "error"
	Pid     int
	Message string
}

func decodeSyncMsg(b []byte, m *syncMsg) error {
	return decodeJSON(b, func(r *jsonReader, k string) {
		switch k {
		case "type":
			m.Type = r.str()
		case "pid":
			m.Pid = int(r.int(0))
		case "message":
			m.Message = r.str()
		default:
			r.skip()
		}
	})
}

// engine is how the monitor makes, starts and signals one container. There
// are two: berth's own container init (builtinEngine) and an OCI runtime's
// command line (ociEngine, for runtime handlers such as runc). Everything
// else (being the parent and subreaper, reaping, exit records, logs, stdin,
// the terminal, attach) is the monitor's, whatever the engine.
type engine interface {
	// create makes the container's process, blocked before it execs its
	// program, with stdio (for a tty, stdio is nil: the engine makes the
	// terminal and returns its master), and adopts its pid (adoptPid).
	// On error, whatever it started is killed or left for the caller to
	// kill through c's adopted pid.
	create(ctx context.Context, c *ctr, stdio []*os.File) (master *os.File, err error)
	// start lets the created process exec its program and returns once it
	// has (or failed to, or died).
	start(ctx context.Context, c *ctr) error
	// kill signals the container's process.
	kill(ctx context.Context, c *ctr, sig syscall.Signal) error
}

// create makes the container through its engine, with the container's
// stdio, and waits until the container process is created and blocked
// before exec (or failed).
func (s *server) create(ctx context.Context, req *Request) (st *State, retErr error) {
	if req.ID == "" || !filepath.IsAbs(req.Bundle) {
		return nil, wrap("create needs an ID and an absolute bundle path", errdefs.ErrInvalidArgument)
	}
	c := &ctr{
		id:        req.ID,
		bundle:    req.Bundle,
		tty:       req.Tty,
		stdinOnce: req.StdinOnce,
		done:      make(chan struct{}),
		creating:  true,
		st:        State{ID: req.ID, Status: StatusCreated},
	}
	c.eng = &builtinEngine{s: s}
	if req.Runtime != nil {
		if !filepath.IsAbs(req.Runtime.Path) || !filepath.IsAbs(req.Runtime.Root) {
			return nil, wrap("OCI runtime path and root must be absolute", errdefs.ErrInvalidArgument)
		}
		c.eng = &ociEngine{s: s, rt: *req.Runtime}
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil, wrap("pod monitor is shutting down", errdefs.ErrFailedPrecondition)
	}
	if s.ctrs[req.ID] != nil {
		s.mu.Unlock()
		return nil, wrap("container "+quote(req.ID), errdefs.ErrAlreadyExists)
	}
	s.ctrs[req.ID] = c
	s.pending++
	s.mu.Unlock()

	defer func() {
		s.mu.Lock()
		s.pending--
		if s.pending == 0 {
			clear(s.unclaimed)
		}
		if retErr != nil {
			// The runtime removes the bundle next: write nothing there.
			c.failed = true
			delete(s.ctrs, req.ID)
			if p := c.st.Pid; p > 0 && s.byPid[p] == c {
				delete(s.byPid, p)
				syscall.Kill(p, syscall.SIGKILL)
			}
		} else {
			c.creating = false
		}
		s.mu.Unlock()
		if retErr != nil {
			c.release()
		}
	}()

	log, err := OpenLogFile(req.LogPath)
	if err != nil {
		return nil, wrap("open log "+req.LogPath, err)
	}
	c.log = log

	// The child's ends of its stdio; closed here once the engine started
	// the container with them (or failed to).
	var stdio []*os.File
	defer func() {
		for _, f := range stdio {
			f.Close()
		}
	}()
	if !req.Tty {
		stdio = make([]*os.File, 0, 3)
		if req.Stdin {
			r, w, err := os.Pipe()
			if err != nil {
				return nil, err
			}
			stdio = append(stdio, r)
			c.stdin.Store(w)
		} else {
			null, err := os.Open(os.DevNull)
			if err != nil {
				return nil, err
			}
			stdio = append(stdio, null)
		}
		for i, name := range []string{"stdout", "stderr"} {
			r, w, err := os.Pipe()
			if err != nil {
				return nil, err
			}
			stdio = append(stdio, w)
			c.outs.Add(1)
			go s.copyOut(c, r, name, byte(FrameStdout+i), true)
		}
	}
	master, err := c.eng.create(ctx, c, stdio)
	if err != nil {
		return nil, err
	}
	if master != nil {
		c.master = master
		c.outs.Add(1)
		go s.copyOut(c, master, "stdout", FrameStdout, false)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c.st.CreatedAt = time.Now()
	c.st.PidStart = pidStart(c.st.Pid)
	s.writeStateLocked(c)
	st = &State{}
	*st = c.st
	return st, nil
}

// spawn starts argv as a child whose exit the reaper reports on the
// returned channel (it must be waited for through it, never with wait4).
func (s *server) spawn(argv []string, files []uintptr) (int, chan syscall.WaitStatus, error) {
	done := make(chan syscall.WaitStatus, 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	pid, err := syscall.ForkExec(argv[0], argv, &syscall.ProcAttr{
		Dir:   "/",
		Env:   os.Environ(),
		Files: files,
	})
	if err != nil {
		return 0, nil, err
	}
	s.inits[pid] = done
	return pid, done, nil
}

// builtinEngine runs containers through `berth-shim init`.
type builtinEngine struct{ s *server }

// create starts `berth-shim init --bundle B` with the container's stdio and
// waits until it reports the container process created and blocked before
// exec (or failed).
func (e *builtinEngine) create(ctx context.Context, c *ctr, stdio []*os.File) (retMaster *os.File, retErr error) {
	s := e.s
	// The child's ends of its terminal and sync pipe; closed here once
	// init has them (or failed to start).
	var childFiles []*os.File
	defer func() {
		for _, f := range childFiles {
			f.Close()
		}
	}()
	if c.tty {
		master, slave, err := OpenPTY()
		if err != nil {
			return nil, err
		}
		defer func() {
			if retErr != nil {
				master.Close()
			}
		}()
		retMaster = master
		childFiles = append(childFiles, slave)
		stdio = []*os.File{slave, slave, slave}
	}
	syncR, syncW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	keepSync := false
	defer func() {
		if !keepSync {
			syncR.Close()
		}
	}()
	childFiles = append(childFiles, syncW)

	initPid, initDone, err := s.spawn([]string{s.self, "init", "--bundle", c.bundle},
		[]uintptr{stdio[0].Fd(), stdio[1].Fd(), stdio[2].Fd(), syncW.Fd()})
	if err != nil {
		return nil, wrap("start container init", err)
	}
	for _, f := range childFiles {
		f.Close()
	}
	childFiles = nil

	// killInit kills init if it is not reaped yet (checked under mu,
	// against which the reaper reaps, so a pid is never signalled after
	// it could have been reused). The container process, once adopted, is
	// the caller's to kill.
	killInit := func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.inits[initPid]; ok {
			syscall.Kill(initPid, syscall.SIGKILL)
		}
	}
	// Whatever happens below, a failed create leaves no init behind.
	defer func() {
		if retErr != nil {
			killInit()
		}
	}()
	stop := context.AfterFunc(ctx, func() {
		killInit()
		s.mu.Lock()
		if p := c.st.Pid; p > 0 && s.byPid[p] == c {
			syscall.Kill(p, syscall.SIGKILL)
		}
		s.mu.Unlock()
		syncR.Close()
	})
	defer stop()

	sc := bufio.NewScanner(syncR)
	sc.Buffer(make([]byte, 512), bufio.MaxScanTokenSize) // lines are short
	havePid := false
	for sc.Scan() {
		var m syncMsg
		if err := decodeSyncMsg(sc.Bytes(), &m); err != nil {
			return nil, wrap("container init sent "+quote(sc.Text()), err)
		}
		switch m.Type {
		case "pid":
			if m.Pid <= 0 {
				return nil, errors.New("container init sent pid " + strconv.Itoa(m.Pid))
			}
			s.adoptPid(c, m.Pid, initPid, initDone)
			havePid = true
		case "created":
			if !havePid {
				return nil, errors.New("container init reported created without a pid")
			}
			// The container process reports a failure to exec (or to
			// apply the process settings) on the same pipe.
			keepSync = true
			c.outs.Add(1)
			go s.lateSync(c, sc, syncR)
			return retMaster, nil
		case "error":
			return nil, errors.New("container init: " + m.Message)
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	// init went away without a word: report how it ended.
	select {
	case ws := <-initDone:
		return nil, errors.New("container init exited before the container was created (" + describe(ws) + ")")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// start opens the exec FIFO that the container process blocks on.
func (e *builtinEngine) start(ctx context.Context, c *ctr) error {
	s := e.s
	// The container process blocks opening the fifo for writing until it
	// has a reader; it then writes a byte and execs. The read end is opened
	// here, non-blocking and under mu, so that if the process dies instead,
	// finishExit (which sees starting) can always open a write end and
	// close it to wake the poll below.
	s.mu.Lock()
	if c.reaped {
		s.mu.Unlock()
		return errNotStarted
	}
	fd, err := unix.Open(filepath.Join(c.bundle, "exec.fifo"), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	s.mu.Unlock()
	if err != nil {
		return wrap("start container "+quote(c.id)+": open exec fifo", err)
	}
	// A fresh FIFO reader polls readable once a writer wrote, and hung up
	// once a writer came and went; until then it waits (a read would just
	// say EOF). Waiting in Go's poller rather than in poll(2) keeps a
	// thread from blocking, and so the monitor from growing one.
	n := 0
	f := os.NewFile(uintptr(fd), "exec.fifo")
	if rc, err := f.SyscallConn(); err == nil {
		rc.Read(func(fd uintptr) bool {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if k, _ := unix.Poll(fds, 0); k == 0 {
				return false
			}
			var b [1]byte
			n, _ = unix.Read(int(fd), b[:])
			return true
		})
	}
	f.Close()
	if n <= 0 {
		return errNotStarted
	}
	return nil
}

// errNotStarted is an engine's start that found the process gone.
var errNotStarted = errors.New("the container process is gone")

// kill signals the container process, if it is not reaped yet.
func (e *builtinEngine) kill(ctx context.Context, c *ctr, sig syscall.Signal) error {
	s := e.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.reaped {
		return nil
	}
	if err := syscall.Kill(c.st.Pid, sig); err != nil {
		return wrap("kill container "+quote(c.id), err)
	}
	return nil
}

// lateSync reads what the container process says on the sync pipe after
// "created": an error means it never ran the user program, and the message
// goes into the state (the exit follows). The pipe closes on exec.
func (s *server) lateSync(c *ctr, sc *bufio.Scanner, r *os.File) {
	defer c.outs.Done()
	defer r.Close()
	for sc.Scan() {
		var m syncMsg
		if decodeSyncMsg(sc.Bytes(), &m) == nil && m.Type == "error" {
			s.mu.Lock()
			c.st.Message = m.Message
			s.mu.Unlock()
		}
	}
}

// adoptPid records the container process's pid, and its exit if the reaper
// already saw it.
func (s *server) adoptPid(c *ctr, pid, initPid int, initDone chan syscall.WaitStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.st.Pid = pid
	s.byPid[pid] = c
	if ws, ok := s.unclaimed[pid]; ok {
		delete(s.unclaimed, pid)
		s.exitedLocked(c, ws)
		return
	}
	if pid == initPid {
		// init did not fork: it is the container process itself.
		delete(s.inits, pid)
		select {
		case ws := <-initDone:
			s.exitedLocked(c, ws)
		default:
		}
	}
}

func describe(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "killed by signal " + ws.Signal().String()
	}
	return "exit status " + strconv.Itoa(ws.ExitStatus())
}

// copyOut copies one output stream of a container into its log file and to
// the attached clients, until EOF (or EIO from a pty master whose slave
// closed).
func (s *server) copyOut(c *ctr, r *os.File, stream string, frame byte, closeAtEnd bool) {
	defer c.outs.Done()
	lw := NewLineWriter(c.log, stream)
	buf := make([]byte, 8192)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			lw.Write(buf[:n])
			c.broadcast(frame, buf[:n])
		}
		if err != nil {
			break
		}
	}
	lw.Flush()
	if closeAtEnd {
		r.Close()
	}
}

func (c *ctr) broadcast(frame byte, p []byte) {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	if len(c.subs) == 0 {
		return
	}
	// The frame is built in a buffer kept for the session rather than
	// allocated per write (as WriteFrame does): a busy attached stream
	// would otherwise make garbage that no trim counts.
	c.frame = append(append(c.frame[:0], frame, 0, 0, 0, 0), p...)
	binary.BigEndian.PutUint32(c.frame[1:5], uint32(len(p)))
	for conn := range c.subs {
		conn.SetWriteDeadline(time.Now().Add(subWriteTimeout))
		if _, err := conn.Write(c.frame); err != nil {
			delete(c.subs, conn)
			conn.Close()
		}
	}
}

// attach serves one attach session: output frames go to the client as the
// container writes; stdin and resize frames come from it. The session ends
// when the container exits (FrameExit, then EOF) or the client hangs up.
func (s *server) attach(conn *os.File, br *bufio.Reader, req *Request) {
	s.mu.Lock()
	c, err := s.lookupLocked(req.ID)
	if err == nil && c.reaped {
		err = wrap("container "+quote(req.ID)+" is not running", errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		s.mu.Unlock()
		reply(conn, nil, err)
		return
	}
	// Subscribe before replying, under mu, so no output or exit frame
	// falls between the reply and the subscription.
	c.subMu.Lock()
	reply(conn, nil, nil)
	if req.Stdout || req.Stderr {
		if c.subs == nil {
			c.subs = map[*os.File]struct{}{}
		}
		c.subs[conn] = struct{}{}
	}
	c.subMu.Unlock()
	s.mu.Unlock()

	defer func() {
		c.subMu.Lock()
		delete(c.subs, conn)
		if len(c.subs) == 0 {
			c.frame = nil
		}
		c.subMu.Unlock()
		if req.Stdin && c.stdinOnce && !c.tty {
			// stdin_once: the first attach that detaches closes stdin.
			if f := c.stdin.Swap(nil); f != nil {
				f.Close()
			}
		}
	}()
	var buf []byte
	for {
		typ, p, err := ReadFrame(br, buf)
		if err != nil {
			return
		}
		buf = p[:0]
		switch typ {
		case FrameStdin:
			if !req.Stdin {
				continue
			}
			if c.tty {
				c.master.Write(p)
			} else if f := c.stdin.Load(); f != nil {
				f.Write(p)
			}
		case FrameStdinEOF:
			if c.stdinOnce && !c.tty {
				if f := c.stdin.Swap(nil); f != nil {
					f.Close()
				}
			}
		case FrameResize:
			if c.tty && len(p) == 4 {
				SetWinsize(c.master, uint16(p[0])<<8|uint16(p[1]), uint16(p[2])<<8|uint16(p[3]))
			}
		}
	}
}
