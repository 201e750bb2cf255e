package cri

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	imagespec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/errdefs"
)

// sandboxInfo is what a container's runtime spec needs from its pod.
type sandboxInfo struct {
	ID string
	// Namespace pins; empty for a kind the pod shares with the host.
	NetNSPath, IPCNSPath, UTSNSPath, PIDNSPath string
	HostNetwork, HostIPC, HostPID              bool
	HostsPath, ResolvConfPath, HostnamePath    string
	ShmPath                                    string
	Hostname                                   string
	// UserNSPath is the pod's user namespace pin, with its mappings; empty
	// when the pod uses the node's (hostUsers: true).
	UserNSPath               string
	UIDMappings, GIDMappings []specs.LinuxIDMapping
	CgroupParent             string
	Sysctls                  map[string]string
}

// imageInfo is what a container's runtime spec needs from its image.
type imageInfo struct {
	ID     string
	Config imagespec.ImageConfig
}

// specInput gathers a container's inputs to buildSpec.
type specInput struct {
	ID      string
	Rootfs  string
	Sandbox sandboxInfo
	Image   imageInfo
	Config  *runtimeapi.ContainerConfig
	// DefaultSeccomp returns the RuntimeDefault profile.
	DefaultSeccomp func() *specs.LinuxSeccomp
	// ImageVolumes are the prepared image volumes by index in
	// Config.Mounts: the host dir of each mount that names an image.
	ImageVolumes map[int]string
	// Grantable are the capabilities berthd holds in its bounding set: all a
	// privileged container (or "ALL") can get.
	Grantable []string
}

// defaultCapabilities are the capabilities a container gets unless it asks
// otherwise: the same set as Docker and containerd, so images behave alike.
var defaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// capabilityNames are all Linux capabilities by number.
var capabilityNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
	"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
	"CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
	"CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
	"CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
	"CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// defaultMaskedPaths and defaultReadonlyPaths apply when kubelet sends none
// (it sends them for the Default proc mount type).
var (
	defaultMaskedPaths = []string{
		"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
		"/sys/firmware", "/sys/devices/virtual/powercap",
	}
	defaultReadonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// defaultDevices may be used by every container (the device cgroup allows
// these and nothing else unless the container asks).
var defaultDevices = []specs.LinuxDeviceCgroup{
	{Allow: false, Access: "rwm"},
	{Allow: true, Type: "c", Major: ptr(int64(1)), Minor: ptr(int64(3)), Access: "rwm"},    // null
	{Allow: true, Type: "c", Major: ptr(int64(1)), Minor: ptr(int64(5)), Access: "rwm"},    // zero
	{Allow: true, Type: "c", Major: ptr(int64(1)), Minor: ptr(int64(7)), Access: "rwm"},    // full
	{Allow: true, Type: "c", Major: ptr(int64(1)), Minor: ptr(int64(8)), Access: "rwm"},    // random
	{Allow: true, Type: "c", Major: ptr(int64(1)), Minor: ptr(int64(9)), Access: "rwm"},    // urandom
	{Allow: true, Type: "c", Major: ptr(int64(5)), Minor: ptr(int64(0)), Access: "rwm"},    // tty
	{Allow: true, Type: "c", Major: ptr(int64(5)), Minor: ptr(int64(1)), Access: "rwm"},    // console
	{Allow: true, Type: "c", Major: ptr(int64(5)), Minor: ptr(int64(2)), Access: "rwm"},    // ptmx
	{Allow: true, Type: "c", Major: ptr(int64(136)), Minor: ptr(int64(-1)), Access: "rwm"}, // pts
}

func ptr[T any](v T) *T { return &v }

// buildSpec makes the OCI runtime spec of a container from its image config,
// its pod and the CRI ContainerConfig, the way kubelet expects a runtime to.
func buildSpec(in specInput) (*specs.Spec, error) {
	cfg := in.Config
	sc := cfg.GetLinux().GetSecurityContext()
	privileged := sc.GetPrivileged()

	// AppArmor is not enabled on the nodes berth runs on: the default
	// profiles mean nothing, and a named profile cannot be honoured.
	if sc.GetApparmor().GetProfileType() == runtimeapi.SecurityProfile_Localhost ||
		strings.HasPrefix(sc.GetApparmorProfile(), "localhost/") {
		return nil, fmt.Errorf("linux.security_context.apparmor: AppArmor profiles are not supported by berth on this node: %w", errdefs.ErrInvalidArgument)
	}
	args, err := containerArgs(cfg, in.Image.Config)
	if err != nil {
		return nil, err
	}
	user, err := resolveUser(in.Rootfs, sc, in.Image.Config.User)
	if err != nil {
		return nil, err
	}
	caps, err := capabilities(sc, privileged, in.Grantable)
	if err != nil {
		return nil, err
	}
	cwd := cfg.GetWorkingDir()
	if cwd == "" {
		cwd = in.Image.Config.WorkingDir
	}
	if cwd == "" {
		cwd = "/"
	}
	if !filepath.IsAbs(cwd) {
		return nil, fmt.Errorf("working_dir %q must be absolute: %w", cwd, errdefs.ErrInvalidArgument)
	}

	s := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Terminal:        cfg.GetTty(),
			User:            user,
			Args:            args,
			Env:             containerEnv(in.Image.Config.Env, cfg.GetEnvs(), in.Sandbox.Hostname),
			Cwd:             cwd,
			Capabilities:    caps,
			NoNewPrivileges: sc.GetNoNewPrivs() && !privileged,
			// No rlimits: containers inherit berthd's, as with containerd 2.
			// Raising a hard limit needs CAP_SYS_RESOURCE, which a node's
			// runtime may not have.
		},
		Root:        &specs.Root{Path: in.Rootfs, Readonly: sc.GetReadonlyRootfs()},
		Annotations: cfg.GetAnnotations(),
		Linux: &specs.Linux{
			CgroupsPath: filepath.Join(in.Sandbox.CgroupParent, in.ID),
			Sysctl:      in.Sandbox.Sysctls,
			Resources:   &specs.LinuxResources{Devices: append([]specs.LinuxDeviceCgroup(nil), defaultDevices...)},
		},
	}
	if res := cfg.GetLinux().GetResources(); res != nil {
		applyResources(s, res)
	}
	if err := applyPidsLimit(s, cfg.GetAnnotations()); err != nil {
		return nil, err
	}

	ns, err := namespaces(in.Sandbox, sc.GetNamespaceOptions())
	if err != nil {
		return nil, err
	}
	s.Linux.Namespaces = ns
	if in.Sandbox.UserNSPath != "" {
		// The runtime idmaps the rootfs with the pod's user namespace.
		s.Linux.UIDMappings = in.Sandbox.UIDMappings
		s.Linux.GIDMappings = in.Sandbox.GIDMappings
	} else if in.Sandbox.NetNSPath != "" {
		// Never run a container of a user-namespace pod as the node's
		// root because its pod record did not reach us.
		if _, err := os.Stat(filepath.Join(filepath.Dir(in.Sandbox.NetNSPath), "user")); err == nil {
			return nil, fmt.Errorf("pod %s has a user namespace, but the container's sandbox info does not name it: %w", in.Sandbox.ID, errdefs.ErrFailedPrecondition)
		}
	}

	s.Mounts = defaultMounts(privileged, in.Sandbox)
	s.Mounts, err = appendCRIMounts(s.Mounts, cfg.GetMounts(), in.ImageVolumes)
	if err != nil {
		return nil, err
	}
	if err := checkMountMappings(s.Mounts, in.Sandbox); err != nil {
		return nil, err
	}

	if !privileged {
		s.Linux.MaskedPaths = sc.GetMaskedPaths()
		s.Linux.ReadonlyPaths = sc.GetReadonlyPaths()
		if len(s.Linux.MaskedPaths) == 0 && len(s.Linux.ReadonlyPaths) == 0 {
			s.Linux.MaskedPaths = append([]string(nil), defaultMaskedPaths...)
			s.Linux.ReadonlyPaths = append([]string(nil), defaultReadonlyPaths...)
		}
		s.Linux.Seccomp, err = seccompProfile(sc, in.DefaultSeccomp)
		if err != nil {
			return nil, err
		}
	} else {
		s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
		// A privileged container sees the host's devices, as with docker
		// run --privileged and containerd.
		s.Linux.Devices = hostDevices()
	}
	if err := appendDevices(s, cfg.GetDevices()); err != nil {
		return nil, err
	}
	return s, nil
}

// containerArgs merges the CRI command and args with the image's entrypoint
// and cmd as kubelet defines: command replaces the entrypoint (and drops the
// image's cmd); args replace the cmd.
func containerArgs(cfg *runtimeapi.ContainerConfig, img imagespec.ImageConfig) ([]string, error) {
	var args []string
	if len(cfg.GetCommand()) > 0 {
		args = append(append(args, cfg.GetCommand()...), cfg.GetArgs()...)
	} else {
		args = append(args, img.Entrypoint...)
		if len(cfg.GetArgs()) > 0 {
			args = append(args, cfg.GetArgs()...)
		} else {
			args = append(args, img.Cmd...)
		}
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("no command: neither config.command, config.args nor the image's entrypoint and cmd: %w", errdefs.ErrInvalidArgument)
	}
	return args, nil
}

// containerEnv is the image's env with the CRI envs over it, and a PATH and
// HOSTNAME when neither sets one.
func containerEnv(imageEnv []string, envs []*runtimeapi.KeyValue, hostname string) []string {
	var order []string
	vals := map[string]string{}
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = v
	}
	for _, kv := range imageEnv {
		k, v, _ := strings.Cut(kv, "=")
		set(k, v)
	}
	for _, kv := range envs {
		set(kv.GetKey(), string(kv.GetValue()))
	}
	if _, ok := vals["PATH"]; !ok {
		set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	if _, ok := vals["HOSTNAME"]; !ok && hostname != "" {
		set("HOSTNAME", hostname)
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+vals[k])
	}
	return out
}

// capabilities builds the five sets. Add and drop take names with or without
// the CAP_ prefix, in any case, and "ALL".
func capabilities(sc *runtimeapi.LinuxContainerSecurityContext, privileged bool, all []string) (*specs.LinuxCapabilities, error) {
	set := map[string]bool{}
	if privileged {
		for _, c := range all {
			set[c] = true
		}
	} else {
		for _, c := range defaultCapabilities {
			set[c] = true
		}
		known := map[string]bool{}
		for _, c := range capabilityNames {
			known[c] = true
		}
		norm := func(field, name string) (string, error) {
			n := strings.ToUpper(name)
			if n == "ALL" {
				return n, nil
			}
			if !strings.HasPrefix(n, "CAP_") {
				n = "CAP_" + n
			}
			if !known[n] {
				return "", fmt.Errorf("%s: unknown capability %q: %w", field, name, errdefs.ErrInvalidArgument)
			}
			return n, nil
		}
		for _, name := range sc.GetCapabilities().GetDropCapabilities() {
			n, err := norm("capabilities.drop_capabilities", name)
			if err != nil {
				return nil, err
			}
			if n == "ALL" {
				set = map[string]bool{}
				continue
			}
			delete(set, n)
		}
		for _, name := range sc.GetCapabilities().GetAddCapabilities() {
			n, err := norm("capabilities.add_capabilities", name)
			if err != nil {
				return nil, err
			}
			if n == "ALL" {
				for _, c := range all {
					set[c] = true
				}
				continue
			}
			set[n] = true
		}
	}
	list := make([]string, 0, len(set))
	for c := range set {
		list = append(list, c)
	}
	sort.Strings(list)
	var ambient []string
	for _, name := range sc.GetCapabilities().GetAddAmbientCapabilities() {
		n := strings.ToUpper(name)
		if !strings.HasPrefix(n, "CAP_") {
			n = "CAP_" + n
		}
		if !set[n] {
			return nil, fmt.Errorf("capabilities.add_ambient_capabilities: %q is not in the bounding set: %w", name, errdefs.ErrInvalidArgument)
		}
		ambient = append(ambient, n)
	}
	return &specs.LinuxCapabilities{
		Bounding:    list,
		Effective:   list,
		Permitted:   list,
		Inheritable: ambient,
		Ambient:     ambient,
	}, nil
}

func applyResources(s *specs.Spec, res *runtimeapi.LinuxContainerResources) {
	r := s.Linux.Resources
	if res.CpuShares != 0 || res.CpuQuota != 0 || res.CpuPeriod != 0 || res.CpusetCpus != "" || res.CpusetMems != "" {
		r.CPU = &specs.LinuxCPU{Cpus: res.CpusetCpus, Mems: res.CpusetMems}
		if res.CpuShares != 0 {
			r.CPU.Shares = ptr(uint64(res.CpuShares))
		}
		if res.CpuQuota != 0 {
			r.CPU.Quota = ptr(res.CpuQuota)
		}
		if res.CpuPeriod != 0 {
			r.CPU.Period = ptr(uint64(res.CpuPeriod))
		}
	}
	if res.MemoryLimitInBytes != 0 || res.MemorySwapLimitInBytes != 0 {
		r.Memory = &specs.LinuxMemory{}
		if res.MemoryLimitInBytes != 0 {
			r.Memory.Limit = ptr(res.MemoryLimitInBytes)
		}
		switch {
		case res.MemorySwapLimitInBytes != 0:
			r.Memory.Swap = ptr(res.MemorySwapLimitInBytes)
		case res.MemoryLimitInBytes > 0:
			// No swap beyond the limit unless asked, as containerd does: a
			// limited container must be OOM-killed, not swapped out.
			r.Memory.Swap = ptr(res.MemoryLimitInBytes)
		}
	}
	for _, h := range res.HugepageLimits {
		r.HugepageLimits = append(r.HugepageLimits, specs.LinuxHugepageLimit{Pagesize: h.PageSize, Limit: h.Limit})
	}
	if len(res.Unified) > 0 {
		r.Unified = res.Unified
	}
	if res.OomScoreAdj != 0 {
		s.Process.OOMScoreAdj = ptr(int(res.OomScoreAdj))
	}
}

// namespaces joins the pod's pins for the kinds the pod shares and asks for
// a new pid (unless shared) and mount namespace.
func namespaces(sb sandboxInfo, opts *runtimeapi.NamespaceOption) ([]specs.LinuxNamespace, error) {
	ns := []specs.LinuxNamespace{{Type: specs.MountNamespace}}
	join := func(t specs.LinuxNamespaceType, host bool, path string) {
		if !host {
			ns = append(ns, specs.LinuxNamespace{Type: t, Path: path})
		}
	}
	// First: the pod's user namespace owns the others.
	join(specs.UserNamespace, sb.UserNSPath == "", sb.UserNSPath)
	join(specs.NetworkNamespace, sb.HostNetwork, sb.NetNSPath)
	join(specs.IPCNamespace, sb.HostIPC, sb.IPCNSPath)
	// A host-network pod keeps the host's UTS namespace, as kubelet expects.
	join(specs.UTSNamespace, sb.HostNetwork, sb.UTSNSPath)
	switch opts.GetPid() {
	case runtimeapi.NamespaceMode_NODE:
		if !sb.HostPID {
			return nil, fmt.Errorf("namespace_options.pid is NODE but the pod does not use the host pid namespace: %w", errdefs.ErrInvalidArgument)
		}
	case runtimeapi.NamespaceMode_POD:
		if sb.PIDNSPath == "" {
			return nil, fmt.Errorf("namespace_options.pid is POD but the pod has no shared pid namespace: %w", errdefs.ErrInvalidArgument)
		}
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: sb.PIDNSPath})
	case runtimeapi.NamespaceMode_CONTAINER:
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace})
	default:
		return nil, fmt.Errorf("namespace_options.pid mode %v is not supported: %w", opts.GetPid(), errdefs.ErrInvalidArgument)
	}
	return ns, nil
}

func defaultMounts(privileged bool, sb sandboxInfo) []specs.Mount {
	sysOpts := []string{"nosuid", "noexec", "nodev", "ro"}
	cgroupOpts := []string{"nosuid", "noexec", "nodev", "relatime", "ro"}
	if privileged {
		sysOpts = []string{"nosuid", "noexec", "nodev", "rw"}
		cgroupOpts = []string{"nosuid", "noexec", "nodev", "relatime", "rw"}
	}
	m := []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: sysOpts},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: cgroupOpts},
	}
	if sb.ShmPath != "" {
		m = append(m, specs.Mount{Destination: "/dev/shm", Type: "bind", Source: sb.ShmPath, Options: []string{"rbind", "rprivate", "rw"}})
	} else {
		m = append(m, specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}})
	}
	for dst, src := range map[string]string{"/etc/hosts": sb.HostsPath, "/etc/resolv.conf": sb.ResolvConfPath, "/etc/hostname": sb.HostnamePath} {
		if src != "" {
			m = append(m, specs.Mount{Destination: dst, Type: "bind", Source: src, Options: []string{"rbind", "rprivate", "rw"}})
		}
	}
	sort.SliceStable(m[6:], func(i, j int) bool { return m[6+i].Destination < m[6+j].Destination })
	return m
}

// appendCRIMounts adds kubelet's volumes. A mount on a path the defaults
// already cover replaces the default (kubelet may mount /etc/hosts itself).
func appendCRIMounts(m []specs.Mount, mounts []*runtimeapi.Mount, imageVolumes map[int]string) ([]specs.Mount, error) {
	for i, cm := range mounts {
		field := fmt.Sprintf("mounts[%d]", i)
		dst := cm.GetContainerPath()
		if cm.GetImage().GetImage() != "" {
			// An image volume (KEP-4639): the image's filesystem, read-only.
			src, ok := imageVolumes[i]
			if !ok {
				return nil, fmt.Errorf("%s.image: not prepared: %w", field, errdefs.ErrFailedPrecondition)
			}
			if cm.GetImageSubPath() != "" {
				return nil, fmt.Errorf("%s.image_sub_path: sub paths of image volumes are not supported yet: %w", field, errdefs.ErrNotImplemented)
			}
			if !filepath.IsAbs(dst) {
				return nil, fmt.Errorf("%s.container_path %q must be absolute: %w", field, dst, errdefs.ErrInvalidArgument)
			}
			m = append(m, withMappings(specs.Mount{Destination: dst, Type: "bind", Source: src, Options: []string{"rbind", "rprivate", "ro", "nosuid", "nodev"}}, cm))
			continue
		}
		if !filepath.IsAbs(dst) {
			return nil, fmt.Errorf("%s.container_path %q must be absolute: %w", field, dst, errdefs.ErrInvalidArgument)
		}
		src := cm.GetHostPath()
		if !filepath.IsAbs(src) {
			return nil, fmt.Errorf("%s.host_path %q must be absolute: %w", field, src, errdefs.ErrInvalidArgument)
		}
		if cm.GetRecursiveReadOnly() && !cm.GetReadonly() {
			return nil, fmt.Errorf("%s: recursive_read_only needs readonly: %w", field, errdefs.ErrInvalidArgument)
		}
		if cm.GetRecursiveReadOnly() && cm.GetPropagation() != runtimeapi.MountPropagation_PROPAGATION_PRIVATE {
			return nil, fmt.Errorf("%s: recursive_read_only needs private propagation: %w", field, errdefs.ErrInvalidArgument)
		}
		// As containerd and CRI-O do, a missing host path becomes a directory.
		if _, err := os.Stat(src); os.IsNotExist(err) {
			if err := os.MkdirAll(src, 0o755); err != nil {
				return nil, fmt.Errorf("%s.host_path: create %s: %w", field, src, err)
			}
		}
		opts := []string{"rbind"}
		switch cm.GetPropagation() {
		case runtimeapi.MountPropagation_PROPAGATION_PRIVATE:
			opts = append(opts, "rprivate")
		case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
			opts = append(opts, "rslave")
		case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
			opts = append(opts, "rshared")
		default:
			return nil, fmt.Errorf("%s.propagation %v is unknown: %w", field, cm.GetPropagation(), errdefs.ErrInvalidArgument)
		}
		switch {
		case cm.GetRecursiveReadOnly():
			opts = append(opts, "rro")
		case cm.GetReadonly():
			opts = append(opts, "ro")
		default:
			opts = append(opts, "rw")
		}
		kept := m[:0]
		for _, old := range m {
			if filepath.Clean(old.Destination) != filepath.Clean(dst) {
				kept = append(kept, old)
			}
		}
		m = append(kept, withMappings(specs.Mount{Destination: dst, Type: "bind", Source: src, Options: opts}, cm))
	}
	return m, nil
}

// withMappings carries kubelet's uid and gid mappings of a volume (KEP-127:
// set for a pod with a user namespace, for the runtime to idmap the volume)
// into the OCI mount.
func withMappings(m specs.Mount, cm *runtimeapi.Mount) specs.Mount {
	conv := func(ms []*runtimeapi.IDMapping) []specs.LinuxIDMapping {
		var out []specs.LinuxIDMapping
		for _, x := range ms {
			out = append(out, specs.LinuxIDMapping{ContainerID: x.GetContainerId(), HostID: x.GetHostId(), Size: x.GetLength()})
		}
		return out
	}
	m.UIDMappings, m.GIDMappings = conv(cm.GetUidMappings()), conv(cm.GetGidMappings())
	return m
}

// checkMountMappings accepts idmapped volumes only in a pod with a user
// namespace, and only with its mappings (what kubelet sends): the runtime
// idmaps them with the pod's user namespace.
func checkMountMappings(mounts []specs.Mount, sb sandboxInfo) error {
	for _, m := range mounts {
		if len(m.UIDMappings) == 0 && len(m.GIDMappings) == 0 {
			continue
		}
		if sb.UserNSPath == "" {
			return fmt.Errorf("mount %s: uid/gid mappings in a pod without a user namespace: %w", m.Destination, errdefs.ErrInvalidArgument)
		}
		if !slices.Equal(m.UIDMappings, sb.UIDMappings) || !slices.Equal(m.GIDMappings, sb.GIDMappings) {
			return fmt.Errorf("mount %s: uid/gid mappings differ from the pod's user namespace: %w", m.Destination, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// seccompProfile resolves the container's seccomp profile. Unset means
// Unconfined, as kubelet's default is.
func seccompProfile(sc *runtimeapi.LinuxContainerSecurityContext, def func() *specs.LinuxSeccomp) (*specs.LinuxSeccomp, error) {
	prof := sc.GetSeccomp()
	kind, local := prof.GetProfileType(), prof.GetLocalhostRef()
	if prof == nil {
		switch p := sc.GetSeccompProfilePath(); {
		case p == "" || p == "unconfined":
			return nil, nil
		case p == "runtime/default" || p == "docker/default":
			kind = runtimeapi.SecurityProfile_RuntimeDefault
		case strings.HasPrefix(p, "localhost/"):
			kind, local = runtimeapi.SecurityProfile_Localhost, strings.TrimPrefix(p, "localhost/")
		default:
			return nil, fmt.Errorf("seccomp_profile_path %q is not a known profile: %w", p, errdefs.ErrInvalidArgument)
		}
	}
	switch kind {
	case runtimeapi.SecurityProfile_Unconfined:
		return nil, nil
	case runtimeapi.SecurityProfile_RuntimeDefault:
		if def == nil {
			return nil, fmt.Errorf("seccomp: no RuntimeDefault profile available: %w", errdefs.ErrFailedPrecondition)
		}
		return def(), nil
	case runtimeapi.SecurityProfile_Localhost:
		if !filepath.IsAbs(local) {
			return nil, fmt.Errorf("seccomp.localhost_ref %q must be an absolute path: %w", local, errdefs.ErrInvalidArgument)
		}
		return loadSeccompFile(local)
	}
	return nil, fmt.Errorf("seccomp.profile_type %v is unknown: %w", kind, errdefs.ErrInvalidArgument)
}

func appendDevices(s *specs.Spec, devices []*runtimeapi.Device) error {
	for i, d := range devices {
		field := fmt.Sprintf("devices[%d]", i)
		dev, err := deviceFromHost(d.GetHostPath(), d.GetContainerPath())
		if err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		perms := d.GetPermissions()
		if perms == "" {
			perms = "rwm"
		}
		if strings.Trim(perms, "rwm") != "" {
			return fmt.Errorf("%s.permissions %q: only r, w and m: %w", field, perms, errdefs.ErrInvalidArgument)
		}
		s.Linux.Devices = append(s.Linux.Devices, dev)
		s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{
			Allow: true, Type: dev.Type, Major: ptr(dev.Major), Minor: ptr(dev.Minor), Access: perms,
		})
	}
	return nil
}

// grantableCapabilities lists the capabilities in berthd's own bounding
// set: the kernel lets it give no others. (Root here lacks
// CAP_SYS_RESOURCE, for one.)
func grantableCapabilities() []string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return capabilityNames
	}
	for _, l := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(l, "CapBnd:")
		if !ok {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			break
		}
		var out []string
		for i, name := range capabilityNames {
			if mask&(1<<uint(i)) != 0 {
				out = append(out, name)
			}
		}
		return out
	}
	return capabilityNames
}

// hostDevices lists the host's device nodes under /dev, skipping the
// per-container filesystems (pts, shm, mqueue) that get their own mounts.
func hostDevices() []specs.LinuxDevice {
	var out []specs.LinuxDevice
	_ = filepath.WalkDir("/dev", func(p string, de os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if de.IsDir() {
			switch p {
			case "/dev/pts", "/dev/shm", "/dev/mqueue":
				return filepath.SkipDir
			}
			return nil
		}
		if de.Type()&(os.ModeDevice|os.ModeCharDevice) == 0 || p == "/dev/console" || p == "/dev/ptmx" {
			return nil
		}
		if d, err := deviceFromHost(p, p); err == nil {
			out = append(out, d)
		}
		return nil
	})
	return out
}

// PidsLimitAnnotation sets a container's pids limit. The CRI has no field
// for it (kubelet sets pod-level pids limits on the pod cgroup); berth's CLI
// uses it for docker's --pids-limit.
const PidsLimitAnnotation = "io.berth.pids-limit"

func applyPidsLimit(s *specs.Spec, annotations map[string]string) error {
	v, ok := annotations[PidsLimitAnnotation]
	if !ok {
		return nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n == 0 {
		return fmt.Errorf("annotation %s=%q: want a non-zero integer (-1 for unlimited): %w", PidsLimitAnnotation, v, errdefs.ErrInvalidArgument)
	}
	s.Linux.Resources.Pids = &specs.LinuxPids{Limit: &n}
	return nil
}
