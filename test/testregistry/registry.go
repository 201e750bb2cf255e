// Package testregistry runs an in-process OCI distribution registry
// (go-containerregistry's pkg/registry) on 127.0.0.1 for tests: optional basic
// auth, request counting per path, and a stall mode that hangs blob
// responses, to test pull timeouts.
package testregistry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Options configure a registry.
type Options struct {
	// Addr is where to listen; empty means a free port on 127.0.0.1.
	Addr string
	// Username and Password, when Username is set, require HTTP basic auth
	// on every request (the /v2/ ping answers 401 with a Basic challenge).
	Username, Password string
	// Token switches to bearer token auth, as Docker Hub does: requests
	// need "Authorization: Bearer <Token()>", and the 401 challenge points
	// to /token on the same server, which hands out the token for basic auth
	// with Username/Password, or for an OAuth2 refresh_token grant with
	// IdentityToken.
	Token         bool
	IdentityToken string
	// TLS serves HTTPS with a self-signed certificate for 127.0.0.1 and
	// localhost; CACertPEM returns it.
	TLS bool
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
	stall  atomic.Pointer[stallSpec]

	mu     sync.Mutex
	counts map[string]int

	token  string
	caPEM  []byte
	scheme string
}

// Token returns the bearer token the registry accepts in Token mode (what
// the CRI calls a registry token).
func (r *Registry) Token() string { return r.token }

// CACertPEM returns the certificate of a TLS registry, to trust it.
func (r *Registry) CACertPEM() []byte { return r.caPEM }

// URL returns the registry's base URL, "http://127.0.0.1:PORT" or https.
func (r *Registry) URL() string { return r.scheme + "://" + r.Host }

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
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	r := &Registry{
		Host:   ln.Addr().String(),
		opts:   opts,
		ln:     ln,
		closed: make(chan struct{}),
		counts: map[string]int{},
		token:  crand.Text(),
		scheme: "http",
	}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = &http.Server{Handler: r.wrap(inner), ErrorLog: log.New(io.Discard, "", 0)}
	if opts.TLS {
		cert, caPEM, err := selfSigned()
		if err != nil {
			ln.Close()
			return nil, err
		}
		r.caPEM = caPEM
		r.scheme = "https"
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
	}
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

type stallSpec struct {
	after   int64
	digests map[string]bool // nil: every blob
}

// SetStall turns stall mode on or off. In stall mode a blob GET answers 200
// with its headers and then sends nothing until the client goes away or the
// registry closes.
func (r *Registry) SetStall(on bool) {
	if on {
		r.stall.Store(&stallSpec{})
	} else {
		r.stall.Store(nil)
	}
}

// StallBlobs turns stall mode on for the given blob digests (every blob when
// none is given): a GET sends the first afterBytes bytes of the blob, then
// hangs until the client goes away or the registry closes. SetStall(false)
// ends it for later requests.
func (r *Registry) StallBlobs(afterBytes int64, digests ...string) {
	sp := &stallSpec{after: afterBytes}
	if len(digests) > 0 {
		sp.digests = map[string]bool{}
		for _, d := range digests {
			sp.digests[d] = true
		}
	}
	r.stall.Store(sp)
}

// stallWriter passes the first n body bytes through, then blocks.
type stallWriter struct {
	http.ResponseWriter
	n      int64
	done   <-chan struct{}
	closed <-chan struct{}
}

func (w *stallWriter) Write(p []byte) (int, error) {
	if int64(len(p)) <= w.n {
		w.n -= int64(len(p))
		return w.ResponseWriter.Write(p)
	}
	k, err := w.ResponseWriter.Write(p[:w.n])
	w.n = 0
	if err != nil {
		return k, err
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	select {
	case <-w.done:
	case <-w.closed:
	}
	return k, errors.New("stalled")
}

func (r *Registry) wrap(inner http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.counts[req.Method+" "+req.URL.Path]++
		r.mu.Unlock()
		if r.opts.Logf != nil {
			r.opts.Logf("testregistry %s: %s %s", r.Host, req.Method, req.URL.Path)
		}
		if r.opts.Token {
			if !r.tokenAuth(w, req) {
				return
			}
		} else if r.opts.Username != "" {
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
		if sp := r.stall.Load(); sp != nil && req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/sha256:") {
			_, dgst, _ := strings.Cut(req.URL.Path, "/blobs/")
			if sp.digests == nil || sp.digests[dgst] {
				if sp.after == 0 {
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
				w = &stallWriter{ResponseWriter: w, n: sp.after, done: req.Context().Done(), closed: r.closed}
			}
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
	if r.opts.TLS {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(r.caPEM)
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
		opts = append(opts, remote.WithTransport(tr))
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

// tokenAuth serves /token and checks bearer tokens; it reports whether the
// request may go on to the registry.
func (r *Registry) tokenAuth(w http.ResponseWriter, req *http.Request) bool {
	if req.URL.Path == "/token" {
		ok := false
		if u, p, has := req.BasicAuth(); has && r.opts.Username != "" &&
			subtle.ConstantTimeCompare([]byte(u), []byte(r.opts.Username)) == 1 &&
			subtle.ConstantTimeCompare([]byte(p), []byte(r.opts.Password)) == 1 {
			ok = true
		}
		if req.Method == http.MethodPost && req.ParseForm() == nil && r.opts.IdentityToken != "" &&
			req.PostForm.Get("grant_type") == "refresh_token" &&
			subtle.ConstantTimeCompare([]byte(req.PostForm.Get("refresh_token")), []byte(r.opts.IdentityToken)) == 1 {
			ok = true
		}
		if !ok {
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"token":%q,"access_token":%q,"expires_in":300}`, r.token, r.token)
		return false
	}
	if req.Header.Get("Authorization") == "Bearer "+r.token {
		return true
	}
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="berth-test"`, r.URL()))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
	return false
}

// selfSigned makes a certificate for 127.0.0.1, ::1 and localhost.
func selfSigned() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "berth-test registry"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	return cert, certPEM, err
}
