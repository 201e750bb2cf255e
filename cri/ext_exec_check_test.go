package cri

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/errdefs"
)

// checkStartable looks through /proc/PID/root; this process's root is the
// host's, with a directory made for the test.
func TestCheckStartable(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "run.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	pid := os.Getpid()
	for _, tc := range []struct {
		name string
		proc processSpec
		kind error // nil: startable
		msg  string
	}{
		{"in PATH", processSpec{Args: []string{"sh"}, Cwd: "/", Env: []string{"PATH=/usr/bin:/bin"}}, nil, ""},
		{"default PATH", processSpec{Args: []string{"sh"}}, nil, ""},
		{"absolute", processSpec{Args: []string{script}, Cwd: "/"}, nil, ""},
		{"relative to cwd", processSpec{Args: []string{"./run.sh"}, Cwd: dir}, nil, ""},
		{"not in PATH", processSpec{Args: []string{"no-such-program-here"}, Cwd: "/", Env: []string{"PATH=/bin"}}, errdefs.ErrNotFound, `exec: "no-such-program-here": executable file not found in $PATH`},
		{"PATH dir with the name but not executable", processSpec{Args: []string{"data"}, Cwd: "/", Env: []string{"PATH=" + dir}}, errdefs.ErrNotFound, "executable file not found"},
		{"missing path", processSpec{Args: []string{filepath.Join(dir, "nope")}, Cwd: "/"}, errdefs.ErrNotFound, "no such file or directory"},
		{"not executable", processSpec{Args: []string{filepath.Join(dir, "data")}, Cwd: "/"}, errdefs.ErrInvalidArgument, "permission denied"},
		{"a directory", processSpec{Args: []string{dir}, Cwd: "/"}, errdefs.ErrInvalidArgument, "permission denied"},
		{"missing cwd", processSpec{Args: []string{"sh"}, Cwd: filepath.Join(dir, "nowhere")}, errdefs.ErrInvalidArgument, "chdir to cwd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkStartable(pid, &tc.proc)
			if tc.kind == nil {
				if err != nil {
					t.Errorf("%v: want startable", err)
				}
				return
			}
			if !errors.Is(err, tc.kind) || err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("got %v, want %v with %q", err, tc.kind, tc.msg)
			}
		})
	}
}
