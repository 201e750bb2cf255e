// Package podsandbox runs pod sandboxes: the namespaces a pod's containers
// share (net, ipc, uts; pid when asked), its hostname, /etc/hosts,
// resolv.conf and /dev/shm, its sysctls, its cgroup parent and its network
// attachment.
//
// A pod has no process of its own (no pause container): its namespaces are
// pinned by bind mounts under the pod's state dir, and a per-pod monitor
// (runtime/) parents its containers. What this package needs from runtime/,
// cgroupmgr/ and cni/ it names as the small interfaces below; cmd/berthd
// wires the real ones, tests use fakes.
//
// Recovery contract: each pod's record is one JSON file under Config.RootDir,
// written atomically after every state change. New reloads them all; a pod
// whose pinned netns is gone (a reboot) is reported NotReady. Stop and Remove
// work from the record alone, and the network teardown from cni's cache.
package podsandbox

import (
	"context"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/cni"
)

// Namespace kinds a pod can pin.
const (
	NamespaceNet = "net"
	NamespaceIPC = "ipc"
	NamespaceUTS = "uts"
	// NamespaceUser is the pod's user namespace (hostUsers: false).
	NamespaceUser = "user"
)

// NamespacePinner creates new namespaces and keeps them alive with bind
// mounts under dir (as `ip netns add` does), so they outlive any process.
// runtime/ implements it with a helper process.
type NamespacePinner interface {
	// PinNamespaces creates one new namespace per kind (NamespaceNet, ...)
	// and returns kind → path of its pin. On error nothing is left pinned.
	PinNamespaces(ctx context.Context, dir string, kinds []string) (map[string]string, error)
	// UnpinNamespaces unmounts and removes every pin under dir. It is
	// idempotent.
	UnpinNamespaces(ctx context.Context, dir string) error
}

// hostnamePinner is a NamespacePinner that can also set the hostname of
// the new uts namespace while it makes it (runtime.Runtime can). Run uses it
// when offered, so the pod's uts namespace has its hostname before any
// container starts.
type hostnamePinner interface {
	PinNamespacesWithHostname(ctx context.Context, dir string, kinds []string, hostname string) (map[string]string, error)
}

// UserNamespace is a pod user namespace's one uid and one gid range.
type UserNamespace struct {
	UID, GID specs.LinuxIDMapping
}

// usernsPinner is a NamespacePinner that can make the pod's user namespace
// with the others ("user" in kinds), owning them (runtime.Runtime can).
type usernsPinner interface {
	PinNamespacesUserns(ctx context.Context, dir string, kinds []string, hostname string, uid, gid specs.LinuxIDMapping) (map[string]string, error)
}

// PodMonitor runs the per-pod monitor that parents the pod's containers.
type PodMonitor interface {
	// StartMonitor starts the pod's monitor. With sharePID it also starts
	// the pod's pid namespace (held by a reaping init) and returns its path.
	StartMonitor(ctx context.Context, podID string, sharePID bool) (pidNSPath string, err error)
	// StopMonitor stops it; idempotent (no error for an unknown pod).
	StopMonitor(ctx context.Context, podID string) error
}

// usernsMonitor is a PodMonitor that can make a pod's shared pid namespace
// inside the pod's user namespace (pinned at userns), owned by it, as a pod
// with both needs (runtime.Runtime can).
type usernsMonitor interface {
	StartMonitorUserns(ctx context.Context, podID string, sharePID bool, userns string) (pidNSPath string, err error)
}

// CgroupManager makes the pod's parent cgroup (cgroupmgr implements it).
type CgroupManager interface {
	// Create makes the cgroup at path (relative to the cgroup roots, e.g.
	// "/berth/pod-<id>") with res; an existing cgroup is not an error.
	Create(ctx context.Context, path string, res *specs.LinuxResources) error
	// Delete removes it; a missing cgroup is not an error.
	Delete(ctx context.Context, path string) error
}

// CgroupsFrom adapts a cgroup manager whose Create also returns the cgroup
// (cgroupmgr.Manager) to CgroupManager.
func CgroupsFrom[C any](m interface {
	Create(ctx context.Context, path string, res *specs.LinuxResources) (C, error)
	Delete(ctx context.Context, path string) error
}) CgroupManager {
	return cgroupAdapter[C]{m}
}

type cgroupAdapter[C any] struct {
	m interface {
		Create(ctx context.Context, path string, res *specs.LinuxResources) (C, error)
		Delete(ctx context.Context, path string) error
	}
}

func (a cgroupAdapter[C]) Create(ctx context.Context, path string, res *specs.LinuxResources) error {
	_, err := a.m.Create(ctx, path, res)
	return err
}

func (a cgroupAdapter[C]) Delete(ctx context.Context, path string) error {
	return a.m.Delete(ctx, path)
}

// Network attaches pods to the pod network (*cni.Manager implements it).
type Network interface {
	Setup(ctx context.Context, sandboxID, netnsPath string, pod cni.PodMeta, ports []cni.PortMapping) (*cni.Result, error)
	Teardown(ctx context.Context, sandboxID, netnsPath string, pod cni.PodMeta, ports []cni.PortMapping) error
}

// PortMapping is one hostPort of the pod.
type PortMapping = cni.PortMapping

// State is a pod's state, as the CRI knows it.
type State string

// Pod states.
const (
	StateReady    State = "ready"
	StateNotReady State = "notready"
)

// DNSConfig is the pod's resolv.conf; a nil or empty one means a copy of the
// host's.
type DNSConfig struct {
	Servers  []string `json:"servers,omitempty"`
	Searches []string `json:"searches,omitempty"`
	Options  []string `json:"options,omitempty"`
}

// SecurityContext is the pod-level security context containers inherit.
type SecurityContext struct {
	Privileged         bool    `json:"privileged,omitempty"`
	ReadonlyRootfs     bool    `json:"readonlyRootfs,omitempty"`
	RunAsUser          *int64  `json:"runAsUser,omitempty"`
	RunAsGroup         *int64  `json:"runAsGroup,omitempty"`
	SupplementalGroups []int64 `json:"supplementalGroups,omitempty"`
	// SupplementalGroupsPolicy is "Merge" (default) or "Strict".
	SupplementalGroupsPolicy string `json:"supplementalGroupsPolicy,omitempty"`
	// SeccompProfile is "", "RuntimeDefault", "Unconfined" or
	// "localhost/<path>".
	SeccompProfile string `json:"seccompProfile,omitempty"`
}

// RunRequest is what Run needs: the CRI PodSandboxConfig in plain types.
type RunRequest struct {
	Name      string
	Namespace string
	UID       string
	Attempt   uint32

	// Hostname defaults to Name (or the node's with HostNetwork).
	Hostname     string
	LogDirectory string
	DNS          *DNSConfig
	PortMappings []PortMapping

	Labels         map[string]string
	Annotations    map[string]string
	RuntimeHandler string

	// CgroupParent is the pod's cgroup as kubelet made it; empty means
	// berth's own, "<Config.CgroupParent>/pod-<id>".
	CgroupParent string
	// Resources are applied to the pod cgroup (pod overhead, pod-level
	// limits); nil leaves it unlimited.
	Resources *specs.LinuxResources

	// Host* share the node's namespace (NamespaceMode NODE). HostNetwork
	// implies the node's uts namespace too, as in Kubernetes.
	HostNetwork bool
	HostIPC     bool
	HostPID     bool
	// SharePID gives the pod one pid namespace (NamespaceMode POD).
	SharePID bool
	// UserNS, if set, gives the pod a user namespace with these mappings
	// (hostUsers: false); it owns the pod's net, ipc and uts namespaces.
	UserNS *UserNamespace

	// Sysctls are namespaced sysctls; see validateSysctls.
	Sysctls  map[string]string
	Security SecurityContext
}

// Pod is a pod sandbox's persisted record. Status and List return copies.
type Pod struct {
	ID             string            `json:"id"`
	Name           string            `json:"name"`
	Namespace      string            `json:"namespace"`
	UID            string            `json:"uid"`
	Attempt        uint32            `json:"attempt"`
	Labels         map[string]string `json:"labels,omitempty"`
	Annotations    map[string]string `json:"annotations,omitempty"`
	RuntimeHandler string            `json:"runtimeHandler,omitempty"`
	State          State             `json:"state"`
	CreatedAt      time.Time         `json:"createdAt"`

	// IPs are the pod's addresses from CNI, IPv4 first; empty with
	// HostNetwork.
	IPs []string `json:"ips,omitempty"`
	// NetworkAttached is true from a successful CNI ADD until its DEL, so
	// a repeated Stop does not run the plugins again.
	NetworkAttached bool `json:"networkAttached,omitempty"`

	// Namespace paths containers join; empty means the node's (for pid:
	// the container's own, unless SharePID).
	NetNSPath string `json:"netnsPath,omitempty"`
	IPCNSPath string `json:"ipcnsPath,omitempty"`
	UTSNSPath string `json:"utsnsPath,omitempty"`
	PIDNSPath string `json:"pidnsPath,omitempty"`
	// UserNSPath is the pod's user namespace, with its mappings; empty
	// when the pod uses the node's.
	UserNSPath  string                 `json:"usernsPath,omitempty"`
	UIDMappings []specs.LinuxIDMapping `json:"uidMappings,omitempty"`
	GIDMappings []specs.LinuxIDMapping `json:"gidMappings,omitempty"`

	// Dir is the pod's state dir: namespace pins, files, shm.
	Dir            string `json:"dir"`
	Hostname       string `json:"hostname"`
	HostnamePath   string `json:"hostnamePath"`
	HostsPath      string `json:"hostsPath"`
	ResolvConfPath string `json:"resolvConfPath"`
	// ShmPath is bind-mounted at /dev/shm in containers: the pod's tmpfs,
	// or the node's /dev/shm with HostIPC.
	ShmPath string `json:"shmPath"`

	// CgroupParent is the cgroup the pod's containers go under.
	CgroupParent string `json:"cgroupParent"`
	// CgroupOwned says berth made CgroupParent and deletes it on Remove;
	// kubelet's own pod cgroups are left to kubelet, which may put a newer
	// sandbox of the same pod in them.
	CgroupOwned bool                  `json:"cgroupOwned,omitempty"`
	Resources   *specs.LinuxResources `json:"resources,omitempty"`

	LogDirectory string        `json:"logDirectory,omitempty"`
	PortMappings []PortMapping `json:"portMappings,omitempty"`
	DNS          *DNSConfig    `json:"dns,omitempty"`

	HostNetwork bool `json:"hostNetwork,omitempty"`
	HostIPC     bool `json:"hostIPC,omitempty"`
	HostPID     bool `json:"hostPID,omitempty"`
	SharePID    bool `json:"sharePID,omitempty"`

	// Sysctls (validated, dotted names) go into every container's
	// spec.Linux.Sysctl: the container's runtime writes them after joining
	// the pod's namespaces, so they land in the pod's net/ipc namespaces.
	// Applying them to every container is idempotent, as they share those
	// namespaces.
	Sysctls  map[string]string `json:"sysctls,omitempty"`
	Security SecurityContext   `json:"security"`
}

// ListFilter selects pods in List; zero fields match everything.
type ListFilter struct {
	// ID matches an ID or a prefix of one.
	ID    string
	State State
	// Labels must all be present with these values.
	Labels map[string]string
}
