// Package cni attaches pod network namespaces to the node's network through
// CNI plugins (libcni): config discovery, ADD, DEL and CHECK, and the pod IPs
// from the plugins' result.
//
// Recovery contract: libcni writes the result, the exact network config and
// the runtime arguments of every successful ADD to Config.CacheDir (under
// berth's root dir, so it survives a reboot of berthd). Teardown deletes from
// that cache, so it tears down what was set up even after a restart, after
// the config in conf_dir changed, or after the network namespace is gone.
package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/errdefs"
)

// Defaults used when a Config field is empty. They match [cni] in DESIGN.md.
const (
	DefaultConfDir  = "/etc/cni/net.d"
	DefaultCacheDir = "/var/lib/berth/cni"
)

// DefaultBinDirs is where plugins are looked for when Config.BinDirs is empty.
func DefaultBinDirs() []string { return []string{"/opt/cni/bin", "/usr/lib/cni"} }

// podIfName is the pod's interface, as every CRI runtime names it.
const podIfName = "eth0"

// loopbackNetName names the built-in loopback network berth adds when the
// chosen config has no loopback plugin: the CRI expects lo up in the pod.
const loopbackNetName = "berth-loopback"

// Config says where configs, plugins and the result cache are.
type Config struct {
	// ConfDir holds *.conflist, *.conf and *.json network configs; the first
	// usable one by file name is the pod network.
	ConfDir string
	// BinDirs are searched in order for plugin binaries.
	BinDirs []string
	// CacheDir keeps libcni's per-attachment results and configs, for DEL
	// after a restart. Put it under berth's root dir.
	CacheDir string
}

// PodMeta identifies the pod to the plugins (K8S_POD_* CNI_ARGS).
type PodMeta struct {
	Name      string
	Namespace string
	UID       string
}

// PortMapping is one hostPort, passed to plugins with the portMappings
// capability (portmap).
type PortMapping struct {
	HostPort      int32
	ContainerPort int32
	// Protocol is TCP, UDP or SCTP (any case); empty means TCP.
	Protocol string
	// HostIP limits the mapping to one host address; empty means all.
	HostIP string
}

// Result is what ADD gave the pod.
type Result struct {
	// IPs are the pod interface's addresses, IPv4 first, then IPv6.
	IPs []net.IP
	// Interface is the pod-side interface name (eth0).
	Interface string
	// Raw is the plugin chain's result as JSON (CNI 1.0 format).
	Raw []byte
}

// Manager runs CNI plugins for pods. It is safe for concurrent use; pod
// operations do not serialise on one another.
type Manager struct {
	confDir string
	binDirs []string
	lib     *libcni.CNIConfig
	// cacheDir is libcni's; Teardown removes what libcni cannot read.
	cacheDir string

	masq masquerader

	mu sync.Mutex
	// parsed caches config files by path, so a rescan only re-reads a file
	// whose size or mtime changed.
	parsed map[string]parsedConf
}

type parsedConf struct {
	size    int64
	modTime time.Time
	list    *libcni.NetworkConfigList
	err     error
}

// New returns a Manager. It does not require a config to exist yet:
// Status reports whether one does, and configs may appear later.
func New(cfg Config) (*Manager, error) {
	if cfg.ConfDir == "" {
		cfg.ConfDir = DefaultConfDir
	}
	if len(cfg.BinDirs) == 0 {
		cfg.BinDirs = DefaultBinDirs()
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = DefaultCacheDir
	}
	if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("cni cache dir: %w", err)
	}
	return &Manager{
		cacheDir: cfg.CacheDir,
		confDir:  cfg.ConfDir,
		binDirs:  append([]string(nil), cfg.BinDirs...),
		// An explicit exec: with nil, libcni creates one lazily on each
		// call's path, a data race when pods start in parallel.
		lib: libcni.NewCNIConfigWithCacheDir(cfg.BinDirs, cfg.CacheDir, &invoke.DefaultExec{
			RawExec:       &invoke.RawExec{Stderr: os.Stderr},
			PluginDecoder: version.PluginDecoder{},
		}),
		parsed: map[string]parsedConf{},
	}, nil
}

// Status reports whether pods can be networked: a config exists whose
// plugins are all installed. It rescans the conf dir on every call (one
// readdir plus a stat per file and plugin), so a config that appears or goes
// is seen at the next call without a watcher goroutine.
func (m *Manager) Status() (ready bool, reason string) {
	_, err := m.network()
	if err != nil {
		return false, err.Error()
	}
	return true, ""
}

// network returns the pod network: the first config file by name that parses
// and whose plugins (and, if it has no loopback plugin, the loopback plugin)
// are all found in the bin dirs.
func (m *Manager) network() (*libcni.NetworkConfigList, error) {
	entries, err := os.ReadDir(m.confDir)
	if err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("cni config dir %s: %w", m.confDir, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := map[string]bool{}
	var names []string
	for _, e := range entries {
		switch filepath.Ext(e.Name()) {
		case ".conflist", ".conf", ".json":
		default:
			continue
		}
		if e.IsDir() {
			continue
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	var reasons []string
	var found *libcni.NetworkConfigList
	for _, name := range names {
		path := filepath.Join(m.confDir, name)
		seen[path] = true
		if found != nil {
			continue
		}
		fi, err := os.Stat(path)
		if err != nil {
			continue // removed between readdir and stat
		}
		pc, ok := m.parsed[path]
		if !ok || pc.size != fi.Size() || !pc.modTime.Equal(fi.ModTime()) {
			pc = parsedConf{size: fi.Size(), modTime: fi.ModTime()}
			pc.list, pc.err = loadConfFile(path)
			m.parsed[path] = pc
		}
		if pc.err != nil {
			reasons = append(reasons, fmt.Sprintf("%s: %v", name, pc.err))
			continue
		}
		if err := m.checkPlugins(pc.list); err != nil {
			reasons = append(reasons, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		found = pc.list
	}
	for path := range m.parsed {
		if !seen[path] {
			delete(m.parsed, path)
		}
	}
	if found != nil {
		return found, nil
	}
	if len(reasons) == 0 {
		return nil, fmt.Errorf("no network config found in %s: %w", m.confDir, errdefs.ErrUnavailable)
	}
	return nil, fmt.Errorf("no usable network config in %s (%s): %w", m.confDir, strings.Join(reasons, "; "), errdefs.ErrUnavailable)
}

func loadConfFile(path string) (*libcni.NetworkConfigList, error) {
	if filepath.Ext(path) == ".conflist" {
		list, err := libcni.NetworkConfFromFile(path)
		if err != nil {
			return nil, err
		}
		if _, err := masqueradeSubnets(list.Bytes); err != nil {
			return nil, err
		}
		return stripTrailingLoopback(list)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	conf, err := libcni.NetworkPluginConfFromBytes(data)
	if err != nil {
		return nil, err
	}
	if conf.Network.Type == "" {
		return nil, errors.New("no plugin type")
	}
	// A single-plugin .conf is still accepted by kubelet-era tooling.
	return libcni.ConfListFromConf(conf) //nolint:staticcheck // .conf files remain common
}

func (m *Manager) checkPlugins(list *libcni.NetworkConfigList) error {
	if len(list.Plugins) == 0 {
		return errors.New("no plugins")
	}
	for _, p := range list.Plugins {
		if _, err := invoke.FindInPath(p.Network.Type, m.binDirs); err != nil {
			return fmt.Errorf("plugin %q not installed in %v", p.Network.Type, m.binDirs)
		}
	}
	if !hasLoopback(list) {
		if _, err := invoke.FindInPath("loopback", m.binDirs); err != nil {
			return fmt.Errorf("plugin \"loopback\" not installed in %v", m.binDirs)
		}
	}
	return nil
}

// stripTrailingLoopback drops loopback plugins from the end of a chain.
// There they only pass the result through, and Setup runs the built-in
// loopback network beside the chain instead of after it: one plugin exec
// (about 10 ms here) off the pod-start path.
func stripTrailingLoopback(list *libcni.NetworkConfigList) (*libcni.NetworkConfigList, error) {
	n := len(list.Plugins)
	for n > 1 && list.Plugins[n-1].Network.Type == "loopback" {
		n--
	}
	if n == len(list.Plugins) {
		return list, nil
	}
	var raw map[string]any
	if err := json.Unmarshal(list.Bytes, &raw); err != nil {
		return nil, err
	}
	plugins, ok := raw["plugins"].([]any)
	if !ok || len(plugins) != len(list.Plugins) {
		return list, nil // plugins loaded from side files: leave as is
	}
	raw["plugins"] = plugins[:n]
	data, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	return libcni.NetworkConfFromBytes(data)
}

func hasLoopback(list *libcni.NetworkConfigList) bool {
	for _, p := range list.Plugins {
		if p.Network.Type == "loopback" {
			return true
		}
	}
	return false
}

func loopbackList() *libcni.NetworkConfigList {
	l, err := libcni.NetworkConfFromBytes([]byte(`{"cniVersion":"1.0.0","name":"` + loopbackNetName + `","plugins":[{"type":"loopback"}]}`))
	if err != nil {
		panic(err) // a constant that does not parse is a programming error
	}
	return l
}

func runtimeConf(sandboxID, netnsPath, ifName string, pod PodMeta, ports []PortMapping) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{
		ContainerID: sandboxID,
		NetNS:       netnsPath,
		IfName:      ifName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", pod.Namespace},
			{"K8S_POD_NAME", pod.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", sandboxID},
			{"K8S_POD_UID", pod.UID},
		},
	}
	var pm []map[string]interface{}
	for _, p := range ports {
		if p.HostPort <= 0 {
			continue
		}
		proto := strings.ToLower(p.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		e := map[string]interface{}{
			"hostPort":      p.HostPort,
			"containerPort": p.ContainerPort,
			"protocol":      proto,
		}
		if p.HostIP != "" {
			e["hostIP"] = p.HostIP
		}
		pm = append(pm, e)
	}
	if len(pm) > 0 {
		rt.CapabilityArgs = map[string]interface{}{"portMappings": pm}
	}
	return rt
}

// Setup attaches the network namespace at netnsPath to the pod network (CNI
// ADD) and brings its loopback up. On failure it runs DEL, so nothing of the
// attempt is left behind.
func (m *Manager) Setup(ctx context.Context, sandboxID, netnsPath string, pod PodMeta, ports []PortMapping) (res *Result, retErr error) {
	if sandboxID == "" || netnsPath == "" {
		return nil, fmt.Errorf("cni setup needs a sandbox id and a netns path: %w", errdefs.ErrInvalidArgument)
	}
	list, err := m.network()
	if err != nil {
		return nil, err
	}
	rt := runtimeConf(sandboxID, netnsPath, podIfName, pod, ports)
	masqSubnets, err := masqueradeSubnets(list.Bytes)
	if err != nil {
		return nil, err
	}
	// The subnet's masquerade rule is needed once traffic flows, not for
	// ADD: it is ensured beside the chain (a no-op after the first pod).
	masqErr := make(chan error, 1)
	if len(masqSubnets) > 0 {
		go func() { masqErr <- m.masq.ensure(ctx, masqSubnets) }()
	} else {
		masqErr <- nil
	}

	// The loopback ADD is independent of the pod network's chain, so it runs
	// beside it: one plugin exec less on the pod-start critical path.
	var lo *libcni.NetworkConfigList
	loErr := make(chan error, 1)
	if !hasLoopback(list) {
		lo = loopbackList()
		loRT := runtimeConf(sandboxID, netnsPath, "lo", pod, nil)
		go func() {
			_, err := m.lib.AddNetworkList(ctx, lo, loRT)
			loErr <- err
		}()
	} else {
		loErr <- nil
	}

	defer func() {
		if retErr == nil {
			return
		}
		// Roll back on a fresh context: the caller's may be what failed.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := m.lib.DelNetworkList(dctx, list, rt); err != nil {
			klog.ErrorS(err, "CNI DEL after failed ADD", "podSandboxID", sandboxID, "network", list.Name)
		}
		if lo != nil {
			if err := m.lib.DelNetworkList(dctx, lo, runtimeConf(sandboxID, netnsPath, "lo", pod, nil)); err != nil {
				klog.ErrorS(err, "CNI DEL of loopback after failed ADD", "podSandboxID", sandboxID)
			}
		}
	}()

	raw, addErr := m.lib.AddNetworkList(ctx, list, rt)
	if err := <-loErr; err != nil && addErr == nil {
		addErr = fmt.Errorf("loopback: %w", err)
	}
	if err := <-masqErr; err != nil && addErr == nil {
		addErr = err
	}
	if addErr != nil {
		return nil, fmt.Errorf("cni ADD of network %q for sandbox %s: %w", list.Name, sandboxID, addErr)
	}
	res, err = toResult(raw)
	if err != nil {
		return nil, fmt.Errorf("cni ADD of network %q: %w", list.Name, err)
	}
	return res, nil
}

func toResult(raw types.Result) (*Result, error) {
	r, err := types100.NewResultFromResult(raw)
	if err != nil {
		return nil, fmt.Errorf("convert result: %w", err)
	}
	out := &Result{}
	if out.Raw, err = json.Marshal(r); err != nil {
		return nil, err
	}
	// The pod's addresses are those on an interface inside the sandbox; a
	// result without interface indexes (some IPAM-only chains) gives all.
	var v4, v6 []net.IP
	for _, ipc := range r.IPs {
		if ipc.Interface != nil {
			i := *ipc.Interface
			if i < 0 || i >= len(r.Interfaces) || r.Interfaces[i].Sandbox == "" {
				continue
			}
			out.Interface = r.Interfaces[i].Name
		}
		if ip4 := ipc.Address.IP.To4(); ip4 != nil {
			v4 = append(v4, ip4)
		} else {
			v6 = append(v6, ipc.Address.IP)
		}
	}
	if out.Interface == "" {
		out.Interface = podIfName
	}
	out.IPs = append(v4, v6...)
	return out, nil
}

// attachments returns what Setup made for the sandbox, from libcni's cache.
func (m *Manager) attachments(sandboxID string) ([]*libcni.NetworkAttachment, error) {
	atts, err := m.lib.GetCachedAttachments(sandboxID)
	if err != nil {
		return nil, fmt.Errorf("read cni cache: %w", err)
	}
	return atts, nil
}

// Teardown detaches the pod (CNI DEL). It is idempotent: it deletes what the
// cache says Setup attached, with the config and arguments of that ADD, so it
// works after a restart, after the config dir changed, and after the netns is
// gone (the plugins are then told no netns and release host-side state:
// IPAM leases, iptables rules). With nothing cached it runs DEL with the
// current config, which plugins must accept for unknown containers, so a
// half-done ADD from a crash is cleaned too.
func (m *Manager) Teardown(ctx context.Context, sandboxID, netnsPath string, pod PodMeta, ports []PortMapping) error {
	if sandboxID == "" {
		return fmt.Errorf("cni teardown needs a sandbox id: %w", errdefs.ErrInvalidArgument)
	}
	ns := existingNetNS(netnsPath)
	atts, err := m.attachments(sandboxID)
	if err != nil {
		return err
	}
	podNetCached := false
	for _, a := range atts {
		podNetCached = podNetCached || a.IfName == podIfName
	}
	if !podNetCached {
		// Nothing readable cached for the pod network: an ADD that a
		// crash interrupted, maybe while libcni wrote its cache file
		// (os.WriteFile, not atomic: the file may be empty). DEL with
		// the current config, which plugins must accept for unknown
		// containers, releases what that ADD may have taken.
		if list, err := m.network(); err == nil {
			if err := m.lib.DelNetworkList(ctx, list, runtimeConf(sandboxID, ns, podIfName, pod, ports)); err != nil {
				return fmt.Errorf("cni DEL of network %q for sandbox %s: %w", list.Name, sandboxID, err)
			}
		}
		// else no cache and no config: nothing set up that we could undo.
	}
	if len(atts) == 0 {
		return m.removeUnreadableCache(sandboxID)
	}
	// The attachments (the pod network and berth's loopback) are
	// independent, so their DELs run side by side.
	var (
		wg             sync.WaitGroup
		mu             sync.Mutex
		errs           []error
		masqV4, masqV6 bool
	)
	for _, a := range atts {
		list, err := libcni.NetworkConfFromBytes(a.Config)
		if err != nil {
			errs = append(errs, fmt.Errorf("cached config of network %q: %w", a.Network, err))
			continue
		}
		rt := &libcni.RuntimeConf{
			ContainerID:    sandboxID,
			NetNS:          ns,
			IfName:         a.IfName,
			Args:           a.CniArgs,
			CapabilityArgs: a.CapabilityArgs,
		}
		if usesIPMasq(list) {
			if raw, err := m.lib.GetNetworkListCachedResult(list, rt); err == nil && raw != nil {
				if r, err := toResult(raw); err == nil {
					for _, ip := range r.IPs {
						masqV4 = masqV4 || ip.To4() != nil
						masqV6 = masqV6 || ip.To4() == nil
					}
				}
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.lib.DelNetworkList(ctx, list, rt); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("cni DEL of network %q for sandbox %s: %w", list.Name, sandboxID, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) == 0 && (masqV4 || masqV6) {
		if err := removeTaggedNATRules(ctx, sandboxID, masqV4, masqV6); err != nil {
			errs = append(errs, fmt.Errorf("remove nat rules left by plugins: %w", err))
		}
	}
	if len(errs) == 0 {
		errs = append(errs, m.removeUnreadableCache(sandboxID))
	}
	return errors.Join(errs...)
}

// removeUnreadableCache removes the sandbox's cache files that are left
// once its DELs succeeded: those libcni could not read (it skips them), a
// crash having cut their write short. They would stay forever otherwise.
func (m *Manager) removeUnreadableCache(sandboxID string) error {
	if strings.ContainsAny(sandboxID, `*?[\/`) {
		return nil // not a name a glob can take literally; berth's IDs are hex
	}
	left, err := filepath.Glob(filepath.Join(m.cacheDir, "results", "*-"+sandboxID+"-*"))
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range left {
		klog.InfoS("Removing an unreadable CNI cache file", "podSandboxID", sandboxID, "file", f)
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// usesIPMasq reports whether a plugin of the list masquerades (bridge and
// ptp's "ipMasq"): those rules can outlive DEL, see removeTaggedNATRules.
func usesIPMasq(list *libcni.NetworkConfigList) bool {
	for _, p := range list.Plugins {
		var c struct {
			IPMasq bool `json:"ipMasq"`
		}
		if json.Unmarshal(p.Bytes, &c) == nil && c.IPMasq {
			return true
		}
	}
	return false
}

// existingNetNS returns path if it still names a namespace, else "". CNI
// plugins treat an empty CNI_NETNS on DEL as "namespace gone, release only
// host-side state"; a stale path would make some fail.
func existingNetNS(path string) string {
	if path == "" {
		return ""
	}
	if _, err := os.Stat(path); err != nil {
		return ""
	}
	return path
}

// Check runs CNI CHECK for the sandbox's cached attachments. It returns an
// error wrapping errdefs.ErrNotFound when the sandbox was never set up.
func (m *Manager) Check(ctx context.Context, sandboxID, netnsPath string, pod PodMeta, ports []PortMapping) error {
	atts, err := m.attachments(sandboxID)
	if err != nil {
		return err
	}
	if len(atts) == 0 {
		return fmt.Errorf("no cni attachment for sandbox %s: %w", sandboxID, errdefs.ErrNotFound)
	}
	for _, a := range atts {
		list, err := libcni.NetworkConfFromBytes(a.Config)
		if err != nil {
			return fmt.Errorf("cached config of network %q: %w", a.Network, err)
		}
		rt := &libcni.RuntimeConf{
			ContainerID:    sandboxID,
			NetNS:          netnsPath,
			IfName:         a.IfName,
			Args:           a.CniArgs,
			CapabilityArgs: a.CapabilityArgs,
		}
		if err := m.lib.CheckNetworkList(ctx, list, rt); err != nil {
			return fmt.Errorf("cni CHECK of network %q for sandbox %s: %w", a.Network, sandboxID, err)
		}
	}
	return nil
}

// CachedResult returns the result of the sandbox's last successful Setup,
// from the cache (for PodSandboxStatus after a restart).
func (m *Manager) CachedResult(sandboxID string) (*Result, error) {
	atts, err := m.attachments(sandboxID)
	if err != nil {
		return nil, err
	}
	for _, a := range atts {
		if a.IfName != podIfName {
			continue
		}
		list, err := libcni.NetworkConfFromBytes(a.Config)
		if err != nil {
			return nil, err
		}
		raw, err := m.lib.GetNetworkListCachedResult(list, &libcni.RuntimeConf{ContainerID: sandboxID, IfName: a.IfName})
		if err != nil {
			return nil, err
		}
		if raw == nil {
			break
		}
		return toResult(raw)
	}
	return nil, fmt.Errorf("no cni result for sandbox %s: %w", sandboxID, errdefs.ErrNotFound)
}
