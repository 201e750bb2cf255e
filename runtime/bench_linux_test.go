package runtime

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/runtime-spec/specs-go"
)

// BenchmarkCreateStartWaitDelete measures one busybox `true` container's
// whole life in a running pod, with its own cgroup.
func BenchmarkCreateStartWaitDelete(b *testing.B) {
	var phases [3]time.Duration
	for _, withCgroup := range []bool{true, false} {
		b.Run(fmt.Sprintf("cgroup=%v", withCgroup), func(b *testing.B) {
			p := startTestPod(b, withCgroup, false)
			ctx := context.Background()
			// As in a real pod, the containers join the pod's pinned
			// net, ipc and uts namespaces (making a netns is slow).
			nsDir := b.TempDir()
			b.Cleanup(func() { p.r.UnpinNamespaces(ctx, nsDir) })
			pins, err := p.r.PinNamespaces(ctx, nsDir, []string{"net", "ipc", "uts"})
			if err != nil {
				b.Fatal(err)
			}
			spec := testSpec("true")
			kind := map[specs.LinuxNamespaceType]string{specs.NetworkNamespace: "net", specs.IPCNamespace: "ipc", specs.UTSNamespace: "uts"}
			for i, ns := range spec.Linux.Namespaces {
				spec.Linux.Namespaces[i].Path = pins[kind[ns.Type]]
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				id := "bench-" + strconv.Itoa(i)
				opts := CreateOptions{}
				if withCgroup {
					opts.CgroupPath = testCgroup(id)
				}
				t0 := time.Now()
				if err := p.r.Create(ctx, p.id, id, spec, opts); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if err := p.r.Start(ctx, id); err != nil {
					b.Fatal(err)
				}
				st, err := p.r.Wait(ctx, id)
				if err != nil || st.ExitCode != 0 {
					b.Fatalf("Wait: %+v, %v", st, err)
				}
				t2 := time.Now()
				if err := p.r.Delete(ctx, id); err != nil {
					b.Fatal(err)
				}
				phases[0] += t1.Sub(t0)
				phases[1] += t2.Sub(t1)
				phases[2] += time.Since(t2)
			}
			for i, name := range []string{"create", "start+wait", "delete"} {
				b.ReportMetric(float64(phases[i].Microseconds())/float64(b.N)/1000, name+"-ms/op")
				phases[i] = 0
			}
		})
	}
}

// BenchmarkExec measures one `true` exec (as ExecSync runs it) in a running
// container.
func BenchmarkExec(b *testing.B) {
	p := startTestPod(b, false, false)
	ctx := context.Background()
	p.create("exec-bench", testSpec("sleep", "1000"), CreateOptions{})
	if err := p.r.Start(ctx, "exec-bench"); err != nil {
		b.Fatal(err)
	}
	proc := &specs.Process{Args: []string{"true"}, Env: []string{"PATH=/bin"}, Cwd: "/"}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		code, err := p.r.Exec(ctx, "exec-bench", ExecOptions{Process: proc})
		if err != nil || code != 0 {
			b.Fatalf("Exec = %d, %v", code, err)
		}
	}
}

// smapsRollup returns the Rss and Pss of pid in KiB.
func smapsRollup(pid int) (rss, pss int, err error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		switch fs[0] {
		case "Rss:":
			rss, _ = strconv.Atoi(fs[1])
		case "Pss:":
			pss, _ = strconv.Atoi(fs[1])
		}
	}
	return rss, pss, sc.Err()
}

// buildMonitor builds cmd/berth-monitor as hack/build.sh does (without
// cgo), for Config.MonitorPath.
//
// BERTH_BENCH_MONITOR=PATH measures that binary instead (another build, to
// compare).
func buildMonitor(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("BERTH_BENCH_MONITOR"); p != "" {
		return p
	}
	bin := filepath.Join(tb.TempDir(), "berth-monitor")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/berth-monitor")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build berth-monitor: %v: %s", err, out)
	}
	return bin
}

// procStatus returns a field of /proc/PID/status as a number.
func procStatus(pid int, field string) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strconv.Atoi(strings.Fields(v)[0])
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// BenchmarkMonitorMemory reports what a pod monitor costs: RSS and PSS of
// idle monitors (and their thread count) with 1, 10 and 30 pods of one
// container each on the node (PSS shares the binary's pages among the
// monitors, as on a real node), and of one pod with 4 containers, for the
// monitor run from berth-shim (cgo, with the container code) and from
// cmd/berth-monitor (Config.MonitorPath, what berthd uses when it is
// installed). Each container has written a line to stdout and to stderr
// (so the log path has run) and sleeps. The polled case has answered 3600
// state requests first (an hour of kubelet's relist). The loop only
// repeats the measurement.
func BenchmarkMonitorMemory(b *testing.B) {
	needRoot(b)
	monitorBin := buildMonitor(b)
	for _, bin := range []string{"berth-shim", "berth-monitor"} {
		for _, size := range []struct{ pods, ctrs, polls int }{{1, 1, 0}, {10, 1, 0}, {30, 1, 0}, {1, 4, 0}, {1, 1, 3600}} {
			name := fmt.Sprintf("binary=%s/pods=%d/containers=%d", bin, size.pods, size.ctrs)
			if size.polls > 0 {
				name += fmt.Sprintf("/polled=%d", size.polls)
			}
			b.Run(name, func(b *testing.B) {
				state := b.TempDir()
				r := newTestRuntime(b, state, false)
				if bin == "berth-monitor" {
					r.cfg.MonitorPath = monitorBin
				}
				ctx := context.Background()
				var pids []int
				for i := 0; i < size.pods; i++ {
					pod := "berth-test-mem-" + strconv.Itoa(i)
					b.Cleanup(func() { r.StopMonitor(ctx, pod) })
					if _, err := r.StartMonitor(ctx, pod, false); err != nil {
						b.Fatal(err)
					}
					info, err := r.ConnectMonitor(ctx, pod)
					if err != nil {
						b.Fatal(err)
					}
					pids = append(pids, info.Pid)
					for j := 0; j < size.ctrs; j++ {
						id := "mem-" + strconv.Itoa(i) + "-" + strconv.Itoa(j)
						b.Cleanup(func() { r.Delete(ctx, id) })
						spec := testSpec("sh", "-c", "echo started; echo warming up >&2; exec sleep 1000")
						logPath := filepath.Join(state, id+".log")
						if err := r.Create(ctx, pod, id, spec, CreateOptions{LogPath: logPath}); err != nil {
							b.Fatal(err)
						}
						if err := r.Start(ctx, id); err != nil {
							b.Fatal(err)
						}
						// Measure once both lines are logged.
						for n := 0; n < 2; {
							data, err := os.ReadFile(logPath)
							if err != nil {
								b.Fatal(err)
							}
							n = strings.Count(string(data), "\n")
							time.Sleep(time.Millisecond)
						}
						// As kubelet's relist asks for every container's
						// status each second. Through runtime.State, a
						// running container's status comes from its exit
						// watch; a request to the monitor would leave it
						// garbage, resident until a GC.
						for k := 0; k < size.polls; k++ {
							if _, err := r.State(ctx, id); err != nil {
								b.Fatal(err)
							}
						}
					}
				}
				var rss, pss, threads int
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					rss, pss, threads = 0, 0, 0
					for _, pid := range pids {
						r, p, err := smapsRollup(pid)
						if err != nil {
							b.Fatal(err)
						}
						t, err := procStatus(pid, "Threads")
						if err != nil {
							b.Fatal(err)
						}
						rss += r
						pss += p
						threads += t
					}
				}
				b.StopTimer()
				// BERTH_BENCH_SMAPS=DIR keeps the first monitor's smaps
				// and status there, to see where the memory is.
				if d := os.Getenv("BERTH_BENCH_SMAPS"); d != "" {
					for _, pid := range pids[:1] {
						for _, f := range []string{"smaps", "status"} {
							data, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/" + f)
							os.WriteFile(filepath.Join(d, fmt.Sprintf("%s-%d-%d-%d-%s", bin, size.pods, size.ctrs, size.polls, f)), data, 0o644)
						}
					}
				}
				n := float64(len(pids))
				b.ReportMetric(float64(rss)/n, "rss-KiB/pod")
				b.ReportMetric(float64(pss)/n, "pss-KiB/pod")
				b.ReportMetric(float64(threads)/n, "threads/pod")
			})
		}
	}
}
