package podsandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/errdefs"
)

func req(name string) RunRequest {
	return RunRequest{Name: name, Namespace: "default", UID: "uid-" + name}
}

func TestRunStopRemove(t *testing.T) {
	tm := newTestManager(t, nil)
	ctx := context.Background()
	limit := int64(1 << 30)
	r := req("web")
	r.Hostname = "web-0"
	r.SharePID = true
	r.Labels = map[string]string{"app": "web"}
	r.Resources = &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: &limit}}
	r.Sysctls = map[string]string{"net.ipv4.ip_unprivileged_port_start": "0", "kernel/shm_rmid_forced": "1"}
	p, err := tm.Run(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if !validID(p.ID) || p.State != StateReady {
		t.Fatalf("id %q state %q", p.ID, p.State)
	}
	if strings.Join(p.IPs, ",") != "10.99.0.1,fd00::1" {
		t.Fatalf("ips %v", p.IPs)
	}
	if p.NetNSPath == "" || p.IPCNSPath == "" || p.UTSNSPath == "" || p.PIDNSPath != "/proc/4242/ns/pid" {
		t.Fatalf("namespaces: %+v", p)
	}
	if p.CgroupParent != "/berth/pod-"+p.ID || !p.CgroupOwned {
		t.Fatalf("cgroup parent %q owned %v", p.CgroupParent, p.CgroupOwned)
	}
	if res := tm.f.cgroups[p.CgroupParent]; res == nil || *res.Memory.Limit != limit {
		t.Fatal("pod cgroup not created with its resources")
	}
	if p.Sysctls["kernel.shm_rmid_forced"] != "1" || p.Sysctls["net.ipv4.ip_unprivileged_port_start"] != "0" {
		t.Fatalf("sysctls %v", p.Sysctls)
	}
	if data, _ := os.ReadFile(p.HostnamePath); string(data) != "web-0\n" {
		t.Fatalf("hostname file %q", data)
	}
	hosts, _ := os.ReadFile(p.HostsPath)
	for _, want := range []string{"127.0.0.1\tlocalhost\n", "::1\tlocalhost", "10.99.0.1\tweb-0\n", "fd00::1\tweb-0\n"} {
		if !strings.Contains(string(hosts), want) {
			t.Errorf("hosts lacks %q:\n%s", want, hosts)
		}
	}
	if data, _ := os.ReadFile(p.ResolvConfPath); string(data) != "nameserver 192.0.2.53\n" {
		t.Fatalf("resolv.conf without DNSConfig is not the host's: %q", data)
	}
	if !tm.f.shm[p.ShmPath] || p.ShmPath != filepath.Join(p.Dir, "shm") {
		t.Fatalf("shm %q not mounted", p.ShmPath)
	}

	// The record survives a restart.
	m2 := tm.reopen(t)
	got, err := m2.Status(p.ID[:8])
	if err != nil {
		t.Fatal(err)
	}
	if got.State != StateReady || got.Hostname != "web-0" || strings.Join(got.IPs, ",") != strings.Join(p.IPs, ",") || !got.CreatedAt.Equal(p.CreatedAt) {
		t.Fatalf("reloaded %+v", got)
	}
	if l := m2.List(ListFilter{Labels: map[string]string{"app": "web"}}); len(l) != 1 || l[0].ID != p.ID {
		t.Fatalf("list by label: %v", l)
	}
	if l := m2.List(ListFilter{Labels: map[string]string{"app": "db"}}); len(l) != 0 {
		t.Fatalf("list by other label: %v", l)
	}

	// Stop on the restarted manager; twice is fine and tears down once.
	for range 2 {
		if err := m2.Stop(ctx, p.ID); err != nil {
			t.Fatal(err)
		}
	}
	if tm.f.teardown != 1 {
		t.Fatalf("teardowns: %d", tm.f.teardown)
	}
	if st, _ := m2.Status(p.ID); st.State != StateNotReady || st.NetworkAttached {
		t.Fatalf("after stop: %+v", st)
	}
	if tm.f.monitors[p.ID] || tm.f.shm[p.ShmPath] {
		t.Fatal("stop left the monitor or shm")
	}
	if l := m2.List(ListFilter{State: StateReady}); len(l) != 0 {
		t.Fatalf("ready pods after stop: %d", len(l))
	}

	for range 2 {
		if err := m2.Remove(ctx, p.ID); err != nil {
			t.Fatal(err)
		}
	}
	if live := tm.f.live(); len(live) != 0 {
		t.Fatalf("left after remove: %v", live)
	}
	if e := dirEntries(t, tm.cfg.StateDir); len(e) != 0 {
		t.Fatalf("state dir: %v", e)
	}
	if e := dirEntries(t, tm.cfg.RootDir); len(e) != 0 {
		t.Fatalf("records: %v", e)
	}
	if _, err := m2.Status(p.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("status after remove: %v", err)
	}
	// The name is free again.
	if _, err := m2.Run(ctx, r); err != nil {
		t.Fatalf("rerun after remove: %v", err)
	}
}

func TestStopRemoveUnknown(t *testing.T) {
	tm := newTestManager(t, nil)
	ctx := context.Background()
	unknown := strings.Repeat("ab", 32)
	if err := tm.Stop(ctx, unknown); err != nil {
		t.Fatal(err)
	}
	if err := tm.Remove(ctx, unknown); err != nil {
		t.Fatal(err)
	}
	if _, err := tm.Status(unknown); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("status of unknown: %v", err)
	}
}

func TestRemoveWithoutStop(t *testing.T) {
	tm := newTestManager(t, nil)
	ctx := context.Background()
	p, err := tm.Run(ctx, req("a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := tm.Remove(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if live := tm.f.live(); len(live) != 0 || tm.f.teardown != 1 {
		t.Fatalf("left %v, teardowns %d", live, tm.f.teardown)
	}
}

func TestStopRetriesAfterTeardownFailure(t *testing.T) {
	tm := newTestManager(t, nil)
	ctx := context.Background()
	p, err := tm.Run(ctx, req("a"))
	if err != nil {
		t.Fatal(err)
	}
	tm.f.fail = "teardown"
	if err := tm.Stop(ctx, p.ID); !errors.Is(err, errInjected) {
		t.Fatalf("stop with failing teardown: %v", err)
	}
	if st, _ := tm.Status(p.ID); !st.NetworkAttached || st.State != StateReady {
		t.Fatalf("after failed stop: %+v", st)
	}
	tm.f.fail = ""
	if err := tm.Stop(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if len(tm.f.attached) != 0 {
		t.Fatal("network still attached")
	}
}

// TestRunRollback fails each step in turn and checks that nothing is left.
func TestRunRollback(t *testing.T) {
	for _, step := range []string{"pin", "network", "cgroup", "shm", "monitor"} {
		t.Run(step, func(t *testing.T) {
			f := newFakes()
			f.fail = step
			tm := newTestManager(t, f)
			_, err := tm.Run(context.Background(), req("a"))
			if !errors.Is(err, errInjected) {
				t.Fatalf("run: %v", err)
			}
			if live := f.live(); len(live) != 0 {
				t.Fatalf("left after failed run: %v", live)
			}
			if step != "pin" && step != "network" && f.teardown != 1 {
				t.Fatalf("network teardowns %d, want 1", f.teardown)
			}
			if e := dirEntries(t, tm.cfg.StateDir); len(e) != 0 {
				t.Fatalf("state dir: %v", e)
			}
			if e := dirEntries(t, tm.cfg.RootDir); len(e) != 0 {
				t.Fatalf("records: %v", e)
			}
			if l := tm.List(ListFilter{}); len(l) != 0 {
				t.Fatalf("listed: %d", len(l))
			}
			// The name reservation was released too.
			f.fail = ""
			if _, err := tm.Run(context.Background(), req("a")); err != nil {
				t.Fatalf("retry: %v", err)
			}
		})
	}
}

func TestRunCancelledContextLeavesNothing(t *testing.T) {
	tm := newTestManager(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tm.Run(ctx, req("a")); !errors.Is(err, context.Canceled) {
		t.Fatalf("run: %v", err)
	}
	if live := tm.f.live(); len(live) != 0 {
		t.Fatalf("left: %v", live)
	}
	if e := dirEntries(t, tm.cfg.StateDir); len(e) != 0 {
		t.Fatalf("state dir: %v", e)
	}
}

func TestDuplicateName(t *testing.T) {
	tm := newTestManager(t, nil)
	ctx := context.Background()
	if _, err := tm.Run(ctx, req("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := tm.Run(ctx, req("a")); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("same name: %v", err)
	}
	r := req("a")
	r.Attempt = 1
	if _, err := tm.Run(ctx, r); err != nil {
		t.Fatalf("next attempt: %v", err)
	}
}

func TestHostNamespaces(t *testing.T) {
	tm := newTestManager(t, nil)
	ctx := context.Background()
	r := req("h")
	r.HostNetwork, r.HostIPC, r.HostPID = true, true, true
	p, err := tm.Run(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if p.NetNSPath != "" || p.IPCNSPath != "" || p.UTSNSPath != "" || p.PIDNSPath != "" || len(p.IPs) != 0 {
		t.Fatalf("host pod has namespaces: %+v", p)
	}
	if tm.f.setups != 0 || len(tm.f.pinned) != 0 {
		t.Fatal("host pod ran CNI or pinned namespaces")
	}
	if p.ShmPath != "/dev/shm" {
		t.Fatalf("shm %q", p.ShmPath)
	}
	host, _ := os.Hostname()
	if p.Hostname != host {
		t.Fatalf("hostname %q, want the node's %q", p.Hostname, host)
	}
	if data, _ := os.ReadFile(p.HostsPath); string(data) != "127.0.0.1 localhost node\n" {
		t.Fatalf("hosts of a host-network pod: %q", data)
	}
	if err := tm.Remove(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if live := tm.f.live(); len(live) != 0 {
		t.Fatalf("left: %v", live)
	}
}

// A pod with a user namespace and a shared pid namespace: the user
// namespace is pinned before the monitor starts, and the monitor gets it,
// to make the pid namespace inside it.
func TestUsernsSharedPID(t *testing.T) {
	tm := newTestManager(t, nil)
	ctx := context.Background()
	r := req("u")
	r.SharePID = true
	r.UserNS = &UserNamespace{
		UID: specs.LinuxIDMapping{ContainerID: 0, HostID: 100000, Size: 65536},
		GID: specs.LinuxIDMapping{ContainerID: 0, HostID: 100000, Size: 65536},
	}
	p, err := tm.Run(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if p.UserNSPath == "" || tm.f.userns[p.ID] != p.UserNSPath || p.PIDNSPath == "" {
		t.Fatalf("user namespace %q, the monitor got %q, pid namespace %q", p.UserNSPath, tm.f.userns[p.ID], p.PIDNSPath)
	}
	// Without a shared pid namespace the monitor needs no user namespace.
	r = req("v")
	r.UserNS = &UserNamespace{UID: p.UIDMappings[0], GID: p.GIDMappings[0]}
	q, err := tm.Run(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tm.f.userns[q.ID]; ok || q.PIDNSPath != "" {
		t.Fatalf("pod without a shared pid namespace: monitor got user namespace %v, pid namespace %q", ok, q.PIDNSPath)
	}
	for _, id := range []string{p.ID, q.ID} {
		if err := tm.Remove(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if live := tm.f.live(); len(live) != 0 {
		t.Fatalf("left: %v", live)
	}
}

func TestCgroupParentFromKubelet(t *testing.T) {
	tm := newTestManager(t, nil)
	ctx := context.Background()
	r := req("k")
	r.CgroupParent = "/kubepods/besteffort/podabc"
	p, err := tm.Run(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if p.CgroupParent != r.CgroupParent || p.CgroupOwned {
		t.Fatalf("cgroup %q owned %v", p.CgroupParent, p.CgroupOwned)
	}
	if err := tm.Remove(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	// kubelet's cgroup is kubelet's to delete.
	if _, ok := tm.f.cgroups[r.CgroupParent]; !ok {
		t.Fatal("kubelet's pod cgroup was deleted")
	}
}

func TestDNSConfig(t *testing.T) {
	tm := newTestManager(t, nil)
	r := req("d")
	r.DNS = &DNSConfig{Servers: []string{"10.96.0.10"}, Searches: []string{"default.svc.cluster.local", "svc.cluster.local"}, Options: []string{"ndots:5"}}
	p, err := tm.Run(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(p.ResolvConfPath)
	want := "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
	if string(data) != want {
		t.Fatalf("resolv.conf:\n%s\nwant:\n%s", data, want)
	}
}

func TestValidation(t *testing.T) {
	tm := newTestManager(t, nil)
	bad := map[string]func(*RunRequest){
		"no name":            func(r *RunRequest) { r.Name = "" },
		"no uid":             func(r *RunRequest) { r.UID = "" },
		"bad hostname":       func(r *RunRequest) { r.Hostname = "Not_A_Host" },
		"non-ns sysctl":      func(r *RunRequest) { r.Sysctls = map[string]string{"vm.swappiness": "1"} },
		"kernel sysctl":      func(r *RunRequest) { r.Sysctls = map[string]string{"kernel.hostname": "x"} },
		"net sysctl hostnet": func(r *RunRequest) { r.HostNetwork = true; r.Sysctls = map[string]string{"net.core.somaxconn": "1"} },
		"ipc sysctl hostipc": func(r *RunRequest) { r.HostIPC = true; r.Sysctls = map[string]string{"kernel.shmmax": "1"} },
		"sysctl newline":     func(r *RunRequest) { r.Sysctls = map[string]string{"net.core.somaxconn": "1\n2"} },
		"sysctl dotdot":      func(r *RunRequest) { r.Sysctls = map[string]string{"net..core": "1"} },
		"pid pod and node":   func(r *RunRequest) { r.SharePID, r.HostPID = true, true },
		"relative cgroup":    func(r *RunRequest) { r.CgroupParent = "kubepods" },
		"dns space":          func(r *RunRequest) { r.DNS = &DNSConfig{Servers: []string{"1.1.1.1 evil"}} },
		"port range":         func(r *RunRequest) { r.PortMappings = []PortMapping{{HostPort: 70000, ContainerPort: 80}} },
	}
	for name, mutate := range bad {
		r := req("v")
		mutate(&r)
		if _, err := tm.Run(context.Background(), r); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if live := tm.f.live(); len(live) != 0 {
		t.Fatalf("left: %v", live)
	}
	got, err := validateSysctls(map[string]string{"net/ipv4/conf/eth0.100/forwarding": "1", "fs.mqueue.msg_max": "20", "kernel.sem": "1 2 3 4"}, false, false)
	if err != nil {
		t.Fatal(err)
	}
	if got["net.ipv4.conf.eth0/100.forwarding"] != "1" || got["fs.mqueue.msg_max"] != "20" || got["kernel.sem"] != "1 2 3 4" {
		t.Fatalf("sysctls %v", got)
	}
}

func writeRecord(t *testing.T, tm *testMgr, id string) {
	t.Helper()
	p := &Pod{ID: id, Name: "n" + id[60:], Namespace: "x", UID: id, State: StateNotReady, Dir: filepath.Join(tm.cfg.StateDir, id)}
	if err := os.MkdirAll(tm.cfg.RootDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := tm.save(p); err != nil {
		t.Fatal(err)
	}
}

func TestPrefixLookup(t *testing.T) {
	tm := newTestManager(t, nil)
	a := strings.Repeat("a", 60) + "0001"
	b := strings.Repeat("a", 60) + "0002"
	c := strings.Repeat("c", 64)
	for _, id := range []string{a, b, c} {
		writeRecord(t, tm, id)
	}
	m := tm.reopen(t)
	for prefix, want := range map[string]string{"c": c, a: a, b: b, c[:10]: c, a[:61]: ""} {
		got, err := m.Resolve(prefix)
		if want == "" {
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Errorf("ambiguous %q: %v %v", prefix, got, err)
			}
		} else if err != nil || got != want {
			t.Errorf("%q: got %q, %v", prefix, got, err)
		}
	}
	if _, err := m.Resolve("aa"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("ambiguous aa: %v", err)
	}
	if _, err := m.Resolve("b"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("unknown b: %v", err)
	}
	if _, err := m.Resolve(""); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("empty: %v", err)
	}
	if err := m.Stop(context.Background(), "aa"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("stop of an ambiguous prefix: %v", err)
	}
	if l := m.List(ListFilter{ID: "aa"}); len(l) != 2 {
		t.Errorf("list by prefix: %d", len(l))
	}
}

func TestReloadMarksPodsWithoutNetNSNotReady(t *testing.T) {
	tm := newTestManager(t, nil)
	p, err := tm.Run(context.Background(), req("a"))
	if err != nil {
		t.Fatal(err)
	}
	// The node rebooted: /run is empty.
	if err := os.Remove(p.NetNSPath); err != nil {
		t.Fatal(err)
	}
	m := tm.reopen(t)
	st, err := m.Status(p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != StateNotReady {
		t.Fatalf("state %q", st.State)
	}
	if err := m.Remove(context.Background(), p.ID); err != nil {
		t.Fatal(err)
	}
	if live := tm.f.live(); len(live) != 0 {
		t.Fatalf("left: %v", live)
	}
}

func TestStatusIsACopy(t *testing.T) {
	tm := newTestManager(t, nil)
	r := req("a")
	r.Labels = map[string]string{"k": "v"}
	p, err := tm.Run(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	p.Labels["k"] = "changed"
	st, _ := tm.Status(p.ID)
	st.IPs[0] = "changed"
	st2, _ := tm.Status(p.ID)
	if st2.Labels["k"] != "v" || st2.IPs[0] == "changed" {
		t.Fatal("callers alias the record")
	}
}

func TestCleanupOrphans(t *testing.T) {
	tm := newTestManager(t, nil)
	ctx := context.Background()
	kept, err := tm.Run(ctx, req("kept"))
	if err != nil {
		t.Fatal(err)
	}
	lost, err := tm.Run(ctx, req("lost"))
	if err != nil {
		t.Fatal(err)
	}
	// berthd died inside Run, before writing the record of "lost".
	if err := os.Remove(tm.recordPath(lost.ID)); err != nil {
		t.Fatal(err)
	}
	m := tm.reopen(t)
	if err := m.CleanupOrphans(ctx, 0); err != nil {
		t.Fatal(err)
	}
	live := strings.Join(tm.f.live(), "\n")
	if strings.Contains(live, lost.ID) {
		t.Fatalf("orphan left:\n%s", live)
	}
	if !strings.Contains(live, "network "+kept.ID) || !strings.Contains(live, "monitor "+kept.ID) {
		t.Fatalf("a recorded pod was cleaned up:\n%s", live)
	}
	if e := dirEntries(t, tm.cfg.StateDir); len(e) != 1 || e[0] != kept.ID {
		t.Fatalf("state dir: %v", e)
	}
}

type cgWithHandle struct{ f *fakes }

func (c cgWithHandle) Create(ctx context.Context, path string, res *specs.LinuxResources) (*int, error) {
	n := 1
	return &n, c.f.Create(ctx, path, res)
}

func (c cgWithHandle) Delete(ctx context.Context, path string) error { return c.f.Delete(ctx, path) }

func TestCgroupsFrom(t *testing.T) {
	f := newFakes()
	cg := CgroupsFrom[*int](cgWithHandle{f})
	if err := cg.Create(context.Background(), "/berth/x", nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.cgroups["/berth/x"]; !ok {
		t.Fatal("not created")
	}
	f.fail = "cgroup"
	if err := cg.Create(context.Background(), "/berth/y", nil); !errors.Is(err, errInjected) {
		t.Fatalf("error lost: %v", err)
	}
	if err := cg.Delete(context.Background(), "/berth/x"); err != nil || len(f.cgroups) != 0 {
		t.Fatalf("delete: %v %v", err, f.cgroups)
	}
}

// A record write that a crash cut short leaves its temp file; the next
// start removes it and keeps the record it was to replace.
func TestReloadRemovesInterruptedRecordWrites(t *testing.T) {
	tm := newTestManager(t, nil)
	p, err := tm.Run(context.Background(), req("a"))
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(tm.cfg.RootDir, "."+p.ID+".json.tmp123")
	if err := os.WriteFile(tmp, []byte(`{"id":`), 0o600); err != nil {
		t.Fatal(err)
	}
	m := tm.reopen(t)
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temp file after reload: %v", err)
	}
	if _, err := m.Status(p.ID); err != nil {
		t.Fatalf("the record beside the temp file: %v", err)
	}
}
