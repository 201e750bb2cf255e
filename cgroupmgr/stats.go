package cgroupmgr

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1"

	"github.com/berth-dev/berth/errdefs"
)

var (
	errEINVAL error = syscall.EINVAL
	errERANGE error = syscall.ERANGE
	errEBUSY  error = syscall.EBUSY
)

// Stats is a snapshot of a cgroup's usage. Limits of 0 mean unlimited.
type Stats struct {
	CPUUsageNanos  uint64
	CPUUserNanos   uint64
	CPUSystemNanos uint64

	MemoryUsageBytes uint64
	// MemoryWorkingSetBytes is usage minus inactive file pages (floor 0), the
	// figure kubelet evicts on.
	MemoryWorkingSetBytes uint64
	MemoryRSSBytes        uint64
	MemoryLimitBytes      uint64

	PidsCurrent uint64
	PidsLimit   uint64

	OOMKillCount uint64
	Timestamp    time.Time
}

// v1 reports "unlimited" as the largest page-aligned counter; anything at
// or above this is treated as no limit.
const v1Unlimited = uint64(1) << 62

// Stats reads the cgroup's usage. The files are read directly rather than
// through the library's Stat, which reads every controller's every file in
// goroutines: kubelet asks for this per container every few seconds.
// Controllers that are not mounted (or not enabled, on v2) read as zero.
func (c *Cgroup) Stats(ctx context.Context) (*Stats, error) {
	ok, err := c.mgr.exists(c.path)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("cgroupmgr: cgroup %s: %w", c.path, errdefs.ErrNotFound)
	}
	st := &Stats{Timestamp: time.Now()}
	if c.mgr.mode == ModeV2 {
		err = c.statsV2(st)
	} else {
		err = c.statsV1(st)
	}
	if err != nil {
		return nil, fmt.Errorf("cgroupmgr: stats of %s: %w", c.path, err)
	}
	return st, nil
}

func (c *Cgroup) statsV1(st *Stats) error {
	if d := c.dir(cgroup1.Cpuacct); d != "" {
		var err error
		if st.CPUUsageNanos, err = readUintOpt(filepath.Join(d, "cpuacct.usage")); err != nil {
			return err
		}
		// cpuacct.usage_user/_sys (Linux 4.6) are in nanoseconds;
		// cpuacct.stat is in USER_HZ ticks.
		u, errU := readUint(filepath.Join(d, "cpuacct.usage_user"))
		s, errS := readUint(filepath.Join(d, "cpuacct.usage_sys"))
		if errU == nil && errS == nil {
			st.CPUUserNanos, st.CPUSystemNanos = u, s
		} else {
			kv, err := readKV(filepath.Join(d, "cpuacct.stat"))
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			const userHZ = 100 // fixed by the kernel ABI on every Linux architecture Go supports
			st.CPUUserNanos = kv["user"] * (1e9 / userHZ)
			st.CPUSystemNanos = kv["system"] * (1e9 / userHZ)
		}
	}
	if d := c.dir(cgroup1.Memory); d != "" {
		var err error
		if st.MemoryUsageBytes, err = readUintOpt(filepath.Join(d, "memory.usage_in_bytes")); err != nil {
			return err
		}
		if st.MemoryLimitBytes, err = readUintOpt(filepath.Join(d, "memory.limit_in_bytes")); err != nil {
			return err
		}
		if st.MemoryLimitBytes >= v1Unlimited {
			st.MemoryLimitBytes = 0
		}
		kv, err := readKV(filepath.Join(d, "memory.stat"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		// total_* include descendants, matching usage_in_bytes.
		st.MemoryRSSBytes = kv["total_rss"]
		st.MemoryWorkingSetBytes = workingSet(st.MemoryUsageBytes, kv["total_inactive_file"])
		oc, err := readKV(filepath.Join(d, "memory.oom_control"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		st.OOMKillCount = oc["oom_kill"]
	}
	if d := c.dir(cgroup1.Pids); d != "" {
		return readPids(d, st)
	}
	return nil
}

func (c *Cgroup) statsV2(st *Stats) error {
	d := c.dir("")
	cpu, err := readKV(filepath.Join(d, "cpu.stat"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	st.CPUUsageNanos = cpu["usage_usec"] * 1000
	st.CPUUserNanos = cpu["user_usec"] * 1000
	st.CPUSystemNanos = cpu["system_usec"] * 1000
	if st.MemoryUsageBytes, err = readUintOpt(filepath.Join(d, "memory.current")); err != nil {
		return err
	}
	if st.MemoryLimitBytes, err = readUintOpt(filepath.Join(d, "memory.max")); err != nil {
		return err
	}
	ms, err := readKV(filepath.Join(d, "memory.stat"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	st.MemoryRSSBytes = ms["anon"]
	st.MemoryWorkingSetBytes = workingSet(st.MemoryUsageBytes, ms["inactive_file"])
	ev, err := readKV(filepath.Join(d, "memory.events"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	st.OOMKillCount = ev["oom_kill"]
	return readPids(d, st)
}

func readPids(d string, st *Stats) error {
	var err error
	if st.PidsCurrent, err = readUintOpt(filepath.Join(d, "pids.current")); err != nil {
		return err
	}
	st.PidsLimit, err = readUintOpt(filepath.Join(d, "pids.max"))
	return err
}

func workingSet(usage, inactiveFile uint64) uint64 {
	if inactiveFile > usage {
		return 0
	}
	return usage - inactiveFile
}

// OOMKillCount returns how many processes the kernel's OOM killer has killed
// in this cgroup (v1: memory.oom_control oom_kill, Linux 4.13; v2:
// memory.events oom_kill).
func (c *Cgroup) OOMKillCount() (uint64, error) {
	var path string
	if c.mgr.mode == ModeV2 {
		path = filepath.Join(c.dir(""), "memory.events")
	} else {
		d := c.dir(cgroup1.Memory)
		if d == "" {
			return 0, fmt.Errorf("cgroupmgr: no memory hierarchy: %w", errdefs.ErrNotImplemented)
		}
		path = filepath.Join(d, "memory.oom_control")
	}
	kv, err := readKV(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("cgroupmgr: %s: %w", path, errdefs.ErrNotFound)
		}
		return 0, fmt.Errorf("cgroupmgr: %w", err)
	}
	n, ok := kv["oom_kill"]
	if !ok {
		return 0, fmt.Errorf("cgroupmgr: no oom_kill in %s (kernel older than 4.13?): %w", path, errdefs.ErrNotImplemented)
	}
	return n, nil
}

// readUint reads a one-number file; "max" reads as 0 (unlimited).
func readUint(path string) (uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return parseUint(string(data))
}

// readUintOpt is readUint with a missing file (controller not enabled)
// read as 0.
func readUintOpt(path string) (uint64, error) {
	v, err := readUint(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

func parseUint(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	if s == "max" {
		return 0, nil
	}
	return strconv.ParseUint(s, 10, 64)
}

// readKV reads a "key value" per line file such as memory.stat. Lines that
// are not a key and an unsigned number are skipped: kernels add fields.
func readKV(path string) (map[string]uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	kv, err := parseKV(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return kv, nil
}

func parseKV(data []byte) (map[string]uint64, error) {
	out := make(map[string]uint64)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		if v, err := parseUint(f[1]); err == nil {
			out[f[0]] = v
		}
	}
	return out, sc.Err()
}
