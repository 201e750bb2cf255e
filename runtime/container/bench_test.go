package container

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// BenchmarkCreateStartWait measures `berth-shim init` as the monitor drives
// it: create (namespaces, mounts, pivot, seccomp compile), start through the
// FIFO, and wait for busybox `true` to exit.
func BenchmarkCreateStartWait(b *testing.B) {
	rootfs := busyboxRootfs(b)
	spec := testSpec(rootfs, "true")
	b.Run("seccomp=default", func(b *testing.B) { benchCreate(b, spec) })
	bare := testSpec(rootfs, "true")
	bare.Linux.Seccomp = nil
	b.Run("seccomp=none", func(b *testing.B) { benchCreate(b, bare) })
}

func benchCreate(b *testing.B, spec *specs.Spec) {
	for b.Loop() {
		c, err := create(b, spec)
		if err != nil {
			b.Fatal(err)
		}
		c.start()
		if _, st := c.wait(); st.ExitStatus() != 0 {
			b.Fatalf("exit %v", st)
		}
	}
}

// BenchmarkExec measures `berth-shim exec` of `true` into a running container.
func BenchmarkExec(b *testing.B) {
	rootfs := busyboxRootfs(b)
	c, err := create(b, testSpec(rootfs, "sleep", "1000"))
	if err != nil {
		b.Fatal(err)
	}
	c.start()
	if m, err := c.next(); err == nil {
		b.Fatalf("sync message after start: %+v", m)
	}
	p := execProcess("true")
	for b.Loop() {
		if out, code := shimExec(b, c.pid, p); code != 0 {
			b.Fatalf("exec: %d %s", code, out)
		}
	}
}
