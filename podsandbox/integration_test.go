package podsandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/cni"
)

// unsharePinner pins namespaces as runtime/ does, by bind mounts under dir,
// using util-linux unshare.
type unsharePinner struct{}

func (u unsharePinner) PinNamespaces(ctx context.Context, dir string, kinds []string) (map[string]string, error) {
	return u.PinNamespacesWithHostname(ctx, dir, kinds, "")
}

func (unsharePinner) PinNamespacesWithHostname(ctx context.Context, dir string, kinds []string, hostname string) (map[string]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	args := []string{}
	out := map[string]string{}
	for _, k := range kinds {
		p := filepath.Join(dir, k)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			return nil, err
		}
		args = append(args, "--"+k+"="+p)
		out[k] = p
	}
	cmd := []string{"true"}
	if hostname != "" {
		cmd = []string{"hostname", hostname}
	}
	if b, err := exec.CommandContext(ctx, "unshare", append(args, cmd...)...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("unshare: %v: %s", err, b)
	}
	return out, nil
}

func (unsharePinner) UnpinNamespaces(ctx context.Context, dir string) error {
	for _, k := range []string{NamespaceNet, NamespaceIPC, NamespaceUTS} {
		p := filepath.Join(dir, k)
		if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	return os.RemoveAll(dir)
}

type realNet struct {
	confDir, dataDir, cacheDir, bridge, netName string
}

func newRealNet(t *testing.T) *realNet { return newRealNetB(t) }

func newRealNetB(t testing.TB) *realNet {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, bin := range []string{"unshare", "busybox", "ip"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed", bin)
		}
	}
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		t.Skip("CNI plugins not installed")
	}
	n, _ := rand.Int(rand.Reader, big.NewInt(250))
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	rn := &realNet{
		confDir:  t.TempDir(),
		dataDir:  t.TempDir(),
		cacheDir: t.TempDir(),
		bridge:   fmt.Sprintf("berth-test-p%d", n.Int64()),
		netName:  "berth-test-" + hex.EncodeToString(b),
	}
	t.Cleanup(func() {
		if exec.Command("ip", "link", "show", rn.bridge).Run() == nil {
			if out, err := exec.Command("ip", "link", "del", rn.bridge).CombinedOutput(); err != nil {
				t.Errorf("delete test bridge: %v: %s", err, out)
			}
		}
	})
	_, subnet, _ := net.ParseCIDR(fmt.Sprintf("10.89.%d.0/24", n.Int64()+1))
	t.Cleanup(func() {
		// Installed by the first Setup on the subnet, if there was one.
		_ = cni.RemoveMasquerade(context.Background(), subnet)
	})
	data, err := cni.DefaultConflist(rn.netName, rn.bridge, subnet.String(), rn.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rn.confDir, "10-test.conflist"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return rn
}

func (rn *realNet) manager(t testing.TB) *cni.Manager {
	t.Helper()
	m, err := cni.New(cni.Config{ConfDir: rn.confDir, BinDirs: []string{"/opt/cni/bin", "/usr/lib/cni"}, CacheDir: rn.cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (rn *realNet) leases(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, e := range dirEntries(t, filepath.Join(rn.dataDir, rn.netName)) {
		if strings.Count(e, ".") == 3 {
			out = append(out, e)
		}
	}
	return out
}

func (rn *realNet) bridgePorts(t *testing.T) string {
	t.Helper()
	out, _ := exec.Command("ip", "-o", "link", "show", "master", rn.bridge).CombinedOutput()
	if strings.Contains(string(out), "does not exist") {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func newRealManager(t *testing.T, rn *realNet, f *fakes, root string) *Manager {
	t.Helper()
	m, err := New(Config{
		RootDir:    filepath.Join(root, "records"),
		StateDir:   filepath.Join(root, "state"),
		Namespaces: unsharePinner{},
		Monitor:    f,
		Cgroups:    f,
		Network:    rn.manager(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func assertNoMounts(t *testing.T, dir string) {
	t.Helper()
	if mounts, err := mountsUnder(dir); err != nil || len(mounts) != 0 {
		t.Fatalf("mounts left under %s: %v %v", dir, mounts, err)
	}
}

func TestIntegrationRunStopRemove(t *testing.T) {
	rn := newRealNet(t)
	f := newFakes()
	root := t.TempDir()
	t.Cleanup(func() { _ = unsharePinnerCleanup(root) })
	m := newRealManager(t, rn, f, root)
	ctx := context.Background()
	r := req("web")
	r.Hostname = "web-0"
	hp, _ := rand.Int(rand.Reader, big.NewInt(20000))
	r.PortMappings = []PortMapping{{HostPort: int32(30000 + hp.Int64()), ContainerPort: 80}}
	p, err := m.Run(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Remove(context.Background(), p.ID) })
	if len(p.IPs) != 1 {
		t.Fatalf("ips %v", p.IPs)
	}
	if out, err := exec.Command("busybox", "ping", "-c1", "-W2", p.IPs[0]).CombinedOutput(); err != nil {
		t.Fatalf("pod ip does not answer: %v: %s", err, out)
	}
	// lo is up and eth0 is in the pinned netns.
	out, err := exec.Command("nsenter", "--net="+p.NetNSPath, "ip", "-o", "addr").CombinedOutput()
	if err != nil || !strings.Contains(string(out), p.IPs[0]+"/24") || !strings.Contains(string(out), "lo    inet 127.0.0.1") {
		t.Fatalf("pod netns addresses: %v: %s", err, out)
	}
	if out, err := exec.Command("nsenter", "--uts="+p.UTSNSPath, "hostname").CombinedOutput(); err != nil || string(out) != "web-0\n" {
		t.Fatalf("hostname in the pod's uts namespace: %q, %v", out, err)
	}
	if hosts, _ := os.ReadFile(p.HostsPath); !strings.Contains(string(hosts), p.IPs[0]+"\tweb-0\n") {
		t.Fatalf("hosts: %s", hosts)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(p.ShmPath, &st); err != nil || st.Type != unix.TMPFS_MAGIC || st.Blocks*uint64(st.Bsize) != DefaultShmSize {
		t.Fatalf("shm at %s: type %x size %d, %v", p.ShmPath, st.Type, st.Blocks*uint64(st.Bsize), err)
	}
	if len(rn.leases(t)) != 1 || rn.bridgePorts(t) == "" {
		t.Fatal("no lease or no veth on the bridge")
	}

	// berthd restarts; Stop and Remove work from the records and cni's
	// cache.
	m2 := newRealManager(t, rn, f, root)
	if err := m2.Stop(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if l := rn.leases(t); len(l) != 0 {
		t.Fatalf("leases after stop: %v", l)
	}
	if ports := rn.bridgePorts(t); ports != "" {
		t.Fatalf("bridge ports after stop: %s", ports)
	}
	if err := unix.Statfs(p.ShmPath, &st); err == nil && st.Type == unix.TMPFS_MAGIC {
		t.Fatal("shm still mounted after stop")
	}
	if err := m2.Stop(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	if err := m2.Remove(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
	assertNoMounts(t, root)
	if e := dirEntries(t, filepath.Join(root, "state")); len(e) != 0 {
		t.Fatalf("state dir: %v", e)
	}
	if live := f.live(); len(live) != 0 {
		t.Fatalf("left: %v", live)
	}
	if err := m2.Remove(ctx, p.ID); err != nil {
		t.Fatal(err)
	}
}

func TestIntegrationRollback(t *testing.T) {
	rn := newRealNet(t)
	f := newFakes()
	f.fail = "monitor"
	root := t.TempDir()
	t.Cleanup(func() { _ = unsharePinnerCleanup(root) })
	m := newRealManager(t, rn, f, root)
	if _, err := m.Run(context.Background(), req("a")); !errors.Is(err, errInjected) {
		t.Fatalf("run: %v", err)
	}
	assertNoMounts(t, root)
	if l := rn.leases(t); len(l) != 0 {
		t.Fatalf("leases: %v", l)
	}
	if ports := rn.bridgePorts(t); ports != "" {
		t.Fatalf("bridge ports: %s", ports)
	}
	if e := dirEntries(t, filepath.Join(root, "state")); len(e) != 0 {
		t.Fatalf("state dir: %v", e)
	}
	if live := f.live(); len(live) != 0 {
		t.Fatalf("left: %v", live)
	}
}

// unsharePinnerCleanup unmounts whatever a failed test left under root, so
// t.TempDir's removal never goes through a live mount.
func unsharePinnerCleanup(root string) error {
	mounts, err := mountsUnder(root)
	if err != nil {
		return err
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		_ = unix.Unmount(mounts[i], unix.MNT_DETACH)
	}
	return nil
}

// BenchmarkRunStopRemove measures a pod sandbox's Run, Stop and Remove with
// the real CNI bridge chain and namespace pins by unshare(1); the monitor
// and cgroups are fakes (runtime/ and cgroupmgr/ measure theirs).
func BenchmarkRunStopRemove(b *testing.B) {
	rn := newRealNetB(b)
	f := newFakes()
	root := b.TempDir()
	b.Cleanup(func() { _ = unsharePinnerCleanup(root) })
	m, err := New(Config{
		RootDir:    filepath.Join(root, "records"),
		StateDir:   filepath.Join(root, "state"),
		Namespaces: unsharePinner{},
		Monitor:    f,
		Cgroups:    f,
		Network:    rn.manager(b),
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var run, stop, remove time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s := time.Now()
		p, err := m.Run(ctx, req(fmt.Sprintf("bench-%d", i)))
		if err != nil {
			b.Fatal(err)
		}
		run += time.Since(s)
		s = time.Now()
		if err := m.Stop(ctx, p.ID); err != nil {
			b.Fatal(err)
		}
		stop += time.Since(s)
		s = time.Now()
		if err := m.Remove(ctx, p.ID); err != nil {
			b.Fatal(err)
		}
		remove += time.Since(s)
	}
	b.ReportMetric(float64(run.Microseconds())/float64(b.N)/1000, "run-ms/op")
	b.ReportMetric(float64(stop.Microseconds())/float64(b.N)/1000, "stop-ms/op")
	b.ReportMetric(float64(remove.Microseconds())/float64(b.N)/1000, "remove-ms/op")
}
