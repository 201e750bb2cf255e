package cgroupmgr

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/containerd/cgroups/v3/cgroup1"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
)

// OOMEvents returns a channel that receives a value after the kernel's OOM
// handling ran in this cgroup (v1: under OOM, via an eventfd registered on
// memory.oom_control; v2: memory.events oom_kill went up, watched with
// inotify). Bursts coalesce into one pending value: read OOMKillCount for the
// number. The channel is closed when ctx is done or the cgroup is removed.
// No goroutine polls: the watcher sleeps in the runtime's poller.
func (c *Cgroup) OOMEvents(ctx context.Context) (<-chan struct{}, error) {
	if c.mgr.mode == ModeV2 {
		return c.oomEventsV2(ctx)
	}
	return c.oomEventsV1(ctx)
}

func (c *Cgroup) oomEventsV1(ctx context.Context) (<-chan struct{}, error) {
	dir := c.dir(cgroup1.Memory)
	if dir == "" {
		return nil, fmt.Errorf("cgroupmgr: no memory hierarchy: %w", errdefs.ErrNotImplemented)
	}
	// Non-blocking so that os.NewFile hands it to the poller and Close
	// wakes a pending Read.
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("cgroupmgr: eventfd: %w", err)
	}
	ev := os.NewFile(uintptr(efd), "oom-eventfd")
	ctl, err := os.Open(filepath.Join(dir, "memory.oom_control"))
	if err != nil {
		ev.Close()
		return nil, notFoundIfMissing(c.path, err)
	}
	defer ctl.Close()
	reg := strconv.Itoa(efd) + " " + strconv.Itoa(int(ctl.Fd()))
	if err := os.WriteFile(filepath.Join(dir, "cgroup.event_control"), []byte(reg), 0); err != nil {
		ev.Close()
		return nil, notFoundIfMissing(c.path, fmt.Errorf("register oom eventfd: %w", err))
	}
	ch := make(chan struct{}, 1)
	stop := closeOnDone(ctx, ev)
	go func() {
		defer close(ch)
		defer close(stop)
		var buf [8]byte
		for {
			if _, err := ev.Read(buf[:]); err != nil {
				return
			}
			// The kernel also signals the eventfd when the cgroup is
			// removed; tell that apart by the directory being gone.
			if _, err := os.Lstat(dir); err != nil {
				return
			}
			if binary.NativeEndian.Uint64(buf[:]) > 0 {
				notify(ch)
			}
		}
	}()
	return ch, nil
}

func (c *Cgroup) oomEventsV2(ctx context.Context) (<-chan struct{}, error) {
	events := filepath.Join(c.dir(""), "memory.events")
	last, err := c.OOMKillCount()
	if err != nil {
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil, fmt.Errorf("cgroupmgr: %s has no memory.events (memory controller not enabled?): %w", c.path, errdefs.ErrNotImplemented)
		}
		return nil, err
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("cgroupmgr: inotify: %w", err)
	}
	in := os.NewFile(uintptr(fd), "inotify")
	if _, err := unix.InotifyAddWatch(fd, events, unix.IN_MODIFY); err != nil {
		in.Close()
		return nil, notFoundIfMissing(c.path, fmt.Errorf("watch %s: %w", events, err))
	}
	ch := make(chan struct{}, 1)
	stop := closeOnDone(ctx, in)
	go func() {
		defer close(ch)
		defer close(stop)
		buf := make([]byte, 16*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
		for {
			n, err := in.Read(buf)
			if err != nil {
				return
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				mask := binary.NativeEndian.Uint32(buf[off+4:])
				nameLen := binary.NativeEndian.Uint32(buf[off+12:])
				if mask&unix.IN_IGNORED != 0 {
					return // the watched file went away with its cgroup
				}
				off += unix.SizeofInotifyEvent + int(nameLen)
			}
			kv, err := readKV(events)
			if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENODEV) {
				return // removed with its cgroup
			}
			if err != nil {
				continue // nothing to learn from this change; wait for the next
			}
			if cur := kv["oom_kill"]; cur > last {
				last = cur
				notify(ch)
			}
		}
	}()
	return ch, nil
}

// closeOnDone closes f when ctx is done or the returned channel is closed,
// which wakes a Read blocked on f.
func closeOnDone(ctx context.Context, f *os.File) chan struct{} {
	stop := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
		case <-stop:
		}
		f.Close()
	}()
	return stop
}

// notify leaves one pending value in ch without ever blocking.
func notify(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func notFoundIfMissing(cg string, err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cgroupmgr: %s: %w: %w", cg, errdefs.ErrNotFound, err)
	}
	return fmt.Errorf("cgroupmgr: %s: %w", cg, err)
}
