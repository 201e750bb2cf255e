package imageservice

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/errdefs"
)

// Auth holds registry credentials, as the CRI passes them.
type Auth struct {
	Username      string
	Password      string
	IdentityToken string // an OAuth2 refresh token, exchanged at the token realm
	RegistryToken string // a bearer token sent as is
	// ServerAddress, when set, limits the credentials to that registry
	// ("registry.example.com", "https://index.docker.io/v1/").
	ServerAddress string
}

// StallError says a registry host made no progress for the configured time.
type StallError struct {
	Host    string
	Timeout time.Duration
}

func (e *StallError) Error() string {
	return fmt.Sprintf("registry host %s stalled: no progress for %s", e.Host, e.Timeout)
}

func (e *StallError) Unwrap() error { return errdefs.ErrDeadlineExceeded }

// remoteRepo speaks the distribution API for one repository on one host.
type remoteRepo struct {
	host    registryHost
	path    string // repository path, "library/busybox"
	auth    *Auth  // nil when the credentials do not apply to this host
	timeout time.Duration

	mu    sync.Mutex
	authz string // the Authorization header that worked last
}

func newRemoteRepo(h registryHost, domain, path string, auth *Auth, timeout time.Duration) *remoteRepo {
	r := &remoteRepo{host: h, path: path, timeout: timeout}
	if auth != nil && authApplies(auth, domain, h.name) {
		r.auth = auth
		if auth.RegistryToken != "" {
			r.authz = "Bearer " + auth.RegistryToken
		}
	}
	return r
}

func authApplies(a *Auth, domain, host string) bool {
	if a.ServerAddress == "" {
		return true
	}
	s := a.ServerAddress
	if u, err := url.Parse(s); err == nil && u.Host != "" {
		s = u.Host
	}
	s = strings.TrimSuffix(s, "/")
	if s == "index.docker.io" || s == "registry-1.docker.io" {
		s = DefaultDomain
	}
	return s == domain || s == host
}

// watched runs one HTTP request under the progress watchdog: if no response
// arrives, or the body yields no byte, for r.timeout, the request is
// cancelled with a StallError naming the host.
func (r *remoteRepo) watched(ctx context.Context, req *http.Request) (*http.Response, error) {
	wctx, cancel := context.WithCancelCause(ctx)
	stall := &StallError{Host: r.host.name, Timeout: r.timeout}
	var timer *time.Timer
	if r.timeout > 0 {
		timer = time.AfterFunc(r.timeout, func() { cancel(stall) })
	}
	resp, err := r.host.client.Do(req.WithContext(wctx))
	if err != nil {
		if timer != nil {
			timer.Stop()
		}
		cancel(nil)
		if errors.Is(context.Cause(wctx), stall) {
			return nil, stall
		}
		return nil, fmt.Errorf("registry host %s: %w", r.host.name, err)
	}
	resp.Body = &watchedBody{rc: resp.Body, timer: timer, timeout: r.timeout, cancel: cancel, ctx: wctx, stall: stall}
	return resp, nil
}

type watchedBody struct {
	rc      io.ReadCloser
	timer   *time.Timer
	timeout time.Duration
	cancel  context.CancelCauseFunc
	ctx     context.Context
	stall   *StallError
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 && b.timer != nil {
		b.timer.Reset(b.timeout)
	}
	if err != nil && err != io.EOF && errors.Is(context.Cause(b.ctx), b.stall) {
		err = b.stall
	}
	return n, err
}

func (b *watchedBody) Close() error {
	if b.timer != nil {
		b.timer.Stop()
	}
	err := b.rc.Close()
	b.cancel(nil)
	return err
}

// get does an authenticated GET of the API path (relative to /v2/<repo>/).
func (r *remoteRepo) get(ctx context.Context, rel string, accept []string) (*http.Response, error) {
	u := *r.host.base
	u.Path = u.Path + "/" + r.path + "/" + rel
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, err
		}
		for k, v := range r.host.header {
			req.Header[k] = v
		}
		for _, a := range accept {
			req.Header.Add("Accept", a)
		}
		r.mu.Lock()
		if r.authz != "" {
			req.Header.Set("Authorization", r.authz)
		}
		r.mu.Unlock()
		resp, err := r.watched(ctx, req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 {
			err := r.authorize(ctx, resp)
			drain(resp)
			if err != nil {
				return nil, err
			}
			continue
		}
		if resp.StatusCode/100 != 2 {
			defer drain(resp)
			return nil, statusError(r.host.name, u.Path, resp)
		}
		return resp, nil
	}
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

func statusError(host, path string, resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	msg := strings.TrimSpace(string(body))
	err := fmt.Errorf("registry host %s: GET %s: %s: %s", host, path, resp.Status, msg)
	switch resp.StatusCode {
	case http.StatusNotFound:
		return fmt.Errorf("%w: %w", err, errdefs.ErrNotFound)
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("%w: %w", err, errdefs.ErrFailedPrecondition)
	}
	return err
}

// authorize answers a 401 challenge: Basic with the credentials, or Bearer
// with a token from the realm (password or identity token grant).
func (r *remoteRepo) authorize(ctx context.Context, resp *http.Response) error {
	scheme, params := parseChallenge(resp.Header.Values("WWW-Authenticate"))
	switch scheme {
	case "basic":
		if r.auth == nil || r.auth.Username == "" {
			return fmt.Errorf("registry host %s requires credentials: %w", r.host.name, errdefs.ErrFailedPrecondition)
		}
		r.mu.Lock()
		r.authz = "Basic " + base64.StdEncoding.EncodeToString([]byte(r.auth.Username+":"+r.auth.Password))
		r.mu.Unlock()
		return nil
	case "bearer":
		tok, err := r.fetchToken(ctx, params)
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.authz = "Bearer " + tok
		r.mu.Unlock()
		return nil
	}
	return fmt.Errorf("registry host %s: unsupported auth challenge %q: %w", r.host.name, scheme, errdefs.ErrFailedPrecondition)
}

func (r *remoteRepo) fetchToken(ctx context.Context, params map[string]string) (string, error) {
	realm, err := url.Parse(params["realm"])
	if err != nil || realm.Host == "" {
		return "", fmt.Errorf("registry host %s: bad token realm %q", r.host.name, params["realm"])
	}
	scope := "repository:" + r.path + ":pull"
	var req *http.Request
	if r.auth != nil && r.auth.IdentityToken != "" {
		form := url.Values{
			"grant_type":    {"refresh_token"},
			"refresh_token": {r.auth.IdentityToken},
			"service":       {params["service"]},
			"scope":         {scope},
			"client_id":     {"berth"},
		}
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, realm.String(), strings.NewReader(form.Encode()))
		if err != nil {
			return "", err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		q := realm.Query()
		if s := params["service"]; s != "" {
			q.Set("service", s)
		}
		q.Set("scope", scope)
		realm.RawQuery = q.Encode()
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, realm.String(), nil)
		if err != nil {
			return "", err
		}
		if r.auth != nil && r.auth.Username != "" {
			req.SetBasicAuth(r.auth.Username, r.auth.Password)
		}
	}
	resp, err := r.watched(ctx, req)
	if err != nil {
		return "", err
	}
	defer drain(resp)
	if resp.StatusCode/100 != 2 {
		return "", fmt.Errorf("token from %s: %w", realm.Host, statusError(realm.Host, realm.Path, resp))
	}
	var tr struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&tr); err != nil {
		return "", fmt.Errorf("token from %s: %w", realm.Host, err)
	}
	if tr.Token == "" {
		tr.Token = tr.AccessToken
	}
	if tr.Token == "" {
		return "", fmt.Errorf("token from %s: empty", realm.Host)
	}
	return tr.Token, nil
}

// parseChallenge returns the first Basic or Bearer challenge of a
// WWW-Authenticate header: its lower-case scheme and its parameters.
func parseChallenge(values []string) (string, map[string]string) {
	for _, v := range values {
		scheme, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
		scheme = strings.ToLower(scheme)
		if scheme != "basic" && scheme != "bearer" {
			continue
		}
		params := map[string]string{}
		for rest != "" {
			rest = strings.TrimLeft(rest, " ,")
			k, after, ok := strings.Cut(rest, "=")
			if !ok {
				break
			}
			k = strings.ToLower(strings.TrimSpace(k))
			var val string
			if strings.HasPrefix(after, `"`) {
				end := strings.Index(after[1:], `"`)
				if end < 0 {
					val, rest = after[1:], ""
				} else {
					val, rest = after[1:1+end], after[2+end:]
				}
			} else {
				val, rest, _ = strings.Cut(after, ",")
			}
			params[k] = val
		}
		return scheme, params
	}
	return "", nil
}

// Manifest media types berth understands.
const (
	mtOCIIndex      = "application/vnd.oci.image.index.v1+json"
	mtOCIManifest   = "application/vnd.oci.image.manifest.v1+json"
	mtDockerList    = "application/vnd.docker.distribution.manifest.list.v2+json"
	mtDockerSchema2 = "application/vnd.docker.distribution.manifest.v2+json"
)

var manifestAccept = []string{mtOCIIndex, mtDockerList, mtOCIManifest, mtDockerSchema2}

const maxManifestSize = 4 << 20

// fetchManifest fetches a manifest by tag or digest. Its digest is computed
// from the bytes; when ref is a digest, it must match.
func (r *remoteRepo) fetchManifest(ctx context.Context, ref string) ([]byte, string, string, error) {
	resp, err := r.get(ctx, "manifests/"+ref, manifestAccept)
	if err != nil {
		return nil, "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return nil, "", "", err
	}
	if len(b) > maxManifestSize {
		return nil, "", "", fmt.Errorf("registry host %s: manifest %s larger than %d bytes", r.host.name, ref, maxManifestSize)
	}
	sum := sha256.Sum256(b)
	dgst := "sha256:" + hex.EncodeToString(sum[:])
	if strings.HasPrefix(ref, "sha256:") && dgst != ref {
		return nil, "", "", fmt.Errorf("registry host %s: manifest %s has digest %s", r.host.name, ref, dgst)
	}
	mt := resp.Header.Get("Content-Type")
	if i := strings.IndexByte(mt, ';'); i >= 0 {
		mt = strings.TrimSpace(mt[:i])
	}
	var probe struct {
		MediaType string `json:"mediaType"`
	}
	if json.Unmarshal(b, &probe) == nil && probe.MediaType != "" {
		mt = probe.MediaType
	}
	return b, mt, dgst, nil
}

// openBlob starts the download of a blob.
func (r *remoteRepo) openBlob(ctx context.Context, dgst string) (io.ReadCloser, error) {
	resp, err := r.get(ctx, "blobs/"+dgst, nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}
