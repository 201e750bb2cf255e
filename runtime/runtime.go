// Package runtime is berth's built-in low-level container runtime, seen from
// berthd: it runs OCI runtime specs as containers parented by a per-pod
// monitor process (runtime/monitor, inside cmd/berth-shim), and execs into
// them through the shim's exec entry.
//
// Layout under Config.StateDir:
//
//	pods/<podID>/        the pod monitor's dir: monitor.sock, monitor.log,
//	                     pidns (the pinned shared pid namespace, if any)
//	containers/<id>/     the container's bundle: config.json, exec.fifo,
//	                     meta.json (written here), state.json (written by
//	                     the monitor at every state change)
//
// Recovery contract: nothing lives only in berthd's memory. A new Runtime on
// the same StateDir finds every container from containers/*/meta.json, asks
// its pod's monitor over the socket, and falls back to state.json when the
// monitor is gone; a container whose monitor died before recording its exit
// is reported stopped with Reason "Unknown".
package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/runtime/monitor"
)

// Config configures a Runtime.
type Config struct {
	// StateDir holds pod monitor dirs and container bundles (tmpfs, e.g.
	// /run/berth/runtime: nothing in it survives a reboot, as no container does).
	StateDir string
	// ShimPath is the berth-shim binary.
	ShimPath string
	// MonitorPath, if set, is a binary that runs the pod monitor as
	// `MONITOR monitor --dir ... --shim SHIMPATH` (monitor.Main): a build
	// without cgo and without the container code is smaller than
	// berth-shim, and its memory is paid once per pod. Default: ShimPath.
	MonitorPath string
	// Cgroups makes container cgroups; nil runs containers in the monitor's
	// cgroup (tests only).
	Cgroups CgroupManager
	// Handlers are the extra OCI runtimes by handler name (RuntimeClass);
	// the built-in runtime is handler "" (DefaultHandler).
	Handlers map[string]Handler
}

// CgroupManager is what the runtime needs from cgroupmgr. Wrap a
// *cgroupmgr.Manager with CgroupsFrom.
type CgroupManager interface {
	// Create makes the cgroup at path with res.
	Create(ctx context.Context, path string, res *specs.LinuxResources) (Cgroup, error)
	// Load opens an existing cgroup; a missing one is errdefs.ErrNotFound.
	Load(ctx context.Context, path string) (Cgroup, error)
}

// Cgroup is one container cgroup.
type Cgroup interface {
	AddProc(pid int) error
	Update(res *specs.LinuxResources) error
	// OOMKillCount is how many processes the kernel OOM-killed in it.
	OOMKillCount() (uint64, error)
	// Freeze stops its processes; Thaw resumes them; Frozen tells which.
	Freeze() error
	Thaw() error
	Frozen() (bool, error)
	// Delete kills what is left in the cgroup and removes it.
	Delete(ctx context.Context) error
}

// CgroupSource is a cgroup manager whose methods return a concrete cgroup
// type, as cgroupmgr's do.
type CgroupSource[C Cgroup] interface {
	Create(ctx context.Context, path string, res *specs.LinuxResources) (C, error)
	Load(ctx context.Context, path string) (C, error)
}

// CgroupsFrom adapts m (e.g. a *cgroupmgr.Manager) to CgroupManager.
func CgroupsFrom[C Cgroup, M CgroupSource[C]](m M) CgroupManager {
	return cgroupAdapter[C, M]{m}
}

type cgroupAdapter[C Cgroup, M CgroupSource[C]] struct{ m M }

func (a cgroupAdapter[C, M]) Create(ctx context.Context, path string, res *specs.LinuxResources) (Cgroup, error) {
	c, err := a.m.Create(ctx, path, res)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (a cgroupAdapter[C, M]) Load(ctx context.Context, path string) (Cgroup, error) {
	c, err := a.m.Load(ctx, path)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Runtime runs containers. What it knows is on disk and in the monitors;
// in memory it only keeps waits for running containers' exits (exits), so
// any number of Runtime values (or berthd restarts) see the same truth.
type Runtime struct {
	cfg   Config
	exits exitWatches
	// shimExe is a sealed in-memory copy of berth-shim, shared by every
	// container init and exec entry started through this Runtime: they must
	// run from a sealed copy (CVE-2019-5736), and finding themselves already
	// in one spares each of them copying the binary and exec'ing again. Nil
	// if it could not be made; the shim then makes its own copy.
	shimExe *os.File
	// handlers are the configured OCI runtimes, read-only after New.
	handlers map[string]*handler
}

// New returns a Runtime. It makes the state dirs.
func New(cfg Config) (*Runtime, error) {
	if !filepath.IsAbs(cfg.StateDir) {
		return nil, fmt.Errorf("runtime state dir %q is not absolute: %w", cfg.StateDir, errdefs.ErrInvalidArgument)
	}
	if cfg.ShimPath == "" {
		return nil, fmt.Errorf("runtime: no berth-shim path: %w", errdefs.ErrInvalidArgument)
	}
	if _, err := os.Stat(cfg.ShimPath); err != nil {
		return nil, fmt.Errorf("runtime: berth-shim: %w", err)
	}
	for _, d := range []string{cfg.StateDir, filepath.Join(cfg.StateDir, "pods"), filepath.Join(cfg.StateDir, "containers")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	// A user-namespace container's root (an unprivileged host uid) must
	// reach its idmapped rootfs in its bundle: the dirs on the way are
	// searchable, not listable; the files in them stay 0600.
	for _, d := range []string{cfg.StateDir, filepath.Join(cfg.StateDir, "containers")} {
		if err := os.Chmod(d, 0o711); err != nil {
			return nil, err
		}
	}
	hs, err := loadHandlers(cfg.StateDir, cfg.Handlers)
	if err != nil {
		return nil, err
	}
	r := &Runtime{cfg: cfg, handlers: hs}
	r.exits.ctx, r.exits.cancel = context.WithCancel(context.Background())
	exe, err := sealedCopy(cfg.ShimPath)
	if err != nil {
		klog.ErrorS(err, "No shared sealed copy of berth-shim; each container start will copy it")
	} else {
		r.shimExe = exe
	}
	return r, nil
}

// Close releases what the Runtime holds open (the sealed shim copy, the
// exit watches' connections to the monitors). Pod
// monitors and containers are not affected: they outlive berthd.
func (r *Runtime) Close() error {
	r.exits.cancel()
	if r.shimExe == nil {
		return nil
	}
	err := r.shimExe.Close()
	r.shimExe = nil
	return err
}

// sealedCopy copies the file at path into a memfd sealed against any change.
func sealedCopy(path string) (*os.File, error) {
	src, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	fd, err := unix.MemfdCreate("berth-shim", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	mfd := os.NewFile(uintptr(fd), "berth-shim")
	if _, err := io.Copy(mfd, src); err != nil {
		mfd.Close()
		return nil, fmt.Errorf("copy %s: %w", path, err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(mfd.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		mfd.Close()
		return nil, fmt.Errorf("seal memfd: %w", err)
	}
	return mfd, nil
}

// shimExePath is what to exec for `berth-shim init` or `exec` from this
// process (or a child of it, before exec).
func (r *Runtime) shimExePath() string {
	if r.shimExe == nil {
		return r.cfg.ShimPath
	}
	return "/proc/self/fd/" + strconv.Itoa(int(r.shimExe.Fd()))
}

// Status of a container.
type Status string

// Statuses. StatusUnknown is a container whose creation never finished
// (berthd crashed in Create); Delete cleans it up.
const (
	StatusCreated Status = monitor.StatusCreated
	StatusRunning Status = monitor.StatusRunning
	StatusStopped Status = monitor.StatusStopped
	StatusUnknown Status = "unknown"
)

// Exit reasons, as the CRI reports them.
const (
	ReasonCompleted = "Completed"
	ReasonError     = "Error"
	ReasonOOMKilled = "OOMKilled"
	ReasonUnknown   = "Unknown"
)

// MessageMonitorDied is the Message of a container whose pod monitor died
// before the container's exit could be recorded.
const MessageMonitorDied = "pod monitor died"

// unknownExitCode is reported when the exit status was lost (containerd
// uses the same value).
const unknownExitCode = 255

// State is a container's state.
type State struct {
	ID     string
	PodID  string
	Status Status
	// Pid is the container process's host pid (0 once stopped is not
	// guaranteed: it is the last pid it had).
	Pid      int
	ExitCode int
	Signal   int    // the signal that killed it, 0 if it exited
	Reason   string // for stopped containers: Completed, Error, OOMKilled, Unknown
	Message  string
	// LogPath is the CRI log file given to Create.
	LogPath    string
	CreatedAt  time.Time
	StartedAt  time.Time
	FinishedAt time.Time
}

// TermSize is a terminal size.
type TermSize struct {
	Width, Height uint16
}

// meta is what the runtime itself records per container (meta.json).
type meta struct {
	PodID      string `json:"pod_id"`
	CgroupPath string `json:"cgroup_path,omitempty"`
	LogPath    string `json:"log_path,omitempty"`
	Tty        bool   `json:"tty,omitempty"`
	Stdin      bool   `json:"stdin,omitempty"`
	StdinOnce  bool   `json:"stdin_once,omitempty"`
	// Handler and Runtime, for a container of an OCI runtime handler: the
	// runtime as it was when the container was made, so that a config
	// change does not strand it.
	Handler string              `json:"handler,omitempty"`
	Runtime *monitor.OCIRuntime `json:"runtime,omitempty"`
}

const metaFile = "meta.json"

// errBadMeta marks a meta.json that exists but cannot be read.
var errBadMeta = errors.New("unreadable container metadata")

func (r *Runtime) podDir(podID string) string {
	return filepath.Join(r.cfg.StateDir, "pods", podID)
}

func (r *Runtime) bundleDir(id string) string {
	return filepath.Join(r.cfg.StateDir, "containers", id)
}

func (r *Runtime) monitor(podID string) *monitor.Client {
	return &monitor.Client{Dir: r.podDir(podID)}
}

// validID rejects IDs that are not a single, plain path element.
func validID(kind, id string) error {
	if id == "" || len(id) > 128 || id == "." || id == ".." || strings.ContainsAny(id, "/\x00") || strings.HasPrefix(id, ".") {
		return fmt.Errorf("invalid %s ID %q: %w", kind, id, errdefs.ErrInvalidArgument)
	}
	return nil
}

func (r *Runtime) readMeta(id string) (*meta, error) {
	if err := validID("container", id); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(r.bundleDir(id), metaFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
		}
		return nil, err
	}
	m := &meta{}
	if err := json.Unmarshal(b, m); err != nil {
		return nil, fmt.Errorf("container %q: %s: %w: %w", id, metaFile, errBadMeta, err)
	}
	return m, nil
}

// Container names a container and its pod.
type Container struct {
	ID    string
	PodID string
}

// List returns every container the runtime has a bundle for (for berthd's
// reconciliation after a restart).
func (r *Runtime) List(ctx context.Context) ([]Container, error) {
	ents, err := os.ReadDir(filepath.Join(r.cfg.StateDir, "containers"))
	if err != nil {
		return nil, err
	}
	var out []Container
	for _, e := range ents {
		m, err := r.readMeta(e.Name())
		if err != nil {
			// A bundle without meta.json is a Create that never got far:
			// list it with no pod, so the caller can Delete it. So is
			// one whose meta.json is unreadable.
			if errdefs.IsNotFound(err) || errors.Is(err, errBadMeta) {
				out = append(out, Container{ID: e.Name()})
			}
			continue
		}
		out = append(out, Container{ID: e.Name(), PodID: m.PodID})
	}
	return out, nil
}
