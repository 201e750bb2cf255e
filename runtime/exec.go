package runtime

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/runtime/monitor"
)

// ExecOptions describe a process to run in a running container.
type ExecOptions struct {
	// Process is the process to run; its user, capabilities, no_new_privs,
	// seccomp, env and cwd apply inside the container.
	Process *specs.Process
	Stdin   io.Reader // nil: /dev/null
	Stdout  io.Writer // nil: discarded
	Stderr  io.Writer // nil: discarded; unused with Tty
	// Tty runs the process on a new terminal; Resize changes its size.
	Tty    bool
	Resize <-chan TermSize
}

// ttyDrainTimeout bounds reading a terminal's last output after the exec'd
// process exited, for when something it started keeps the terminal open.
const ttyDrainTimeout = time.Second

// Exec runs a process in the running container id through `berth-shim exec`,
// which joins the container's namespaces and cgroup, and returns its exit
// code (128+signal if a signal killed it). Ending ctx kills it.
func (r *Runtime) Exec(ctx context.Context, id string, opts ExecOptions) (exitCode int, retErr error) {
	if opts.Process == nil || len(opts.Process.Args) == 0 {
		return -1, fmt.Errorf("exec in %s: no process args: %w", id, errdefs.ErrInvalidArgument)
	}
	m, err := r.readMeta(id)
	if err != nil {
		return -1, err
	}
	resp, err := r.monitor(m.PodID).Do(ctx, &monitor.Request{Op: monitor.OpState, ID: id})
	if err != nil {
		return -1, r.monitorErr(id, err)
	}
	st := resp.State
	if st.Status != monitor.StatusRunning {
		return -1, fmt.Errorf("exec in container %s: it is %s: %w", id, st.Status, errdefs.ErrFailedPrecondition)
	}
	// The exec'd process would join the frozen cgroup and hang there.
	if paused, err := r.paused(ctx, m, id); err == nil && paused {
		return -1, fmt.Errorf("container %s is paused, unpause the container before exec: %w", id, errdefs.ErrFailedPrecondition)
	}
	proc := *opts.Process
	proc.Terminal = opts.Tty
	b, err := json.Marshal(&proc)
	if err != nil {
		return -1, err
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	procFile := filepath.Join(r.bundleDir(id), "exec-"+hex.EncodeToString(rnd[:])+".json")
	if err := os.WriteFile(procFile, b, 0o600); err != nil {
		return -1, err
	}
	defer os.Remove(procFile)
	defer os.Remove(strings.TrimSuffix(procFile, ".json") + ".pid") // ociExecCmd's

	var cmd *exec.Cmd
	oci := m.Runtime != nil
	if oci {
		cmd = ociExecCmd(ctx, m.Runtime, id, procFile)
	} else {
		// The exec entry finds the container by pid. Check as late as
		// possible that the pid is still the container's process and
		// not a reuse. (A window remains until the entry opens
		// /proc/PID; closing it needs the entry to verify the start
		// time itself.)
		if monitor.PidStart(st.Pid) != st.PidStart {
			return -1, fmt.Errorf("exec in container %s: its process has exited: %w", id, errdefs.ErrFailedPrecondition)
		}
		cmd = exec.CommandContext(ctx, r.shimExePath(), "exec", "--pid", strconv.Itoa(st.Pid), "--process", procFile)
		cmd.Env = shimEnv
	}
	cmd.Dir = "/"
	var copyWG sync.WaitGroup
	var master *os.File
	if opts.Tty && !oci {
		// The exec entry makes the terminal inside the container and sends
		// its master back over a socket (as runc's console socket).
		m, setupErr, err := startWithContainerTerminal(cmd)
		if err != nil {
			return -1, fmt.Errorf("exec in container %s: %w", id, err)
		}
		if m == nil {
			// It failed before making the terminal: say why.
			werr := cmd.Wait()
			return -1, fmt.Errorf("exec in container %s: %v: %s", id, werr, strings.TrimSpace(setupErr.String()))
		}
		master = m
		defer master.Close()
		copyTerminal(&copyWG, master, opts)
	} else if opts.Tty {
		m, slave, err := monitor.OpenPTY()
		if err != nil {
			return -1, err
		}
		master = m
		defer master.Close()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		// The exec'd process makes the terminal its controlling one in
		// its own session; it must not be ours already (TIOCSCTTY would
		// fail), so only leave berthd's session here.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if oci {
			// An OCI runtime gives the process a terminal of its own and
			// copies between it and this one; it learns of resizes by
			// the SIGWINCH it gets as this terminal's session leader.
			cmd.SysProcAttr.Setctty = true
			cmd.SysProcAttr.Ctty = 0
		}
		err = cmd.Start()
		slave.Close()
		if err != nil {
			return -1, fmt.Errorf("exec in container %s: %w", id, err)
		}
		copyTerminal(&copyWG, master, opts)
	} else {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = opts.Stdin, opts.Stdout, opts.Stderr
		// os/exec stops waiting for output copies this long after exit,
		// for the same reason as ttyDrainTimeout.
		cmd.WaitDelay = ttyDrainTimeout
		if err := cmd.Start(); err != nil {
			return -1, fmt.Errorf("exec in container %s: %w", id, err)
		}
	}
	err = cmd.Wait()
	if master != nil {
		done := make(chan struct{})
		go func() { copyWG.Wait(); close(done) }()
		t := time.NewTimer(ttyDrainTimeout)
		select {
		case <-done:
		case <-t.C:
			master.Close()
		}
		t.Stop()
	}
	if ctx.Err() != nil {
		return -1, ctx.Err()
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) || err == nil || errors.Is(err, exec.ErrWaitDelay) {
		ps := cmd.ProcessState
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ps.ExitCode(), nil
	}
	return -1, fmt.Errorf("exec in container %s: %w", id, err)
}

// ociExecCmd is `RUNTIME exec --process F --pid-file P ID`, in the
// foreground: the runtime waits for the process and exits with its status
// (128+signal if a signal killed it). Ending ctx kills the process itself,
// not only the runtime, which would leave it running.
func ociExecCmd(ctx context.Context, rt *monitor.OCIRuntime, id, procFile string) *exec.Cmd {
	pidFile := strings.TrimSuffix(procFile, ".json") + ".pid"
	argv := rt.Command("exec", "--process", procFile, "--pid-file", pidFile, id)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Cancel = func() error {
		// runc writes the pid file only once the process runs, which
		// may be after the program has begun (and its output made the
		// caller give up): wait for it while runc lives. A rare path,
		// bounded, so a short poll is simpler than inotify.
		for i := 0; i < 200; i++ {
			if b, err := os.ReadFile(pidFile); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
					killChildOf(pid, cmd.Process.Pid)
					break
				}
			}
			if cmd.Process.Signal(syscall.Signal(0)) != nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		return cmd.Process.Kill()
	}
	return cmd
}

// killChildOf SIGKILLs pid if it is still a child of parent (so not a later
// process that reused the pid: the parent has not reaped it).
func killChildOf(pid, parent int) {
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return
	}
	defer unix.Close(pfd)
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 || f[1] != strconv.Itoa(parent) {
		return
	}
	unix.PidfdSendSignal(pfd, unix.SIGKILL, nil, 0)
}

// Resize sets the size of the container's terminal (created with Tty).
func (r *Runtime) Resize(ctx context.Context, id string, size TermSize) error {
	m, err := r.readMeta(id)
	if err != nil {
		return err
	}
	if _, err := r.monitor(m.PodID).Do(ctx, &monitor.Request{Op: monitor.OpResize, ID: id, Width: size.Width, Height: size.Height}); err != nil {
		return r.monitorErr(id, err)
	}
	return nil
}

// Attach connects to the container's stdio kept by the monitor: stdin (if
// the container has one and stdin is not nil) goes to the container, its
// output to stdout and stderr (nil: not subscribed). It returns when the
// container exits, the monitor goes away, or ctx ends. When stdin ends, the
// container's stdin is closed if it was created with StdinOnce.
func (r *Runtime) Attach(ctx context.Context, id string, stdin io.Reader, stdout, stderr io.Writer, resize <-chan TermSize) error {
	m, err := r.readMeta(id)
	if err != nil {
		return err
	}
	conn, br, err := r.monitor(m.PodID).Attach(ctx, &monitor.Request{
		ID: id, Stdin: stdin != nil, Stdout: stdout != nil, Stderr: stderr != nil,
	})
	if err != nil {
		return r.monitorErr(id, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	var wmu sync.Mutex // frames from two goroutines
	write := func(typ byte, p []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return monitor.WriteFrame(conn, typ, p)
	}
	if stdin != nil {
		go func() {
			buf := make([]byte, 32*1024)
			for {
				n, err := stdin.Read(buf)
				if n > 0 && write(monitor.FrameStdin, buf[:n]) != nil {
					return
				}
				if err != nil {
					write(monitor.FrameStdinEOF, nil)
					return
				}
			}
		}()
	}
	if resize != nil {
		go func() {
			for sz := range resize {
				p := []byte{byte(sz.Width >> 8), byte(sz.Width), byte(sz.Height >> 8), byte(sz.Height)}
				if write(monitor.FrameResize, p) != nil {
					return
				}
			}
		}()
	}
	var buf []byte
	for {
		typ, p, err := monitor.ReadFrame(br, buf)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err == io.EOF {
				return nil
			}
			return fmt.Errorf("attach to container %s: %w", id, err)
		}
		buf = p[:0]
		switch typ {
		case monitor.FrameStdout:
			if stdout != nil {
				stdout.Write(p)
			}
		case monitor.FrameStderr:
			if stderr != nil {
				stderr.Write(p)
			}
		case monitor.FrameExit:
			return nil
		}
	}
}

// copyTerminal copies between a terminal's master and the exec's streams
// and applies resizes.
func copyTerminal(wg *sync.WaitGroup, master *os.File, opts ExecOptions) {
	if opts.Stdin != nil {
		// Not waited for: a reader like a network stream may never end;
		// closing the master after exit unblocks its writes.
		go io.Copy(master, opts.Stdin)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		out := opts.Stdout
		if out == nil {
			out = io.Discard
		}
		io.Copy(out, master) // until EIO: every slave fd closed
	}()
	if opts.Resize != nil {
		go func() {
			for sz := range opts.Resize {
				if monitor.SetWinsize(master, sz.Width, sz.Height) != nil {
					return
				}
			}
		}()
	}
}

// startWithContainerTerminal starts `berth-shim exec` with --console-fd and
// receives the master of the terminal it makes inside the container. A nil
// master means the entry failed first; its stderr says why.
func startWithContainerTerminal(cmd *exec.Cmd) (*os.File, *bytes.Buffer, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	ours := os.NewFile(uintptr(fds[0]), "console-socket")
	defer ours.Close()
	theirs := os.NewFile(uintptr(fds[1]), "console-socket-peer")
	var stderr bytes.Buffer
	cmd.Args = append(cmd.Args, "--console-fd", "3")
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stderr = &stderr
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		return nil, nil, err
	}
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(fds[0], buf, oob, 0)
	if err != nil || n == 0 {
		// The entry exited (or failed) without sending a terminal.
		return nil, &stderr, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, &stderr, nil
	}
	rights, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(rights) != 1 {
		return nil, &stderr, nil
	}
	if err := unix.SetNonblock(rights[0], true); err != nil {
		unix.Close(rights[0])
		return nil, &stderr, nil
	}
	return os.NewFile(uintptr(rights[0]), "/dev/ptmx"), &stderr, nil
}
