// Package testregistry runs an in-process OCI distribution registry
// (go-containerregistry's pkg/registry) on 127.0.0.1 for tests: optional basic
// auth, request counting per path, and a stall mode that hangs blob
// responses, to test pull timeouts.
package testregistry

import (
	"context"
	"crypto/subtle"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Options configure a registry.
type Options struct {
	// Username and Password, when Username is set, require HTTP basic auth
	// on every request (the /v2/ ping answers 401 with a Basic challenge).
	Username, Password string
	// Logf, when set, receives one line per request (for example t.Logf).
	Logf func(format string, args ...any)
}

// Registry is a running registry.
type Registry struct {
	// Host is "127.0.0.1:PORT".
	Host string

	opts   Options
	srv    *http.Server
	ln     net.Listener
	closed chan struct{}
	once   sync.Once
	stall  atomic.Bool

	mu     sync.Mutex
	counts map[string]int
}

// Start starts a registry and closes it when the test ends.
func Start(t testing.TB, opts Options) *Registry {
	t.Helper()
	r, err := StartServer(opts)
	if err != nil {
		t.Fatalf("starting test registry: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

// StartServer starts a registry; the caller must Close it. Usable from TestMain.
func StartServer(opts Options) (*Registry, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	r := &Registry{
		Host:   ln.Addr().String(),
		opts:   opts,
		ln:     ln,
		closed: make(chan struct{}),
		counts: map[string]int{},
	}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = &http.Server{Handler: r.wrap(inner)}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

// Close stops the registry and releases any stalled responses.
func (r *Registry) Close() {
	r.once.Do(func() {
		close(r.closed)
		_ = r.srv.Close()
	})
}

// SetStall turns stall mode on or off. In stall mode a blob GET answers 200
// with its headers and then sends nothing until the client goes away, the
// mode is turned off, or the registry closes.
func (r *Registry) SetStall(on bool) { r.stall.Store(on) }

func (r *Registry) wrap(inner http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.counts[req.Method+" "+req.URL.Path]++
		r.mu.Unlock()
		if r.opts.Logf != nil {
			r.opts.Logf("testregistry %s: %s %s", r.Host, req.Method, req.URL.Path)
		}
		if r.opts.Username != "" {
			u, p, ok := req.BasicAuth()
			if !ok || subtle.ConstantTimeCompare([]byte(u), []byte(r.opts.Username)) != 1 ||
				subtle.ConstantTimeCompare([]byte(p), []byte(r.opts.Password)) != 1 {
				w.Header().Set("WWW-Authenticate", `Basic realm="berth-test"`)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
				return
			}
		}
		if r.stall.Load() && req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:") {
			w.Header().Set("Content-Type", "application/octet-stream")
			w.WriteHeader(http.StatusOK)
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
			select {
			case <-req.Context().Done():
			case <-r.closed:
			}
			return
		}
		inner.ServeHTTP(w, req)
	})
}

// Count returns how many requests with method and path (for example "GET",
// "/v2/test/busybox/blobs/sha256:...") the registry has received.
func (r *Registry) Count(method, path string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.counts[method+" "+path]
}

// Counts returns a copy of all request counts, keyed "METHOD /path".
func (r *Registry) Counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.counts))
	for k, v := range r.counts {
		out[k] = v
	}
	return out
}

// BlobGets returns how many GET requests for blob digest (in any repository)
// the registry has received.
func (r *Registry) BlobGets(digest string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for k, v := range r.counts {
		if strings.HasPrefix(k, "GET ") && strings.HasSuffix(k, "/blobs/"+digest) {
			n += v
		}
	}
	return n
}

// ResetCounts forgets all request counts (for example after pushing).
func (r *Registry) ResetCounts() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts = map[string]int{}
}

// Ref returns the full reference of repoAndTag ("test/busybox:latest" or
// "test/busybox@sha256:...") in this registry.
func (r *Registry) Ref(repoAndTag string) string { return r.Host + "/" + repoAndTag }

func (r *Registry) parse(repoAndTag string) (name.Reference, []remote.Option, error) {
	ref, err := name.ParseReference(r.Ref(repoAndTag), name.Insecure)
	if err != nil {
		return nil, nil, err
	}
	opts := []remote.Option{}
	if r.opts.Username != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: r.opts.Username, Password: r.opts.Password}))
	}
	return ref, opts, nil
}

// Push pushes img as repoAndTag ("test/busybox:latest") and returns the full
// reference by digest ("127.0.0.1:PORT/test/busybox@sha256:...").
func (r *Registry) Push(ctx context.Context, repoAndTag string, img v1.Image) (string, error) {
	ref, opts, err := r.parse(repoAndTag)
	if err != nil {
		return "", err
	}
	if err := remote.Write(ref, img, append(opts, remote.WithContext(ctx))...); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	return ref.Context().Digest(d.String()).String(), nil
}

// PushIndex pushes an image index (and its images) as repoAndTag and returns
// the full reference by digest of the index.
func (r *Registry) PushIndex(ctx context.Context, repoAndTag string, idx v1.ImageIndex) (string, error) {
	ref, opts, err := r.parse(repoAndTag)
	if err != nil {
		return "", err
	}
	if err := remote.WriteIndex(ref, idx, append(opts, remote.WithContext(ctx))...); err != nil {
		return "", fmt.Errorf("push index %s: %w", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		return "", err
	}
	return ref.Context().Digest(d.String()).String(), nil
}

// MustPush is Push for tests: it fails t on error.
func (r *Registry) MustPush(t testing.TB, repoAndTag string, img v1.Image) string {
	t.Helper()
	ref, err := r.Push(context.Background(), repoAndTag, img)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}
