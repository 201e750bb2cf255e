package server

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/berth-dev/berth/errdefs"
	"golang.org/x/sys/unix"
)

// drainTimeout bounds how long an exit waits for the container's output pipes
// to reach EOF before it is recorded: a process that escaped the container's
// pid namespace (possible in a shared one) may hold them open forever.
const drainTimeout = 2 * time.Second

// subWriteTimeout bounds a write to an attached client, so a stuck client
// cannot stall the container's output (and so the container).
const subWriteTimeout = 5 * time.Second

// ErrMonitorRunning is the start error of a monitor whose pod dir already
// has a live monitor.
var ErrMonitorRunning = errors.New("a monitor already runs for this pod")

type server struct {
	lock   *os.File // flock of dir/monitor.lock, held for life
	dir    string
	self   string   // this binary, to start init and podinit
	selfFd int      // the inherited fd that self names (/proc/self/fd/N), or -1
	ln     *os.File // the listening socket
	// lnClosed is set before ln is closed, so serve tells the end from
	// a failed accept.
	lnClosed atomic.Bool
	trim     trimmer

	mu        sync.Mutex
	ctrs      map[string]*ctr
	byPid     map[int]*ctr                    // container process pid -> container, until reaped
	inits     map[int]chan syscall.WaitStatus // init processes being waited for by create
	pending   int                             // creates in flight
	unclaimed map[int]syscall.WaitStatus      // exits of pids not yet known, while pending > 0
	podinit   int
	podDone   chan struct{} // closed when podinit is reaped
	pidns     string
	closing   bool
}

type ctr struct {
	eng       engine
	id        string
	bundle    string
	log       *LogFile
	tty       bool
	stdinOnce bool
	stdin     atomic.Pointer[os.File] // stdin pipe write end (non-tty)
	master    *os.File                // pty master (tty)
	outs      sync.WaitGroup          // output copiers
	done      chan struct{}           // closed once the exit is recorded

	// Under server.mu:
	st       State
	creating bool
	failed   bool // create failed: the container is forgotten
	reaped   bool
	ws       syscall.WaitStatus
	starting bool

	subMu sync.Mutex
	subs  map[*os.File]struct{}
	frame []byte // broadcast's scratch, under subMu
}

func newServer(dir, self string, sharePID bool, userns string) (*server, error) {
	selfFd := -1
	if n, ok := strings.CutPrefix(self, "/proc/self/fd/"); ok {
		// An inherited descriptor of berth-shim (berthd's sealed copy):
		// keep it from every child but let them exec it by this path,
		// which the kernel resolves before it closes close-on-exec fds.
		fd, err := strconv.Atoi(n)
		if err != nil {
			return nil, wrap("--shim "+self, err)
		}
		unix.CloseOnExec(fd)
		selfFd = fd
	}
	if self == "" {
		// The monitor runs on the host, never inside a container, so
		// naming its own binary exposes nothing.
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		self = exe
	}
	s := &server{
		dir:       dir,
		self:      self,
		selfFd:    selfFd,
		ctrs:      map[string]*ctr{},
		byPid:     map[int]*ctr{},
		inits:     map[int]chan syscall.WaitStatus{},
		unclaimed: map[int]syscall.WaitStatus{},
	}
	// One monitor per pod dir: a second one (two racing starts) must not
	// take the socket over and orphan the first. The lock lives as long as
	// this process (the fd is close-on-exec, so no child holds it).
	lock, err := os.OpenFile(filepath.Join(dir, "monitor.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if err == unix.EWOULDBLOCK {
			return nil, ErrMonitorRunning
		}
		return nil, wrap("lock "+lock.Name(), err)
	}
	s.lock = lock
	// A container's init may fork so that the container process is pid 1
	// of its namespace; as subreaper we inherit it when init exits.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, wrap("set child subreaper", err)
	}
	// berthd stops us through the socket; signals from a terminal or a
	// session end must not kill the pod's containers' parent.
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT, syscall.SIGPIPE)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGCHLD, syscall.SIGTERM)
	go func() {
		for sig := range sigs {
			if sig == syscall.SIGTERM {
				go func() {
					s.shutdown(context.Background())
					os.Exit(0)
				}()
				continue
			}
			s.reap()
		}
	}()
	if sharePID {
		if err := s.startPodInit(userns); err != nil {
			return nil, err
		}
	}
	sock := SocketPath(dir)
	os.Remove(sock) // a stale socket of a dead monitor
	// The path may be a /proc/self/fd alias: shutdown unlinks the socket
	// by its real path.
	err = WithShortPath(dir, SocketName, func(p string) error {
		ln, err := listenUnix(p)
		s.ln = ln
		return err
	})
	if err != nil {
		s.stopPodInit()
		return nil, wrap("listen", err)
	}
	return s, nil
}

// startPodInit starts `berth-shim podinit` as pid 1 of a new pid namespace
// and pins that namespace at dir/pidns, so containers can join it by path.
// With userns (the path of the pod's user namespace) podinit joins it first
// and the pid namespace is the user namespace's: its root can join it and
// mount its proc.
func (s *server) startPodInit(userns string) error {
	null, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer null.Close()
	attr := &syscall.ProcAttr{
		Dir:   "/",
		Env:   os.Environ(),
		Files: []uintptr{null.Fd(), null.Fd(), null.Fd()},
		Sys:   &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID},
	}
	var repR, repW *os.File
	if userns != "" {
		// A multi-threaded Go process cannot join a user namespace: the
		// child's nsexec constructor does, unshares the pid namespace and
		// forks podinit, reports its pid on fd 3 and exits. We, the
		// subreaper, inherit podinit.
		ns, err := os.Open(userns)
		if err != nil {
			return wrap("open user namespace", err)
		}
		defer ns.Close()
		repR, repW, err = os.Pipe()
		if err != nil {
			return err
		}
		defer repR.Close()
		// The child's fds must not take the place of the one that
		// s.self names: that stays, for the exec.
		add := func(fd uintptr) string {
			for len(attr.Files) == s.selfFd {
				attr.Files = append(attr.Files, uintptr(s.selfFd))
			}
			attr.Files = append(attr.Files, fd)
			return strconv.Itoa(len(attr.Files) - 1)
		}
		rep := add(repW.Fd())
		attr.Env = append(attr.Env, "_BERTH_INIT_USERNS="+rep+","+strconv.Itoa(syscall.CLONE_NEWPID)+","+add(ns.Fd()))
		attr.Sys = nil
	}
	s.mu.Lock()
	pid, err := syscall.ForkExec(s.self, []string{"berth-shim", "podinit"}, attr)
	if err == nil && userns == "" {
		s.podinit = pid
		s.podDone = make(chan struct{})
	} else if err == nil {
		// Until podinit's pid is known, its exit is kept as unclaimed.
		s.pending++
	}
	s.mu.Unlock()
	if repW != nil {
		// Ours must go, for EOF if the child dies without a report.
		repW.Close()
	}
	if err != nil {
		return wrap("start podinit", err)
	}
	if userns != "" {
		if pid, err = s.podInitPid(repR); err != nil {
			return err
		}
	}
	p := filepath.Join(s.dir, PidNSName)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDONLY, 0o444)
	if err == nil {
		f.Close()
		err = unix.Mount("/proc/"+strconv.Itoa(pid)+"/ns/pid", p, "", unix.MS_BIND, "")
	}
	if err != nil {
		s.stopPodInit()
		return wrap("pin pid namespace at "+p, err)
	}
	s.pidns = p
	return nil
}

// podInitPid reads the report of podinit's starter in a user namespace
// ("pid N" or "error MSG") and makes N the pod init.
func (s *server) podInitPid(rep *os.File) (int, error) {
	line, rerr := bufio.NewReader(rep).ReadString('\n')
	line = strings.TrimSpace(line)
	pid, perr := strconv.Atoi(strings.TrimPrefix(line, "pid "))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending--
	ws, died := s.unclaimed[pid]
	if s.pending == 0 {
		clear(s.unclaimed)
	}
	switch {
	case strings.HasPrefix(line, "error "):
		return 0, errors.New("start podinit: " + strings.TrimPrefix(line, "error "))
	case perr != nil || pid <= 0 || !strings.HasPrefix(line, "pid "):
		if rerr == nil {
			rerr = errors.New("bad report " + quote(line))
		}
		return 0, wrap("start podinit in the user namespace", rerr)
	case died:
		return 0, errors.New("podinit exited at once (status " + strconv.Itoa(int(ws)) + ")")
	}
	s.podinit = pid
	s.podDone = make(chan struct{})
	return pid, nil
}

// stopPodInit kills the pod init (and so every process of the pod's pid
// namespace), waits for it and unpins the namespace.
func (s *server) stopPodInit() {
	s.mu.Lock()
	pid, done := s.podinit, s.podDone
	if pid > 0 {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	s.mu.Unlock()
	if done != nil {
		<-done
	}
	p := filepath.Join(s.dir, PidNSName)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		logf("unmount " + p + ": " + err.Error())
	}
	os.Remove(p)
}

// reap collects every exited child. It holds mu across wait4 and the
// bookkeeping, so a kill under mu never hits a reaped (reusable) pid.
func (s *server) reap() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if c := s.byPid[pid]; c != nil {
			s.exitedLocked(c, ws)
		} else if ch, ok := s.inits[pid]; ok {
			delete(s.inits, pid)
			ch <- ws
		} else if pid == s.podinit {
			s.podinit = 0
			close(s.podDone)
		} else if s.pending > 0 {
			// Maybe a container process whose pid its init has not
			// reported yet.
			s.unclaimed[pid] = ws
		}
	}
}

func (s *server) exitedLocked(c *ctr, ws syscall.WaitStatus) {
	c.reaped = true
	c.ws = ws
	delete(s.byPid, c.st.Pid)
	go s.finishExit(c)
}

// finishExit records an exit once the output is drained, so that a client
// that saw the exit finds every log line in the file.
func (s *server) finishExit(c *ctr) {
	s.mu.Lock()
	starting := c.starting
	s.mu.Unlock()
	if starting {
		// Start is blocked opening the exec fifo for a process that will
		// never open its end: be that writer, so Start sees EOF and fails.
		if fd, err := unix.Open(filepath.Join(c.bundle, "exec.fifo"), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
			unix.Close(fd)
		}
	}
	drained := make(chan struct{})
	go func() { c.outs.Wait(); close(drained) }()
	t := time.NewTimer(drainTimeout)
	select {
	case <-drained:
	case <-t.C:
	}
	t.Stop()

	s.mu.Lock()
	c.st.Status = StatusStopped
	c.st.FinishedAt = time.Now()
	switch {
	case c.ws.Exited():
		c.st.ExitCode = c.ws.ExitStatus()
	case c.ws.Signaled():
		c.st.Signal = int(c.ws.Signal())
		c.st.ExitCode = 128 + c.st.Signal
	}
	s.writeStateLocked(c)
	st := c.st
	close(c.done)
	s.mu.Unlock()

	if f := c.stdin.Swap(nil); f != nil {
		f.Close()
	}
	b := st.appendJSON(nil)
	c.subMu.Lock()
	for conn := range c.subs {
		conn.SetWriteDeadline(time.Now().Add(subWriteTimeout))
		WriteFrame(conn, FrameExit, b)
		closeWrite(conn)
	}
	c.subs, c.frame = nil, nil
	c.subMu.Unlock()
	s.trim.maybe()
}

func (s *server) writeStateLocked(c *ctr) {
	if c.failed {
		return
	}
	if err := WriteStateFile(c.bundle, &c.st); err != nil {
		logf("container " + c.id + ": " + err.Error())
	}
}

// serve accepts connections until shutdown, whose caller ends the process.
func (s *server) serve() {
	for {
		conn, err := accept(s.ln)
		if err != nil {
			if s.lnClosed.Load() {
				// shutdown closed it, and its caller exits the
				// process when done (after its reply): returning
				// would end the process before that.
				select {}
			}
			// EMFILE and the like: keep serving the pods we have.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go s.handle(conn)
	}
}

func (s *server) handle(conn *os.File) {
	defer s.trim.maybe() // after the close: the client need not wait for it
	defer conn.Close()
	// Small: the garbage of each request stays until the next trim.
	br := bufio.NewReaderSize(conn, 512)
	// ReadBytes, not ReadSlice: a request with long paths may exceed the
	// buffer. Only root reaches the socket (its directory is 0700).
	line, err := br.ReadBytes('\n')
	if err != nil {
		return
	}
	var req Request
	if err := decodeRequest(line, &req); err != nil {
		reply(conn, nil, wrap("bad request: "+err.Error(), errdefs.ErrInvalidArgument))
		return
	}
	if req.Op == OpAttach {
		s.attach(conn, br, &req)
		return
	}
	ctx := context.Background()
	switch req.Op {
	case OpInfo, OpState, OpReopen, OpResize:
		// Answered at once: nothing to cancel (and no garbage for it).
	default:
		// A client that closes its end gives up: cancel what it waits for.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			var b [1]byte
			br.Read(b[:])
			cancel()
		}()
	}
	resp := &Response{}
	switch req.Op {
	case OpInfo:
		resp.Pid, resp.PidNS = os.Getpid(), s.pidns
	case OpCreate:
		resp.State, err = s.create(ctx, &req)
	case OpStart:
		resp.State, err = s.start(ctx, &req)
	case OpKill:
		err = s.kill(ctx, &req)
	case OpState:
		resp.State, err = s.state(&req)
	case OpWait:
		resp.State, err = s.wait(ctx, &req)
	case OpReopen:
		err = s.withCtr(req.ID, func(c *ctr) error { return c.log.Reopen() })
	case OpResize:
		err = s.withCtr(req.ID, func(c *ctr) error {
			if c.master == nil {
				return wrap("container "+c.id+" has no terminal", errdefs.ErrFailedPrecondition)
			}
			return SetWinsize(c.master, req.Width, req.Height)
		})
	case OpDelete:
		err = s.delete(ctx, &req)
	case OpShutdown:
		err = s.shutdown(ctx)
		reply(conn, resp, err)
		if err == nil {
			os.Exit(0)
		}
		return
	default:
		err = wrap("unknown op "+quote(req.Op), errdefs.ErrInvalidArgument)
	}
	reply(conn, resp, err)
}

func reply(conn *os.File, resp *Response, err error) {
	if resp == nil {
		resp = &Response{}
	}
	if err != nil {
		resp.Error, resp.Kind = err.Error(), kindOf(err)
	}
	conn.Write(append(resp.appendJSON(make([]byte, 0, 512)), '\n'))
}

func notFound(id string) error {
	return wrap("container "+quote(id), errdefs.ErrNotFound)
}

// lookupLocked finds a container that is fully created.
func (s *server) lookupLocked(id string) (*ctr, error) {
	c := s.ctrs[id]
	if c == nil {
		return nil, notFound(id)
	}
	if c.creating {
		return nil, wrap("container "+quote(id)+" is being created", errdefs.ErrFailedPrecondition)
	}
	return c, nil
}

func (s *server) withCtr(id string, fn func(*ctr) error) error {
	s.mu.Lock()
	c, err := s.lookupLocked(id)
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return fn(c)
}

func (s *server) state(req *Request) (*State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.lookupLocked(req.ID)
	if err != nil {
		return nil, err
	}
	st := c.st
	return &st, nil
}

func (s *server) kill(ctx context.Context, req *Request) error {
	s.mu.Lock()
	c, err := s.lookupLocked(req.ID)
	reaped := err == nil && c.reaped
	s.mu.Unlock()
	if err != nil {
		return err
	}
	if reaped {
		// Already exited: nothing to signal. Not an error, so a stop that
		// races with the exit does not fail.
		return nil
	}
	return c.eng.kill(ctx, c, syscall.Signal(req.Signal))
}

func (s *server) wait(ctx context.Context, req *Request) (*State, error) {
	s.mu.Lock()
	c, err := s.lookupLocked(req.ID)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.mu.Lock()
	st := c.st
	s.mu.Unlock()
	return &st, nil
}

func (s *server) start(ctx context.Context, req *Request) (*State, error) {
	s.mu.Lock()
	c, err := s.lookupLocked(req.ID)
	if err == nil && (c.st.Status != StatusCreated || c.reaped || c.starting) {
		err = wrap("container "+quote(req.ID)+" is "+c.st.Status+", not created", errdefs.ErrFailedPrecondition)
		if c.starting {
			err = wrap("container "+quote(req.ID)+" is being started", errdefs.ErrFailedPrecondition)
		}
	}
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	c.starting = true
	s.mu.Unlock()

	err = c.eng.start(ctx, c)

	s.mu.Lock()
	defer s.mu.Unlock()
	c.starting = false
	if err != nil {
		if c.reaped || errors.Is(err, errNotStarted) {
			return nil, wrap("container "+quote(req.ID)+" exited before it started", errdefs.ErrFailedPrecondition)
		}
		return nil, wrap("start container "+quote(req.ID), err)
	}
	c.st.StartedAt = time.Now()
	if c.st.Status == StatusCreated {
		c.st.Status = StatusRunning
	}
	s.writeStateLocked(c)
	st := c.st
	return &st, nil
}

func (s *server) delete(ctx context.Context, req *Request) error {
	s.mu.Lock()
	c := s.ctrs[req.ID]
	if c == nil {
		s.mu.Unlock()
		return nil
	}
	if c.creating {
		s.mu.Unlock()
		return wrap("container "+quote(req.ID)+" is being created", errdefs.ErrFailedPrecondition)
	}
	if !c.reaped {
		syscall.Kill(c.st.Pid, syscall.SIGKILL)
	}
	s.mu.Unlock()
	select {
	case <-c.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.mu.Lock()
	if s.ctrs[req.ID] == c {
		delete(s.ctrs, req.ID)
	}
	s.mu.Unlock()
	c.release()
	return nil
}

// release closes what the monitor holds for a container that is gone.
func (c *ctr) release() {
	if f := c.stdin.Swap(nil); f != nil {
		f.Close()
	}
	if c.master != nil {
		c.master.Close()
	}
	c.log.Close()
	c.subMu.Lock()
	for conn := range c.subs {
		conn.Close()
	}
	c.subs, c.frame = nil, nil
	c.subMu.Unlock()
}

// shutdown kills every container, waits for their exits to be recorded,
// stops the pod init and removes the socket. The caller exits afterwards.
func (s *server) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	var dones []chan struct{}
	for _, c := range s.ctrs {
		if c.creating {
			continue
		}
		if !c.reaped {
			syscall.Kill(c.st.Pid, syscall.SIGKILL)
		}
		dones = append(dones, c.done)
	}
	s.mu.Unlock()
	for _, d := range dones {
		select {
		case <-d:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.stopPodInit()
	os.Remove(SocketPath(s.dir))
	s.lnClosed.Store(true)
	s.ln.Close()
	return nil
}

// pidStart returns the start time of pid (field 22 of /proc/PID/stat).
func pidStart(pid int) uint64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	// After the comm field, field 3 (state) is f[0], so field 22 is f[19].
	if len(f) < 20 {
		return 0
	}
	v, _ := strconv.ParseUint(f[19], 10, 64)
	return v
}

// PidStart is pidStart for berthd's side: it tells a recorded container
// process from a later process with the same pid.
func PidStart(pid int) uint64 { return pidStart(pid) }
