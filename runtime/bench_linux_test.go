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

// buildMonitorOnly builds a binary with only the monitor in it, without cgo,
// for Config.MonitorPath. The main package is added through a build overlay,
// so nothing is written into the source tree.
func buildMonitorOnly(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	src := filepath.Join(dir, "main.go")
	err := os.WriteFile(src, []byte("package main\n\nimport (\n\t\"os\"\n\n\t\"github.com/berth-dev/berth/runtime/monitor\"\n)\n\n"+
		"func main() { os.Exit(monitor.Main(os.Args[2:])) }\n"), 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	virt, err := filepath.Abs("monitor/zz_monitor_only_main/main.go")
	if err != nil {
		tb.Fatal(err)
	}
	overlay := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(overlay, []byte(fmt.Sprintf(`{"Replace":{%q:%q}}`, virt, src)), 0o600); err != nil {
		tb.Fatal(err)
	}
	bin := filepath.Join(dir, "berth-monitor")
	cmd := exec.Command("go", "build", "-overlay", overlay, "-o", bin, "./monitor/zz_monitor_only_main")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("build monitor-only binary: %v: %s", err, out)
	}
	return bin
}

// BenchmarkMonitorMemory reports what a pod monitor costs: RSS and PSS of
// monitors that each parent one running container, with 1, 10 and 30 pods
// on the node (PSS shares the binary's pages among the monitors, as on a
// real node), for the monitor run from berth-shim (cgo, with the container
// code) and from a monitor-only binary (Config.MonitorPath). The loop only
// repeats the measurement.
func BenchmarkMonitorMemory(b *testing.B) {
	needRoot(b)
	monitorOnly := buildMonitorOnly(b)
	for _, bin := range []string{"berth-shim", "monitor-only"} {
		for _, pods := range []int{1, 10, 30} {
			b.Run(fmt.Sprintf("binary=%s/pods=%d", bin, pods), func(b *testing.B) {
				state := b.TempDir()
				r := newTestRuntime(b, state, false)
				if bin == "monitor-only" {
					r.cfg.MonitorPath = monitorOnly
				}
				ctx := context.Background()
				var pids []int
				for i := 0; i < pods; i++ {
					pod := "berth-test-mem-" + strconv.Itoa(i)
					id := "mem-" + strconv.Itoa(i)
					b.Cleanup(func() {
						r.Delete(ctx, id)
						r.StopMonitor(ctx, pod)
					})
					if _, err := r.StartMonitor(ctx, pod, false); err != nil {
						b.Fatal(err)
					}
					info, err := r.ConnectMonitor(ctx, pod)
					if err != nil {
						b.Fatal(err)
					}
					pids = append(pids, info.Pid)
					if err := r.Create(ctx, pod, id, testSpec("sleep", "1000"), CreateOptions{LogPath: state + "/" + id + ".log"}); err != nil {
						b.Fatal(err)
					}
					if err := r.Start(ctx, id); err != nil {
						b.Fatal(err)
					}
				}
				var rss, pss int
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					rss, pss = 0, 0
					for _, pid := range pids {
						r, p, err := smapsRollup(pid)
						if err != nil {
							b.Fatal(err)
						}
						rss += r
						pss += p
					}
				}
				b.ReportMetric(float64(rss)/float64(len(pids)), "rss-KiB/pod")
				b.ReportMetric(float64(pss)/float64(len(pids)), "pss-KiB/pod")
			})
		}
	}
}
