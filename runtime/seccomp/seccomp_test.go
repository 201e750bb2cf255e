package seccomp

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"runtime"
	"slices"
	"testing"

	"github.com/berth-dev/berth/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func names(p *specs.LinuxSeccomp, act specs.LinuxSeccompAction) []string {
	var out []string
	for _, s := range p.Syscalls {
		if s.Action == act {
			out = append(out, s.Names...)
		}
	}
	return out
}

func TestDefaultProfileCompiles(t *testing.T) {
	f, err := Compile(DefaultProfile())
	if err != nil {
		t.Fatal(err)
	}
	if f.Len() < 100 {
		t.Errorf("default profile compiled to only %d instructions", f.Len())
	}
}

func TestDefaultProfileFollowsCapabilities(t *testing.T) {
	def := names(DefaultProfile(), specs.ActAllow)
	for _, denied := range []string{"mount", "unshare", "setns", "reboot", "init_module", "bpf", "keyctl", "add_key", "userfaultfd", "io_uring_setup", "kexec_load", "open_by_handle_at"} {
		if slices.Contains(def, denied) {
			t.Errorf("default profile allows %s", denied)
		}
	}
	for _, allowed := range []string{"read", "execve", "chroot", "clone", "socket", "personality", "ptrace"} {
		if !slices.Contains(def, allowed) {
			t.Errorf("default profile denies %s", allowed)
		}
	}
	admin := names(DefaultProfileFor(append(DockerDefaultCapabilities, "CAP_SYS_ADMIN")), specs.ActAllow)
	for _, n := range []string{"mount", "unshare", "setns", "clone3"} {
		if !slices.Contains(admin, n) {
			t.Errorf("profile with CAP_SYS_ADMIN denies %s", n)
		}
	}
	if slices.Contains(names(DefaultProfileFor(nil), specs.ActAllow), "chroot") {
		t.Error("profile without CAP_SYS_CHROOT allows chroot")
	}
}

func TestCompileRejects(t *testing.T) {
	for name, p := range map[string]*specs.LinuxSeccomp{
		"action": {DefaultAction: "SCMP_ACT_BOGUS"},
		"arch":   {DefaultAction: specs.ActAllow, Architectures: []specs.Arch{"SCMP_ARCH_VAX"}},
		"op": {DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{
			Names: []string{"read"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Op: "SCMP_CMP_BOGUS"}},
		}}},
	} {
		if _, err := Compile(p); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
	// Names the installed libseccomp does not know are skipped, not fatal.
	p := &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{
		{Names: []string{"read", "no_such_syscall_berth"}, Action: specs.ActAllow},
	}}
	if _, err := Compile(p); err != nil {
		t.Errorf("unknown syscall name: %v", err)
	}
}

func BenchmarkCompileDefault(b *testing.B) {
	p := DefaultProfile()
	for b.Loop() {
		if _, err := Compile(p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCompileDefaultNativeOnly(b *testing.B) {
	p := DefaultProfile()
	p.Architectures = nil
	for b.Loop() {
		if _, err := Compile(p); err != nil {
			b.Fatal(err)
		}
	}
}

var update = flag.Bool("update", false, "rewrite the precompiled default program")

// The embedded program must be what libseccomp makes of DefaultProfile now;
// if this fails after a change to the profile, run the test with -update.
func TestPrecompiledDefault(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("precompiled for amd64 only")
	}
	f, err := compile(DefaultProfile())
	if err != nil {
		t.Fatal(err)
	}
	fresh := encode(f.prog)
	if *update {
		if err := os.WriteFile("default_amd64.bpf", fresh, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if !bytes.Equal(fresh, defaultProgram) {
		t.Fatalf("default_amd64.bpf is stale (%d bytes, fresh %d): run with -update", len(defaultProgram), len(fresh))
	}
	got, err := Compile(DefaultProfile())
	if err != nil || !bytes.Equal(encode(got.prog), fresh) {
		t.Errorf("Compile(DefaultProfile()) did not use the precompiled program: %v", err)
	}
	// Any other profile is compiled.
	other := DefaultProfileFor(nil)
	if g, err := Compile(other); err != nil || bytes.Equal(encode(g.prog), fresh) {
		t.Errorf("a different profile got the default program: %v", err)
	}
}
