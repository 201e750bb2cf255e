// Package seccomp compiles an OCI seccomp profile (specs.LinuxSeccomp) into a
// classic BPF program with libseccomp, and loads it into the calling thread.
// Compiling and loading are separate so that a bad profile is reported while
// a container is being created, and the load itself is one raw syscall made
// as the last step before execve.
package seccomp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"unsafe"

	"github.com/berth-dev/berth/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// Filter is a compiled seccomp program.
type Filter struct {
	prog  []unix.SockFilter
	flags uintptr
}

// Len is the number of BPF instructions.
func (f *Filter) Len() int { return len(f.prog) }

var archNames = map[specs.Arch]string{
	specs.ArchX86:         "x86",
	specs.ArchX86_64:      "amd64",
	specs.ArchX32:         "x32",
	specs.ArchARM:         "arm",
	specs.ArchAARCH64:     "arm64",
	specs.ArchMIPS:        "mips",
	specs.ArchMIPS64:      "mips64",
	specs.ArchMIPS64N32:   "mips64n32",
	specs.ArchMIPSEL:      "mipsel",
	specs.ArchMIPSEL64:    "mipsel64",
	specs.ArchMIPSEL64N32: "mipsel64n32",
	specs.ArchPPC:         "ppc",
	specs.ArchPPC64:       "ppc64",
	specs.ArchPPC64LE:     "ppc64le",
	specs.ArchS390:        "s390",
	specs.ArchS390X:       "s390x",
	specs.ArchRISCV64:     "riscv64",
}

var ops = map[specs.LinuxSeccompOperator]libseccomp.ScmpCompareOp{
	specs.OpNotEqual:     libseccomp.CompareNotEqual,
	specs.OpLessThan:     libseccomp.CompareLess,
	specs.OpLessEqual:    libseccomp.CompareLessOrEqual,
	specs.OpEqualTo:      libseccomp.CompareEqual,
	specs.OpGreaterEqual: libseccomp.CompareGreaterEqual,
	specs.OpGreaterThan:  libseccomp.CompareGreater,
	specs.OpMaskedEqual:  libseccomp.CompareMaskedEqual,
}

var filterFlags = map[specs.LinuxSeccompFlag]uintptr{
	specs.LinuxSeccompFlagLog:              unix.SECCOMP_FILTER_FLAG_LOG,
	specs.LinuxSeccompFlagSpecAllow:        unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW,
	specs.LinuxSeccompFlagWaitKillableRecv: unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
}

func action(a specs.LinuxSeccompAction, errnoRet *uint, defErrno *uint) (libseccomp.ScmpAction, error) {
	switch a {
	case specs.ActKill, specs.ActKillThread:
		return libseccomp.ActKillThread, nil
	case specs.ActKillProcess:
		return libseccomp.ActKillProcess, nil
	case specs.ActTrap:
		return libseccomp.ActTrap, nil
	case specs.ActAllow:
		return libseccomp.ActAllow, nil
	case specs.ActLog:
		return libseccomp.ActLog, nil
	case specs.ActErrno, specs.ActTrace:
		code := uint(unix.EPERM)
		if errnoRet != nil {
			code = *errnoRet
		} else if defErrno != nil {
			code = *defErrno
		}
		if a == specs.ActTrace {
			return libseccomp.ActTrace.SetReturnCode(int16(code)), nil
		}
		return libseccomp.ActErrno.SetReturnCode(int16(code)), nil
	}
	return 0, fmt.Errorf("seccomp action %q: %w", a, errdefs.ErrNotImplemented)
}

// Compile turns an OCI profile into BPF. Syscall names unknown to the
// installed libseccomp are skipped (as runc does), so a profile written for a
// newer kernel still loads; those calls then get the default action.
//
// libseccomp needs about 10 ms for Docker's profile on three x86 ABIs, paid
// by every container and every exec; so DefaultProfile's program is compiled
// ahead of time (precompiled_*.go) and returned when s is that profile.
func Compile(s *specs.LinuxSeccomp) (*Filter, error) {
	if f := precompiled(s); f != nil {
		return f, nil
	}
	return compile(s)
}

func compile(s *specs.LinuxSeccomp) (*Filter, error) {
	if s == nil {
		return nil, fmt.Errorf("nil seccomp profile: %w", errdefs.ErrInvalidArgument)
	}
	if s.ListenerPath != "" {
		return nil, fmt.Errorf("seccomp notify listener: %w", errdefs.ErrNotImplemented)
	}
	def, err := action(s.DefaultAction, s.DefaultErrnoRet, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	f, err := libseccomp.NewFilter(def)
	if err != nil {
		return nil, fmt.Errorf("seccomp filter: %w", err)
	}
	defer f.Release()
	// no_new_privs is the spec's business, set by the caller before loading.
	if err := f.SetNoNewPrivsBit(false); err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	// A binary tree of system call numbers instead of a linear list: each
	// system call (and the kernel's per-filter action cache, built when the
	// filter is attached) runs a few dozen instructions, not hundreds.
	if err := f.SetOptimize(2); err != nil {
		return nil, fmt.Errorf("seccomp: %w", err)
	}
	for _, a := range s.Architectures {
		name, ok := archNames[a]
		if !ok {
			return nil, fmt.Errorf("seccomp architecture %q: %w", a, errdefs.ErrInvalidArgument)
		}
		arch, err := libseccomp.GetArchFromString(name)
		if err != nil {
			return nil, fmt.Errorf("seccomp architecture %q: %w", a, err)
		}
		if err := f.AddArch(arch); err != nil {
			return nil, fmt.Errorf("seccomp add architecture %q: %w", a, err)
		}
	}
	var flags uintptr
	for _, fl := range s.Flags {
		v, ok := filterFlags[fl]
		if !ok {
			return nil, fmt.Errorf("seccomp flag %q: %w", fl, errdefs.ErrNotImplemented)
		}
		flags |= v
	}
	for _, rule := range s.Syscalls {
		act, err := action(rule.Action, rule.ErrnoRet, s.DefaultErrnoRet)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
		}
		if act == def {
			continue // libseccomp refuses rules that repeat the default
		}
		conds, err := conditions(rule.Args)
		if err != nil {
			return nil, err
		}
		for _, name := range rule.Names {
			call, err := libseccomp.GetSyscallFromName(name)
			if err != nil {
				continue
			}
			if err := addRule(f, call, act, conds); err != nil {
				return nil, fmt.Errorf("seccomp rule for %s: %w", name, err)
			}
		}
	}
	prog, err := export(f)
	if err != nil {
		return nil, err
	}
	return &Filter{prog: prog, flags: flags}, nil
}

// conditions groups the rule's argument checks. The OCI semantics (as runc
// implements them): checks on distinct arguments must all hold; several
// checks on the same argument are alternatives.
func conditions(args []specs.LinuxSeccompArg) ([][]libseccomp.ScmpCondition, error) {
	if len(args) == 0 {
		return nil, nil
	}
	var all []libseccomp.ScmpCondition
	seen := map[uint]bool{}
	sameArg := false
	for _, a := range args {
		op, ok := ops[a.Op]
		if !ok {
			return nil, fmt.Errorf("seccomp operator %q: %w", a.Op, errdefs.ErrInvalidArgument)
		}
		vals := []uint64{a.Value}
		if op == libseccomp.CompareMaskedEqual {
			vals = append(vals, a.ValueTwo)
		}
		c, err := libseccomp.MakeCondition(a.Index, op, vals...)
		if err != nil {
			return nil, fmt.Errorf("seccomp condition: %w: %w", errdefs.ErrInvalidArgument, err)
		}
		if seen[a.Index] {
			sameArg = true
		}
		seen[a.Index] = true
		all = append(all, c)
	}
	if !sameArg {
		return [][]libseccomp.ScmpCondition{all}, nil
	}
	groups := make([][]libseccomp.ScmpCondition, len(all))
	for i, c := range all {
		groups[i] = []libseccomp.ScmpCondition{c}
	}
	return groups, nil
}

func addRule(f *libseccomp.ScmpFilter, call libseccomp.ScmpSyscall, act libseccomp.ScmpAction, conds [][]libseccomp.ScmpCondition) error {
	if len(conds) == 0 {
		return f.AddRule(call, act)
	}
	for _, c := range conds {
		if err := f.AddRuleConditional(call, act, c); err != nil {
			return err
		}
	}
	return nil
}

// export writes the program through a memfd: libseccomp 2.5 (Debian 12)
// has no in-memory export.
func export(f *libseccomp.ScmpFilter) ([]unix.SockFilter, error) {
	fd, err := unix.MemfdCreate("berth-seccomp", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("seccomp export: %w", err)
	}
	file := os.NewFile(uintptr(fd), "berth-seccomp")
	defer file.Close()
	if err := f.ExportBPF(file); err != nil {
		return nil, fmt.Errorf("seccomp export: %w", err)
	}
	if _, err := file.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("seccomp export: %w", err)
	}
	raw, err := io.ReadAll(file)
	if err != nil {
		return nil, fmt.Errorf("seccomp export: %w", err)
	}
	return decode(raw)
}

// decode reads a BPF program in the kernel's (native-endian) layout.
func decode(raw []byte) ([]unix.SockFilter, error) {
	const insn = int(unsafe.Sizeof(unix.SockFilter{}))
	if len(raw) == 0 || len(raw)%insn != 0 {
		return nil, fmt.Errorf("seccomp: %d bytes is not a BPF program", len(raw))
	}
	prog := make([]unix.SockFilter, len(raw)/insn)
	for i := range prog {
		b := raw[i*insn:]
		prog[i] = unix.SockFilter{
			Code: binary.NativeEndian.Uint16(b[0:]),
			Jt:   b[2],
			Jf:   b[3],
			K:    binary.NativeEndian.Uint32(b[4:]),
		}
	}
	return prog, nil
}

// encode is decode's inverse.
func encode(prog []unix.SockFilter) []byte {
	out := make([]byte, 0, 8*len(prog))
	for _, in := range prog {
		out = binary.NativeEndian.AppendUint16(out, in.Code)
		out = append(out, in.Jt, in.Jf)
		out = binary.NativeEndian.AppendUint32(out, in.K)
	}
	return out
}

// Load installs the filter on the calling thread (and, through execve, on the
// program it runs). Without no_new_privs the kernel requires CAP_SYS_ADMIN.
func (f *Filter) Load() error {
	if f == nil || len(f.prog) == 0 {
		return errors.New("seccomp: empty filter")
	}
	prog := unix.SockFprog{Len: uint16(len(f.prog)), Filter: &f.prog[0]}
	_, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, f.flags, uintptr(unsafe.Pointer(&prog)))
	if errno != 0 {
		return fmt.Errorf("seccomp(SECCOMP_SET_MODE_FILTER): %w", errno)
	}
	return nil
}
