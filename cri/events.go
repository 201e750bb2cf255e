package cri

import (
	"context"
	"sync"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/runtime"
)

// eventBufferSize is how many events a subscriber may lag behind before it
// is cut off. kubelet's evented PLEG relists when its stream breaks, so
// dropping a slow subscriber loses nothing, while waiting for it would stall
// every container operation.
const eventBufferSize = 1024

// eventBus fans container events out to GetContainerEvents subscribers.
type eventBus struct {
	mu   sync.Mutex
	next int
	subs map[int]chan *runtimeapi.ContainerEventResponse
	// stopped has a channel per watched container, closed once its
	// STOPPED event is out, so DELETED never overtakes it.
	stopped map[string]chan struct{}
}

func newEventBus() *eventBus {
	return &eventBus{subs: map[int]chan *runtimeapi.ContainerEventResponse{}, stopped: map[string]chan struct{}{}}
}

// watching registers a container's exit watch; it returns nil if one is
// already registered.
func (b *eventBus) watching(id string) chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.stopped[id]; ok {
		return nil
	}
	ch := make(chan struct{})
	b.stopped[id] = ch
	return ch
}

// waitStopped waits (bounded) until the container's STOPPED event is out.
func (b *eventBus) waitStopped(id string) {
	b.mu.Lock()
	ch, ok := b.stopped[id]
	delete(b.stopped, id)
	b.mu.Unlock()
	if !ok {
		return
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
	}
}

func (b *eventBus) subscribe() (int, <-chan *runtimeapi.ContainerEventResponse) {
	b.mu.Lock()
	defer b.mu.Unlock()
	id := b.next
	b.next++
	ch := make(chan *runtimeapi.ContainerEventResponse, eventBufferSize)
	b.subs[id] = ch
	return id, ch
}

func (b *eventBus) unsubscribe(id int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ch, ok := b.subs[id]; ok {
		delete(b.subs, id)
		close(ch)
	}
}

// listening reports whether anyone subscribes: with no subscriber an event
// is not worth building (it reads every container state of the pod, on the
// pod-start path).
func (b *eventBus) listening() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs) > 0
}

// publish never blocks: a subscriber whose buffer is full is dropped.
func (b *eventBus) publish(ev *runtimeapi.ContainerEventResponse) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, ch := range b.subs {
		select {
		case ch <- ev:
		default:
			klog.InfoS("Dropping a container-event subscriber that fell behind", "subscriber", id)
			delete(b.subs, id)
			close(ch)
		}
	}
}

// GetContainerEvents streams container lifecycle events, each with the
// pod's status, as kubelet's evented PLEG expects.
func (s *Service) GetContainerEvents(req *runtimeapi.GetEventsRequest, stream runtimeapi.RuntimeService_GetContainerEventsServer) error {
	id, ch := s.events.subscribe()
	defer s.events.unsubscribe(id)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return nil
			}
			if err := stream.Send(ev); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		case <-s.closing:
			// berthd is shutting down: end the stream so a graceful stop
			// does not wait for it; kubelet reconnects to the next berthd.
			return nil
		}
	}
}

// emit publishes an event about a container with its pod's current status.
func (s *Service) emit(ctx context.Context, rec *containerRecord, typ runtimeapi.ContainerEventType) {
	if !s.events.listening() {
		return
	}
	ev := &runtimeapi.ContainerEventResponse{
		ContainerId:        rec.ID,
		ContainerEventType: typ,
		CreatedAt:          time.Now().UnixNano(),
	}
	if p, err := s.deps.Pods.Status(rec.PodID); err == nil {
		ev.PodSandboxStatus = podStatus(p)
	}
	for _, r := range s.containers.list() {
		if r.PodID != rec.PodID {
			continue
		}
		if st, err := s.containerStatus(ctx, r); err == nil {
			ev.ContainersStatuses = append(ev.ContainersStatuses, st)
		}
	}
	s.events.publish(ev)
}

// watchExit emits CONTAINER_STOPPED_EVENT when a started container exits,
// however it exits. The monitor notifies waiters: nothing polls.
func (s *Service) watchExit(rec *containerRecord) {
	done := s.events.watching(rec.ID)
	if done == nil {
		return
	}
	go func() {
		defer close(done)
		ctx := context.Background()
		_, err := s.deps.Runtime.Wait(ctx, rec.ID)
		if err != nil {
			if !errdefs.IsNotFound(err) {
				klog.ErrorS(err, "Waiting for a container's exit failed", "containerID", rec.ID, "podSandboxID", rec.PodID)
			}
			return
		}
		s.emit(ctx, rec, runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT)
		// Once done is closed: removal waits for the STOPPED event.
		go func() {
			<-done
			s.autoRemove(rec)
		}()
	}()
}

// watchRunning re-arms exit watches after a restart.
func (s *Service) watchRunning(ctx context.Context) {
	for _, rec := range s.containers.list() {
		if st, err := s.deps.Runtime.State(ctx, rec.ID); err == nil && st.Status == runtime.StatusRunning {
			s.watchExit(rec)
		}
	}
}
