package podsandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/cni"
	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/failpoint"
)

// rollbackTimeout bounds the undo steps of a failed Run.
const rollbackTimeout = 2 * time.Minute

// undoStack collects the undo steps of a transaction. On failure they run in
// reverse order, each on a fresh context so a cancelled request still
// cleans up, and every step runs even if an earlier one failed.
type undoStack []func(ctx context.Context) error

func (u *undoStack) push(f func(ctx context.Context) error) { *u = append(*u, f) }

func (u undoStack) run(parent context.Context, podID string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), rollbackTimeout)
	defer cancel()
	for i := len(u) - 1; i >= 0; i-- {
		if err := u[i](ctx); err != nil {
			klog.ErrorS(err, "Rollback step of RunPodSandbox failed", "podSandboxID", podID)
		}
	}
}

func newID() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

func validateRequest(r *RunRequest) error {
	for field, v := range map[string]string{"metadata.name": r.Name, "metadata.namespace": r.Namespace, "metadata.uid": r.UID} {
		if v == "" {
			return fmt.Errorf("%s is empty: %w", field, errdefs.ErrInvalidArgument)
		}
	}
	if r.Hostname != "" && !hostnameRE.MatchString(r.Hostname) {
		return fmt.Errorf("hostname %q is not a valid DNS name: %w", r.Hostname, errdefs.ErrInvalidArgument)
	}
	if r.SharePID && r.HostPID {
		return fmt.Errorf("namespace_options.pid cannot be both POD and NODE: %w", errdefs.ErrInvalidArgument)
	}
	if r.CgroupParent != "" && !path.IsAbs(r.CgroupParent) {
		return fmt.Errorf("cgroup_parent %q is not absolute: %w", r.CgroupParent, errdefs.ErrInvalidArgument)
	}
	for _, p := range r.PortMappings {
		if p.ContainerPort <= 0 || p.ContainerPort > 65535 || p.HostPort < 0 || p.HostPort > 65535 {
			return fmt.Errorf("port mapping %d→%d out of range: %w", p.HostPort, p.ContainerPort, errdefs.ErrInvalidArgument)
		}
	}
	return validateDNS(r.DNS)
}

// Run creates a pod sandbox and returns its record. It is transactional:
// every step registers its undo, and a failure at any step (or a cancelled
// ctx) undoes all of them, so a failed Run leaves nothing behind. The CNI ADD,
// the slowest step, runs beside the cgroup, files and monitor steps.
func (m *Manager) Run(ctx context.Context, req RunRequest) (_ *Pod, retErr error) {
	if err := validateRequest(&req); err != nil {
		return nil, err
	}
	sysctls, err := validateSysctls(req.Sysctls, req.HostNetwork, req.HostIPC)
	if err != nil {
		return nil, err
	}
	if !req.HostNetwork && m.cfg.Network == nil {
		return nil, fmt.Errorf("pod network: no CNI configured: %w", errdefs.ErrUnavailable)
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}

	var undo undoStack
	defer func() {
		if retErr != nil {
			undo.run(ctx, id)
		}
	}()

	// Reserve the name first: kubelet retries a timed-out RunPodSandbox
	// with the same metadata, and two of them must not both build a pod.
	key := nameKey(req.Name, req.Namespace, req.UID, req.Attempt)
	m.mu.Lock()
	if other, ok := m.names[key]; ok {
		m.mu.Unlock()
		return nil, fmt.Errorf("pod sandbox %s_%s_%s_%d is reserved for %s: %w", req.Name, req.Namespace, req.UID, req.Attempt, other, errdefs.ErrAlreadyExists)
	}
	m.names[key] = id
	m.mu.Unlock()
	undo.push(func(context.Context) error {
		m.mu.Lock()
		delete(m.names, key)
		m.mu.Unlock()
		return nil
	})

	dir := filepath.Join(m.cfg.StateDir, id)
	p := &Pod{
		ID:             id,
		Name:           req.Name,
		Namespace:      req.Namespace,
		UID:            req.UID,
		Attempt:        req.Attempt,
		Labels:         req.Labels,
		Annotations:    req.Annotations,
		RuntimeHandler: req.RuntimeHandler,
		State:          StateReady,
		CreatedAt:      time.Now(),
		Dir:            dir,
		HostnamePath:   filepath.Join(dir, "hostname"),
		HostsPath:      filepath.Join(dir, "hosts"),
		ResolvConfPath: filepath.Join(dir, "resolv.conf"),
		Resources:      req.Resources,
		LogDirectory:   req.LogDirectory,
		PortMappings:   req.PortMappings,
		DNS:            req.DNS,
		HostNetwork:    req.HostNetwork,
		HostIPC:        req.HostIPC,
		HostPID:        req.HostPID,
		SharePID:       req.SharePID,
		Sysctls:        sysctls,
		Security:       req.Security,
	}
	p.Hostname = req.Hostname
	if p.Hostname == "" {
		// A pod name may be longer than a hostname can be (64 bytes).
		p.Hostname = strings.TrimRight(req.Name[:min(len(req.Name), 63)], "-.")
		if req.HostNetwork {
			if p.Hostname, err = os.Hostname(); err != nil {
				return nil, err
			}
		}
	}
	p.CgroupParent = req.CgroupParent
	if p.CgroupParent == "" {
		p.CgroupParent = path.Join(m.cfg.CgroupParent, "pod-"+id)
		p.CgroupOwned = true
	}

	if err := os.MkdirAll(m.cfg.StateDir, 0o711); err != nil {
		return nil, err
	}
	if err := os.Mkdir(dir, 0o711); err != nil {
		return nil, fmt.Errorf("pod state dir: %w", err)
	}
	undo.push(func(context.Context) error { return m.removeDir(dir) })

	// Namespaces first: CNI needs the netns path, containers all of them.
	var kinds []string
	if !req.HostNetwork {
		kinds = append(kinds, NamespaceNet, NamespaceUTS)
	}
	if !req.HostIPC {
		kinds = append(kinds, NamespaceIPC)
	}
	if req.UserNS != nil && (req.HostNetwork || req.HostIPC || req.HostPID) {
		// The pod's user namespace must own its namespaces.
		return nil, fmt.Errorf("a pod with a user namespace cannot share the node's network, ipc or pid namespace: %w", errdefs.ErrInvalidArgument)
	}
	if len(kinds) > 0 {
		var paths map[string]string
		var err error
		if req.UserNS != nil {
			up, ok := m.cfg.Namespaces.(usernsPinner)
			if !ok {
				return nil, fmt.Errorf("pod user namespaces: %w", errdefs.ErrNotImplemented)
			}
			kinds = append([]string{NamespaceUser}, kinds...)
			paths, err = up.PinNamespacesUserns(ctx, filepath.Join(dir, "ns"), kinds, p.Hostname, req.UserNS.UID, req.UserNS.GID)
			p.UserNSPath = paths[NamespaceUser]
			p.UIDMappings = []specs.LinuxIDMapping{req.UserNS.UID}
			p.GIDMappings = []specs.LinuxIDMapping{req.UserNS.GID}
		} else if hp, ok := m.cfg.Namespaces.(hostnamePinner); ok && !req.HostNetwork {
			paths, err = hp.PinNamespacesWithHostname(ctx, filepath.Join(dir, "ns"), kinds, p.Hostname)
		} else {
			paths, err = m.cfg.Namespaces.PinNamespaces(ctx, filepath.Join(dir, "ns"), kinds)
		}
		// Undo even on error: the pinner promises nothing is left, but an
		// extra idempotent unpin costs nothing and guards the removal of dir.
		undo.push(func(ctx context.Context) error {
			return m.cfg.Namespaces.UnpinNamespaces(ctx, filepath.Join(dir, "ns"))
		})
		if err != nil {
			return nil, fmt.Errorf("pin pod namespaces: %w", err)
		}
		p.NetNSPath, p.UTSNSPath, p.IPCNSPath = paths[NamespaceNet], paths[NamespaceUTS], paths[NamespaceIPC]
		for _, k := range kinds {
			if paths[k] == "" {
				return nil, fmt.Errorf("pin pod namespaces: no %s namespace returned", k)
			}
		}
	}
	m.cfg.Failpoints.Hit(failpoint.PodRunAfterPin)

	// The network is attached beside the steps below, which do not need
	// it. The channel is always drained before Run returns, so a failure
	// elsewhere still waits for, and undoes, a successful ADD.
	type netResult struct {
		res *cni.Result
		err error
	}
	netDone := make(chan netResult, 1)
	meta := cni.PodMeta{Name: req.Name, Namespace: req.Namespace, UID: req.UID}
	if !req.HostNetwork {
		go func() {
			res, err := m.cfg.Network.Setup(ctx, id, p.NetNSPath, meta, req.PortMappings)
			if err == nil {
				m.cfg.Failpoints.Hit(failpoint.PodRunAfterCNIAdd)
			}
			netDone <- netResult{res, err}
		}()
	} else {
		netDone <- netResult{}
	}
	netWaited := false
	waitNet := func() netResult {
		r := <-netDone
		netWaited = true
		if r.err == nil && !req.HostNetwork {
			undo.push(func(ctx context.Context) error {
				return m.cfg.Network.Teardown(ctx, id, p.NetNSPath, meta, req.PortMappings)
			})
		}
		return r
	}
	defer func() {
		// Deferred after the rollback, so this runs first: on an early
		// failure wait for the ADD so that its undo is pushed, and runs
		// first, before the netns it used is unpinned.
		if !netWaited {
			waitNet()
		}
	}()

	if err := m.cfg.Cgroups.Create(ctx, p.CgroupParent, req.Resources); err != nil {
		return nil, fmt.Errorf("pod cgroup %s: %w", p.CgroupParent, err)
	}
	if p.CgroupOwned {
		undo.push(func(ctx context.Context) error { return m.cfg.Cgroups.Delete(ctx, p.CgroupParent) })
	}
	m.cfg.Failpoints.Hit(failpoint.PodRunAfterCgroup)

	// The pod's files are written once into its fresh dir, which no one
	// reads before Run returns, and which lives on /run: no temp file,
	// rename or fsync needed. Only the record (below) must be durable.
	if err := os.WriteFile(p.HostnamePath, []byte(p.Hostname+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("hostname file: %w", err)
	}
	resolv, err := resolvConf(req.DNS, m.cfg.HostResolvConf)
	if err != nil {
		return nil, fmt.Errorf("resolv.conf: %w", err)
	}
	if err := os.WriteFile(p.ResolvConfPath, resolv, 0o644); err != nil {
		return nil, fmt.Errorf("resolv.conf: %w", err)
	}

	if req.HostIPC {
		p.ShmPath = "/dev/shm"
	} else {
		p.ShmPath = filepath.Join(dir, "shm")
		if err := m.mountShm(p.ShmPath, m.cfg.ShmSize); err != nil {
			return nil, err
		}
		undo.push(func(context.Context) error { return m.unmountShm(p.ShmPath) })
	}
	m.cfg.Failpoints.Hit(failpoint.PodRunAfterShm)

	var pidNS string
	if um, ok := m.cfg.Monitor.(usernsMonitor); ok && req.SharePID && p.UserNSPath != "" {
		pidNS, err = um.StartMonitorUserns(ctx, id, req.SharePID, p.UserNSPath)
	} else if req.SharePID && p.UserNSPath != "" {
		err = fmt.Errorf("a shared pid namespace in a user namespace: %w", errdefs.ErrNotImplemented)
	} else {
		pidNS, err = m.cfg.Monitor.StartMonitor(ctx, id, req.SharePID)
	}
	undo.push(func(ctx context.Context) error { return m.cfg.Monitor.StopMonitor(ctx, id) })
	if err != nil {
		return nil, fmt.Errorf("start pod monitor: %w", err)
	}
	if req.SharePID {
		if pidNS == "" {
			return nil, errors.New("start pod monitor: no pid namespace returned")
		}
		p.PIDNSPath = pidNS
	}
	m.cfg.Failpoints.Hit(failpoint.PodRunAfterMonitor)

	nr := waitNet()
	if nr.err != nil {
		return nil, fmt.Errorf("pod network: %w", nr.err)
	}
	if nr.res != nil {
		for _, ip := range nr.res.IPs {
			p.IPs = append(p.IPs, ip.String())
		}
		p.NetworkAttached = true
	}

	var hosts []byte
	if req.HostNetwork {
		if hosts, err = os.ReadFile(m.cfg.HostHosts); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("node hosts file: %w", err)
		}
	} else {
		hosts = hostsFile(p.Hostname, p.IPs)
	}
	if err := os.WriteFile(p.HostsPath, hosts, 0o644); err != nil {
		return nil, fmt.Errorf("hosts file: %w", err)
	}

	if err := ctx.Err(); err != nil {
		return nil, err // the caller gave up: don't leave a pod it never learns of
	}
	m.cfg.Failpoints.Hit(failpoint.PodRunBeforeRecord)
	if err := m.save(p); err != nil {
		return nil, err
	}
	undo.push(func(context.Context) error { return os.Remove(m.recordPath(id)) })

	m.mu.Lock()
	m.pods[id] = &entry{pod: clonePod(p)} // not aliasing the caller's maps
	m.mu.Unlock()
	klog.InfoS("Pod sandbox ready", "podSandboxID", id, "pod", klog.KRef(req.Namespace, req.Name), "ips", p.IPs)
	return clonePod(p), nil
}

// removeDir removes a pod's state dir, refusing while anything is still
// mounted below it: removal never deletes through a live mount.
func (m *Manager) removeDir(dir string) error {
	mounts, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	if len(mounts) > 0 {
		return fmt.Errorf("pod state dir %s still has mounts %v: %w", dir, mounts, errdefs.ErrFailedPrecondition)
	}
	return os.RemoveAll(dir)
}
