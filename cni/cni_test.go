package cni

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	types100 "github.com/containernetworking/cni/pkg/types/100"

	"github.com/berth-dev/berth/errdefs"
)

func randHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func randInt(t *testing.T, max int64) int64 {
	t.Helper()
	n, err := rand.Int(rand.Reader, big.NewInt(max))
	if err != nil {
		t.Fatal(err)
	}
	return n.Int64()
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
	return string(out)
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		if _, err := os.Stat(filepath.Join("/usr/lib/cni", p)); err != nil {
			if _, err := os.Stat(filepath.Join("/opt/cni/bin", p)); err != nil {
				t.Skipf("CNI plugin %s not installed", p)
			}
		}
	}
}

// testEnv is one isolated pod network: its own bridge, subnet, lease dir,
// conf dir and cache dir, all removed at the end of the test.
type testEnv struct {
	m        *Manager
	confDir  string
	dataDir  string
	cacheDir string
	bridge   string
	netName  string
	subnet   *net.IPNet
	gateway  net.IP
}

func newTestEnv(t *testing.T, writeConf bool) *testEnv {
	t.Helper()
	needRoot(t)
	e := &testEnv{
		confDir:  t.TempDir(),
		dataDir:  t.TempDir(),
		cacheDir: t.TempDir(),
		bridge:   fmt.Sprintf("berth-test-%d", randInt(t, 10000)),
		netName:  "berth-test-" + randHex(t, 4),
	}
	octet := 1 + randInt(t, 250)
	_, e.subnet, _ = net.ParseCIDR(fmt.Sprintf("10.89.%d.0/24", octet))
	e.gateway = net.ParseIP(fmt.Sprintf("10.89.%d.1", octet)).To4()
	t.Cleanup(func() {
		// The bridge plugin never deletes its bridge; DEL has removed the
		// rest (veths, iptables chains, leases) by now.
		if err := exec.Command("ip", "link", "show", e.bridge).Run(); err == nil {
			if out, err := exec.Command("ip", "link", "del", e.bridge).CombinedOutput(); err != nil {
				t.Errorf("delete test bridge: %v: %s", err, out)
			}
		}
	})
	t.Cleanup(func() {
		bin, rule := masqueradeRule(e.subnet)
		if exec.Command(bin, append([]string{"-w", "-t", "nat", "-C"}, rule...)...).Run() == nil {
			if err := RemoveMasquerade(context.Background(), e.subnet); err != nil {
				t.Error(err)
			}
		}
	})
	if writeConf {
		e.writeConf(t, "10-test.conflist", nil)
	}
	m, err := New(Config{ConfDir: e.confDir, BinDirs: []string{"/opt/cni/bin", "/usr/lib/cni"}, CacheDir: e.cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	return e
}

// writeConf writes the default conflist for this env; extra plugins, if any,
// are appended to the chain.
func (e *testEnv) writeConf(t *testing.T, name string, extra []map[string]any) {
	t.Helper()
	data, err := DefaultConflist(e.netName, e.bridge, e.subnet.String(), e.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if extra != nil {
		var c map[string]any
		if err := json.Unmarshal(data, &c); err != nil {
			t.Fatal(err)
		}
		for _, p := range extra {
			c["plugins"] = append(c["plugins"].([]any), p)
		}
		if data, err = json.Marshal(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(e.confDir, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// writePluginMasqConf writes the default conflist changed to masquerade
// the way most user configs do: the bridge plugin's own per-pod ipMasq
// rules, which removeTaggedNATRules must clean when the plugin can't.
func (e *testEnv) writePluginMasqConf(t *testing.T, onlyBridge bool) {
	t.Helper()
	data, err := DefaultConflist(e.netName, e.bridge, e.subnet.String(), e.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	delete(c, masqueradeKey)
	ps := c["plugins"].([]any)
	ps[0].(map[string]any)["ipMasq"] = true
	if onlyBridge {
		c["plugins"] = ps[:1]
	}
	if data, err = json.Marshal(c); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.confDir, "10-test.conflist"), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func masqueradeInstalled(subnet *net.IPNet) bool {
	bin, rule := masqueradeRule(subnet)
	return exec.Command(bin, append([]string{"-w", "-t", "nat", "-C"}, rule...)...).Run() == nil
}

// newNetNS makes a named network namespace and deletes it at the end.
func newNetNS(t *testing.T) (name, path string) {
	t.Helper()
	name = "berth-test-" + randHex(t, 6)
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if _, err := os.Stat("/run/netns/" + name); err == nil {
			if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
				t.Errorf("delete netns: %v: %s", err, out)
			}
		}
	})
	return name, "/run/netns/" + name
}

func leases(t *testing.T, e *testEnv) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.dataDir, e.netName))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range ents {
		if net.ParseIP(d.Name()) != nil {
			out = append(out, d.Name())
		}
	}
	return out
}

func natRulesFor(t *testing.T, id string) int {
	t.Helper()
	return strings.Count(run(t, "iptables-save", "-t", "nat"), id)
}

func hostVeth(t *testing.T, res *Result) string {
	t.Helper()
	var r types100.Result
	if err := json.Unmarshal(res.Raw, &r); err != nil {
		t.Fatal(err)
	}
	for _, i := range r.Interfaces {
		if i.Sandbox == "" && strings.HasPrefix(i.Name, "veth") {
			return i.Name
		}
	}
	t.Fatalf("no host veth in result %s", res.Raw)
	return ""
}

func linkExists(name string) bool {
	return exec.Command("ip", "link", "show", name).Run() == nil
}

// assertGone checks that nothing of a sandbox's attachment is left on the host.
func assertGone(t *testing.T, e *testEnv, id, veth string) {
	t.Helper()
	if veth != "" && linkExists(veth) {
		t.Errorf("host veth %s still exists", veth)
	}
	if l := leases(t, e); len(l) != 0 {
		t.Errorf("leases left: %v", l)
	}
	if n := natRulesFor(t, id); n != 0 {
		t.Errorf("%d nat rules still name the sandbox", n)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.cacheDir, "results")); len(ents) != 0 {
		t.Errorf("cache entries left: %d", len(ents))
	}
}

func TestStatusFollowsConfDir(t *testing.T) {
	needRoot(t)
	e := newTestEnv(t, false)
	if ok, reason := e.m.Status(); ok || reason == "" {
		t.Fatalf("empty conf dir: ready=%v reason=%q", ok, reason)
	}
	e.writeConf(t, "10-test.conflist", nil)
	if ok, reason := e.m.Status(); !ok {
		t.Fatalf("after writing a config: not ready: %s", reason)
	}
	// A config naming a plugin that is not installed is not usable ...
	bad := `{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"berth-test-no-such-plugin"}]}`
	if err := os.WriteFile(filepath.Join(e.confDir, "05-bad.conflist"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if ok, reason := e.m.Status(); !ok {
		t.Fatalf("a good config after a bad one should be used: %s", reason)
	}
	if err := os.Remove(filepath.Join(e.confDir, "10-test.conflist")); err != nil {
		t.Fatal(err)
	}
	// ... so with only that one left the network is not ready.
	ok, reason := e.m.Status()
	if ok || !strings.Contains(reason, "berth-test-no-such-plugin") {
		t.Fatalf("only a bad config: ready=%v reason=%q", ok, reason)
	}
	if err := os.Remove(filepath.Join(e.confDir, "05-bad.conflist")); err != nil {
		t.Fatal(err)
	}
	if ok, _ := e.m.Status(); ok {
		t.Fatal("ready with an empty conf dir")
	}
}

func TestDefaultConflistRejectsBadSubnet(t *testing.T) {
	for _, s := range []string{"", "10.88.0.1/16", "nonsense"} {
		if _, err := DefaultConflist("n", "", s, ""); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("subnet %q: got %v", s, err)
		}
	}
}

func TestInstallDefaultConflist(t *testing.T) {
	dir := t.TempDir()
	wrote, err := InstallDefaultConflist(dir)
	if err != nil || !wrote {
		t.Fatalf("empty dir: wrote=%v err=%v", wrote, err)
	}
	data, err := os.ReadFile(filepath.Join(dir, DefaultConfName))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Name    string
		Plugins []struct{ Type string }
	}
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, p := range c.Plugins {
		types = append(types, p.Type)
	}
	if got := strings.Join(types, ","); got != "bridge,portmap,loopback" || c.Name != DefaultNetworkName {
		t.Fatalf("default conflist: name %q plugins %s", c.Name, got)
	}
	if err := os.WriteFile(filepath.Join(dir, DefaultConfName), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if wrote, err := InstallDefaultConflist(dir); err != nil || wrote {
		t.Fatalf("existing config: wrote=%v err=%v", wrote, err)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, DefaultConfName)); string(data) != "mine" {
		t.Fatal("existing config was overwritten")
	}
}

// serveInNetNS runs busybox httpd inside the netns and returns once it
// accepts connections on the pod IP.
func serveInNetNS(t *testing.T, nsName string, podIP net.IP, body string) {
	t.Helper()
	if _, err := exec.LookPath("busybox"); err != nil {
		t.Skip("busybox not installed")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", nsName, "busybox", "httpd", "-f", "-p", "8080", "-h", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	addr := net.JoinHostPort(podIP.String(), "8080")
	var lastErr error
	for range 100 {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		lastErr = err
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("httpd in netns never answered on %s: %v", addr, lastErr)
}

func httpGet(addr string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/index.html")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestSetupTeardown(t *testing.T) {
	e := newTestEnv(t, true)
	nsName, nsPath := newNetNS(t)
	id := randHex(t, 32)
	hostPort := int32(30000 + randInt(t, 20000))
	pod := PodMeta{Name: "p", Namespace: "ns", UID: "uid-1"}
	ports := []PortMapping{{HostPort: hostPort, ContainerPort: 8080, Protocol: "TCP"}}
	ctx := context.Background()

	res, err := e.m.Setup(ctx, id, nsPath, pod, ports)
	if err != nil {
		t.Fatal(err)
	}
	veth := hostVeth(t, res)
	t.Cleanup(func() { _ = e.m.Teardown(context.Background(), id, nsPath, pod, ports) })

	if len(res.IPs) != 1 || !e.subnet.Contains(res.IPs[0]) || res.Interface != "eth0" {
		t.Fatalf("result: ips %v interface %q, want one ip in %v on eth0", res.IPs, res.Interface, e.subnet)
	}
	if l := leases(t, e); len(l) != 1 || l[0] != res.IPs[0].String() {
		t.Fatalf("leases %v, want [%v]", l, res.IPs[0])
	}
	if !linkExists(veth) {
		t.Fatalf("host veth %s missing", veth)
	}
	if out := run(t, "ip", "netns", "exec", nsName, "ip", "-o", "link", "show", "lo"); !strings.Contains(out, "UP") {
		t.Fatalf("lo not up in the pod: %s", out)
	}
	if n := natRulesFor(t, id); n == 0 {
		t.Fatal("no nat rules for the sandbox's hostport")
	}
	if !masqueradeInstalled(e.subnet) {
		t.Fatal("no masquerade rule for the pod subnet")
	}
	cached, err := e.m.CachedResult(id)
	if err != nil || len(cached.IPs) != 1 || !cached.IPs[0].Equal(res.IPs[0]) {
		t.Fatalf("cached result %+v, %v", cached, err)
	}

	// The pod answers from the host over the bridge, directly and through
	// its hostPort on the host's bridge address.
	run(t, "busybox", "ping", "-c1", "-W2", res.IPs[0].String())
	serveInNetNS(t, nsName, res.IPs[0], "hello from the pod")
	if got, err := httpGet(net.JoinHostPort(res.IPs[0].String(), "8080")); err != nil || got != "hello from the pod" {
		t.Fatalf("pod ip: %q, %v", got, err)
	}
	if got, err := httpGet(net.JoinHostPort(e.gateway.String(), fmt.Sprint(hostPort))); err != nil || got != "hello from the pod" {
		t.Fatalf("hostPort: %q, %v", got, err)
	}
	// portmap marks connections from 127.0.0.1 for masquerade and turns on
	// route_localnet, so the hostPort answers on localhost too.
	if got, err := httpGet(net.JoinHostPort("127.0.0.1", fmt.Sprint(hostPort))); err != nil || got != "hello from the pod" {
		t.Fatalf("hostPort on 127.0.0.1: %q, %v", got, err)
	}

	// A fresh Manager (a berthd restart) tears down from the cache.
	m2, err := New(Config{ConfDir: e.confDir, BinDirs: []string{"/opt/cni/bin", "/usr/lib/cni"}, CacheDir: e.cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	// Even with the config removed from the conf dir.
	if err := os.Remove(filepath.Join(e.confDir, "10-test.conflist")); err != nil {
		t.Fatal(err)
	}
	if err := m2.Teardown(ctx, id, nsPath, pod, ports); err != nil {
		t.Fatal(err)
	}
	assertGone(t, e, id, veth)
	if out := run(t, "ip", "netns", "exec", nsName, "ip", "-o", "link"); strings.Contains(out, "eth0") {
		t.Fatalf("eth0 still in the pod: %s", out)
	}
	if err := m2.Teardown(ctx, id, nsPath, pod, ports); err != nil {
		t.Fatalf("second teardown: %v", err)
	}
	if err := m2.Check(ctx, id, nsPath, pod, ports); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("check after teardown: %v", err)
	}
}

func TestTeardownAfterNetNSGone(t *testing.T) {
	e := newTestEnv(t, false)
	e.writePluginMasqConf(t, false)
	nsName, nsPath := newNetNS(t)
	id := randHex(t, 32)
	pod := PodMeta{Name: "p", Namespace: "ns", UID: "uid-2"}
	ports := []PortMapping{{HostPort: int32(30000 + randInt(t, 20000)), ContainerPort: 80}}
	ctx := context.Background()
	res, err := e.m.Setup(ctx, id, nsPath, pod, ports)
	if err != nil {
		t.Fatal(err)
	}
	veth := hostVeth(t, res)
	t.Cleanup(func() { _ = e.m.Teardown(context.Background(), id, "", pod, ports) })
	if masqueradeInstalled(e.subnet) {
		t.Fatal("subnet masquerade installed for a config without berthMasquerade")
	}
	if out := run(t, "iptables-save", "-t", "nat"); !strings.Contains(out, id+`\"" -j MASQUERADE`) {
		t.Fatalf("no per-pod masquerade rule from the bridge plugin:\n%s", out)
	}
	run(t, "ip", "netns", "del", nsName)
	if err := e.m.Teardown(ctx, id, nsPath, pod, ports); err != nil {
		t.Fatal(err)
	}
	assertGone(t, e, id, veth)
	if err := e.m.Teardown(ctx, id, nsPath, pod, ports); err != nil {
		t.Fatalf("second teardown: %v", err)
	}
}

func TestSetupFailureLeavesNothing(t *testing.T) {
	e := newTestEnv(t, false)
	// tuning fails on an unknown sysctl, after bridge, host-local and
	// portmap have done their work.
	e.writeConf(t, "10-test.conflist", []map[string]any{{
		"type":   "tuning",
		"sysctl": map[string]string{"net.ipv4.conf.eth0.berth_test_no_such_sysctl": "1"},
	}})
	if ok, reason := e.m.Status(); !ok {
		t.Skipf("tuning plugin not usable: %s", reason)
	}
	nsName, nsPath := newNetNS(t)
	id := randHex(t, 32)
	pod := PodMeta{Name: "p", Namespace: "ns", UID: "uid-3"}
	ports := []PortMapping{{HostPort: int32(30000 + randInt(t, 20000)), ContainerPort: 80}}
	t.Cleanup(func() { _ = e.m.Teardown(context.Background(), id, nsPath, pod, ports) })
	if _, err := e.m.Setup(context.Background(), id, nsPath, pod, ports); err == nil {
		t.Fatal("setup with a failing plugin succeeded")
	}
	assertGone(t, e, id, "")
	if out := run(t, "ip", "netns", "exec", nsName, "ip", "-o", "link"); strings.Contains(out, "eth0") {
		t.Fatalf("eth0 left in the pod: %s", out)
	}
	// No veth of ours left on the bridge.
	if out, err := exec.Command("ip", "-o", "link", "show", "master", e.bridge).CombinedOutput(); err == nil && strings.TrimSpace(string(out)) != "" {
		t.Fatalf("ports left on the bridge: %s", out)
	}
}

func TestSetupWithoutConfig(t *testing.T) {
	m, err := New(Config{ConfDir: t.TempDir(), CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Setup(context.Background(), randHex(t, 32), "/proc/self/ns/net", PodMeta{}, nil); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("setup without config: %v", err)
	}
	// Teardown of a sandbox never set up, with no config: nothing to do.
	if err := m.Teardown(context.Background(), randHex(t, 32), "", PodMeta{}, nil); err != nil {
		t.Fatal(err)
	}
}

// TestCheck uses a chain without portmap: portmap 1.1.x fails CHECK on
// IPv4-only pods (containernetworking/plugins#819).
func TestCheck(t *testing.T) {
	e := newTestEnv(t, false)
	e.writePluginMasqConf(t, true) // bridge only: berth brings lo up itself
	nsName, nsPath := newNetNS(t)
	id := randHex(t, 32)
	pod := PodMeta{Name: "p", Namespace: "ns", UID: "uid-4"}
	ctx := context.Background()
	res, err := e.m.Setup(ctx, id, nsPath, pod, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.m.Teardown(context.Background(), id, nsPath, pod, nil) })
	// The separate loopback network brought lo up.
	if out := run(t, "ip", "netns", "exec", nsName, "ip", "-o", "link", "show", "lo"); !strings.Contains(out, "UP") {
		t.Fatalf("lo not up in the pod: %s", out)
	}
	if err := e.m.Check(ctx, id, nsPath, pod, nil); err != nil {
		t.Fatalf("check of a healthy pod: %v", err)
	}
	run(t, "ip", "link", "del", hostVeth(t, res))
	if err := e.m.Check(ctx, id, nsPath, pod, nil); err == nil {
		t.Fatal("check passed with the veth deleted")
	}
	if err := e.m.Teardown(ctx, id, nsPath, pod, nil); err != nil {
		t.Fatal(err)
	}
	assertGone(t, e, id, "")
}

func TestSplitRule(t *testing.T) {
	line := `-A POSTROUTING -s 10.89.1.2/32 -m comment --comment "name: \"n\" id: \"abc\"" -j CNI-1`
	got, err := splitRule(line)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"-A", "POSTROUTING", "-s", "10.89.1.2/32", "-m", "comment", "--comment", `name: "n" id: "abc"`, "-j", "CNI-1"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q", got)
	}
	if _, err := splitRule(`-A X "open`); err == nil {
		t.Fatal("unbalanced quote accepted")
	}
}

// BenchmarkSetupTeardown measures one pod's CNI ADD and DEL with the
// default conflist, without and with a hostPort.
func BenchmarkSetupTeardown(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	confDir, dataDir, cacheDir := b.TempDir(), b.TempDir(), b.TempDir()
	bridge := "berth-test-bnch"
	_, subnet, _ := net.ParseCIDR("10.89.254.0/24")
	b.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", bridge).Run()
		if masqueradeInstalled(subnet) {
			_ = RemoveMasquerade(context.Background(), subnet)
		}
	})
	data, err := DefaultConflist("berth-test-bench", bridge, subnet.String(), dataDir)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(confDir, "10.conflist"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	m, err := New(Config{ConfDir: confDir, CacheDir: cacheDir})
	if err != nil {
		b.Fatal(err)
	}
	ns := "berth-test-bench"
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	b.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	ctx := context.Background()
	meta := PodMeta{Name: "b", Namespace: "b", UID: "b"}
	for _, tc := range []struct {
		name  string
		ports []PortMapping
	}{
		{"hostPorts=0", nil},
		{"hostPorts=1", []PortMapping{{HostPort: 30999, ContainerPort: 80}}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var add, del time.Duration
			for i := 0; i < b.N; i++ {
				id := fmt.Sprintf("%064x", i+1)
				start := time.Now()
				if _, err := m.Setup(ctx, id, "/run/netns/"+ns, meta, tc.ports); err != nil {
					b.Fatal(err)
				}
				add += time.Since(start)
				start = time.Now()
				if err := m.Teardown(ctx, id, "/run/netns/"+ns, meta, tc.ports); err != nil {
					b.Fatal(err)
				}
				del += time.Since(start)
			}
			b.ReportMetric(float64(add.Microseconds())/float64(b.N)/1000, "add-ms/op")
			b.ReportMetric(float64(del.Microseconds())/float64(b.N)/1000, "del-ms/op")
		})
	}
}

// TestParallelSetup starts pods side by side, as berthd does, and checks
// they get distinct addresses and all go away.
func TestParallelSetup(t *testing.T) {
	e := newTestEnv(t, true)
	const n = 4
	type pod struct{ id, ns string }
	pods := make([]pod, n)
	for i := range pods {
		_, pods[i].ns = newNetNS(t)
		pods[i].id = randHex(t, 32)
	}
	meta := PodMeta{Name: "p", Namespace: "ns", UID: "u"}
	ctx := context.Background()
	ips := make([]string, n)
	errs := make(chan error, n)
	for i, p := range pods {
		t.Cleanup(func() { _ = e.m.Teardown(context.Background(), p.id, p.ns, meta, nil) })
		go func() {
			res, err := e.m.Setup(ctx, p.id, p.ns, meta, nil)
			if err == nil {
				ips[i] = res.IPs[0].String()
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for _, ip := range ips {
		if seen[ip] {
			t.Fatalf("address %s given twice: %v", ip, ips)
		}
		seen[ip] = true
	}
	for _, p := range pods {
		go func() { errs <- e.m.Teardown(ctx, p.id, p.ns, meta, nil) }()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if l := leases(t, e); len(l) != 0 {
		t.Fatalf("leases left: %v", l)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.cacheDir, "results")); len(ents) != 0 {
		t.Fatalf("cache entries left: %d", len(ents))
	}
}

// TestMasqueradeEgress checks that a pod reaches a network outside the node
// that has no route back to the pod subnet: only the subnet's masquerade
// rule makes the replies come back.
func TestMasqueradeEgress(t *testing.T) {
	e := newTestEnv(t, true)
	podNS, podPath := newNetNS(t)
	outNS, _ := newNetNS(t)
	// The "outside": a netns behind a veth, 192.0.2.<n>/30, with no route
	// to 10.89.0.0/16.
	n := 4 * randInt(t, 60)
	hostAddr, outAddr := fmt.Sprintf("192.0.2.%d", n+1), fmt.Sprintf("192.0.2.%d", n+2)
	hostIf, outIf := fmt.Sprintf("berth-test-h%d", n), fmt.Sprintf("berth-test-o%d", n)
	run(t, "ip", "link", "add", hostIf, "type", "veth", "peer", "name", outIf)
	t.Cleanup(func() {
		if linkExists(hostIf) {
			_ = exec.Command("ip", "link", "del", hostIf).Run()
		}
	})
	run(t, "ip", "link", "set", outIf, "netns", outNS)
	run(t, "ip", "addr", "add", hostAddr+"/30", "dev", hostIf)
	run(t, "ip", "link", "set", hostIf, "up")
	run(t, "ip", "netns", "exec", outNS, "ip", "addr", "add", outAddr+"/30", "dev", outIf)
	run(t, "ip", "netns", "exec", outNS, "ip", "link", "set", outIf, "up")

	id := randHex(t, 32)
	meta := PodMeta{Name: "p", Namespace: "ns", UID: "u"}
	if _, err := e.m.Setup(context.Background(), id, podPath, meta, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.m.Teardown(context.Background(), id, podPath, meta, nil) })
	if out, err := exec.Command("ip", "netns", "exec", podNS, "busybox", "ping", "-c1", "-W2", outAddr).CombinedOutput(); err != nil {
		t.Fatalf("pod cannot reach the outside network: %v: %s", err, out)
	}
	// And without the rule it could not: the test can fail.
	if err := RemoveMasquerade(context.Background(), e.subnet); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "netns", "exec", podNS, "busybox", "ping", "-c1", "-W1", outAddr).CombinedOutput(); err == nil {
		t.Fatalf("pod reached the outside without masquerade: %s", out)
	}
}

// A crash while libcni writes its cache (a plain os.WriteFile) leaves a
// file it cannot read and skips. Teardown still releases the lease of the
// pod network (DEL with the current config) and removes the unreadable
// files, for either attachment.
func TestTeardownWithTruncatedCache(t *testing.T) {
	for _, ifName := range []string{podIfName, "lo"} {
		t.Run(ifName, func(t *testing.T) {
			e := newTestEnv(t, true)
			nsName, nsPath := newNetNS(t)
			id := randHex(t, 32)
			pod := PodMeta{Name: "p", Namespace: "ns", UID: "uid-trunc"}
			ctx := context.Background()
			res, err := e.m.Setup(ctx, id, nsPath, pod, nil)
			if err != nil {
				t.Fatal(err)
			}
			veth := hostVeth(t, res)
			t.Cleanup(func() { _ = e.m.Teardown(context.Background(), id, "", pod, nil) })
			cut, _ := filepath.Glob(filepath.Join(e.cacheDir, "results", "*-"+id+"-"+ifName))
			if len(cut) != 1 {
				t.Fatalf("cache files for %s: %v", ifName, cut)
			}
			if err := os.Truncate(cut[0], 0); err != nil {
				t.Fatal(err)
			}
			run(t, "ip", "netns", "del", nsName) // the pod's netns went with the crash
			if err := e.m.Teardown(ctx, id, "", pod, nil); err != nil {
				t.Fatal(err)
			}
			assertGone(t, e, id, veth)
		})
	}
}
