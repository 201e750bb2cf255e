package cgroupmgr

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/errdefs"
)

// Conventions for values in specs.LinuxResources, applied on v1 and v2 alike:
//   - nil leaves the current value alone, and so does 0 for cpu shares, cpu
//     quota and cpu period (CRI's "not specified");
//   - memory limit or memory+swap of 0 is treated as unset (CRI uses 0 for
//     "not specified"; a literal 0-byte limit would kill the group at once);
//   - memory limit, memory+swap and cpu quota of -1 mean unlimited;
//   - pids limit: > 0 a limit, < 0 unlimited, 0 unchanged (as runc does).
//   - hugetlb limits on a host without a hugetlb hierarchy are ignored: kubelet
//     sends one entry per page size the node has, whether the pod asked for
//     huge pages or not, and failing every pod would help nobody.

// normalizeResources returns res with the CRI's zero-means-unset values
// (cpu shares, quota and period) turned into nil, so that no kernel file is
// written with a 0 it would refuse or misread. res itself is not changed.
func normalizeResources(res *specs.LinuxResources) *specs.LinuxResources {
	c := res.CPU
	if c == nil {
		return res
	}
	zero := func(p *uint64) bool { return p != nil && *p == 0 }
	if !zero(c.Shares) && !zero(c.Period) && (c.Quota == nil || *c.Quota != 0) {
		return res
	}
	out, cpu := *res, *c
	if zero(cpu.Shares) {
		cpu.Shares = nil
	}
	if zero(cpu.Period) {
		cpu.Period = nil
	}
	if cpu.Quota != nil && *cpu.Quota == 0 {
		cpu.Quota = nil
	}
	out.CPU = &cpu
	return &out
}

// validateResources rejects what no host can apply.
func validateResources(mode string, res *specs.LinuxResources) error {
	if len(res.Unified) > 0 && mode != ModeV2 {
		return fmt.Errorf("cgroupmgr: unified (cgroup v2) resources on a %s host: %w", mode, errdefs.ErrInvalidArgument)
	}
	for k := range res.Unified {
		if err := validateUnifiedKey(k); err != nil {
			return err
		}
	}
	if m := res.Memory; m != nil {
		l, s := setValue(m.Limit), setValue(m.Swap)
		if l != nil && *l < -1 || s != nil && *s < -1 {
			return fmt.Errorf("cgroupmgr: negative memory limit: %w", errdefs.ErrInvalidArgument)
		}
		if l != nil && s != nil && *s != -1 && (*l == -1 || *s < *l) {
			return fmt.Errorf("cgroupmgr: memory+swap limit %d below memory limit %d: %w", *s, *l, errdefs.ErrInvalidArgument)
		}
		if m.Swappiness != nil && *m.Swappiness > 100 {
			return fmt.Errorf("cgroupmgr: swappiness %d above 100: %w", *m.Swappiness, errdefs.ErrInvalidArgument)
		}
	}
	if c := res.CPU; c != nil && c.Quota != nil && *c.Quota < -1 {
		return fmt.Errorf("cgroupmgr: cpu quota %d: %w", *c.Quota, errdefs.ErrInvalidArgument)
	}
	return nil
}

// validateUnifiedKey accepts a plain cgroup2 interface file name. Files that
// move or kill processes are not resources and are refused.
func validateUnifiedKey(k string) error {
	bad := k == "" || strings.ContainsAny(k, "/\x00") || k == "." || k == ".." || !strings.Contains(k, ".")
	switch k {
	case "cgroup.procs", "cgroup.threads", "cgroup.kill", "cgroup.freeze", "cgroup.type", "cgroup.subtree_control":
		bad = true
	}
	if bad {
		return fmt.Errorf("cgroupmgr: unified key %q is not a settable cgroup v2 file: %w", k, errdefs.ErrInvalidArgument)
	}
	return nil
}

// setValue treats a pointer to 0 as unset.
func setValue(p *int64) *int64 {
	if p == nil || *p == 0 {
		return nil
	}
	return p
}

func (c *Cgroup) updateV1(res *specs.LinuxResources) error {
	if c.v1 == nil {
		return fmt.Errorf("cgroupmgr: %s was not created or loaded: %w", c.path, errdefs.ErrFailedPrecondition)
	}
	// The library handles cpu (shares, cfs and rt), cpuset (with parents
	// inheriting cpus and mems), blkio, devices, hugetlb and net_*; memory
	// and pids are done here because their ordering and "unlimited" rules
	// need more care than the library gives them.
	lib := *res
	lib.Memory, lib.Pids, lib.Unified = nil, nil, nil
	for _, s := range c.v1.Subsystems() {
		u, ok := s.(interface {
			Update(path string, res *specs.LinuxResources) error
		})
		if !ok {
			continue
		}
		// The cpuset controller's Update re-reads cpus and mems of every
		// ancestor (the costliest part of a create); the group got them
		// when it was made, so skip it unless they change.
		if s.Name() == cgroup1.Cpuset && (res.CPU == nil || res.CPU.Cpus == "" && res.CPU.Mems == "") {
			continue
		}
		if err := u.Update(c.path, &lib); err != nil {
			return wrapWriteErr(c.path, fmt.Errorf("%s: %w", s.Name(), err))
		}
	}
	if err := c.setMemoryV1(res.Memory); err != nil {
		return err
	}
	return c.setPidsV1(res.Pids)
}

func (c *Cgroup) setPidsV1(p *specs.LinuxPids) error {
	if p == nil || p.Limit == nil || *p.Limit == 0 {
		return nil
	}
	dir := c.dir(cgroup1.Pids)
	if dir == "" {
		return fmt.Errorf("cgroupmgr: pids limit asked but no pids hierarchy is mounted: %w", errdefs.ErrNotImplemented)
	}
	v := "max"
	if *p.Limit > 0 {
		v = strconv.FormatInt(*p.Limit, 10)
	}
	return writeFile(c.path, dir, "pids.max", v)
}

func (c *Cgroup) setMemoryV1(m *specs.LinuxMemory) error {
	if m == nil {
		return nil
	}
	dir := c.dir(cgroup1.Memory)
	if dir == "" {
		if m.Limit != nil || m.Swap != nil {
			return fmt.Errorf("cgroupmgr: memory limit asked but no memory hierarchy is mounted: %w", errdefs.ErrNotImplemented)
		}
		return nil
	}
	limit, swap := setValue(m.Limit), setValue(m.Swap)
	_, err := os.Stat(filepath.Join(dir, "memory.memsw.limit_in_bytes"))
	hasMemsw := err == nil
	if !hasMemsw {
		// Without swap accounting the kernel cannot limit memory+swap. That
		// only matters when the caller asked for something other than "no
		// swap beyond the memory limit" or "unlimited".
		if swap != nil && *swap != -1 && (limit == nil || *swap != *limit) {
			return fmt.Errorf("cgroupmgr: memory+swap limit %d asked but the kernel has no swap accounting (no memory.memsw.* files): %w", *swap, errdefs.ErrInvalidArgument)
		}
		swap = nil
	}
	if limit != nil && swap == nil && hasMemsw {
		curL, err1 := readInt(filepath.Join(dir, "memory.limit_in_bytes"))
		curS, err2 := readInt(filepath.Join(dir, "memory.memsw.limit_in_bytes"))
		if err := errors.Join(err1, err2); err != nil {
			return fmt.Errorf("cgroupmgr: read memory limits of %s: %w", c.path, err)
		}
		// Raising the limit above a memsw limit would be refused. When the
		// group had "no swap" (memsw == limit), keep that policy at the new
		// limit; unlimited memory likewise takes memsw along.
		if *limit == -1 || curS == curL && *limit > curS {
			swap = limit
		}
	}
	// The kernel keeps memory.limit <= memory.memsw.limit at every write, so
	// the order matters: raise memsw first when the new limit exceeds the
	// current memsw, else lower the limit first.
	writes := []struct {
		file string
		v    *int64
	}{{"memory.limit_in_bytes", limit}, {"memory.memsw.limit_in_bytes", swap}}
	if limit != nil && swap != nil {
		cur, err := readInt(filepath.Join(dir, "memory.memsw.limit_in_bytes"))
		if err != nil {
			return fmt.Errorf("cgroupmgr: read memsw limit of %s: %w", c.path, err)
		}
		if unlimitedAsMax(*limit) > cur {
			writes[0], writes[1] = writes[1], writes[0]
		}
	}
	for _, w := range writes {
		if w.v != nil {
			if err := writeFile(c.path, dir, w.file, strconv.FormatInt(*w.v, 10)); err != nil {
				return err
			}
		}
	}
	if r := setValue(m.Reservation); r != nil {
		if err := writeFile(c.path, dir, "memory.soft_limit_in_bytes", strconv.FormatInt(*r, 10)); err != nil {
			return err
		}
	}
	if m.Swappiness != nil {
		if err := writeFile(c.path, dir, "memory.swappiness", strconv.FormatUint(*m.Swappiness, 10)); err != nil {
			return err
		}
	}
	if m.DisableOOMKiller != nil {
		v := "0"
		if *m.DisableOOMKiller {
			v = "1"
		}
		if err := writeFile(c.path, dir, "memory.oom_control", v); err != nil {
			return err
		}
	}
	if m.KernelTCP != nil {
		if err := writeFile(c.path, dir, "memory.kmem.tcp.limit_in_bytes", strconv.FormatInt(*m.KernelTCP, 10)); err != nil {
			return err
		}
	}
	// m.Kernel (kmem.limit_in_bytes) is deprecated in the OCI spec and
	// refused by current kernels; it is ignored.
	return nil
}

func unlimitedAsMax(v int64) int64 {
	if v == -1 {
		return math.MaxInt64
	}
	return v
}

// v2write is one extra interface file write on v2.
type v2write struct{ file, value string }

// toV2Resources converts OCI resources for the cgroup2 library and returns
// the writes the library gets wrong ("unlimited" values, which the kernel
// accepts only as "max").
func toV2Resources(res *specs.LinuxResources) (*cgroup2.Resources, []v2write, error) {
	r := cgroup2.ToResources(res)
	r.Devices = res.Devices // ToResources drops them
	var extra []v2write
	if c := res.CPU; c != nil && r.CPU != nil {
		switch {
		case c.Quota != nil && *c.Quota < 0:
			r.CPU.Max = cgroup2.NewCPUMax(nil, c.Period) // "max <period>"
		case c.Quota != nil:
			r.CPU.Max = cgroup2.NewCPUMax(c.Quota, c.Period) // default period when nil
		}
	}
	if m := res.Memory; m != nil {
		limit, swap := setValue(m.Limit), setValue(m.Swap)
		r.Memory = &cgroup2.Memory{Low: setValue(m.Reservation)}
		switch {
		case limit == nil:
		case *limit == -1:
			extra = append(extra, v2write{"memory.max", "max"})
		default:
			r.Memory.Max = limit
		}
		// OCI's swap is memory+swap; v2's memory.swap.max is swap alone.
		switch {
		case swap == nil:
		case *swap == -1:
			extra = append(extra, v2write{"memory.swap.max", "max"})
		case limit == nil || *limit == -1:
			return nil, nil, fmt.Errorf("cgroupmgr: memory+swap limit %d without a memory limit: %w", *swap, errdefs.ErrInvalidArgument)
		default:
			s := *swap - *limit
			r.Memory.Swap = &s
		}
	}
	return r, extra, nil
}

func (c *Cgroup) updateV2(res *specs.LinuxResources) error {
	if c.v2 == nil {
		return fmt.Errorf("cgroupmgr: %s was not created or loaded: %w", c.path, errdefs.ErrFailedPrecondition)
	}
	r, extra, err := toV2Resources(res)
	if err != nil {
		return err
	}
	if ctrls := r.EnabledControllers(); len(ctrls) > 0 {
		if err := c.v2.ToggleControllers(ctrls, cgroup2.Enable); err != nil {
			return fmt.Errorf("cgroupmgr: enable controllers %v for %s: %w", ctrls, c.path, err)
		}
	}
	if err := c.v2.Update(r); err != nil {
		return wrapWriteErr(c.path, err)
	}
	if err := c.writeV2Extra(extra); err != nil {
		return err
	}
	return c.writeUnified(res.Unified)
}

func (c *Cgroup) writeV2Extra(extra []v2write) error {
	for _, w := range extra {
		if err := writeFile(c.path, c.dir(""), w.file, w.value); err != nil {
			return err
		}
	}
	return nil
}

// writeUnified writes the CRI "unified" map: cgroup v2 file name → value.
// A key of a controller not yet enabled for this group enables it in the
// ancestors first, as runc does.
func (c *Cgroup) writeUnified(u map[string]string) error {
	dir := c.dir("")
	for k, v := range u {
		if err := validateUnifiedKey(k); err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(dir, k)); errors.Is(err, os.ErrNotExist) {
			ctrl, _, _ := strings.Cut(k, ".")
			if ctrl != "cgroup" && c.v2 != nil {
				if err := c.v2.ToggleControllers([]string{ctrl}, cgroup2.Enable); err != nil {
					return fmt.Errorf("cgroupmgr: unified key %q: cannot enable controller %q: %w: %w", k, ctrl, errdefs.ErrInvalidArgument, err)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, k)); errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("cgroupmgr: unified key %q: no such file in %s: %w", k, c.path, errdefs.ErrInvalidArgument)
			}
		}
		if err := writeFile(c.path, dir, k, v); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(cg, dir, file, value string) error {
	if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0); err != nil {
		return wrapWriteErr(cg, fmt.Errorf("write %q to %s: %w", value, file, err))
	}
	return nil
}

// wrapWriteErr gives kernel refusals an error kind: EINVAL and ERANGE mean
// the value was not acceptable, ENOENT that the cgroup or file is gone.
func wrapWriteErr(cg string, err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("cgroupmgr: %s: %w: %w", cg, errdefs.ErrNotFound, err)
	case errors.Is(err, errEINVAL), errors.Is(err, errERANGE), errors.Is(err, errEBUSY):
		return fmt.Errorf("cgroupmgr: %s: %w: %w", cg, errdefs.ErrInvalidArgument, err)
	default:
		return fmt.Errorf("cgroupmgr: %s: %w", cg, err)
	}
}

func readInt(path string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(data))
	if s == "max" {
		return math.MaxInt64, nil
	}
	return strconv.ParseInt(s, 10, 64)
}
