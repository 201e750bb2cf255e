package podsandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"time"

	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/cni"
	"github.com/berth-dev/berth/failpoint"
)

// acquire finds the pod and locks it for a state change. It returns nil,
// nil for an unknown pod (Stop and Remove are idempotent), and errors for an
// ambiguous prefix.
func (m *Manager) acquire(idOrPrefix string) (*entry, error) {
	m.mu.Lock()
	e, err := m.lookup(idOrPrefix)
	m.mu.Unlock()
	if errUnknown(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	if e.removed {
		e.mu.Unlock()
		return nil, nil
	}
	return e, nil
}

// commit saves p as the pod's new record and publishes it. The caller holds
// e.mu, so no one else changes the record meanwhile.
func (m *Manager) commit(e *entry, p *Pod) error {
	if err := m.save(p); err != nil {
		return err
	}
	m.mu.Lock()
	e.pod = p
	m.mu.Unlock()
	return nil
}

// Stop stops a pod sandbox: it detaches the network (from cni's cache, so it
// works after a berthd restart), stops the monitor, releases /dev/shm and
// marks the pod NotReady. Stopping the pod's containers is the caller's job,
// done before. CRI: "If there are any running containers in the sandbox,
// they must be forcibly terminated. [...] StopPodSandbox must be
// idempotent" — so an unknown or already stopped pod is not an error.
func (m *Manager) Stop(ctx context.Context, idOrPrefix string) error {
	e, err := m.acquire(idOrPrefix)
	if err != nil || e == nil {
		return err
	}
	defer e.mu.Unlock()
	return m.stopLocked(ctx, e)
}

func (m *Manager) stopLocked(ctx context.Context, e *entry) error {
	p := clonePod(e.pod)
	if p.NetworkAttached {
		if m.cfg.Network == nil {
			return fmt.Errorf("pod sandbox %s: network attached but no CNI configured", p.ID)
		}
		meta := cni.PodMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID}
		if err := m.cfg.Network.Teardown(ctx, p.ID, p.NetNSPath, meta, p.PortMappings); err != nil {
			return fmt.Errorf("stop pod sandbox %s: network teardown: %w", p.ID, err)
		}
		m.cfg.Failpoints.Hit(failpoint.PodStopAfterCNIDel)
		p.NetworkAttached = false
		// Saved at once: a later failure must not make a retry run DEL
		// for an address that may be someone else's by then.
		if err := m.commit(e, p); err != nil {
			return err
		}
		p = clonePod(p)
	}
	if err := m.cfg.Monitor.StopMonitor(ctx, p.ID); err != nil {
		return fmt.Errorf("stop pod sandbox %s: monitor: %w", p.ID, err)
	}
	m.cfg.Failpoints.Hit(failpoint.PodStopAfterMonitor)
	if !p.HostIPC && p.ShmPath != "" {
		if err := m.unmountShm(p.ShmPath); err != nil {
			return fmt.Errorf("stop pod sandbox %s: %w", p.ID, err)
		}
	}
	if p.State != StateNotReady {
		p.State = StateNotReady
		if err := m.commit(e, p); err != nil {
			return err
		}
		klog.InfoS("Pod sandbox stopped", "podSandboxID", p.ID)
	}
	return nil
}

// Remove stops the pod if needed and deletes all of it: namespace pins,
// berth's pod cgroup, files and the record. CRI: "RemovePodSandbox [...]
// must not return an error if the sandbox has already been removed."
func (m *Manager) Remove(ctx context.Context, idOrPrefix string) error {
	e, err := m.acquire(idOrPrefix)
	if err != nil || e == nil {
		return err
	}
	defer e.mu.Unlock()
	if err := m.stopLocked(ctx, e); err != nil {
		return err
	}
	p := e.pod
	if !p.HostNetwork || !p.HostIPC {
		if err := m.cfg.Namespaces.UnpinNamespaces(ctx, filepath.Join(p.Dir, "ns")); err != nil {
			return fmt.Errorf("remove pod sandbox %s: unpin namespaces: %w", p.ID, err)
		}
	}
	m.cfg.Failpoints.Hit(failpoint.PodRemoveAfterUnpin)
	if p.CgroupOwned {
		if err := m.cfg.Cgroups.Delete(ctx, p.CgroupParent); err != nil {
			return fmt.Errorf("remove pod sandbox %s: cgroup %s: %w", p.ID, p.CgroupParent, err)
		}
	}
	m.cfg.Failpoints.Hit(failpoint.PodRemoveAfterCgroup)
	if err := m.removeDir(p.Dir); err != nil {
		return fmt.Errorf("remove pod sandbox %s: %w", p.ID, err)
	}
	m.cfg.Failpoints.Hit(failpoint.PodRemoveBeforeRecord)
	if err := os.Remove(m.recordPath(p.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove pod sandbox %s: record: %w", p.ID, err)
	}
	m.mu.Lock()
	delete(m.pods, p.ID)
	if m.names[nameKey(p.Name, p.Namespace, p.UID, p.Attempt)] == p.ID {
		delete(m.names, nameKey(p.Name, p.Namespace, p.UID, p.Attempt))
	}
	m.mu.Unlock()
	e.removed = true
	klog.InfoS("Pod sandbox removed", "podSandboxID", p.ID)
	return nil
}

// CleanupOrphans undoes pods that a crash left half-made: a state dir under
// StateDir with no record (berthd died inside Run, before the record was
// written). For each it detaches the network (from cni's cache), stops the
// monitor, unmounts shm, unpins the namespaces, deletes berth's pod cgroup
// and removes the dir. Call it once at start-up, before serving; each orphan
// gets at most perPod (default one minute), so one broken pod cannot block
// start-up.
func (m *Manager) CleanupOrphans(ctx context.Context, perPod time.Duration) error {
	if perPod <= 0 {
		perPod = time.Minute
	}
	ents, err := os.ReadDir(m.cfg.StateDir)
	if err != nil {
		return fmt.Errorf("podsandbox: read state dir: %w", err)
	}
	var errs []error
	for _, d := range ents {
		id := d.Name()
		if !d.IsDir() || !validID(id) {
			continue
		}
		m.mu.Lock()
		_, known := m.pods[id]
		reserved := false
		for _, rid := range m.names {
			reserved = reserved || rid == id
		}
		m.mu.Unlock()
		if known || reserved {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, perPod)
		err := m.cleanupOrphan(pctx, id)
		cancel()
		if err != nil {
			errs = append(errs, err)
			klog.ErrorS(err, "Cleaning up half-made pod sandbox", "podSandboxID", id)
			continue
		}
		klog.InfoS("Cleaned up half-made pod sandbox", "podSandboxID", id)
	}
	return errors.Join(errs...)
}

func (m *Manager) cleanupOrphan(ctx context.Context, id string) error {
	dir := filepath.Join(m.cfg.StateDir, id)
	if m.cfg.Network != nil {
		// No netns path: the DEL then releases host-side state only
		// (lease, iptables); the veth goes with the netns when unpinned.
		if err := m.cfg.Network.Teardown(ctx, id, "", cni.PodMeta{}, nil); err != nil {
			return fmt.Errorf("orphan %s: network teardown: %w", id, err)
		}
	}
	if err := m.cfg.Monitor.StopMonitor(ctx, id); err != nil {
		return fmt.Errorf("orphan %s: monitor: %w", id, err)
	}
	if err := m.unmountShm(filepath.Join(dir, "shm")); err != nil {
		return fmt.Errorf("orphan %s: %w", id, err)
	}
	if err := m.cfg.Namespaces.UnpinNamespaces(ctx, filepath.Join(dir, "ns")); err != nil {
		return fmt.Errorf("orphan %s: unpin namespaces: %w", id, err)
	}
	if err := m.cfg.Cgroups.Delete(ctx, path.Join(m.cfg.CgroupParent, "pod-"+id)); err != nil {
		return fmt.Errorf("orphan %s: cgroup: %w", id, err)
	}
	return m.removeDir(dir)
}
