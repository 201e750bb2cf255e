package e2e

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/failpoint"
	"github.com/berth-dev/berth/test/harness"
	"github.com/berth-dev/berth/test/testimages"
)

// crashAt restarts berthd with point armed, runs call (which fails, as
// berthd SIGKILLs itself at the point), and restarts berthd unarmed: what
// the restarted daemon shows is what a crash at exactly that step leaves.
func (e *podEnv) crashAt(t *testing.T, point string, call func(ctx context.Context) error) {
	t.Helper()
	e.d.Env = []string{failpoint.EnvVar + "=" + point}
	e.d.Restart(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	err := call(ctx)
	cancel()
	if err == nil {
		t.Fatalf("the call succeeded although failpoint %s was armed", point)
	}
	e.d.Env = nil
	e.d.Restart(t, true) // reaps the dead berthd; kills it if it still lives
	if !strings.Contains(e.d.Log(), failpoint.HitMessage+point+"\n") {
		t.Fatalf("berthd did not die at failpoint %s (the call failed with %v)", point, err)
	}
}

// crashCases maps every failpoint to the scenario that drives berthd
// through it.
var crashCases = map[string]func(t *testing.T, point string){
	failpoint.PodRunAfterPin:        crashRunPod,
	failpoint.PodRunAfterCNIAdd:     crashRunPod,
	failpoint.PodRunAfterCgroup:     crashRunPod,
	failpoint.PodRunAfterShm:        crashRunPod,
	failpoint.PodRunAfterMonitor:    crashRunPod,
	failpoint.PodRunBeforeRecord:    crashRunPod,
	failpoint.PodRunAfterRecord:     crashRunPod,
	failpoint.PodStopAfterContainer: crashStopPod,
	failpoint.PodStopAfterCNIDel:    crashStopPod,
	failpoint.PodStopAfterMonitor:   crashStopPod,
	failpoint.PodRemoveAfterCtrs:    crashRemovePod,
	failpoint.PodRemoveAfterUnpin:   crashRemovePod,
	failpoint.PodRemoveAfterCgroup:  crashRemovePod,
	failpoint.PodRemoveBeforeRecord: crashRemovePod,
	failpoint.CtrCreateAfterRootfs:  crashCreateContainer,
	failpoint.CtrCreateAfterRuntime: crashCreateContainer,
	failpoint.CtrCreateAfterRecord:  crashCreateContainer,
	failpoint.CtrStartBefore:        crashStartContainer,
	failpoint.CtrStartAfter:         crashStartContainer,
	failpoint.CtrStopAfterSignal:    crashStopContainer,
	failpoint.CtrStopAfterKill:      crashStopContainer,
	failpoint.CtrRemoveAfterDelete:  crashRemoveContainer,
	failpoint.CtrRemoveAfterRootfs:  crashRemoveContainer,
	failpoint.PullMidLayer:          crashPull,
	failpoint.PullBeforeMetadata:    crashPull,
}

// TestCrashAtEveryFailpoint kills berthd (SIGKILL) at every step of every
// create and remove path, restarts it, and checks that the object is fully
// there and working or fully gone, that stop and remove then clean up, and
// that nothing leaks.
func TestCrashAtEveryFailpoint(t *testing.T) {
	for _, p := range failpoint.Points() {
		if crashCases[p] == nil {
			t.Errorf("failpoint %s has no crash scenario", p)
		}
	}
	for _, p := range failpoint.Points() {
		if f := crashCases[p]; f != nil {
			t.Run(strings.ReplaceAll(p, "/", "_"), func(t *testing.T) { f(t, p) })
		}
	}
}

// podsWithUID lists the pods kubelet would know by uid.
func (e *podEnv) podsWithUID(t *testing.T, uid string) []*runtimeapi.PodSandbox {
	t.Helper()
	all, err := e.d.Runtime.ListPodSandbox(context.Background(), nil)
	if err != nil {
		t.Fatalf("ListPodSandbox: %v", err)
	}
	var out []*runtimeapi.PodSandbox
	for _, p := range all {
		if p.GetMetadata().GetUid() == uid {
			out = append(out, p)
		}
	}
	return out
}

func (e *podEnv) containersOf(t *testing.T, podID string) []*runtimeapi.Container {
	t.Helper()
	cs, err := e.d.Runtime.ListContainers(context.Background(), &runtimeapi.ContainerFilter{PodSandboxId: podID})
	if err != nil {
		t.Fatalf("ListContainers: %v", err)
	}
	return cs
}

// removePodChecked stops and removes a pod, and checks it is gone and
// nothing of anything is left.
func (e *podEnv) removePodChecked(t *testing.T, podID string) {
	t.Helper()
	ctx := context.Background()
	if err := e.d.Runtime.StopPodSandbox(ctx, podID); err != nil {
		t.Fatalf("StopPodSandbox: %v", err)
	}
	if err := e.d.Runtime.RemovePodSandbox(ctx, podID); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
	if _, err := e.d.Runtime.PodSandboxStatus(ctx, podID, false); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Fatalf("status of a removed pod: %v", err)
	}
	assertNoLeaks(t, e)
}

// checkPodWorks checks a pod is ready and usable: it has its IP, and a new
// container in it runs, answers exec and logs.
func (e *podEnv) checkPodWorks(t *testing.T, podID string, podCfg *runtimeapi.PodSandboxConfig) {
	t.Helper()
	st, err := e.d.Runtime.PodSandboxStatus(context.Background(), podID, false)
	if err != nil {
		t.Fatalf("PodSandboxStatus: %v", err)
	}
	ip := net.ParseIP(st.Status.GetNetwork().GetIp())
	_, subnet, _ := net.ParseCIDR(e.subnet)
	if st.Status.State != runtimeapi.PodSandboxState_SANDBOX_READY || ip == nil || !subnet.Contains(ip) {
		t.Fatalf("pod not ready with an IP: %+v", st.Status)
	}
	id := e.startContainer(t, podID, podCfg, e.containerConfig("probe", "sh", "-c", "echo probe-log; exec sleep 1000"))
	e.checkContainerWorks(t, id, "probe-log")
	if got := e.execOut(t, id, "ip", "-4", "addr", "show", "eth0"); !strings.Contains(got, ip.String()) {
		t.Fatalf("eth0 in the pod lacks %s:\n%s", ip, got)
	}
}

// checkContainerWorks checks a container runs, answers exec and has logged
// wantLog.
func (e *podEnv) checkContainerWorks(t *testing.T, id, wantLog string) {
	t.Helper()
	st, err := e.d.Runtime.ContainerStatus(context.Background(), id, false)
	if err != nil {
		t.Fatalf("ContainerStatus: %v", err)
	}
	if st.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("container %s is %v, want running", id[:12], st.Status.State)
	}
	if out := e.execOut(t, id, "echo", "exec-ok"); out != "exec-ok\n" {
		t.Fatalf("exec: %q", out)
	}
	waitLog(t, st.Status.LogPath, wantLog)
}

// waitLog waits until the CRI log at path has a line with want.
func waitLog(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		data, _ := os.ReadFile(path)
		if strings.Contains(string(data), " "+want+"\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("log %s lacks %q: %q", path, want, data)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// crashRunPod: RunPodSandbox dies at point. Before the record is written
// the pod must be fully gone, so kubelet's retry with the same metadata
// works; after, it must be there and work.
func crashRunPod(t *testing.T, point string) {
	e := startIsolatedPodEnv(t, harness.Options{})
	podCfg := podConfig(t, "crash")
	e.crashAt(t, point, func(ctx context.Context) error {
		_, err := e.d.Runtime.RunPodSandbox(ctx, podCfg, "")
		return err
	})
	pods := e.podsWithUID(t, podCfg.Metadata.Uid)
	wantThere := point == failpoint.PodRunAfterRecord
	var id string
	switch {
	case wantThere && len(pods) == 1:
		id = pods[0].Id
	case !wantThere && len(pods) == 0:
		assertNoLeaks(t, e)
		var err error
		if id, err = e.d.Runtime.RunPodSandbox(context.Background(), podCfg, ""); err != nil {
			t.Fatalf("RunPodSandbox retry with the same metadata: %v", err)
		}
	default:
		t.Fatalf("after a crash at %s: pods %+v", point, pods)
	}
	e.checkPodWorks(t, id, podCfg)
	e.removePodChecked(t, id)
}

// crashCreateContainer: CreateContainer dies at point. Before the record
// the container must be gone (name free again); after, created and
// startable.
func crashCreateContainer(t *testing.T, point string) {
	e := startIsolatedPodEnv(t, harness.Options{})
	podCfg := podConfig(t, "crash")
	podID := e.runPod(t, podCfg)
	cfg := e.containerConfig("c", "sh", "-c", "echo hello-crash; exec sleep 1000")
	e.crashAt(t, point, func(ctx context.Context) error {
		_, err := e.d.Runtime.CreateContainer(ctx, podID, cfg, podCfg)
		return err
	})
	ctrs := e.containersOf(t, podID)
	wantThere := point == failpoint.CtrCreateAfterRecord
	var id string
	switch {
	case wantThere && len(ctrs) == 1 && ctrs[0].State == runtimeapi.ContainerState_CONTAINER_CREATED:
		id = ctrs[0].Id
	case !wantThere && len(ctrs) == 0:
		assertNoContainerLeaks(t, e)
		var err error
		if id, err = e.d.Runtime.CreateContainer(context.Background(), podID, cfg, podCfg); err != nil {
			t.Fatalf("CreateContainer retry with the same name: %v", err)
		}
	default:
		t.Fatalf("after a crash at %s: containers %+v", point, ctrs)
	}
	if err := e.d.Runtime.StartContainer(context.Background(), id); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	e.checkContainerWorks(t, id, "hello-crash")
	e.removePodChecked(t, podID)
}

// crashStartContainer: StartContainer dies before or after the runtime
// starts the process; the container is created or running accordingly, and
// its exit is recorded later.
func crashStartContainer(t *testing.T, point string) {
	e := startIsolatedPodEnv(t, harness.Options{})
	ctx := context.Background()
	podCfg := podConfig(t, "crash")
	podID := e.runPod(t, podCfg)
	id, err := e.d.Runtime.CreateContainer(ctx, podID, e.containerConfig("c", "sh", "-c", "echo started; exec sleep 1000"), podCfg)
	if err != nil {
		t.Fatal(err)
	}
	e.crashAt(t, point, func(ctx context.Context) error { return e.d.Runtime.StartContainer(ctx, id) })
	st, err := e.d.Runtime.ContainerStatus(ctx, id, false)
	if err != nil {
		t.Fatalf("ContainerStatus: %v", err)
	}
	want := runtimeapi.ContainerState_CONTAINER_RUNNING
	if point == failpoint.CtrStartBefore {
		want = runtimeapi.ContainerState_CONTAINER_CREATED
	}
	if st.Status.State != want {
		t.Fatalf("after a crash at %s the container is %v, want %v", point, st.Status.State, want)
	}
	if want == runtimeapi.ContainerState_CONTAINER_CREATED {
		if err := e.d.Runtime.StartContainer(ctx, id); err != nil {
			t.Fatalf("StartContainer after the crash: %v", err)
		}
	} else if err := e.d.Runtime.StartContainer(ctx, id); err == nil {
		t.Fatal("a second StartContainer of a running container succeeded")
	}
	e.checkContainerWorks(t, id, "started")
	if err := e.d.Runtime.StopContainer(ctx, id, 0); err != nil {
		t.Fatalf("StopContainer: %v", err)
	}
	if st := e.waitExited(t, id); st.ExitCode != 137 || st.Reason != "Error" || st.FinishedAt == 0 {
		t.Fatalf("exit after the crash: %+v", st)
	}
	e.removePodChecked(t, podID)
}

// crashStopContainer: StopContainer dies after the stop signal (sleep as
// pid 1 ignores SIGTERM, so it still runs) or after SIGKILL (it must be
// recorded as killed).
func crashStopContainer(t *testing.T, point string) {
	e := startIsolatedPodEnv(t, harness.Options{})
	ctx := context.Background()
	podCfg := podConfig(t, "crash")
	podID := e.runPod(t, podCfg)
	id := e.startContainer(t, podID, podCfg, e.containerConfig("c", "sleep", "1000"))
	timeout := int64(0)
	if point == failpoint.CtrStopAfterSignal {
		timeout = 30
	}
	e.crashAt(t, point, func(ctx context.Context) error { return e.d.Runtime.StopContainer(ctx, id, timeout) })
	if point == failpoint.CtrStopAfterSignal {
		if st, err := e.d.Runtime.ContainerStatus(ctx, id, false); err != nil || st.Status.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			t.Fatalf("after SIGTERM to a pid 1 that ignores it: %+v %v", st, err)
		}
		if err := e.d.Runtime.StopContainer(ctx, id, 0); err != nil {
			t.Fatalf("StopContainer after the crash: %v", err)
		}
	}
	if st := e.waitExited(t, id); st.ExitCode != 137 || st.Reason != "Error" || st.FinishedAt == 0 {
		t.Fatalf("exit of the stopped container: %+v", st)
	}
	if err := e.d.Runtime.StopContainer(ctx, id, 0); err != nil {
		t.Fatalf("StopContainer of a stopped container: %v", err)
	}
	if err := e.d.Runtime.RemoveContainer(ctx, id); err != nil {
		t.Fatalf("RemoveContainer: %v", err)
	}
	assertNoContainerLeaks(t, e)
	e.removePodChecked(t, podID)
}

// crashRemoveContainer: RemoveContainer dies half-way; the container is
// still listed (and reports a state) or gone, and a second remove cleans up.
func crashRemoveContainer(t *testing.T, point string) {
	e := startIsolatedPodEnv(t, harness.Options{})
	ctx := context.Background()
	podCfg := podConfig(t, "crash")
	podID := e.runPod(t, podCfg)
	id := e.startContainer(t, podID, podCfg, e.containerConfig("c", "sleep", "1000"))
	e.crashAt(t, point, func(ctx context.Context) error { return e.d.Runtime.RemoveContainer(ctx, id) })
	if ctrs := e.containersOf(t, podID); len(ctrs) == 1 {
		if st, err := e.d.Runtime.ContainerStatus(ctx, id, false); err != nil {
			t.Errorf("ContainerStatus of a half-removed container: %v", err)
		} else if st.Status.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			t.Errorf("a half-removed container shows as running")
		}
	} else if len(ctrs) != 0 {
		t.Fatalf("containers %+v", ctrs)
	}
	if err := e.d.Runtime.RemoveContainer(ctx, id); err != nil {
		t.Fatalf("RemoveContainer after the crash: %v", err)
	}
	if ctrs := e.containersOf(t, podID); len(ctrs) != 0 {
		t.Fatalf("containers after remove: %+v", ctrs)
	}
	assertNoContainerLeaks(t, e)
	e.checkPodWorks(t, podID, podCfg)
	e.removePodChecked(t, podID)
}

// crashStopPod: StopPodSandbox dies half-way; the pod is still there, its
// container is killed (or killable), and a second stop and a remove clean
// everything, the network included.
func crashStopPod(t *testing.T, point string) {
	e := startIsolatedPodEnv(t, harness.Options{})
	ctx := context.Background()
	podCfg := podConfig(t, "crash")
	podID := e.runPod(t, podCfg)
	id := e.startContainer(t, podID, podCfg, e.containerConfig("c", "sh", "-c", "echo before-stop; exec sleep 1000"))
	waitLog(t, logPathOf(t, e, id), "before-stop")
	e.crashAt(t, point, func(ctx context.Context) error { return e.d.Runtime.StopPodSandbox(ctx, podID) })
	if pods := e.podsWithUID(t, podCfg.Metadata.Uid); len(pods) != 1 {
		t.Fatalf("pods after a crash in StopPodSandbox: %+v", pods)
	}
	if err := e.d.Runtime.StopPodSandbox(ctx, podID); err != nil {
		t.Fatalf("StopPodSandbox after the crash: %v", err)
	}
	st, err := e.d.Runtime.PodSandboxStatus(ctx, podID, false)
	if err != nil || st.Status.State != runtimeapi.PodSandboxState_SANDBOX_NOTREADY {
		t.Fatalf("pod after stop: %+v %v", st, err)
	}
	if cs := e.waitExited(t, id); cs.ExitCode != 137 || cs.FinishedAt == 0 {
		t.Fatalf("container of the stopped pod: %+v", cs)
	}
	// No log line is lost across the crash.
	waitLog(t, logPathOf(t, e, id), "before-stop")
	if err := e.d.Runtime.RemovePodSandbox(ctx, podID); err != nil {
		t.Fatalf("RemovePodSandbox: %v", err)
	}
	assertNoLeaks(t, e)
}

// crashRemovePod: RemovePodSandbox (of a running pod, so its stop runs
// too) dies half-way; the pod is still listed or gone, a second remove
// succeeds, nothing leaks.
func crashRemovePod(t *testing.T, point string) {
	e := startIsolatedPodEnv(t, harness.Options{})
	ctx := context.Background()
	podCfg := podConfig(t, "crash")
	podID := e.runPod(t, podCfg)
	e.startContainer(t, podID, podCfg, e.containerConfig("c", "sleep", "1000"))
	e.crashAt(t, point, func(ctx context.Context) error { return e.d.Runtime.RemovePodSandbox(ctx, podID) })
	pods := e.podsWithUID(t, podCfg.Metadata.Uid)
	if len(pods) > 1 {
		t.Fatalf("pods after a crash in RemovePodSandbox: %+v", pods)
	}
	if len(pods) == 1 {
		if _, err := e.d.Runtime.PodSandboxStatus(ctx, podID, false); err != nil {
			t.Errorf("PodSandboxStatus of a half-removed pod: %v", err)
		}
	}
	if point == failpoint.PodRemoveAfterCtrs {
		if cs := e.containersOf(t, podID); len(cs) != 0 {
			t.Errorf("containers after their removal: %+v", cs)
		}
	}
	if err := e.d.Runtime.RemovePodSandbox(ctx, podID); err != nil {
		t.Fatalf("RemovePodSandbox after the crash: %v", err)
	}
	if pods := e.podsWithUID(t, podCfg.Metadata.Uid); len(pods) != 0 {
		t.Fatalf("pods after remove: %+v", pods)
	}
	assertNoLeaks(t, e)
}

// crashPull: PullImage dies with a layer unpacked but not committed, or
// with all layers done but no metadata; the image is absent, nothing is
// half-written, and a new pull works.
func crashPull(t *testing.T, point string) {
	e := startIsolatedPodEnv(t, harness.Options{})
	ctx := context.Background()
	img, _, err := testimages.MultiLayer()
	if err != nil {
		t.Fatal(err)
	}
	e.reg.MustPush(t, "library/multi:1", img)
	ref := e.reg.Ref("library/multi:1")
	spec := &runtimeapi.ImageSpec{Image: ref}
	e.crashAt(t, point, func(ctx context.Context) error {
		_, err := e.d.ImageService(t).PullImage(ctx, spec, nil, nil)
		return err
	})
	images := e.d.ImageService(t)
	if st, err := images.ImageStatus(ctx, spec, false); err != nil || st.Image != nil {
		t.Fatalf("image after a crash before its metadata: %+v %v", st, err)
	}
	if left := stateFilesUnder(e.d); len(left) > 0 {
		t.Fatalf("half-written pull left %v", left)
	}
	if _, err := images.PullImage(ctx, spec, nil, nil); err != nil {
		t.Fatalf("PullImage after the crash: %v", err)
	}
	if st, err := images.ImageStatus(ctx, spec, false); err != nil || st.Image == nil {
		t.Fatalf("image after the pull: %+v %v", st, err)
	}
	if err := images.RemoveImage(ctx, spec); err != nil {
		t.Fatalf("RemoveImage: %v", err)
	}
	assertNoLeaks(t, e)
}

func logPathOf(t *testing.T, e *podEnv, id string) string {
	t.Helper()
	st, err := e.d.Runtime.ContainerStatus(context.Background(), id, false)
	if err != nil {
		t.Fatal(err)
	}
	return st.Status.LogPath
}

// A pod monitor killed with SIGKILL: its containers show as exited with a
// reason, their logs are kept, and the pod stops and goes cleanly.
func TestMonitorKilled(t *testing.T) {
	e := startIsolatedPodEnv(t, harness.Options{})
	ctx := context.Background()
	podCfg := podConfig(t, "monkill")
	podID := e.runPod(t, podCfg)
	running := e.startContainer(t, podID, podCfg, e.containerConfig("running", "sh", "-c", "echo up; exec sleep 1000"))
	created, err := e.d.Runtime.CreateContainer(ctx, podID, e.containerConfig("created", "true"), podCfg)
	if err != nil {
		t.Fatal(err)
	}
	waitLog(t, logPathOf(t, e, running), "up")

	mon := monitorPid(t, e, podID)
	if err := syscall.Kill(mon, syscall.SIGKILL); err != nil {
		t.Fatalf("kill monitor %d: %v", mon, err)
	}
	st := e.waitExited(t, running)
	if st.Reason == "" || st.FinishedAt == 0 {
		t.Errorf("container of a killed monitor: %+v", st)
	}
	t.Logf("running container after its monitor died: exit %d reason %q message %q", st.ExitCode, st.Reason, st.Message)
	cs, err := e.d.Runtime.ContainerStatus(ctx, created, false)
	if err != nil {
		t.Fatalf("ContainerStatus of the created container: %v", err)
	}
	if s := cs.Status.State; s != runtimeapi.ContainerState_CONTAINER_EXITED && s != runtimeapi.ContainerState_CONTAINER_CREATED {
		t.Errorf("created container of a killed monitor is %v", s)
	}
	// No container process outlives its monitor for long: berthd kills
	// what the monitor left once it learns of its death.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		left := cgroupProcs(e.d.CgroupParent)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("processes outlive their dead monitor: %v", left)
			break
		}
	}
	waitLog(t, st.LogPath, "up")
	// The same holds after a berthd restart.
	e.d.Restart(t, true)
	if st2, err := e.d.Runtime.ContainerStatus(ctx, running, false); err != nil || st2.Status.State != runtimeapi.ContainerState_CONTAINER_EXITED {
		t.Fatalf("after restart: %+v %v", st2, err)
	}
	e.removePodChecked(t, podID)
}

// monitorPid finds the pod's monitor process by its command line.
func monitorPid(t *testing.T, e *podEnv, podID string) int {
	t.Helper()
	for _, p := range processesOf(e.d) {
		pid, cmdline, _ := strings.Cut(p, " ")
		if strings.Contains(cmdline, " monitor ") && strings.Contains(cmdline, podID) {
			n, _ := strconv.Atoi(pid)
			return n
		}
	}
	t.Fatalf("no monitor for pod %s among %v", podID, processesOf(e.d))
	return 0
}

// cgroupProcs lists the processes in the cgroups below parent (memory
// hierarchy).
func cgroupProcs(parent string) []string {
	var out []string
	base := filepath.Join("/sys/fs/cgroup/memory", parent)
	_ = filepath.WalkDir(base, func(p string, de os.DirEntry, err error) error {
		if err != nil || !de.IsDir() {
			return nil
		}
		data, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		for _, pid := range strings.Fields(string(data)) {
			cmd, _ := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
			out = append(out, p+": "+pid+" "+strings.ReplaceAll(string(cmd), "\x00", " "))
		}
		return nil
	})
	return out
}
