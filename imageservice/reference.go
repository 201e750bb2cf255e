package imageservice

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/berth-dev/berth/errdefs"
)

// DefaultDomain is the registry of short names ("busybox").
const DefaultDomain = "docker.io"

var (
	pathRE   = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$`)
	tagRE    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	digestRE = regexp.MustCompile(`^sha256:[a-f0-9]{64}$`)
	hexRE    = regexp.MustCompile(`^[a-f0-9]+$`)
)

// Reference is a normalized image reference:
// Domain/Path[:Tag][@Digest], for example docker.io/library/busybox:latest.
type Reference struct {
	Domain string // "docker.io", "127.0.0.1:5000"
	Path   string // "library/busybox"
	Tag    string // "" when pulled by digest only
	Digest string // "sha256:..." or ""
}

// Name is Domain/Path.
func (r Reference) Name() string { return r.Domain + "/" + r.Path }

// String is the full reference, with tag and digest when present.
func (r Reference) String() string {
	s := r.Name()
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// ParseReference normalizes a reference as docker does: "busybox" becomes
// docker.io/library/busybox:latest, "index.docker.io/x/y" docker.io/x/y:latest.
func ParseReference(s string) (Reference, error) {
	bad := func(why string) (Reference, error) {
		return Reference{}, fmt.Errorf("image reference %q: %s: %w", s, why, errdefs.ErrInvalidArgument)
	}
	var r Reference
	rest := s
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		r.Digest = rest[i+1:]
		rest = rest[:i]
		if !digestRE.MatchString(r.Digest) {
			return bad("bad digest")
		}
	}
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.Contains(rest[i+1:], "/") {
		r.Tag = rest[i+1:]
		rest = rest[:i]
		if !tagRE.MatchString(r.Tag) {
			return bad("bad tag")
		}
	}
	if first, after, ok := strings.Cut(rest, "/"); ok &&
		(strings.ContainsAny(first, ".:") || first == "localhost" || strings.HasPrefix(first, "[")) {
		r.Domain, r.Path = first, after
	} else {
		r.Domain, r.Path = DefaultDomain, rest
	}
	if r.Domain == "index.docker.io" || r.Domain == "registry-1.docker.io" {
		r.Domain = DefaultDomain
	}
	if r.Domain == DefaultDomain && !strings.Contains(r.Path, "/") {
		r.Path = "library/" + r.Path
	}
	if !pathRE.MatchString(r.Path) {
		return bad("bad repository name")
	}
	if r.Tag == "" && r.Digest == "" {
		r.Tag = "latest"
	}
	return r, nil
}
