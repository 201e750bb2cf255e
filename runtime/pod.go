package runtime

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/runtime/monitor"
)

// MonitorInfo describes a running pod monitor.
type MonitorInfo struct {
	Pid       int
	PidNSPath string // the pod's shared pid namespace, "" if it has none
}

// shimEnv is the whole environment of the monitor (and so of container
// inits). One P is plenty for a process that mostly sleeps in the poller,
// and fewer Ps mean fewer threads and per-P caches in every pod.
var shimEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "GOMAXPROCS=1"}

// StartMonitor starts the monitor of pod podID (idempotent: a running one is
// reused). With sharePID it also starts the pod's init in a new pid namespace
// and returns the path that pins it, for the containers' specs.
//
// The monitor runs in its own session with no stdio of berthd's, so it
// outlives berthd; berthd reaps it if it exits while berthd lives.
func (r *Runtime) StartMonitor(ctx context.Context, podID string, sharePID bool) (pidNSPath string, err error) {
	info, err := r.startMonitor(ctx, podID, sharePID)
	return info.PidNSPath, err
}

// StartMonitorUserns is StartMonitor for a pod with a user namespace, pinned
// at userns: the pod's shared pid namespace (sharePID) is made inside it and
// belongs to it, so that the pod's root can join it and mount its proc.
// Without sharePID, userns changes nothing.
func (r *Runtime) StartMonitorUserns(ctx context.Context, podID string, sharePID bool, userns string) (pidNSPath string, err error) {
	if !filepath.IsAbs(userns) {
		return "", fmt.Errorf("user namespace path %q: %w", userns, errdefs.ErrInvalidArgument)
	}
	if !sharePID {
		userns = ""
	}
	info, err := r.startMonitorUserns(ctx, podID, sharePID, userns)
	return info.PidNSPath, err
}

func (r *Runtime) startMonitor(ctx context.Context, podID string, sharePID bool) (MonitorInfo, error) {
	return r.startMonitorUserns(ctx, podID, sharePID, "")
}

// startMonitorUserns starts the monitor; with userns, its podinit joins that
// user namespace before it makes the pod's pid namespace.
func (r *Runtime) startMonitorUserns(ctx context.Context, podID string, sharePID bool, userns string) (MonitorInfo, error) {
	if err := validID("pod", podID); err != nil {
		return MonitorInfo{}, err
	}
	dir := r.podDir(podID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return MonitorInfo{}, err
	}
	// Starts of one pod's monitor (goroutines, or berthd processes) take
	// turns, so the second finds the first's monitor instead of racing it.
	lock, err := os.OpenFile(filepath.Join(dir, "start.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return MonitorInfo{}, err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return MonitorInfo{}, fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	if info, err := r.ConnectMonitor(ctx, podID); err == nil {
		if sharePID && info.PidNSPath == "" {
			return MonitorInfo{}, fmt.Errorf("pod %s: monitor runs without a shared pid namespace: %w", podID, errdefs.ErrAlreadyExists)
		}
		if userns != "" {
			if err := checkOwner(info.PidNSPath, userns); err != nil {
				return MonitorInfo{}, fmt.Errorf("pod %s: running monitor: %w", podID, err)
			}
		}
		return info, nil
	}
	// A monitor that died left its pid namespace pinned.
	unix.Unmount(filepath.Join(dir, monitor.PidNSName), unix.MNT_DETACH)
	logf, err := os.OpenFile(filepath.Join(dir, "monitor.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return MonitorInfo{}, err
	}
	defer logf.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return MonitorInfo{}, err
	}
	defer readyR.Close()
	shim := r.cfg.ShimPath
	extra := []*os.File{readyW}
	if r.shimExe != nil {
		// fd 4 in the monitor: the shared sealed copy, for container inits.
		extra = append(extra, r.shimExe)
		shim = "/proc/self/fd/4"
	}
	args := []string{"monitor", "--dir", dir, "--shim", shim}
	if sharePID {
		args = append(args, "--share-pid")
	}
	if userns != "" {
		args = append(args, "--userns", userns)
	}
	bin := r.cfg.MonitorPath
	if bin == "" {
		bin = r.cfg.ShimPath
	}
	// Not exec.CommandContext: ctx bounds the start, not the monitor's life.
	cmd := exec.Command(bin, args...)
	cmd.Dir = "/"
	cmd.Env = shimEnv
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = extra
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	readyW.Close()
	if err != nil {
		return MonitorInfo{}, fmt.Errorf("start pod monitor: %w", err)
	}
	go cmd.Wait() // reap it if it exits while we live

	stop := context.AfterFunc(ctx, func() { readyR.Close() })
	defer stop()
	line, rerr := bufio.NewReader(readyR).ReadBytes('\n')
	var msg monitor.ReadyMessage
	if rerr == nil {
		rerr = json.Unmarshal(line, &msg)
	}
	if rerr != nil || msg.Error != "" || msg.Pid == 0 {
		cmd.Process.Kill()
		if ctx.Err() != nil {
			return MonitorInfo{}, ctx.Err()
		}
		if msg.Error != "" {
			return MonitorInfo{}, fmt.Errorf("pod monitor: %s", msg.Error)
		}
		return MonitorInfo{}, fmt.Errorf("pod monitor did not start (see %s): %v", filepath.Join(dir, "monitor.log"), rerr)
	}
	return MonitorInfo{Pid: msg.Pid, PidNSPath: msg.PidNS}, nil
}

// checkOwner fails unless the namespace pinned at ns belongs to the user
// namespace pinned at userns.
func checkOwner(ns, userns string) error {
	f, err := os.Open(ns)
	if err != nil {
		return err
	}
	defer f.Close()
	const nsGetUserns = 0xb701 // NS_GET_USERNS, <linux/nsfs.h>
	ofd, err := unix.IoctlRetInt(int(f.Fd()), nsGetUserns)
	if err != nil {
		return fmt.Errorf("owner of %s: %w", ns, err)
	}
	defer unix.Close(ofd)
	var owner, want unix.Stat_t
	if err := unix.Fstat(ofd, &owner); err != nil {
		return err
	}
	if err := unix.Stat(userns, &want); err != nil {
		return err
	}
	if owner.Dev != want.Dev || owner.Ino != want.Ino {
		return fmt.Errorf("namespace %s does not belong to the user namespace %s: %w", ns, userns, errdefs.ErrAlreadyExists)
	}
	return nil
}

// ConnectMonitor finds the running monitor of podID (after a berthd
// restart, for example). A pod without a live monitor gives
// errdefs.ErrUnavailable.
func (r *Runtime) ConnectMonitor(ctx context.Context, podID string) (MonitorInfo, error) {
	if err := validID("pod", podID); err != nil {
		return MonitorInfo{}, err
	}
	resp, err := r.monitor(podID).Do(ctx, &monitor.Request{Op: monitor.OpInfo})
	if err != nil {
		return MonitorInfo{}, err
	}
	return MonitorInfo{Pid: resp.Pid, PidNSPath: resp.PidNS}, nil
}

// StopMonitor stops the pod's monitor: it kills the pod's remaining
// containers, records their exits, and exits; then the pod's monitor dir is
// removed. The containers' bundles and states stay until Delete. Idempotent.
func (r *Runtime) StopMonitor(ctx context.Context, podID string) error {
	if err := validID("pod", podID); err != nil {
		return err
	}
	dir := r.podDir(podID)
	conn, err := monitor.Dial(ctx, dir)
	if err == nil {
		// The peer of the socket is the monitor: hold a pidfd of it to
		// return only once it has exited, not merely closed the socket.
		pfd := -1
		if rc, err := conn.SyscallConn(); err == nil {
			rc.Control(func(fd uintptr) {
				if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
					pfd, _ = unix.PidfdOpen(int(cred.Pid), 0)
				}
			})
		}
		err = shutdownMonitor(ctx, conn)
		conn.Close()
		if err == nil && pfd >= 0 {
			err = waitPidfd(ctx, pfd)
		} else if pfd >= 0 {
			unix.Close(pfd)
		}
		if err != nil {
			return fmt.Errorf("stop pod monitor %s: %w", podID, err)
		}
	} else if !errors.Is(err, errdefs.ErrUnavailable) {
		return err
	}
	r.forgetPod(podID)
	// The monitor unpinned its pid namespace; a monitor that died did not.
	pidns := filepath.Join(dir, monitor.PidNSName)
	if err := unix.Unmount(pidns, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return fmt.Errorf("unmount %s: %w", pidns, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return nil
}

func shutdownMonitor(ctx context.Context, conn io.ReadWriter) error {
	stop := context.AfterFunc(ctx, func() {
		if c, ok := conn.(io.Closer); ok {
			c.Close()
		}
	})
	defer stop()
	b, _ := json.Marshal(&monitor.Request{Op: monitor.OpShutdown})
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return err
	}
	br := bufio.NewReader(conn)
	line, err := br.ReadBytes('\n')
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// It died meanwhile: what it should do is done or moot.
		return nil
	}
	var resp monitor.Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return err
	}
	if err := resp.Err(); err != nil {
		return err
	}
	// The monitor exits right after answering; EOF tells it is gone.
	io.Copy(io.Discard, br)
	return ctx.Err()
}

// PinNamespaces creates one new namespace per kind ("net", "ipc", "uts") and
// pins each with a bind mount at dir/<kind>. It returns kind → path. On
// error nothing stays pinned.
func (r *Runtime) PinNamespaces(ctx context.Context, dir string, kinds []string) (map[string]string, error) {
	return r.PinNamespacesWithHostname(ctx, dir, kinds, "")
}

// PinNamespacesWithHostname is PinNamespaces that also sets the hostname of
// the new uts namespace (hostname "" leaves the host's).
func (r *Runtime) PinNamespacesWithHostname(ctx context.Context, dir string, kinds []string, hostname string) (map[string]string, error) {
	return r.pin(ctx, dir, kinds, hostname, nil)
}

// PinNamespacesUserns is PinNamespacesWithHostname with a new user namespace
// too (kind "user" in kinds), with one uid and one gid range: it owns the
// other new namespaces, so that root in it is root of the pod's network, ipc
// and uts namespaces.
func (r *Runtime) PinNamespacesUserns(ctx context.Context, dir string, kinds []string, hostname string, uid, gid specs.LinuxIDMapping) (map[string]string, error) {
	return r.pin(ctx, dir, kinds, hostname, &[2]specs.LinuxIDMapping{uid, gid})
}

func (r *Runtime) pin(ctx context.Context, dir string, kinds []string, hostname string, m *[2]specs.LinuxIDMapping) (map[string]string, error) {
	if !filepath.IsAbs(dir) || len(kinds) == 0 {
		return nil, fmt.Errorf("pin namespaces in %q %v: %w", dir, kinds, errdefs.ErrInvalidArgument)
	}
	for _, k := range kinds {
		if k != "net" && k != "ipc" && k != "uts" && (k != "user" || m == nil) {
			return nil, fmt.Errorf("cannot pin a %q namespace: %w", k, errdefs.ErrInvalidArgument)
		}
	}
	args := []string{"pin", "--dir", dir, "--ns", strings.Join(kinds, ",")}
	if hostname != "" {
		args = append(args, "--hostname", hostname)
	}
	if m != nil {
		if !slices.Contains(kinds, "user") {
			return nil, fmt.Errorf("id mappings without a user namespace: %w", errdefs.ErrInvalidArgument)
		}
		f := func(id specs.LinuxIDMapping) string {
			return fmt.Sprintf("%d:%d:%d", id.ContainerID, id.HostID, id.Size)
		}
		args = append(args, "--uid-map", f(m[0]), "--gid-map", f(m[1]))
	}
	if err := r.shim(ctx, args...); err != nil {
		r.shim(context.WithoutCancel(ctx), "unpin", "--dir", dir)
		return nil, err
	}
	paths := make(map[string]string, len(kinds))
	for _, k := range kinds {
		paths[k] = filepath.Join(dir, k)
	}
	return paths, nil
}

// UnpinNamespaces unmounts and removes the pins under dir. Idempotent.
func (r *Runtime) UnpinNamespaces(ctx context.Context, dir string) error {
	if !filepath.IsAbs(dir) {
		return fmt.Errorf("unpin namespaces in %q: %w", dir, errdefs.ErrInvalidArgument)
	}
	return r.shim(ctx, "unpin", "--dir", dir)
}

// shim runs a short berth-shim subcommand.
func (r *Runtime) shim(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, r.cfg.ShimPath, args...)
	cmd.Dir = "/"
	cmd.Env = shimEnv
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("berth-shim %s: %w: %s", args[0], err, strings.TrimSpace(out.String()))
	}
	return nil
}
