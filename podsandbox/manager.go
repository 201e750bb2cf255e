package podsandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/berth-dev/berth/atomicfile"
	"github.com/berth-dev/berth/idprefix"

	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/failpoint"
)

// Config wires a Manager.
type Config struct {
	// RootDir keeps one JSON record per pod; it survives berthd restarts
	// (put it under berth's root, e.g. /var/lib/berth/pods).
	RootDir string
	// StateDir holds each pod's runtime dir <StateDir>/<id>: namespace
	// pins, hostname, hosts, resolv.conf, shm (e.g. /run/berth/pods).
	StateDir string
	// CgroupParent is where berth's own pod cgroups go; default "/berth".
	CgroupParent string
	// ShmSize is each pod's /dev/shm size; default DefaultShmSize.
	ShmSize int64
	// HostResolvConf is copied for pods without DNSConfig; default
	// /etc/resolv.conf.
	HostResolvConf string
	// HostHosts is copied as /etc/hosts for host-network pods; default
	// /etc/hosts.
	HostHosts string

	Namespaces NamespacePinner
	Monitor    PodMonitor
	Cgroups    CgroupManager
	// Network may be nil when berthd runs only host-network pods; a pod
	// that needs it then fails with errdefs.ErrUnavailable.
	Network Network
	// Failpoints crash berthd between steps, for crash tests; nil in
	// production.
	Failpoints *failpoint.Set
}

// Manager runs pod sandboxes. Operations on different pods run in parallel;
// operations on one pod are serialised by the pod's lock.
type Manager struct {
	cfg Config

	// hooks for rootless unit tests; real mounts otherwise.
	mountShm   func(dir string, size int64) error
	unmountShm func(dir string) error

	mu    sync.Mutex
	pods  map[string]*entry
	names map[string]string // name key → id, reserved from the start of Run
}

type entry struct {
	mu  sync.Mutex // held through Stop and Remove of this pod
	pod *Pod       // guarded by Manager.mu for reads, and by mu for changes
	// removed marks a pod whose Remove finished while another call waited
	// on mu.
	removed bool
}

// New loads the pods recorded under cfg.RootDir. A pod whose pinned network
// namespace is gone (the node rebooted) is marked NotReady; its network,
// cgroup and files are released by Stop and Remove as usual.
func New(cfg Config) (*Manager, error) {
	if cfg.RootDir == "" || cfg.StateDir == "" {
		return nil, fmt.Errorf("podsandbox: root and state dirs are required: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.Namespaces == nil || cfg.Monitor == nil || cfg.Cgroups == nil {
		return nil, fmt.Errorf("podsandbox: namespaces, monitor and cgroups are required: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.CgroupParent == "" {
		cfg.CgroupParent = "/berth"
	}
	if cfg.ShmSize <= 0 {
		cfg.ShmSize = DefaultShmSize
	}
	if cfg.HostResolvConf == "" {
		cfg.HostResolvConf = "/etc/resolv.conf"
	}
	if cfg.HostHosts == "" {
		cfg.HostHosts = "/etc/hosts"
	}
	for _, d := range []string{cfg.RootDir, cfg.StateDir} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("podsandbox: %w", err)
		}
	}
	m := &Manager{
		cfg:        cfg,
		mountShm:   mountShm,
		unmountShm: unmountShm,
		pods:       map[string]*entry{},
		names:      map[string]string{},
	}
	if err := m.load(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Manager) recordPath(id string) string {
	return filepath.Join(m.cfg.RootDir, id+".json")
}

func nameKey(name, namespace, uid string, attempt uint32) string {
	return fmt.Sprintf("%s_%s_%s_%d", name, namespace, uid, attempt)
}

func (m *Manager) load() error {
	ents, err := os.ReadDir(m.cfg.RootDir)
	if err != nil {
		return fmt.Errorf("podsandbox: read records: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			// The temp file of a record write that a crash cut short;
			// the record it was to replace (if any) is intact.
			if err := os.Remove(filepath.Join(m.cfg.RootDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				klog.ErrorS(err, "Removing the temp file of an interrupted record write", "file", name)
			}
			continue
		}
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(m.cfg.RootDir, name))
		if err != nil {
			return fmt.Errorf("podsandbox: read record %s: %w", name, err)
		}
		var p Pod
		if err := json.Unmarshal(data, &p); err != nil || !validID(p.ID) || p.ID+".json" != name {
			// A record we cannot read is kept for a human, not guessed at.
			klog.ErrorS(err, "Skipping unreadable pod sandbox record", "file", name)
			continue
		}
		if p.State == StateReady && !p.HostNetwork && p.NetNSPath != "" {
			if _, err := os.Stat(p.NetNSPath); err != nil {
				klog.InfoS("Pod sandbox network namespace is gone; marking it not ready", "podSandboxID", p.ID)
				p.State = StateNotReady
				if err := m.save(&p); err != nil {
					return err
				}
			}
		}
		m.pods[p.ID] = &entry{pod: &p}
		m.names[nameKey(p.Name, p.Namespace, p.UID, p.Attempt)] = p.ID
	}
	return nil
}

func (m *Manager) save(p *Pod) error {
	data, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(m.recordPath(p.ID), data, 0o600); err != nil {
		return fmt.Errorf("save pod sandbox %s: %w", p.ID, err)
	}
	return nil
}

func validID(id string) bool {
	if len(id) != 64 {
		return false
	}
	for _, c := range id {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// lookup finds a pod by ID or unique ID prefix. Callers hold m.mu.
func (m *Manager) lookup(idOrPrefix string) (*entry, error) {
	return idprefix.Find(m.pods, idOrPrefix, "pod sandbox")
}

// Resolve returns the full ID of the pod that idOrPrefix names.
func (m *Manager) Resolve(idOrPrefix string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.lookup(idOrPrefix)
	if err != nil {
		return "", err
	}
	return e.pod.ID, nil
}

// Status returns a copy of the pod's record.
func (m *Manager) Status(idOrPrefix string) (*Pod, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, err := m.lookup(idOrPrefix)
	if err != nil {
		return nil, err
	}
	return clonePod(e.pod), nil
}

// List returns copies of the pods f selects, oldest first.
func (m *Manager) List(f ListFilter) []*Pod {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*Pod
	for id, e := range m.pods {
		p := e.pod
		if f.ID != "" && !strings.HasPrefix(id, f.ID) {
			continue
		}
		if f.State != "" && p.State != f.State {
			continue
		}
		match := true
		for k, v := range f.Labels {
			if got, ok := p.Labels[k]; !ok || got != v {
				match = false
				break
			}
		}
		if match {
			out = append(out, clonePod(p))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// clonePod deep-copies through JSON: the record is JSON anyway, and a
// caller must never alias the manager's maps and slices.
func clonePod(p *Pod) *Pod {
	data, err := json.Marshal(p)
	if err != nil {
		panic(err) // Pod has only JSON-safe fields
	}
	var c Pod
	if err := json.Unmarshal(data, &c); err != nil {
		panic(err)
	}
	return &c
}

// errUnknown reports whether err means "no such pod", for the idempotent
// calls.
func errUnknown(err error) bool { return errors.Is(err, errdefs.ErrNotFound) }
