package cgroupmgr

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/errdefs"
)

// Cgroup is one cgroup, present in every v1 hierarchy or in the unified one.
type Cgroup struct {
	path string
	mgr  *Manager
	v1   cgroup1.Cgroup   // v1 and hybrid hosts
	v2   *cgroup2.Manager // v2 hosts
}

// How long Freeze waits for the kernel to finish freezing before giving up
// (a task in uninterruptible sleep can hold a v1 freezer in FREEZING).
const freezeTimeout = 5 * time.Second

// How long Delete waits for killed processes to leave and for rmdir to
// succeed, when ctx has no deadline of its own.
const deleteTimeout = 10 * time.Second

// Path returns the cgroup path, e.g. "/kubepods/pod1/ctr1".
func (c *Cgroup) Path() string { return c.path }

// dir returns the cgroup's directory in the hierarchy of controller name
// (v1), or the unified directory (v2); "" if that hierarchy is not mounted.
func (c *Cgroup) dir(name cgroup1.Name) string {
	if c.mgr.mode == ModeV2 {
		return filepath.Join(c.mgr.v2mount, c.path)
	}
	for _, s := range c.mgr.v1subsystems {
		if s.Name() == name {
			return v1dir(s, c.path)
		}
	}
	return ""
}

// unifiedDir is the cgroup's directory in the unified hierarchy (v2 and
// hybrid hosts), else "".
func (c *Cgroup) unifiedDir() string {
	if c.mgr.v2mount == "" {
		return ""
	}
	return filepath.Join(c.mgr.v2mount, c.path)
}

// AddProc moves process pid (all its threads) into the cgroup in every
// hierarchy.
func (c *Cgroup) AddProc(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("cgroupmgr: pid %d: %w", pid, errdefs.ErrInvalidArgument)
	}
	var err error
	switch {
	case c.v2 != nil:
		err = c.v2.AddProc(uint64(pid))
	case c.v1 != nil:
		err = c.v1.AddProc(uint64(pid))
	default:
		return fmt.Errorf("cgroupmgr: %s was not created or loaded: %w", c.path, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("cgroupmgr: add pid %d to %s: %w: %w", pid, c.path, errdefs.ErrNotFound, err)
		}
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cgroupmgr: add pid %d to %s: cgroup gone: %w: %w", pid, c.path, errdefs.ErrNotFound, err)
		}
		return fmt.Errorf("cgroupmgr: add pid %d to %s: %w", pid, c.path, err)
	}
	if c.mgr.mode == ModeHybrid {
		// The mirror in the unified hierarchy; absent if another program
		// made the cgroup, which is no reason to fail.
		err := os.WriteFile(filepath.Join(c.unifiedDir(), "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cgroupmgr: add pid %d to %s in the unified hierarchy: %w", pid, c.path, err)
		}
	}
	return nil
}

// Procs lists the processes in the cgroup and its descendants, in every
// hierarchy, sorted and without duplicates.
func (c *Cgroup) Procs() ([]int, error) {
	found, err := c.procs()
	if err != nil {
		return nil, err
	}
	ok, err := c.mgr.exists(c.path)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("cgroupmgr: cgroup %s: %w", c.path, errdefs.ErrNotFound)
	}
	return found, nil
}

// procs is Procs that treats a missing cgroup as empty.
func (c *Cgroup) procs() ([]int, error) {
	var pids []int
	for _, d := range c.mgr.dirs(c.path) {
		err := filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					return nil // removed under us
				}
				return err
			}
			if !e.IsDir() {
				return nil
			}
			data, err := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			if err != nil {
				if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENODEV) {
					return nil
				}
				return err
			}
			got, err := parsePids(data)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			pids = append(pids, got...)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("cgroupmgr: list processes of %s: %w", c.path, err)
		}
	}
	slices.Sort(pids)
	return slices.Compact(pids), nil
}

func parsePids(data []byte) ([]int, error) {
	var out []int
	for _, f := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("bad pid %q: %w", f, err)
		}
		out = append(out, pid)
	}
	return out, nil
}

// Update applies res to the cgroup. Fields left nil are left as they are.
func (c *Cgroup) Update(res *specs.LinuxResources) error {
	if res == nil {
		return nil
	}
	res = normalizeResources(res)
	if err := validateResources(c.mgr.mode, res); err != nil {
		return err
	}
	if c.mgr.mode == ModeV2 {
		return c.updateV2(res)
	}
	return c.updateV1(res)
}

// Freeze stops every process in the cgroup (and its descendants) and waits,
// up to freezeTimeout, until the kernel reports them frozen.
func (c *Cgroup) Freeze() error { return c.setFrozen(true, freezeTimeout) }

// Thaw resumes the cgroup's processes.
func (c *Cgroup) Thaw() error { return c.setFrozen(false, freezeTimeout) }

// Frozen tells whether the cgroup is frozen or being frozen (anything but
// thawed): its processes do not run, and a signal reaches them only once
// they are thawed. A cgroup without a freezer is never frozen.
func (c *Cgroup) Frozen() (bool, error) {
	dir := c.dir(cgroup1.Freezer)
	if dir == "" {
		return false, nil
	}
	file, thawed := "freezer.state", "THAWED"
	if c.mgr.mode == ModeV2 {
		file, thawed = "cgroup.freeze", "0"
	}
	data, err := os.ReadFile(filepath.Join(dir, file))
	if errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("cgroupmgr: %s: %w", c.path, errdefs.ErrNotFound)
	}
	if err != nil {
		return false, fmt.Errorf("cgroupmgr: read freezer state of %s: %w", c.path, err)
	}
	return strings.TrimSpace(string(data)) != thawed, nil
}

func (c *Cgroup) setFrozen(frozen bool, timeout time.Duration) error {
	var file, want, value string
	dir := c.dir(cgroup1.Freezer)
	switch {
	case dir == "":
		return fmt.Errorf("cgroupmgr: no freezer hierarchy: %w", errdefs.ErrNotImplemented)
	case c.mgr.mode == ModeV2:
		file, value, want = "cgroup.freeze", "0", "frozen 0"
		if frozen {
			value, want = "1", "frozen 1"
		}
	default:
		file, value = "freezer.state", "THAWED"
		if frozen {
			value = "FROZEN"
		}
		want = value
	}
	state := func() (bool, error) {
		if c.mgr.mode == ModeV2 {
			data, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
			if err != nil {
				return false, err
			}
			return slices.Contains(strings.Split(string(data), "\n"), want), nil
		}
		data, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			return false, err
		}
		return strings.TrimSpace(string(data)) == want, nil
	}
	deadline := time.Now().Add(timeout)
	delay := time.Millisecond
	for {
		// v1 needs the write repeated: a freeze that races with a fork can
		// leave the group in FREEZING until asked again.
		if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("cgroupmgr: freeze %s: %w", c.path, errdefs.ErrNotFound)
			}
			return fmt.Errorf("cgroupmgr: write %s of %s: %w", file, c.path, err)
		}
		ok, err := state()
		if err != nil {
			return fmt.Errorf("cgroupmgr: read freezer state of %s: %w", c.path, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			if frozen {
				// Leave it running rather than half frozen.
				_ = c.setFrozen(false, time.Second)
			}
			return fmt.Errorf("cgroupmgr: %s did not reach %q within %s: %w", c.path, want, timeout, errdefs.ErrDeadlineExceeded)
		}
		time.Sleep(delay)
		delay = min(delay*2, 50*time.Millisecond)
	}
}

// Delete kills every process left in the cgroup and its descendants, waits
// for them to go, and removes the cgroup from every hierarchy. A cgroup that
// does not exist is not an error.
func (c *Cgroup) Delete(ctx context.Context) error {
	ok, err := c.mgr.exists(c.path)
	if err != nil || !ok {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, deleteTimeout)
		defer cancel()
	}
	if err := c.killAll(ctx); err != nil {
		return err
	}
	var errs []error
	for _, d := range c.mgr.dirs(c.path) {
		if err := removeTree(ctx, d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killAll SIGKILLs every process until the cgroup tree is empty.
func (c *Cgroup) killAll(ctx context.Context) error {
	delay := time.Millisecond
	for round := 0; ; round++ {
		pids, err := c.procs()
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if round == 0 || delay >= 20*time.Millisecond {
			if err := c.killOnce(); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cgroupmgr: processes %v still in %s: %w", pids, c.path, errors.Join(errdefs.ErrDeadlineExceeded, ctx.Err()))
		case <-time.After(delay):
		}
		delay = min(delay*2, 100*time.Millisecond)
	}
}

// killOnce sends SIGKILL to every process of the tree once.
func (c *Cgroup) killOnce() error {
	if d := c.unifiedDir(); d != "" {
		// cgroup.kill (Linux 5.14) kills the whole tree atomically, forks
		// in flight included. On hybrid hosts it reaches what AddProc put
		// in the unified mirror; the v1 pass below gets anything else.
		err := os.WriteFile(filepath.Join(d, "cgroup.kill"), []byte("1"), 0)
		if err == nil && c.mgr.mode == ModeV2 {
			return nil
		}
	}
	// Freeze first so that no process forks or exits between listing and
	// killing: a frozen pid cannot be reused, and SIGKILL is delivered on
	// thaw. Without a freezer (or if it times out) kill anyway.
	frozen := c.dir(cgroup1.Freezer) != "" && c.setFrozen(true, time.Second) == nil
	pids, err := c.procs()
	if err != nil {
		return err
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("cgroupmgr: kill %d in %s: %w", pid, c.path, err)
		}
	}
	if frozen {
		if err := c.setFrozen(false, freezeTimeout); err != nil && !errors.Is(err, errdefs.ErrNotFound) {
			return err
		}
	}
	if c.mgr.mode != ModeV2 {
		// A v1 freezer delivers SIGKILL only to thawed tasks, and thawing
		// this group leaves descendants frozen on their own frozen: thaw
		// them all. (v2 kills frozen tasks.)
		return thawTree(c.dir(cgroup1.Freezer))
	}
	return nil
}

// thawTree writes THAWED to every v1 freezer group at or below dir.
func thawTree(dir string) error {
	if dir == "" {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		if !e.IsDir() {
			return nil
		}
		err = os.WriteFile(filepath.Join(p, "freezer.state"), []byte("THAWED"), 0)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("cgroupmgr: thaw %s: %w", p, err)
		}
		return nil
	})
}

// removeTree removes a cgroup directory and its descendants, deepest first.
// cgroupfs directories are removed with rmdir alone (their files cannot be
// unlinked). The kernel may answer EBUSY for a moment after the last process
// left, so that is retried until ctx ends.
func removeTree(ctx context.Context, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("cgroupmgr: read %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeTree(ctx, filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	delay := time.Millisecond
	for {
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("cgroupmgr: rmdir %s: %w", dir, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cgroupmgr: rmdir %s: %w (%w)", dir, err, errdefs.ErrDeadlineExceeded)
		case <-time.After(delay):
		}
		delay = min(delay*2, 100*time.Millisecond)
	}
}
