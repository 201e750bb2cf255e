package seccomp

import (
	"errors"
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
