package imageservice

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/berth-dev/berth/errdefs"
)

// registryHost is one place a repository can be fetched from: a mirror or
// the upstream registry, in the order they are tried.
type registryHost struct {
	name    string   // host[:port], for errors and auth
	base    *url.URL // API root ("https://mirror:5000/v2")
	pull    bool     // may serve blobs and manifests by digest
	resolve bool     // may resolve tags
	client  *http.Client
	header  http.Header
}

// hostsFile is containerd's hosts.toml (certs.d) format.
type hostsFile struct {
	Server       string                `toml:"server"`
	Capabilities []string              `toml:"capabilities"`
	SkipVerify   *bool                 `toml:"skip_verify"`
	CA           any                   `toml:"ca"`
	Header       map[string]any        `toml:"header"`
	OverridePath bool                  `toml:"override_path"`
	Host         map[string]hostsEntry `toml:"host"`

	order []string // keys of Host in file order
}

type hostsEntry struct {
	Capabilities []string       `toml:"capabilities"`
	SkipVerify   *bool          `toml:"skip_verify"`
	CA           any            `toml:"ca"`
	Client       any            `toml:"client"`
	Header       map[string]any `toml:"header"`
	OverridePath bool           `toml:"override_path"`
}

// hostOrderRE finds [host."..."] tables in file order; TOML maps lose it and
// containerd tries mirrors in the order written.
var hostOrderRE = regexp.MustCompile(`(?m)^\s*\[\s*host\.(?:"([^"]+)"|'([^']+)')\s*\]`)

// isLoopback reports whether a registry host[:port] is on loopback, where
// plain HTTP is allowed without configuration (as docker and containerd do).
func isLoopback(hostport string) bool {
	h := hostport
	if hh, _, err := net.SplitHostPort(hostport); err == nil {
		h = hh
	}
	h = strings.Trim(h, "[]")
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// registryHosts returns the hosts to try for domain, mirrors first, from
// <RegistryConfigPath>/<domain>/hosts.toml (or _default/hosts.toml).
func (s *Service) registryHosts(domain string) ([]registryHost, error) {
	var hf *hostsFile
	var dir string
	if s.cfg.RegistryConfigPath != "" {
		for _, d := range []string{domain, "_default"} {
			p := filepath.Join(s.cfg.RegistryConfigPath, d, "hosts.toml")
			b, err := os.ReadFile(p)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("registry config: %w", err)
			}
			hf = &hostsFile{}
			if err := toml.Unmarshal(b, hf); err != nil {
				return nil, fmt.Errorf("registry config %s: %w: %w", p, err, errdefs.ErrInvalidArgument)
			}
			dir = filepath.Dir(p)
			var keys []string
			for k := range hf.Host {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, m := range hostOrderRE.FindAllStringSubmatch(string(b), -1) {
				k := m[1] + m[2]
				if _, ok := hf.Host[k]; ok {
					orderedHosts(hf, k)
				}
			}
			for _, k := range keys { // written in a way the pattern missed
				orderedHosts(hf, k)
			}
			break
		}
	}

	var out []registryHost
	if hf != nil {
		for _, k := range hf.order {
			e := hf.Host[k]
			h, err := s.newHost(domain, k, e.Capabilities, e.SkipVerify, e.CA, e.Header, e.OverridePath, dir)
			if err != nil {
				return nil, err
			}
			out = append(out, h)
		}
	}
	server := ""
	var caps []string
	var skip *bool
	var ca any
	var hdr map[string]any
	override := false
	if hf != nil && hf.Server != "" {
		server, caps, skip, ca, hdr, override = hf.Server, hf.Capabilities, hf.SkipVerify, hf.CA, hf.Header, hf.OverridePath
	}
	if server == "" {
		switch {
		case domain == DefaultDomain:
			server = "https://registry-1.docker.io"
		case isLoopback(domain):
			server = "http://" + domain
		default:
			server = "https://" + domain
		}
	}
	h, err := s.newHost(domain, server, caps, skip, ca, hdr, override, dir)
	if err != nil {
		return nil, err
	}
	return append(out, h), nil
}

func orderedHosts(hf *hostsFile, k string) {
	for _, o := range hf.order {
		if o == k {
			return
		}
	}
	hf.order = append(hf.order, k)
}

func (s *Service) newHost(domain, rawURL string, caps []string, skipVerify *bool, ca any, header map[string]any, overridePath bool, dir string) (registryHost, error) {
	if !strings.Contains(rawURL, "://") {
		rawURL = "https://" + rawURL
	}
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return registryHost{}, fmt.Errorf("registry host %q for %s: bad URL: %w", rawURL, domain, errdefs.ErrInvalidArgument)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	if !overridePath {
		u.Path += "/v2"
	}
	h := registryHost{name: u.Host, base: u, pull: true, resolve: true, header: http.Header{}}
	if caps != nil {
		h.pull, h.resolve = false, false
		for _, c := range caps {
			switch c {
			case "pull":
				h.pull = true
			case "resolve":
				h.resolve = true
			}
		}
	}
	for k, v := range header {
		switch vv := v.(type) {
		case string:
			h.header.Add(k, vv)
		case []any:
			for _, x := range vv {
				h.header.Add(k, fmt.Sprint(x))
			}
		}
	}
	tr := s.transport
	if u.Scheme == "https" {
		var cas []string
		switch v := ca.(type) {
		case string:
			cas = []string{v}
		case []any:
			for _, x := range v {
				cas = append(cas, fmt.Sprint(x))
			}
		}
		skip := skipVerify != nil && *skipVerify
		if skip || len(cas) > 0 {
			var pems [][]byte
			for _, c := range cas {
				if !filepath.IsAbs(c) && dir != "" {
					c = filepath.Join(dir, c)
				}
				pem, err := os.ReadFile(c)
				if err != nil {
					return registryHost{}, fmt.Errorf("registry CA for %s: %w", u.Host, err)
				}
				pems = append(pems, pem)
			}
			var err error
			if tr, err = s.tlsTransport(skip, pems); err != nil {
				return registryHost{}, fmt.Errorf("registry CA for %s: %w", u.Host, err)
			}
		}
	}
	h.client = &http.Client{Transport: tr}
	return h, nil
}

// newTransport is the base HTTP transport of all registry hosts: enough idle
// connections per host for parallel layer downloads.
func newTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 16
	t.ResponseHeaderTimeout = 0 // the progress watchdog covers stalls
	t.TLSHandshakeTimeout = 30 * time.Second
	return t
}

// tlsTransport returns a transport trusting the given CAs (besides the
// system's) or skipping verification, shared by every host and pull with the
// same settings so that connections are reused.
func (s *Service) tlsTransport(skipVerify bool, pems [][]byte) (*http.Transport, error) {
	key := fmt.Sprintf("%v/%s", skipVerify, digestOf(bytes.Join(pems, []byte{0})))
	s.transportsMu.Lock()
	defer s.transportsMu.Unlock()
	if tr, ok := s.transports[key]; ok {
		return tr, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: skipVerify}
	if len(pems) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		for _, p := range pems {
			if !pool.AppendCertsFromPEM(p) {
				return nil, fmt.Errorf("no certificates in a CA file: %w", errdefs.ErrInvalidArgument)
			}
		}
		tc.RootCAs = pool
	}
	tr := s.transport.Clone()
	tr.TLSClientConfig = tc
	s.transports[key] = tr
	return tr, nil
}
