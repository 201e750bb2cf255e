package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/harness"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// httpGet fetches url, retrying while the server starts.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	var lastErr error
	for i := 0; i < 100; i++ {
		r, err := client.Get(url)
		if err == nil {
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			return string(b)
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("GET %s: %v", url, lastErr)
	return ""
}

func TestPodNetworking(t *testing.T) {
	e := startPodEnv(t)
	ctx := context.Background()
	podCfg := podConfig(t, "net")
	hostPort := freeTCPPort(t)
	podCfg.PortMappings = []*runtimeapi.PortMapping{{Protocol: runtimeapi.Protocol_TCP, ContainerPort: 8080, HostPort: hostPort}}
	podID := e.runPod(t, podCfg)

	web := e.startContainer(t, podID, podCfg, e.containerConfig("web", "sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"))
	client := e.startContainer(t, podID, podCfg, e.containerConfig("client", "sleep", "1000"))

	// Two containers of a pod share its network namespace (localhost) but
	// not their pid namespaces.
	var out string
	for i := 0; i < 50; i++ {
		stdout, _, err := e.d.Runtime.ExecSync(ctx, client, []string{"wget", "-q", "-O", "-", "http://127.0.0.1:8080/index.html"}, 10*time.Second)
		if err == nil {
			out = string(stdout)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if strings.TrimSpace(out) != "net" {
		t.Fatalf("client → web over localhost: %q", out)
	}
	if ps := e.execOut(t, client, "ps", "-o", "comm"); strings.Contains(ps, "httpd") {
		t.Errorf("client sees web's processes:\n%s", ps)
	}
	pidNS := func(id string) string {
		return strings.TrimSpace(e.execOut(t, id, "readlink", "/proc/self/ns/pid"))
	}
	if pidNS(web) == pidNS(client) {
		t.Errorf("containers share a pid namespace %s", pidNS(web))
	}
	netNS := func(id string) string {
		return strings.TrimSpace(e.execOut(t, id, "readlink", "/proc/self/ns/net"))
	}
	if netNS(web) != netNS(client) {
		t.Errorf("containers of a pod in different netns: %s %s", netNS(web), netNS(client))
	}

	st, err := e.d.Runtime.PodSandboxStatus(ctx, podID, false)
	if err != nil {
		t.Fatal(err)
	}
	// The pod IP answers from the host over the bridge.
	if got := httpGet(t, "http://"+net.JoinHostPort(st.Status.Network.Ip, "8080")+"/index.html"); strings.TrimSpace(got) != "net" {
		t.Errorf("pod IP from the host: %q", got)
	}
	// The hostPort answers on the host's bridge address.
	gw := bridgeIP(t, e.bridge)
	if got := httpGet(t, fmt.Sprintf("http://%s/index.html", net.JoinHostPort(gw, strconv.Itoa(int(hostPort))))); strings.TrimSpace(got) != "net" {
		t.Errorf("hostPort %d from the host: %q", hostPort, got)
	}
}

func freeTCPPort(t *testing.T) int32 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

// bridgeIP is the host's address on the e2e bridge.
func bridgeIP(t *testing.T, bridge string) string {
	t.Helper()
	ifc, err := net.InterfaceByName(bridge)
	if err != nil {
		t.Fatal(err)
	}
	addrs, _ := ifc.Addrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
			return ipn.IP.String()
		}
	}
	t.Fatalf("no IPv4 on %s", bridge)
	return ""
}

func TestResourcesAndOOM(t *testing.T) {
	e := startPodEnv(t)
	ctx := context.Background()
	podCfg := podConfig(t, "res")
	podID := e.runPod(t, podCfg)

	cfg := e.containerConfig("limited", "sleep", "1000")
	cfg.Linux.Resources = &runtimeapi.LinuxContainerResources{CpuShares: 512, CpuQuota: 50000, CpuPeriod: 100000, MemoryLimitInBytes: 64 << 20}
	id := e.startContainer(t, podID, podCfg, cfg)
	pid := containerPid(t, e, id)
	for ctrl, files := range map[string]map[string]string{
		"cpu":    {"cpu.shares": "512", "cpu.cfs_quota_us": "50000", "cpu.cfs_period_us": "100000"},
		"memory": {"memory.limit_in_bytes": strconv.Itoa(64 << 20)},
	} {
		dir := cgroupDir(t, pid, ctrl)
		for f, want := range files {
			b, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil || strings.TrimSpace(string(b)) != want {
				t.Errorf("%s/%s = %q (%v), want %s", dir, f, b, err, want)
			}
		}
	}
	// UpdateContainerResources reaches the kernel too.
	if err := e.d.Runtime.UpdateContainerResources(ctx, id, &runtimeapi.ContainerResources{Linux: &runtimeapi.LinuxContainerResources{CpuShares: 256, MemoryLimitInBytes: 96 << 20}}); err != nil {
		t.Fatalf("UpdateContainerResources: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(cgroupDir(t, pid, "memory"), "memory.limit_in_bytes")); strings.TrimSpace(string(b)) != strconv.Itoa(96<<20) {
		t.Errorf("memory limit after update: %q", b)
	}
	// ContainerStatus reports what is in force, as kubelet's resize expects.
	if st, err := e.d.Runtime.ContainerStatus(ctx, id, false); err != nil || st.Status.GetResources().GetLinux().GetMemoryLimitInBytes() != 96<<20 {
		t.Errorf("status resources after update: %+v %v", st.GetStatus().GetResources(), err)
	}
	stats, err := e.d.Runtime.ContainerStats(ctx, id)
	if err != nil || stats.GetMemory().GetWorkingSetBytes().GetValue() == 0 {
		t.Errorf("ContainerStats: %+v %v", stats, err)
	}

	// A container over its memory limit is OOM-killed and reported so.
	hog := e.containerConfig("hog", "sh", "-c", "x=0123456789; while :; do x=$x$x; done")
	hog.Linux.Resources = &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 32 << 20}
	hid := e.startContainer(t, podID, podCfg, hog)
	st := e.waitExited(t, hid)
	if st.Reason != "OOMKilled" || st.ExitCode != 137 {
		t.Errorf("memory hog: reason %q exit %d", st.Reason, st.ExitCode)
	}
}

// cgroupDir is the v1 cgroup dir of pid for a controller.
func cgroupDir(t *testing.T, pid int, ctrl string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) == 3 && f[1] == ctrl {
			return filepath.Join("/sys/fs/cgroup", ctrl, f[2])
		}
	}
	t.Fatalf("pid %d has no %s cgroup:\n%s", pid, ctrl, b)
	return ""
}

func TestSecurityContext(t *testing.T) {
	e := startPodEnv(t)
	podCfg := podConfig(t, "sec")
	podID := e.runPod(t, podCfg)

	cfg := e.containerConfig("user", "sleep", "1000")
	cfg.Linux.SecurityContext.RunAsUser = &runtimeapi.Int64Value{Value: 1000}
	cfg.Linux.SecurityContext.RunAsGroup = &runtimeapi.Int64Value{Value: 3000}
	cfg.Linux.SecurityContext.SupplementalGroups = []int64{4000}
	cfg.Linux.SecurityContext.NoNewPrivs = true
	cfg.Linux.SecurityContext.Capabilities = &runtimeapi.Capability{DropCapabilities: []string{"ALL"}, AddCapabilities: []string{"NET_BIND_SERVICE"}}
	id := e.startContainer(t, podID, podCfg, cfg)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", containerPid(t, e, id)))
	if err != nil {
		t.Fatal(err)
	}
	s := string(status)
	for key, want := range map[string]string{
		"Uid":        "1000\t1000\t1000\t1000",
		"Gid":        "3000\t3000\t3000\t3000",
		"Groups":     "4000",
		"CapBnd":     "0000000000000400", // CAP_NET_BIND_SERVICE only
		"NoNewPrivs": "1",
	} {
		if got := statusField(s, key); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}

	root := e.containerConfig("root", "sleep", "1000")
	root.Linux.SecurityContext.ReadonlyRootfs = true
	root.Linux.SecurityContext.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
	rid := e.startContainer(t, podID, podCfg, root)
	rs, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", containerPid(t, e, rid)))
	if got := statusField(string(rs), "CapEff"); got != "00000000a80425fb" {
		t.Errorf("default CapEff = %s, want Docker's default set a80425fb", got)
	}
	if got := statusField(string(rs), "Seccomp"); got != "2" {
		t.Errorf("RuntimeDefault seccomp: Seccomp = %s", got)
	}
	if _, _, err := e.d.Runtime.ExecSync(context.Background(), rid, []string{"touch", "/newfile"}, 10*time.Second); err == nil {
		t.Errorf("wrote to a read-only rootfs")
	}
	if _, _, err := e.d.Runtime.ExecSync(context.Background(), rid, []string{"cat", "/proc/kcore"}, 10*time.Second); err == nil {
		t.Errorf("read a masked path")
	}

	priv := e.containerConfig("priv", "sleep", "1000")
	priv.Linux.SecurityContext.Privileged = true
	pid := e.startContainer(t, podID, podCfg, priv)
	if st, _ := e.d.Runtime.ContainerStatus(context.Background(), pid, false); st.GetStatus().GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("privileged container: %+v", st.GetStatus())
	}
	ps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", containerPid(t, e, pid)))
	if got := statusField(string(ps), "CapEff"); got != statusField(readSelfStatus(t), "CapBnd") {
		t.Errorf("privileged CapEff = %s, want the host's bounding set", got)
	}
	if out := e.execOut(t, pid, "ls", "/dev/kmsg"); strings.TrimSpace(out) != "/dev/kmsg" {
		t.Errorf("privileged container lacks the host's /dev/kmsg: %q", out)
	}
}

func readSelfStatus(t *testing.T) string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestReopenContainerLog(t *testing.T) {
	e := startPodEnv(t)
	ctx := context.Background()
	podCfg := podConfig(t, "logs")
	podID := e.runPod(t, podCfg)
	id := e.startContainer(t, podID, podCfg, e.containerConfig("ticker", "sh", "-c", "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.05; done"))
	st, err := e.d.Runtime.ContainerStatus(ctx, id, false)
	if err != nil {
		t.Fatal(err)
	}
	logPath := st.Status.LogPath
	waitFor(t, func() bool { b, _ := os.ReadFile(logPath); return strings.Contains(string(b), "tick 2") })
	rotated := logPath + ".1"
	if err := os.Rename(logPath, rotated); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Runtime.ReopenContainerLog(ctx, id); err != nil {
		t.Fatalf("ReopenContainerLog: %v", err)
	}
	waitFor(t, func() bool { b, _ := os.ReadFile(logPath); return strings.Count(string(b), "tick") >= 2 })
	old, _ := os.ReadFile(rotated)
	cur, _ := os.ReadFile(logPath)
	for _, l := range strings.Split(strings.TrimSpace(string(cur)), "\n") {
		if criLogLine.FindStringSubmatch(l) == nil {
			t.Errorf("new log line not in CRI format: %q", l)
		}
	}
	if !strings.Contains(string(old), "tick 0") || strings.Contains(string(cur), "tick 0\n") {
		t.Errorf("rotation mixed the files:\nold %q\nnew %q", old, cur)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// An image volume mounts an image's filesystem read-only in the container,
// and goes with it.
func TestImageVolume(t *testing.T) {
	e := startPodEnv(t)
	ctx := context.Background()
	podCfg := podConfig(t, "imgvol")
	podID := e.runPod(t, podCfg)
	cfg := e.containerConfig("c", "sleep", "1000")
	cfg.Mounts = []*runtimeapi.Mount{{ContainerPath: "/imgvol", Image: &runtimeapi.ImageSpec{Image: e.busybox}}}
	id := e.startContainer(t, podID, podCfg, cfg)
	if out := e.execOut(t, id, "ls", "/imgvol/bin/busybox"); strings.TrimSpace(out) != "/imgvol/bin/busybox" {
		t.Fatalf("image volume content: %q", out)
	}
	if _, _, err := e.d.Runtime.ExecSync(ctx, id, []string{"touch", "/imgvol/new"}, 10*time.Second); err == nil {
		t.Fatal("wrote into a read-only image volume")
	}
	if err := e.d.Runtime.StopContainer(ctx, id, 0); err != nil {
		t.Fatal(err)
	}
	if err := e.d.Runtime.RemoveContainer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if left := harness.MountsUnder(e.d.Root); len(left) > 0 {
		t.Fatalf("image volume mounts left after remove: %v", left)
	}
}
