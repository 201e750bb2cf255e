package monitor

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/berth-dev/berth/errdefs"
)

// syncMsg is one message of `berth-shim init` on its sync pipe (fd 3).
type syncMsg struct {
	Type    string `json:"type"` // "pid", "created" or "error"
	Pid     int    `json:"pid,omitempty"`
	Message string `json:"message,omitempty"`
}

// create starts `berth-shim init --bundle B` with the container's stdio and
// waits until it reports the container process created and blocked before
// exec (or failed).
func (s *server) create(ctx context.Context, req *Request) (st *State, retErr error) {
	if req.ID == "" || !filepath.IsAbs(req.Bundle) {
		return nil, fmt.Errorf("create needs an ID and an absolute bundle path: %w", errdefs.ErrInvalidArgument)
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
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil, fmt.Errorf("pod monitor is shutting down: %w", errdefs.ErrFailedPrecondition)
	}
	if s.ctrs[req.ID] != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("container %q: %w", req.ID, errdefs.ErrAlreadyExists)
	}
	s.ctrs[req.ID] = c
	s.pending++
	s.mu.Unlock()

	var initPid int
	var ctrPid atomic.Int64
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
			if p := int(ctrPid.Load()); p > 0 && s.byPid[p] == c {
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
		return nil, fmt.Errorf("open log %s: %w", req.LogPath, err)
	}
	c.log = log

	// The child's ends of its stdio and sync pipe; closed here once init
	// has them (or failed to start).
	var childFiles []*os.File
	defer func() {
		for _, f := range childFiles {
			f.Close()
		}
	}()
	var stdio [3]*os.File
	if req.Tty {
		master, slave, err := OpenPTY()
		if err != nil {
			return nil, err
		}
		c.master = master
		childFiles = append(childFiles, slave)
		stdio = [3]*os.File{slave, slave, slave}
		c.outs.Add(1)
		go s.copyOut(c, master, "stdout", FrameStdout, false)
	} else {
		if req.Stdin {
			r, w, err := os.Pipe()
			if err != nil {
				return nil, err
			}
			childFiles = append(childFiles, r)
			c.stdin.Store(w)
			stdio[0] = r
		} else {
			null, err := os.Open(os.DevNull)
			if err != nil {
				return nil, err
			}
			childFiles = append(childFiles, null)
			stdio[0] = null
		}
		for i, name := range []string{"stdout", "stderr"} {
			r, w, err := os.Pipe()
			if err != nil {
				return nil, err
			}
			childFiles = append(childFiles, w)
			stdio[i+1] = w
			c.outs.Add(1)
			go s.copyOut(c, r, name, byte(FrameStdout+i), true)
		}
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

	initDone := make(chan syscall.WaitStatus, 1)
	s.mu.Lock()
	initPid, err = syscall.ForkExec(s.self, []string{"berth-shim", "init", "--bundle", req.Bundle}, &syscall.ProcAttr{
		Dir:   "/",
		Env:   os.Environ(),
		Files: []uintptr{stdio[0].Fd(), stdio[1].Fd(), stdio[2].Fd(), syncW.Fd()},
	})
	if err == nil {
		s.inits[initPid] = initDone
	}
	s.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("start container init: %w", err)
	}
	for _, f := range childFiles {
		f.Close()
	}
	childFiles = nil

	// killAll kills init and the container process if they are not reaped
	// yet (checked under mu, against which the reaper reaps, so a pid is
	// never signalled after it could have been reused).
	killAll := func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.inits[initPid]; ok {
			syscall.Kill(initPid, syscall.SIGKILL)
		}
		if p := int(ctrPid.Load()); p > 0 && s.byPid[p] == c {
			syscall.Kill(p, syscall.SIGKILL)
		}
	}
	// Whatever happens below, a failed create leaves no init behind.
	defer func() {
		if retErr != nil {
			killAll()
		}
	}()
	stop := context.AfterFunc(ctx, func() {
		killAll()
		syncR.Close()
	})
	defer stop()

	sc := bufio.NewScanner(syncR)
	for sc.Scan() {
		var m syncMsg
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return nil, fmt.Errorf("container init sent %q: %w", sc.Text(), err)
		}
		switch m.Type {
		case "pid":
			if m.Pid <= 0 {
				return nil, fmt.Errorf("container init sent pid %d", m.Pid)
			}
			s.adoptPid(c, m.Pid, initPid, initDone)
			ctrPid.Store(int64(m.Pid))
		case "created":
			if ctrPid.Load() == 0 {
				return nil, fmt.Errorf("container init reported created without a pid")
			}
			s.mu.Lock()
			c.st.CreatedAt = time.Now()
			c.st.PidStart = pidStart(c.st.Pid)
			s.writeStateLocked(c)
			st := c.st
			s.mu.Unlock()
			// The container process reports a failure to exec (or to
			// apply the process settings) on the same pipe.
			keepSync = true
			c.outs.Add(1)
			go s.lateSync(c, sc, syncR)
			return &st, nil
		case "error":
			return nil, fmt.Errorf("container init: %s", m.Message)
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	// init went away without a word: report how it ended.
	select {
	case ws := <-initDone:
		return nil, fmt.Errorf("container init exited before the container was created (%s)", describe(ws))
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// lateSync reads what the container process says on the sync pipe after
// "created": an error means it never ran the user program, and the message
// goes into the state (the exit follows). The pipe closes on exec.
func (s *server) lateSync(c *ctr, sc *bufio.Scanner, r *os.File) {
	defer c.outs.Done()
	defer r.Close()
	for sc.Scan() {
		var m syncMsg
		if json.Unmarshal(sc.Bytes(), &m) == nil && m.Type == "error" {
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
	return fmt.Sprintf("exit status %d", ws.ExitStatus())
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
	for conn := range c.subs {
		conn.SetWriteDeadline(time.Now().Add(subWriteTimeout))
		if err := WriteFrame(conn, frame, p); err != nil {
			delete(c.subs, conn)
			conn.Close()
		}
	}
}

// attach serves one attach session: output frames go to the client as the
// container writes; stdin and resize frames come from it. The session ends
// when the container exits (FrameExit, then EOF) or the client hangs up.
func (s *server) attach(conn *net.UnixConn, br *bufio.Reader, req *Request) {
	s.mu.Lock()
	c, err := s.lookupLocked(req.ID)
	if err == nil && c.reaped {
		err = fmt.Errorf("container %q is not running: %w", req.ID, errdefs.ErrFailedPrecondition)
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
			c.subs = map[*net.UnixConn]struct{}{}
		}
		c.subs[conn] = struct{}{}
	}
	c.subMu.Unlock()
	s.mu.Unlock()

	defer func() {
		c.subMu.Lock()
		delete(c.subs, conn)
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
