// Package cgroupmgr creates, configures, watches and removes the cgroups of
// pods and containers, on cgroup v1 (legacy or hybrid) and v2 (unified)
// hosts, with the cgroupfs driver (berth has no systemd driver).
//
// It is built on github.com/containerd/cgroups/v3 for hierarchy discovery,
// directory creation, cpuset inheritance, the v1 controllers' resource files,
// device rules and the v2 resource conversion. It does its own work where the
// library falls short for a runtime: bounded freezing (the library spins
// forever), memory+swap write ordering, "unlimited" values, OOM event
// channels that stop with a context, straggler killing before removal, and
// cheap stats reads (kubelet polls them for every container).
//
// Paths are absolute cgroup paths such as "/kubepods/pod1/ctr1"; the same
// path is used in every v1 hierarchy and, on v2, under the unified mount.
//
// On hybrid hosts (v1 controllers plus a cgroup2 mount) the controllers are
// used the v1 way, and each cgroup is mirrored, without resources, into the
// cgroup2 mount. Hugetlb limits are ignored where no v1 hugetlb hierarchy is
// mounted (on such a hybrid host the hugetlb controller sits in the cgroup2
// mount, where it would need processes in leaf groups only).
//
// On v2, cgroups that get controllers enabled for children must not hold
// processes themselves (the kernel's "no internal processes" rule): keep a
// pod's own processes (its monitor, its pid-namespace holder) in a leaf
// below the pod cgroup, beside the containers, not in the pod cgroup.
//
// The package does not log: it returns errors with their kinds from errdefs.
package cgroupmgr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/errdefs"
)

// Modes returned by Manager.Mode.
const (
	ModeV1     = "v1"
	ModeHybrid = "hybrid"
	ModeV2     = "v2"
)

const (
	defaultRoot   = "/sys/fs/cgroup"
	hybridUnified = "/sys/fs/cgroup/unified"
)

// Manager makes and finds cgroups on this host. It holds no mutable state
// and is safe for concurrent use.
type Manager struct {
	mode string
	// v1 and hybrid: the mounted v1 hierarchies (controllers and
	// name=systemd).
	v1subsystems []cgroup1.Subsystem
	// Where the unified hierarchy is mounted: on v2 the cgroups live there;
	// on hybrid hosts it is an extra, controller-less hierarchy that berth
	// mirrors its cgroups into (as runc does) so that /proc/<pid>/cgroup's
	// "0::" line names the container and Delete can use cgroup.kill.
	v2mount string
}

// New detects the host's cgroup mode and hierarchies.
func New() (*Manager, error) {
	switch cgroups.Mode() {
	case cgroups.Unified:
		return newV2Manager(defaultRoot), nil
	case cgroups.Legacy:
		return newV1Manager(ModeV1)
	case cgroups.Hybrid:
		// On a hybrid host the controllers live in the v1 hierarchies; the
		// cgroup2 mount beside them usually has no controllers worth using,
		// so berth manages cgroups the v1 way there.
		m, err := newV1Manager(ModeHybrid)
		if err != nil {
			return nil, err
		}
		m.v2mount = hybridUnified
		return m, nil
	default:
		return nil, fmt.Errorf("cgroupmgr: no cgroup filesystem mounted at %s: %w", defaultRoot, errdefs.ErrUnavailable)
	}
}

func newV1Manager(mode string) (*Manager, error) {
	subs, err := cgroup1.Default()
	if err != nil {
		return nil, fmt.Errorf("cgroupmgr: discover v1 hierarchies: %w", err)
	}
	if len(subs) == 0 {
		return nil, fmt.Errorf("cgroupmgr: no v1 hierarchy mounted: %w", errdefs.ErrUnavailable)
	}
	out := make([]cgroup1.Subsystem, 0, len(subs))
	for _, s := range subs {
		if s.Name() == cgroup1.Memory {
			// Recreate the memory controller so that the library tolerates
			// kernels without swap accounting (no memory.memsw.* files) and
			// without kmem files (being removed from v1 by newer kernels).
			root := filepath.Dir(s.(interface{ Path(string) string }).Path("/"))
			s = cgroup1.NewMemory(root, cgroup1.OptionalSwap(), cgroup1.IgnoreModules("kmem", "kmem.tcp"))
		}
		out = append(out, s)
	}
	return &Manager{mode: mode, v1subsystems: out}, nil
}

func newV2Manager(mount string) *Manager {
	return &Manager{mode: ModeV2, v2mount: mount}
}

// Mode reports "v1", "hybrid" or "v2".
func (m *Manager) Mode() string { return m.mode }

func (m *Manager) hierarchy() ([]cgroup1.Subsystem, error) { return m.v1subsystems, nil }

// validatePath accepts clean absolute cgroup paths below the root.
func validatePath(p string) error {
	if !strings.HasPrefix(p, "/") || filepath.Clean(p) != p || p == "/" {
		return fmt.Errorf("cgroupmgr: cgroup path %q must be absolute, clean and not the root: %w", p, errdefs.ErrInvalidArgument)
	}
	if strings.HasPrefix(p, defaultRoot+"/") {
		return fmt.Errorf("cgroupmgr: cgroup path %q must be relative to the cgroup mount, not a filesystem path: %w", p, errdefs.ErrInvalidArgument)
	}
	return nil
}

// v1dir returns where path lives in hierarchy s.
func v1dir(s cgroup1.Subsystem, path string) string {
	return s.(interface{ Path(string) string }).Path(path)
}

// exists reports whether the cgroup has a directory in any hierarchy.
func (m *Manager) exists(path string) (bool, error) {
	for _, d := range m.dirs(path) {
		if _, err := os.Lstat(d); err == nil {
			return true, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return false, fmt.Errorf("cgroupmgr: stat %s: %w", d, err)
		}
	}
	return false, nil
}

// dirs lists the cgroup's directory in every hierarchy, whether or not it exists.
func (m *Manager) dirs(path string) []string {
	if m.mode == ModeV2 {
		return []string{filepath.Join(m.v2mount, path)}
	}
	out := make([]string, 0, len(m.v1subsystems)+1)
	for _, s := range m.v1subsystems {
		out = append(out, v1dir(s, path))
	}
	if m.v2mount != "" {
		out = append(out, filepath.Join(m.v2mount, path))
	}
	return out
}

// Create makes the cgroup at path (and its parents) and applies res; if it
// exists already it is loaded and updated, so Create is idempotent. A cgroup
// this call created is removed again if applying res fails.
func (m *Manager) Create(ctx context.Context, path string, res *specs.LinuxResources) (_ *Cgroup, retErr error) {
	if err := validatePath(path); err != nil {
		return nil, err
	}
	if res == nil {
		res = &specs.LinuxResources{}
	}
	res = normalizeResources(res)
	if err := validateResources(m.mode, res); err != nil {
		return nil, err
	}
	existed, err := m.exists(path)
	if err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil && !existed {
			// Roll back on a fresh context: the caller's may be what failed.
			_ = m.Delete(context.WithoutCancel(ctx), path)
		}
	}()
	c := &Cgroup{path: path, mgr: m}
	if m.mode == ModeV2 {
		r, extra, err := toV2Resources(res)
		if err != nil {
			return nil, err
		}
		if existed {
			// Device rules are an eBPF program attached with
			// BPF_F_ALLOW_MULTI: attaching again would stack another one.
			r.Devices = nil
		}
		// NewManager makes the directory, enables the needed controllers in
		// the ancestors and writes the values; it is safe on an existing group.
		v2, err := cgroup2.NewManager(m.v2mount, path, r)
		if err != nil {
			return nil, fmt.Errorf("cgroupmgr: create %s: %w", path, err)
		}
		c.v2 = v2
		if err := c.writeV2Extra(extra); err != nil {
			return nil, err
		}
		if err := c.writeUnified(res.Unified); err != nil {
			return nil, err
		}
		return c, nil
	}
	// Make the directories first with no resources, then apply everything
	// through Update so that create and update share one code path.
	v1, err := cgroup1.New(cgroup1.StaticPath(path), &specs.LinuxResources{}, cgroup1.WithHierarchy(m.hierarchy))
	if err != nil {
		return nil, fmt.Errorf("cgroupmgr: create %s: %w", path, err)
	}
	c.v1 = v1
	if m.v2mount != "" {
		if err := os.MkdirAll(filepath.Join(m.v2mount, path), 0o755); err != nil {
			return nil, fmt.Errorf("cgroupmgr: create %s in the unified hierarchy: %w", path, err)
		}
	}
	if err := c.Update(res); err != nil {
		return nil, err
	}
	return c, nil
}

// Load finds an existing cgroup; ErrNotFound if it has no directory in any
// hierarchy.
func (m *Manager) Load(ctx context.Context, path string) (*Cgroup, error) {
	if err := validatePath(path); err != nil {
		return nil, err
	}
	ok, err := m.exists(path)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("cgroupmgr: cgroup %s: %w", path, errdefs.ErrNotFound)
	}
	c := &Cgroup{path: path, mgr: m}
	if m.mode == ModeV2 {
		v2, err := cgroup2.Load(path, cgroup2.WithMountpoint(m.v2mount))
		if err != nil {
			return nil, fmt.Errorf("cgroupmgr: load %s: %w", path, err)
		}
		c.v2 = v2
		return c, nil
	}
	v1, err := cgroup1.Load(cgroup1.StaticPath(path), cgroup1.WithHierarchy(m.hierarchy))
	if err != nil {
		if errors.Is(err, cgroup1.ErrCgroupDeleted) {
			return nil, fmt.Errorf("cgroupmgr: cgroup %s: %w", path, errdefs.ErrNotFound)
		}
		return nil, fmt.Errorf("cgroupmgr: load %s: %w", path, err)
	}
	c.v1 = v1
	return c, nil
}

// Delete kills whatever still runs in the cgroup at path and removes it;
// nil if it does not exist.
func (m *Manager) Delete(ctx context.Context, path string) error {
	if err := validatePath(path); err != nil {
		return err
	}
	c := &Cgroup{path: path, mgr: m}
	return c.Delete(ctx)
}

// Stats reads the usage of the cgroup at path without loading it first (the
// CRI stats calls name containers by path, many times a minute);
// ErrNotFound if it does not exist.
func (m *Manager) Stats(ctx context.Context, path string) (*Stats, error) {
	if err := validatePath(path); err != nil {
		return nil, err
	}
	c := &Cgroup{path: path, mgr: m}
	return c.Stats(ctx)
}
