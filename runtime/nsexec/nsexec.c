// The exec entry's pre-runtime half. setns(2) into a mount namespace is
// refused for a multi-threaded process, and the Go runtime starts threads
// before main, so `berth-shim exec` joins the container's namespaces here, in
// a constructor that runs before the Go runtime. It also makes sure that
// `berth-shim init` and `berth-shim exec` run from a sealed in-memory copy of
// the binary (CVE-2019-5736): a process inside the container that resolves
// /proc/<pid>/exe of ours then reaches a memfd it can never write, never the
// host's berth-shim file.
//
// `berth-shim podinit` of a pod with a user namespace starts here too (see
// init_in_userns). For every other subcommand (and for test binaries) the
// constructor returns at once.

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nsexec.h"

// Results handed to Go (read through cgo after the runtime has started).
int berth_exec_process_fd = -1;
int berth_exec_config_fd = -1;
int berth_exec_joined = 0;

// Exit status for a failure of the exec entry itself (docker uses 125 for
// "the runtime failed", 126/127 for a program that can't be run).
#define SETUP_FAILED 125

#define SEALS (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)

// NS_GET_NSTYPE from <linux/nsfs.h>: the CLONE_NEW* kind of an nsfs fd.
#define BERTH_NS_GET_NSTYPE _IO(0xb7, 0x3)

// Where die reports: stderr, or the init's report pipe (see
// init_in_userns), whose reader puts the message in the container's state.
static int report_fd = 2;

static void die(const char *fmt, ...) {
	char buf[512];
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (report_fd != 2)
		dprintf(report_fd, "error %s: %s\n", buf, strerror(saved));
	else
		dprintf(2, "berth-shim: %s: %s\n", buf, strerror(saved));
	_exit(SETUP_FAILED);
}

// ensure_sealed_exe re-executes the binary from a sealed memfd unless it
// already runs from one. It returns only if /proc/self/exe is sealed.
static void ensure_sealed_exe(char **argv, char **envp) {
	int exe = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	if (exe < 0)
		die("open /proc/self/exe");
	int seals = fcntl(exe, F_GET_SEALS);
	if (seals >= 0 && (seals & SEALS) == SEALS) {
		close(exe);
		return;
	}
	int mfd = memfd_create("berth-shim", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0)
		die("memfd_create");
	struct stat st;
	if (fstat(exe, &st) < 0)
		die("stat /proc/self/exe");
	off_t off = 0;
	while (off < st.st_size) {
		ssize_t n = sendfile(mfd, exe, &off, st.st_size - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			die("copy binary to memfd");
	}
	close(exe);
	if (fcntl(mfd, F_ADD_SEALS, SEALS) < 0)
		die("seal memfd");
	// execveat(AT_EMPTY_PATH) works with a close-on-exec fd for an ELF binary.
	syscall(SYS_execveat, mfd, "", argv, envp, AT_EMPTY_PATH);
	die("execveat sealed copy");
}

static const char *arg_value(int argc, char **argv, const char *name) {
	size_t len = strlen(name);
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		const char *a = argv[i];
		if (a[0] == '-' && a[1] == '-')
			a++; // the Go flag package accepts -x and --x
		if (strncmp(a, name, len) != 0)
			continue;
		if (a[len] == '=')
			return a + len + 1;
		if (a[len] == '\0' && i + 1 < argc)
			return argv[i + 1];
	}
	return NULL;
}

// join_cgroups moves this process into every cgroup of pid, while the host's
// cgroup file systems are still reachable by path. v1 hierarchies are
// mounted at /sys/fs/cgroup/<controllers or name>; the v2 hierarchy at
// /sys/fs/cgroup/unified on hybrid hosts, /sys/fs/cgroup on pure v2 hosts.
static void join_cgroups(const char *pid) {
	char path[4096];
	snprintf(path, sizeof path, "/proc/%s/cgroup", pid);
	FILE *f = fopen(path, "re");
	if (!f)
		die("open %s", path);
	char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, f) > 0) {
		line[strcspn(line, "\n")] = 0;
		char *ctrl = strchr(line, ':');
		if (!ctrl)
			continue;
		ctrl++;
		char *cg = strchr(ctrl, ':');
		if (!cg)
			continue;
		*cg++ = 0;
		char dir[4096];
		struct stat st;
		if (*ctrl == 0) {
			snprintf(dir, sizeof dir, "/sys/fs/cgroup/unified%s", cg);
			if (stat("/sys/fs/cgroup/unified", &st) < 0)
				snprintf(dir, sizeof dir, "/sys/fs/cgroup%s", cg);
		} else {
			const char *name = ctrl;
			if (strncmp(name, "name=", 5) == 0)
				name += 5;
			snprintf(dir, sizeof dir, "/sys/fs/cgroup/%s%s", name, cg);
			if (stat(dir, &st) < 0) {
				// Co-mounted controllers may be mounted under the first name.
				char first[256];
				snprintf(first, sizeof first, "%.*s", (int)strcspn(name, ","), name);
				snprintf(dir, sizeof dir, "/sys/fs/cgroup/%s%s", first, cg);
			}
		}
		char procs[4200];
		snprintf(procs, sizeof procs, "%s/cgroup.procs", dir);
		int fd = open(procs, O_WRONLY | O_CLOEXEC);
		if (fd < 0) {
			if (errno == ENOENT)
				continue; // hierarchy not mounted here
			die("open %s", procs);
		}
		if (write(fd, "0", 1) != 1)
			die("join cgroup %s", dir);
		close(fd);
	}
	free(line);
	fclose(f);
}

// become_userns_root makes the ids root of the user namespace just joined
// (the pod's root on the host). Until then they are host root's, which the
// namespace does not map: files could not even be created.
static void become_userns_root(void) {
	if (setresgid(0, 0, 0) < 0)
		die("setresgid to the user namespace's root");
	if (setgroups(0, NULL) < 0)
		die("setgroups in the user namespace");
	if (setresuid(0, 0, 0) < 0)
		die("setresuid to the user namespace's root");
	// Changing ids resets "dumpable" to fs.suid_dumpable: set it off
	// again, or the pod's other processes (same host uid) could ptrace
	// this one, which holds host fds, until it execs.
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		die("prctl(PR_SET_DUMPABLE)");
}

static const char *ns_name(int type) {
	switch (type) {
	case CLONE_NEWUSER:
		return "user";
	case CLONE_NEWNET:
		return "net";
	case CLONE_NEWIPC:
		return "ipc";
	case CLONE_NEWUTS:
		return "uts";
	case CLONE_NEWPID:
		return "pid";
	case CLONE_NEWCGROUP:
		return "cgroup";
	case CLONE_NEWNS:
		return "mnt";
	}
	return "unknown";
}

// init_in_userns is the child of `berth-shim init` for a container in a
// pod's user namespace. Go cannot join a user namespace (setns refuses a
// multi-threaded process), and the container's own mount and pid
// namespaces must be made after that, so that they belong to it (or root
// in it could not mount anything). spec is
// "REPORTFD,UNSHAREFLAGS,NSFD,NSFD,...": the namespaces to join, the user
// namespace first. This process joins them, unshares the new ones and forks
// the container process (pid 1 of a new pid namespace), which returns into
// Go; this one reports its pid on REPORTFD and exits. `berth-shim podinit`
// of a pod with a shared pid namespace and a user namespace starts the same
// way, with spec "REPORTFD,CLONE_NEWPID,USERNSFD".
static void init_in_userns(const char *spec) {
	char *end;
	errno = 0;
	long rfd = strtol(spec, &end, 10);
	if (errno || *end != ',' || rfd < 3) {
		errno = EINVAL;
		die("bad _BERTH_INIT_USERNS %s", spec);
	}
	report_fd = (int)rfd;
	unsigned long flags = strtoul(end + 1, &end, 10);
	while (*end == ',') {
		long fd = strtol(end + 1, &end, 10);
		int type = ioctl((int)fd, BERTH_NS_GET_NSTYPE);
		if (type < 0)
			die("namespace fd %ld", fd);
		if (setns((int)fd, type) < 0)
			die("join the pod's %s namespace", ns_name(type));
		close((int)fd);
	}
	if (*end != 0) {
		errno = EINVAL;
		die("bad _BERTH_INIT_USERNS %s", spec);
	}
	become_userns_root();
	if (unshare((int)flags) < 0)
		die("unshare %#lx", flags);
	pid_t c = fork();
	if (c < 0)
		die("fork the container process");
	if (c == 0) {
		close(report_fd);
		report_fd = 2;
		return;
	}
	dprintf(report_fd, "pid %d\n", (int)c);
	_exit(0);
}

static volatile pid_t child_pid;

static void forward_signal(int sig) {
	if (child_pid > 0)
		kill(child_pid, sig);
}

// The namespaces an exec joins: the user namespace first (a pod's, which
// owns the others: joining them then needs only its capabilities), mnt
// last (after it, host paths are gone).
static const struct {
	const char *name;
	int type;
} namespaces[] = {
	{"user", CLONE_NEWUSER}, {"cgroup", CLONE_NEWCGROUP}, {"ipc", CLONE_NEWIPC},
	{"uts", CLONE_NEWUTS},   {"net", CLONE_NEWNET},       {"pid", CLONE_NEWPID},
	{"mnt", CLONE_NEWNS},
};
#define NUM_NS (sizeof namespaces / sizeof namespaces[0])

static void join_container(int argc, char **argv) {
	const char *pid = arg_value(argc, argv, "-pid");
	const char *process = arg_value(argc, argv, "-process");
	if (!pid || !process) {
		errno = EINVAL;
		die("exec needs --pid PID and --process FILE");
	}
	// Nothing in the container may read our memory or fds (ptrace,
	// /proc/<pid>/fd) while we carry host state; exec(2) resets this.
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		die("prctl(PR_SET_DUMPABLE)");

	berth_exec_process_fd = open(process, O_RDONLY | O_CLOEXEC);
	if (berth_exec_process_fd < 0)
		die("open %s", process);
	// The container's config.json beside the process file, if there is one:
	// it supplies the seccomp profile when the process file has none.
	char config[4096];
	const char *slash = strrchr(process, '/');
	if (slash)
		snprintf(config, sizeof config, "%.*s/config.json", (int)(slash - process), process);
	else
		snprintf(config, sizeof config, "config.json");
	berth_exec_config_fd = open(config, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);

	int fds[NUM_NS];
	for (size_t i = 0; i < NUM_NS; i++) {
		char path[256], self[256];
		struct stat a, b;
		snprintf(path, sizeof path, "/proc/%s/ns/%s", pid, namespaces[i].name);
		snprintf(self, sizeof self, "/proc/self/ns/%s", namespaces[i].name);
		fds[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0)
			die("open %s", path);
		// Joining one's own namespace is harmless except for mnt, where it
		// would also reset root and cwd; skip all of them alike.
		if (fstat(fds[i], &a) == 0 && stat(self, &b) == 0 && a.st_ino == b.st_ino &&
		    a.st_dev == b.st_dev) {
			close(fds[i]);
			fds[i] = -1;
		}
	}
	// Cgroups first: in the container's user namespace, the host's
	// cgroup files are no longer ours to write.
	join_cgroups(pid);
	int joined_user = fds[0] >= 0;
	for (size_t i = 0; i < NUM_NS; i++) {
		if (fds[i] < 0)
			continue;
		if (setns(fds[i], namespaces[i].type) < 0)
			die("setns %s of pid %s", namespaces[i].name, pid);
		close(fds[i]);
	}
	if (joined_user)
		become_userns_root();
	// setns(mnt) put cwd at the namespace's root; make that explicit so no
	// host directory can stay our cwd.
	if (chdir("/") < 0)
		die("chdir /");

	// A pid namespace applies to children only: the child returns into the Go
	// runtime, the parent mirrors its exit status for the caller.
	pid_t c = fork();
	if (c < 0)
		die("fork");
	if (c == 0) {
		if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
			die("prctl(PR_SET_PDEATHSIG)");
		berth_exec_joined = 1;
		return;
	}
	child_pid = c;
	struct sigaction sa = {0};
	sa.sa_handler = forward_signal;
	sa.sa_flags = SA_RESTART;
	int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT};
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		sigaction(sigs[i], &sa, NULL);
	close(berth_exec_process_fd);
	if (berth_exec_config_fd >= 0)
		close(berth_exec_config_fd);
	int status;
	for (;;) {
		pid_t w = waitpid(c, &status, 0);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			die("waitpid");
		if (WIFEXITED(status))
			_exit(WEXITSTATUS(status));
		if (WIFSIGNALED(status))
			_exit(128 + WTERMSIG(status));
	}
}

__attribute__((constructor)) static void berth_nsexec(int argc, char **argv, char **envp) {
	if (argc < 2)
		return;
	int is_exec = strcmp(argv[1], "exec") == 0;
	int is_init = strcmp(argv[1], "init") == 0;
	const char *userns = getenv("_BERTH_INIT_USERNS");
	if (strcmp(argv[1], "podinit") == 0 && userns) {
		// The pod init of a pod with a user namespace: pid 1 of a pid
		// namespace that the pod's user namespace owns (or its root could
		// neither join it nor mount its proc). Its containers see it, so
		// it runs sealed and undumpable like a container's init.
		ensure_sealed_exe(argv, envp);
		if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
			die("prctl(PR_SET_DUMPABLE)");
		init_in_userns(userns);
		return;
	}
	if (!is_exec && !is_init)
		return;
	ensure_sealed_exe(argv, envp);
	// The init's container process is exec'd into the container's pid
	// namespace; keep it unreachable (ptrace, /proc/<pid>/fd) from the
	// first instruction, not only from when Go gets to it.
	if (is_init && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		die("prctl(PR_SET_DUMPABLE)");
	if (is_exec)
		join_container(argc, argv);
	if (is_init && userns)
		init_in_userns(userns);
}
