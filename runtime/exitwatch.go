package runtime

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/runtime/monitor"
)

// exitWatches holds, for each running container this Runtime has seen, one
// wait on its monitor that ends when the container stops. While it waits,
// the container is known to be running, so State answers without asking
// the monitor: kubelet lists every container every second, and each
// request would cost the monitor memory (garbage that a small Go process
// hardly ever collects) and berthd a round trip. Wait shares the same
// watch, so a container has one wait on its monitor however many callers
// wait for it.
type exitWatches struct {
	mu sync.Mutex
	m  map[string]*exitWatch
	// ctx ends the watches when the Runtime is closed.
	ctx    context.Context
	cancel context.CancelFunc
}

// exitWatch is the wait on one running container.
type exitWatch struct {
	podID   string
	running State         // as read when the watch began
	done    chan struct{} // closed once final and err are set
	final   State
	err     error
}

// watch returns the watch on container id, beginning one with running as
// its state if there is none.
func (r *Runtime) watch(id string, m *meta, running State) *exitWatch {
	r.exits.mu.Lock()
	defer r.exits.mu.Unlock()
	if w, ok := r.exits.m[id]; ok {
		return w
	}
	if r.exits.m == nil {
		r.exits.m = map[string]*exitWatch{}
	}
	w := &exitWatch{podID: m.PodID, running: running, done: make(chan struct{})}
	r.exits.m[id] = w
	go func() {
		// Owned here until done: the wait lasts as long as the container
		// runs, not as long as any caller.
		var fromFile bool
		w.final, fromFile, w.err = r.waitMonitor(r.exits.ctx, id, m)
		if w.err != nil && !errdefs.IsNotFound(w.err) && r.exits.ctx.Err() == nil {
			klog.ErrorS(w.err, "Waiting for a container's exit", "podID", m.PodID, "containerID", id)
		}
		if w.err != nil || fromFile {
			// Nothing learned, or learned from the state file (the
			// monitor no longer knows the container: it may be being
			// deleted): the next State asks again.
			r.forget(id, w)
		}
		close(w.done)
	}()
	return w
}

// watching returns the watch on id, if there is one.
func (r *Runtime) watching(id string) *exitWatch {
	r.exits.mu.Lock()
	defer r.exits.mu.Unlock()
	return r.exits.m[id]
}

// forget drops the watch on id (if it is still w; any if w is nil).
func (r *Runtime) forget(id string, w *exitWatch) {
	r.exits.mu.Lock()
	defer r.exits.mu.Unlock()
	if cur, ok := r.exits.m[id]; ok && (w == nil || cur == w) {
		delete(r.exits.m, id)
	}
}

// forgetPod drops the watches on pod podID's containers. StopMonitor calls
// it once the monitor is gone: the watches learn of that a moment later,
// and until then would still say running.
func (r *Runtime) forgetPod(podID string) {
	r.exits.mu.Lock()
	defer r.exits.mu.Unlock()
	for id, w := range r.exits.m {
		if w.podID == podID {
			delete(r.exits.m, id)
		}
	}
}

// cachedState is the state of id as its watch knows it.
func (w *exitWatch) cachedState() (State, bool) {
	select {
	case <-w.done:
		return w.final, w.err == nil
	default:
		return w.running, true
	}
}

// waitMonitor blocks until container id stops (or ctx ends) and returns
// its state, and whether that came from the state file rather than the
// monitor. The monitor answers when the exit is recorded: no polling.
func (r *Runtime) waitMonitor(ctx context.Context, id string, m *meta) (State, bool, error) {
	mon := r.monitor(m.PodID)
	for retry := time.Duration(0); ; retry = min(2*retry+10*time.Millisecond, time.Second) {
		resp, err := mon.Do(ctx, &monitor.Request{Op: monitor.OpWait, ID: id})
		if err == nil {
			return r.toState(ctx, m, resp.State), false, nil
		}
		if ctx.Err() != nil {
			return State{}, false, ctx.Err()
		}
		if errdefs.IsNotFound(err) {
			st, err := r.stateFromFile(ctx, id, m)
			return st, true, err
		}
		if !errors.Is(err, errdefs.ErrUnavailable) {
			return State{}, false, fmt.Errorf("container %s: %w", id, err)
		}
		// The connection broke: if the monitor is really gone, the
		// state file decides; if it answers again, wait again, a little
		// later each time in case it keeps dropping the wait.
		if r.monitorGone(ctx, m.PodID) {
			st, err := r.stateFromFile(ctx, id, m)
			return st, true, err
		}
		select {
		case <-time.After(retry):
		case <-ctx.Done():
			return State{}, false, ctx.Err()
		}
	}
}
