package imageservice

import (
	"errors"
	"testing"

	"github.com/berth-dev/berth/errdefs"
)

func TestParseReference(t *testing.T) {
	d := "sha256:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for in, want := range map[string]string{
		"busybox":                    "docker.io/library/busybox:latest",
		"busybox:1.36":               "docker.io/library/busybox:1.36",
		"library/busybox":            "docker.io/library/busybox:latest",
		"index.docker.io/foo/bar":    "docker.io/foo/bar:latest",
		"docker.io/busybox@" + d:     "docker.io/library/busybox@" + d,
		"127.0.0.1:5000/test/x":      "127.0.0.1:5000/test/x:latest",
		"localhost/x:v1":             "localhost/x:v1",
		"quay.io/a/b:t@" + d:         "quay.io/a/b:t@" + d,
		"registry.k8s.io/pause:3.10": "registry.k8s.io/pause:3.10",
		"[::1]:5000/x":               "[::1]:5000/x:latest",
	} {
		r, err := ParseReference(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		if r.String() != want {
			t.Errorf("%s: got %s, want %s", in, r, want)
		}
	}
	for _, bad := range []string{"", "Busybox", "busybox@sha256:abc", "a:b:c", "x/../y"} {
		if _, err := ParseReference(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%q: got %v, want invalid argument", bad, err)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for h, want := range map[string]bool{
		"localhost:5000": true, "127.0.0.1": true, "127.1.2.3:80": true, "[::1]:5000": true,
		"docker.io": false, "10.0.0.1:5000": false, "example.com:5000": false,
	} {
		if got := isLoopback(h); got != want {
			t.Errorf("%s: %v", h, got)
		}
	}
}
