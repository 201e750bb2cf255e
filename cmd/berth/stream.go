package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/term"
	restclient "k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// parseDetachKeys parses docker's --detach-keys: comma-separated keys,
// each a single character or ctrl-<c>.
func parseDetachKeys(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	var out []byte
	for _, k := range strings.Split(s, ",") {
		lk := strings.ToLower(k)
		switch {
		case len(k) == 1:
			out = append(out, k[0])
		case strings.HasPrefix(lk, "ctrl-") && len(lk) == 6:
			c := lk[5]
			switch {
			case c >= 'a' && c <= 'z':
				out = append(out, c-'a'+1)
			case c == '@':
				out = append(out, 0)
			case c >= '[' && c <= '_':
				out = append(out, c-'['+27)
			default:
				return nil, invalid("invalid detach key %q", k)
			}
		default:
			return nil, invalid("invalid detach key %q", k)
		}
	}
	return out, nil
}

// detachReader passes input through until the detach sequence is typed.
// Bytes that start the sequence are held back until it is clear whether
// the sequence follows; they are then passed on, as docker does. After the
// sequence it reports on detached and then blocks: returning EOF would
// close the container's stdin, which a detach must not do.
type detachReader struct {
	r        io.Reader
	keys     []byte
	matched  int
	out      []byte
	detached chan struct{}
	once     sync.Once
}

func newDetachReader(r io.Reader, keys []byte) *detachReader {
	return &detachReader{r: r, keys: keys, detached: make(chan struct{})}
}

func (d *detachReader) Read(p []byte) (int, error) {
	for len(d.out) == 0 {
		select {
		case <-d.detached:
			select {} // see the type's comment
		default:
		}
		buf := make([]byte, len(p))
		n, err := d.r.Read(buf)
		for _, b := range buf[:n] {
			if len(d.keys) == 0 {
				d.out = append(d.out, b)
				continue
			}
			if b == d.keys[d.matched] {
				d.matched++
				if d.matched == len(d.keys) {
					d.once.Do(func() { close(d.detached) })
					d.matched = 0
					// Whatever came before is still delivered.
					break
				}
				continue
			}
			// A false start: pass on what was held back, then this byte
			// (which may begin a new sequence).
			d.out = append(d.out, d.keys[:d.matched]...)
			d.matched = 0
			if b == d.keys[0] {
				d.matched = 1
				continue
			}
			d.out = append(d.out, b)
		}
		if err != nil {
			if len(d.out) > 0 {
				break
			}
			return 0, err
		}
	}
	n := copy(p, d.out)
	d.out = d.out[n:]
	return n, nil
}

// sizeQueue reports the terminal's size at start and on every SIGWINCH.
type sizeQueue struct {
	fd   int
	ch   chan os.Signal
	done chan struct{}
	sent bool
}

func newSizeQueue(ctx context.Context, fd int) *sizeQueue {
	q := &sizeQueue{fd: fd, ch: make(chan os.Signal, 1), done: make(chan struct{})}
	signal.Notify(q.ch, syscall.SIGWINCH)
	go func() {
		<-ctx.Done()
		signal.Stop(q.ch)
		close(q.done)
	}()
	return q
}

func (q *sizeQueue) size() *remotecommand.TerminalSize {
	w, h, err := term.GetSize(q.fd)
	if err != nil {
		return nil
	}
	return &remotecommand.TerminalSize{Width: uint16(w), Height: uint16(h)}
}

func (q *sizeQueue) Next() *remotecommand.TerminalSize {
	if !q.sent {
		q.sent = true
		if s := q.size(); s != nil {
			return s
		}
	}
	for {
		select {
		case <-q.done:
			return nil
		case <-q.ch:
			if s := q.size(); s != nil {
				return s
			}
		}
	}
}

// streamOpts say which streams a session carries.
type streamOpts struct {
	stdin      bool
	stdout     bool
	stderr     bool
	tty        bool
	detachKeys string
}

// stream connects the terminal to a CRI streaming URL (from Exec or
// Attach) through the Kubernetes remote command protocol over SPDY, as
// crictl and kubectl do. detached reports the detach keys.
func stream(ctx context.Context, rawURL string, o streamOpts) (detached bool, err error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return false, fmt.Errorf("streaming URL %q: %w", rawURL, err)
	}
	if u.Scheme == "" {
		u.Scheme = "http"
	}
	// The streaming server is berthd's, on this host; kubelet does not
	// check its certificate either (it is not given one to check).
	cfg := &restclient.Config{TLSClientConfig: restclient.TLSClientConfig{Insecure: true}}
	exec, err := remotecommand.NewSPDYExecutor(cfg, "POST", u)
	if err != nil {
		return false, fmt.Errorf("streaming: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	so := remotecommand.StreamOptions{Tty: o.tty}
	if o.stdout {
		so.Stdout = os.Stdout
	}
	if o.stderr && !o.tty {
		so.Stderr = os.Stderr
	}
	var dr *detachReader
	if o.stdin {
		keys, err := parseDetachKeys(o.detachKeys)
		if err != nil {
			return false, err
		}
		dr = newDetachReader(os.Stdin, keys)
		so.Stdin = dr
		go func() {
			select {
			case <-dr.detached:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	fd := int(os.Stdin.Fd())
	if o.tty && term.IsTerminal(fd) {
		if o.stdin {
			old, err := term.MakeRaw(fd)
			if err != nil {
				return false, fmt.Errorf("set the terminal to raw mode: %w", err)
			}
			defer func() { _ = term.Restore(fd, old) }()
		}
		so.TerminalSizeQueue = newSizeQueue(ctx, fd)
	}
	err = exec.StreamWithContext(ctx, so)
	if dr != nil {
		select {
		case <-dr.detached:
			return true, nil
		default:
		}
	}
	return false, err
}

// exitStatus is the remote command's exit code in a stream error.
func exitStatus(err error) (int, bool) {
	var es interface{ ExitStatus() int }
	if errors.As(err, &es) {
		return es.ExitStatus(), true
	}
	return 0, false
}

// attach attaches the terminal to a running container.
func (c *cli) attach(ctx context.Context, rt runtimeapi.RuntimeServiceClient, id string, o *runOptions) (bool, error) {
	req := &runtimeapi.AttachRequest{ContainerId: id, Stdin: o.interactive, Tty: o.tty, Stdout: o.tty}
	resp, err := rt.Attach(ctx, req)
	if err != nil {
		return false, rpcError("Attach", err)
	}
	detached, err := stream(ctx, resp.GetUrl(), streamOpts{stdin: o.interactive, stdout: o.tty, tty: o.tty, detachKeys: o.detachKeys})
	if detached {
		fmt.Fprintln(os.Stderr)
	}
	return detached, err
}
