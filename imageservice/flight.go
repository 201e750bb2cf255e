package imageservice

import (
	"context"
	"sync"
)

// flightGroup makes concurrent pulls of one blob share one download. The
// download runs on a context of its own, cancelled only when every caller
// waiting for it has gone, so one impatient caller cannot fail the others.
type flightGroup struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	done    chan struct{}
	err     error
	waiters int
	cancel  context.CancelFunc
	subs    map[int]func(Progress)
	nextSub int
}

// do runs fn once for key among concurrent callers and returns its error to
// all of them. Progress reported by fn reaches every caller's progress func.
func (g *flightGroup) do(ctx context.Context, key string, progress func(Progress), fn func(ctx context.Context, report func(Progress)) error) error {
	g.mu.Lock()
	f, ok := g.m[key]
	if !ok {
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{done: make(chan struct{}), cancel: cancel, subs: map[int]func(Progress){}}
		g.m[key] = f
		report := func(p Progress) {
			g.mu.Lock()
			subs := make([]func(Progress), 0, len(f.subs))
			for _, s := range f.subs {
				subs = append(subs, s)
			}
			g.mu.Unlock()
			for _, s := range subs {
				s(p)
			}
		}
		go func() {
			err := fn(fctx, report)
			g.mu.Lock()
			f.err = err
			if g.m[key] == f {
				delete(g.m, key)
			}
			g.mu.Unlock()
			cancel()
			close(f.done)
		}()
	}
	f.waiters++
	id := f.nextSub
	f.nextSub++
	if progress != nil {
		f.subs[id] = progress
	}
	g.mu.Unlock()

	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		g.mu.Lock()
		delete(f.subs, id)
		f.waiters--
		if f.waiters == 0 {
			// Nobody wants it any more: stop it, and let a later caller
			// start afresh instead of joining a cancelled download.
			f.cancel()
			if g.m[key] == f {
				delete(g.m, key)
			}
		}
		g.mu.Unlock()
		return ctx.Err()
	}
}
