// Package harness starts a real berthd built from this tree, with its own
// temporary root, state dir and socket, for end-to-end tests that drive it
// over the CRI as kubelet does. It tears everything down (processes, mounts,
// cgroups) even when a test fails.
package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"

	internalapi "k8s.io/cri-api/pkg/apis"
	criclient "k8s.io/cri-client/pkg"
)

// Binaries are the programs built from the tree.
type Binaries struct {
	Dir    string
	Berthd string
	Berth  string
	Shim   string
}

// RepoRoot returns the root of the source tree this package was built from.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Build compiles berthd, berth and berth-shim into dir.
func Build(ctx context.Context, dir string) (Binaries, error) {
	b := Binaries{
		Dir:    dir,
		Berthd: filepath.Join(dir, "berthd"),
		Berth:  filepath.Join(dir, "berth"),
		Shim:   filepath.Join(dir, "berth-shim"),
	}
	// One go build for all three shares the compile work.
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+"/", "./cmd/berthd", "./cmd/berth", "./cmd/berth-shim")
	cmd.Dir = RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return b, fmt.Errorf("go build: %w\n%s", err, out)
	}
	// As hack/build.sh builds it: the per-pod monitor without cgo.
	mon := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, "berth-monitor"), "./cmd/berth-monitor")
	mon.Dir = RepoRoot()
	mon.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := mon.CombinedOutput(); err != nil {
		return b, fmt.Errorf("go build berth-monitor: %w\n%s", err, out)
	}
	return b, nil
}

// Options adjust a test daemon.
type Options struct {
	// Config is extra TOML appended to the generated config file.
	Config string
	// CNIConfDir overrides the (by default empty) CNI config dir.
	CNIConfDir string
	// Env is added to berthd's environment (e.g. BERTH_FAILPOINTS=...).
	Env []string
}

// Daemon is a running berthd with its own directories.
type Daemon struct {
	Bins         Binaries
	Dir          string
	Root         string
	State        string
	Socket       string
	ConfigPath   string
	CNIConfDir   string
	CgroupParent string
	LogPath      string
	// AllowLeftovers turns off the leak check at teardown, for tests that
	// leave things on purpose and check them themselves.
	AllowLeftovers bool
	// Env is added to berthd's environment at every (re)start; a test may
	// change it between restarts.
	Env []string

	Runtime internalapi.RuntimeService
	// Images is set by ImageService.
	Images internalapi.ImageManagerService

	cmd  *exec.Cmd
	done chan error
}

// Pid is berthd's process id, or 0 when it is not running.
func (d *Daemon) Pid() int {
	if d.cmd == nil || d.cmd.Process == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// Endpoint is the CRI endpoint as kubelet and crictl name it.
func (d *Daemon) Endpoint() string { return "unix://" + d.Socket }

// Start starts berthd and connects cri-client to it. Cleanup stops it and
// removes everything it left.
func Start(t testing.TB, bins Binaries, opts Options) *Daemon {
	t.Helper()
	// Unix socket paths are limited to 108 bytes: keep the dir short.
	dir, err := os.MkdirTemp("/tmp", "berth-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{
		Bins:         bins,
		Dir:          dir,
		Root:         filepath.Join(dir, "root"),
		State:        filepath.Join(dir, "state"),
		Socket:       filepath.Join(dir, "berth.sock"),
		ConfigPath:   filepath.Join(dir, "config.toml"),
		CNIConfDir:   opts.CNIConfDir,
		CgroupParent: "/berth-e2e-" + filepath.Base(dir)[len("berth-e2e-"):],
		LogPath:      filepath.Join(dir, "berthd.log"),
		Env:          opts.Env,
	}
	if d.CNIConfDir == "" {
		d.CNIConfDir = filepath.Join(dir, "net.d")
		if err := os.MkdirAll(d.CNIConfDir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg := fmt.Sprintf("[registry]\nconfig_path = %q\n\n[cni]\nconf_dir = %q\n\n[runtime]\nshim_path = %q\ncgroup_parent = %q\n\n%s\n",
		filepath.Join(dir, "certs.d"), d.CNIConfDir, bins.Shim, d.CgroupParent, opts.Config)
	if err := os.WriteFile(d.ConfigPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.teardown(t) })
	d.start(t)
	return d
}

func (d *Daemon) start(t testing.TB) {
	t.Helper()
	logf, err := os.OpenFile(d.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	d.cmd = exec.Command(d.Bins.Berthd, "--config", d.ConfigPath, "--root", d.Root, "--state", d.State, "--socket", d.Socket, "-v", "4")
	d.cmd.Env = append(os.Environ(), d.Env...)
	d.cmd.Stdout = logf
	d.cmd.Stderr = logf
	// Own process group so a test's Ctrl-C does not reach it before cleanup.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start berthd: %v", err)
	}
	d.done = make(chan error, 1)
	go func(cmd *exec.Cmd, done chan error) { done <- cmd.Wait() }(d.cmd, d.done)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		if err := d.waitReady(ctx); err != nil {
			t.Fatalf("berthd did not come up: %v\n%s", err, d.Log())
		}
		d.Runtime, err = criclient.NewRemoteRuntimeService(ctx, d.Endpoint(), 2*time.Minute, nil, false)
		if err == nil {
			return
		}
		// After a SIGKILL, a child that the dead berthd forked but had
		// not exec'd yet still holds its listening socket: the dial
		// above succeeds, and the connection is reset when the child
		// execs. Try again until the new berthd answers (or exits).
		select {
		case <-ctx.Done():
			t.Fatalf("cri-client runtime: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ImageService connects cri-client's image service (it validates the
// connection with ImageFsInfo, so it is made on first use).
func (d *Daemon) ImageService(t testing.TB) internalapi.ImageManagerService {
	t.Helper()
	if d.Images != nil {
		return d.Images
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	d.Images, err = criclient.NewRemoteImageService(ctx, d.Endpoint(), 5*time.Minute, nil, false)
	if err != nil {
		t.Fatalf("cri-client images: %v", err)
	}
	return d.Images
}

// waitReady waits until berthd accepts connections on its socket, or exits.
func (d *Daemon) waitReady(ctx context.Context) error {
	for {
		if conn, err := dialUnix(d.Socket); err == nil {
			conn.Close()
			return nil
		}
		select {
		case err := <-d.done:
			d.done <- err
			return fmt.Errorf("berthd exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Log returns what berthd has logged so far.
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(d.LogPath)
	return string(b)
}

// Stop sends SIGTERM and waits for berthd to exit.
func (d *Daemon) Stop(t testing.TB) { d.signal(t, syscall.SIGTERM) }

// Kill sends SIGKILL, as a crash would.
func (d *Daemon) Kill(t testing.TB) { d.signal(t, syscall.SIGKILL) }

// Restart stops berthd (gracefully or not) and starts it again on the same dirs.
func (d *Daemon) Restart(t testing.TB, crash bool) {
	t.Helper()
	if crash {
		d.Kill(t)
	} else {
		d.Stop(t)
	}
	d.start(t)
}

func (d *Daemon) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	d.closeClients()
	_ = d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
		t.Errorf("berthd did not exit on %v within 30s", sig)
	}
	d.cmd = nil
}

func (d *Daemon) closeClients() {
	if d.Runtime != nil {
		_ = d.Runtime.Close(context.Background())
		d.Runtime = nil
	}
	if d.Images != nil {
		_ = d.Images.Close(context.Background())
		d.Images = nil
	}
}

// teardown stops berthd and removes whatever it or its children left behind:
// processes started from its dirs, mounts under its dirs, cgroups under its
// cgroup parent. It never deletes through a live mount.
func (d *Daemon) teardown(t testing.TB) {
	if d.cmd != nil {
		d.signal(t, syscall.SIGTERM)
	}
	// Every test removes what it made (runPod's cleanup runs before this
	// one), so anything left now is a leak of berth's.
	if !t.Failed() && !d.AllowLeftovers {
		if left := d.Leftovers(); len(left) > 0 {
			t.Errorf("berthd left behind after the test: %v", left)
		}
	}
	if t.Failed() {
		t.Logf("berthd log:\n%s", d.Log())
	}
	killProcessesUnder(d.Dir)
	killCgroupProcesses(d.CgroupParent)
	for _, m := range MountsUnder(d.Dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", m, err)
		}
	}
	removeCgroups(d.CgroupParent)
	if left := MountsUnder(d.Dir); len(left) > 0 {
		t.Errorf("mounts still present under %s, not removing it: %v", d.Dir, left)
		return
	}
	if err := os.RemoveAll(d.Dir); err != nil {
		t.Errorf("remove %s: %v", d.Dir, err)
	}
}

// Leftovers describes what berthd left on the machine: processes started
// from its dirs, mounts under them, and non-empty cgroups or cgroups with
// processes under its cgroup parent.
func (d *Daemon) Leftovers() []string {
	var out []string
	for _, pid := range ProcessesUnder(d.Dir) {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		out = append(out, fmt.Sprintf("process %d (%s)", pid, strings.ReplaceAll(string(cmd), "\x00", " ")))
	}
	for _, m := range MountsUnder(d.Dir) {
		out = append(out, "mount "+m)
	}
	for _, dir := range cgroupDirs(d.CgroupParent) {
		// The parent itself may stay (cgroupmgr made it for the pods).
		if filepath.Base(dir) != filepath.Base(d.CgroupParent) {
			out = append(out, "cgroup "+dir)
		}
	}
	return out
}

// cgroupDirs lists the cgroup dirs at or below parent in every hierarchy.
func cgroupDirs(parent string) []string {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	var dirs []string
	for _, root := range roots {
		_ = filepath.WalkDir(filepath.Join(root, parent), func(p string, de os.DirEntry, err error) error {
			if err == nil && de.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	return dirs
}

// killCgroupProcesses kills what runs in cgroups under parent: container
// processes whose monitor is gone.
func killCgroupProcesses(parent string) {
	for _, dir := range cgroupDirs(parent) {
		b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			var pid int
			if _, err := fmt.Sscanf(f, "%d", &pid); err == nil && pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// MountsUnder lists mount points at or below dir, deepest first.
func MountsUnder(dir string) []string {
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return nil
	}
	out := make([]string, 0, len(infos))
	for _, m := range infos {
		out = append(out, m.Mountpoint)
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// ProcessesUnder lists pids whose command line or executable mentions dir:
// berthd's monitors and anything started from the test's binaries.
func ProcessesUnder(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.Contains(string(cmdline), dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func killProcessesUnder(dir string) {
	for _, pid := range ProcessesUnder(dir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// removeCgroups removes the cgroup parent in every v1 hierarchy and the
// unified one, children first. Processes in it were killed above.
func removeCgroups(parent string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, root := range roots {
		base := filepath.Join(root, parent)
		var dirs []string
		_ = filepath.WalkDir(base, func(p string, de os.DirEntry, err error) error {
			if err == nil && de.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, p := range dirs {
			_ = syscall.Rmdir(p)
		}
	}
}
