package podsandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/cni"
)

var errInjected = errors.New("injected failure")

// fakes records what is live, so a test can check that a failed or removed
// pod left nothing, and fails the step named in fail.
type fakes struct {
	mu       sync.Mutex
	fail     string // "pin", "cgroup", "monitor", "network", "shm", "teardown"
	pinned   map[string]bool
	monitors map[string]bool
	userns   map[string]string // pod ID -> the user namespace its monitor got
	cgroups  map[string]*specs.LinuxResources
	attached map[string]bool
	shm      map[string]bool
	setups   int
	teardown int
	nextIP   int
}

func newFakes() *fakes {
	return &fakes{
		pinned:   map[string]bool{},
		monitors: map[string]bool{},
		userns:   map[string]string{},
		cgroups:  map[string]*specs.LinuxResources{},
		attached: map[string]bool{},
		shm:      map[string]bool{},
	}
}

func (f *fakes) failing(step string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fail == step
}

func (f *fakes) PinNamespaces(ctx context.Context, dir string, kinds []string) (map[string]string, error) {
	if f.failing("pin") {
		return nil, errInjected
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, k := range kinds {
		p := filepath.Join(dir, k)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			return nil, err
		}
		out[k] = p
	}
	f.mu.Lock()
	f.pinned[dir] = true
	f.mu.Unlock()
	return out, nil
}

func (f *fakes) UnpinNamespaces(ctx context.Context, dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	f.mu.Lock()
	delete(f.pinned, dir)
	f.mu.Unlock()
	return nil
}

func (f *fakes) PinNamespacesUserns(ctx context.Context, dir string, kinds []string, hostname string, uid, gid specs.LinuxIDMapping) (map[string]string, error) {
	return f.PinNamespaces(ctx, dir, kinds)
}

func (f *fakes) StartMonitorUserns(ctx context.Context, podID string, sharePID bool, userns string) (string, error) {
	f.mu.Lock()
	f.userns[podID] = userns
	f.mu.Unlock()
	return f.StartMonitor(ctx, podID, sharePID)
}

func (f *fakes) StartMonitor(ctx context.Context, podID string, sharePID bool) (string, error) {
	if f.failing("monitor") {
		return "", errInjected
	}
	f.mu.Lock()
	f.monitors[podID] = true
	f.mu.Unlock()
	if sharePID {
		return "/proc/4242/ns/pid", nil
	}
	return "", nil
}

func (f *fakes) StopMonitor(ctx context.Context, podID string) error {
	f.mu.Lock()
	delete(f.monitors, podID)
	f.mu.Unlock()
	return nil
}

func (f *fakes) Create(ctx context.Context, path string, res *specs.LinuxResources) error {
	if f.failing("cgroup") {
		return errInjected
	}
	f.mu.Lock()
	f.cgroups[path] = res
	f.mu.Unlock()
	return nil
}

func (f *fakes) Delete(ctx context.Context, path string) error {
	f.mu.Lock()
	delete(f.cgroups, path)
	f.mu.Unlock()
	return nil
}

func (f *fakes) Setup(ctx context.Context, id, netns string, pod cni.PodMeta, ports []cni.PortMapping) (*cni.Result, error) {
	if netns == "" {
		return nil, errors.New("no netns")
	}
	if _, err := os.Stat(netns); err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setups++
	if f.fail == "network" {
		return nil, errInjected
	}
	f.nextIP++
	f.attached[id] = true
	return &cni.Result{IPs: []net.IP{net.IPv4(10, 99, 0, byte(f.nextIP)).To4(), net.ParseIP("fd00::1")}, Interface: "eth0"}, nil
}

func (f *fakes) Teardown(ctx context.Context, id, netns string, pod cni.PodMeta, ports []cni.PortMapping) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail == "teardown" {
		return errInjected
	}
	f.teardown++
	delete(f.attached, id)
	return nil
}

// live lists everything still made, for "nothing left" checks.
func (f *fakes) live() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k := range f.pinned {
		out = append(out, "pin "+k)
	}
	for k := range f.monitors {
		out = append(out, "monitor "+k)
	}
	for k := range f.cgroups {
		out = append(out, "cgroup "+k)
	}
	for k := range f.attached {
		out = append(out, "network "+k)
	}
	for k := range f.shm {
		out = append(out, "shm "+k)
	}
	return out
}

type testMgr struct {
	*Manager
	f   *fakes
	cfg Config
}

func newTestManager(t *testing.T, f *fakes) *testMgr {
	t.Helper()
	if f == nil {
		f = newFakes()
	}
	root := t.TempDir()
	resolv := filepath.Join(root, "host-resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 192.0.2.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hosts := filepath.Join(root, "host-hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost node\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		RootDir:        filepath.Join(root, "records"),
		StateDir:       filepath.Join(root, "state"),
		HostResolvConf: resolv,
		HostHosts:      hosts,
		Namespaces:     f,
		Monitor:        f,
		Cgroups:        f,
		Network:        f,
	}
	tm := &testMgr{f: f, cfg: cfg}
	tm.Manager = tm.reopen(t)
	return tm
}

// reopen makes a new Manager on the same dirs and fakes: a berthd restart.
func (tm *testMgr) reopen(t *testing.T) *Manager {
	t.Helper()
	m, err := New(tm.cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := tm.f
	m.mountShm = func(dir string, size int64) error {
		if f.failing("shm") {
			return errInjected
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		f.mu.Lock()
		f.shm[dir] = true
		f.mu.Unlock()
		return nil
	}
	m.unmountShm = func(dir string) error {
		f.mu.Lock()
		delete(f.shm, dir)
		f.mu.Unlock()
		return nil
	}
	return m
}

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
