package seccomp

import (
	"runtime"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// DockerDefaultCapabilities is Docker's (and containerd's) default
// capability set; DefaultProfile is the profile for a container that has it.
var DockerDefaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// DefaultProfile is the RuntimeDefault seccomp profile for a container with
// Docker's default capabilities: the same effect as Docker's default profile
// (deny with EPERM unless listed; namespace-creating clone flags, mount,
// keyrings, kernel modules, reboot, clock setting, BPF, perf, io_uring,
// userfaultfd, AF_VSOCK sockets and the like are refused).
func DefaultProfile() *specs.LinuxSeccomp {
	return DefaultProfileFor(DockerDefaultCapabilities)
}

// DefaultProfileFor is Docker's default profile specialised for a container
// whose bounding set is caps: like Docker, holding CAP_SYS_ADMIN,
// CAP_SYS_PTRACE, ... re-allows the system calls those capabilities guard.
func DefaultProfileFor(caps []string) *specs.LinuxSeccomp {
	has := map[string]bool{}
	for _, c := range caps {
		has[c] = true
	}
	eperm := uint(unix.EPERM)
	p := &specs.LinuxSeccomp{
		DefaultAction:   specs.ActErrno,
		DefaultErrnoRet: &eperm,
		Architectures:   architectures(),
	}
	allow := func(names ...string) {
		p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{Names: names, Action: specs.ActAllow})
	}
	allow(baseSyscalls...)
	// socket(2) for every family but AF_VSOCK (a path to the host).
	p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{
		Names: []string{"socket"}, Action: specs.ActAllow,
		Args: []specs.LinuxSeccompArg{{Index: 0, Value: unix.AF_VSOCK, Op: specs.OpNotEqual}},
	})
	// personality(2) only for the harmless personas.
	for _, v := range []uint64{0x0, 0x0008, 0x20000, 0x20008, 0xffffffff} {
		p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{
			Names: []string{"personality"}, Action: specs.ActAllow,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: v, Op: specs.OpEqualTo}},
		})
	}
	switch runtime.GOARCH {
	case "amd64", "386":
		allow("arch_prctl", "modify_ldt", "uretprobe")
	case "arm64", "arm":
		allow("arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls")
	case "riscv64":
		allow("riscv_flush_icache")
	case "s390x":
		allow("s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr")
	case "ppc64le":
		allow("sync_file_range2", "swapcontext")
	}
	// ptrace and cross-process memory access are safe on kernels >= 4.8,
	// where seccomp is re-checked after a tracer changes a system call.
	allow("process_vm_readv", "process_vm_writev", "ptrace")

	if has["CAP_SYS_ADMIN"] {
		allow("bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
			"lookup_dcookie", "mount", "mount_setattr", "move_mount", "open_tree", "perf_event_open",
			"quotactl", "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog",
			"umount", "umount2", "unshare")
	} else {
		// clone(2) without namespace flags; clone3 hides its flags in
		// memory, so it answers ENOSYS and libc falls back to clone.
		nsFlags := uint64(unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER |
			unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP)
		index := uint(0)
		if runtime.GOARCH == "s390x" {
			index = 1 // clone's flags are its second argument there
		}
		p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{
			Names: []string{"clone"}, Action: specs.ActAllow,
			Args: []specs.LinuxSeccompArg{{Index: index, Value: nsFlags, ValueTwo: 0, Op: specs.OpMaskedEqual}},
		})
		enosys := uint(unix.ENOSYS)
		p.Syscalls = append(p.Syscalls, specs.LinuxSyscall{
			Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &enosys,
		})
	}
	byCap := []struct {
		cap   string
		names []string
	}{
		{"CAP_SYS_BOOT", []string{"reboot"}},
		{"CAP_SYS_CHROOT", []string{"chroot"}},
		{"CAP_SYS_MODULE", []string{"delete_module", "init_module", "finit_module"}},
		{"CAP_SYS_PACCT", []string{"acct"}},
		{"CAP_SYS_PTRACE", []string{"kcmp", "pidfd_getfd", "process_madvise"}},
		{"CAP_SYS_RAWIO", []string{"iopl", "ioperm"}},
		{"CAP_SYS_TIME", []string{"settimeofday", "stime", "clock_settime", "clock_settime64"}},
		{"CAP_SYS_TTY_CONFIG", []string{"vhangup"}},
		{"CAP_SYS_NICE", []string{"get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"}},
		{"CAP_SYSLOG", []string{"syslog"}},
		{"CAP_BPF", []string{"bpf"}},
		{"CAP_PERFMON", []string{"perf_event_open"}},
		{"CAP_DAC_READ_SEARCH", []string{"open_by_handle_at"}},
	}
	for _, c := range byCap {
		if has[c.cap] {
			allow(c.names...)
		}
	}
	return p
}

func architectures() []specs.Arch {
	switch runtime.GOARCH {
	case "amd64":
		return []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}
	case "386":
		return []specs.Arch{specs.ArchX86}
	case "arm64":
		return []specs.Arch{specs.ArchAARCH64, specs.ArchARM}
	case "arm":
		return []specs.Arch{specs.ArchARM}
	case "riscv64":
		return []specs.Arch{specs.ArchRISCV64}
	case "s390x":
		return []specs.Arch{specs.ArchS390X, specs.ArchS390}
	case "ppc64le":
		return []specs.Arch{specs.ArchPPC64LE}
	}
	return nil
}

// baseSyscalls are allowed for every container: everything an ordinary
// program needs, and nothing that reaches kernel-global state.
var baseSyscalls = []string{
	"accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat",
	"capget", "capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime",
	"clock_adjtime64", "clock_getres", "clock_getres_time64", "clock_gettime",
	"clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "close",
	"close_range", "connect", "copy_file_range", "creat", "dup", "dup2", "dup3",
	"epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
	"epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve",
	"execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64",
	"fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat",
	"fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync",
	"fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat",
	"fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate",
	"ftruncate64", "futex", "futex_requeue", "futex_time64", "futex_wait",
	"futex_waitv", "futex_wake", "futimesat", "getcpu", "getcwd", "getdents",
	"getdents64", "getegid", "getegid32", "geteuid", "geteuid32", "getgid",
	"getgid32", "getgroups", "getgroups32", "getitimer", "getpeername", "getpgid",
	"getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid",
	"getresgid32", "getresuid", "getresuid32", "getrlimit", "get_robust_list",
	"getrusage", "getsid", "getsockname", "getsockopt", "get_thread_area", "gettid",
	"gettimeofday", "getuid", "getuid32", "getxattr", "getxattrat",
	"inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch",
	"io_cancel", "ioctl", "io_destroy", "io_getevents", "io_pgetevents",
	"io_pgetevents_time64", "ioprio_get", "ioprio_set", "io_setup", "io_submit",
	"ipc", "kill", "landlock_add_rule", "landlock_create_ruleset",
	"landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link", "linkat",
	"listen", "listmount", "listxattr", "listxattrat", "llistxattr", "_llseek",
	"lremovexattr", "lseek", "lsetxattr", "lstat", "lstat64", "madvise",
	"map_shadow_stack", "membarrier", "memfd_create", "memfd_secret", "mincore",
	"mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap",
	"mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
	"mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink",
	"mremap", "mseal", "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock",
	"munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat",
	"_newselect", "open", "openat", "openat2", "pause", "pidfd_open",
	"pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect",
	"poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2",
	"prlimit64", "process_mrelease", "pselect6", "pselect6_time64", "pwrite64",
	"pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv",
	"recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages",
	"removexattr", "removexattrat", "rename", "renameat", "renameat2",
	"restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
	"rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
	"rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
	"sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max",
	"sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval",
	"sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr",
	"sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select",
	"semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send",
	"sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid",
	"setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups",
	"setgroups32", "setitimer", "setpgid", "setpriority", "setregid", "setregid32",
	"setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32",
	"setrlimit", "set_robust_list", "setsid", "setsockopt", "set_thread_area",
	"set_tid_address", "setuid", "setuid32", "setxattr", "setxattrat", "shmat",
	"shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4",
	"sigprocmask", "sigreturn", "socketcall", "socketpair", "splice", "stat",
	"stat64", "statfs", "statfs64", "statmount", "statx", "symlink", "symlinkat",
	"sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time",
	"timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
	"timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create",
	"timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64",
	"times", "tkill", "truncate", "truncate64", "ugetrlimit", "umask", "uname",
	"unlink", "unlinkat", "utime", "utimensat", "utimensat_time64", "utimes",
	"vfork", "vmsplice", "wait4", "waitid", "waitpid", "write", "writev",
}
