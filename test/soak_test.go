package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/harness"
)

// daemonUsage is what berthd holds at one moment.
type daemonUsage struct {
	rssKiB     int64
	fds        int
	threads    int
	goroutines int
}

func (u daemonUsage) String() string {
	return fmt.Sprintf("rss %d KiB, %d fds, %d threads, %d goroutines", u.rssKiB, u.fds, u.threads, u.goroutines)
}

// usageOf reads berthd's RSS, open fds and threads from /proc, and its
// goroutines from its Prometheus endpoint (go_goroutines) at metricsAddr.
func usageOf(tb testing.TB, d *harness.Daemon, metricsAddr string) daemonUsage {
	tb.Helper()
	pid := d.Pid()
	var u daemonUsage
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	u.rssKiB, _ = strconv.ParseInt(strings.Fields(statusField(string(status), "VmRSS"))[0], 10, 64)
	u.threads, _ = strconv.Atoi(statusField(string(status), "Threads"))
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		tb.Fatal(err)
	}
	u.fds = len(fds)
	// No keep-alive: an idle connection would count as one of berthd's
	// fds at the next reading. The fds are counted first, for the same
	// reason.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			u.goroutines, _ = strconv.Atoi(v)
		}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return u
}

// BenchmarkSoak runs b.N pod create/remove cycles (a pod, a container that
// logs, an exec, stop, remove) and reports berthd's RSS, open fds, threads
// and goroutines before and after, and the leaks left. Run it with a fixed
// count, e.g. go test ./test -run XXX -bench Soak -benchtime 1000x.
func BenchmarkSoak(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	metricsAddr := l.Addr().String()
	l.Close()
	e := startIsolatedPodEnv(b, harness.Options{Config: fmt.Sprintf("[metrics]\naddress = %q\n", metricsAddr)})
	ctx := context.Background()
	cycle := func(i int) {
		podCfg := podConfig(b, fmt.Sprintf("soak-%d", i))
		podID, err := e.d.Runtime.RunPodSandbox(ctx, podCfg, "")
		if err != nil {
			b.Fatalf("RunPodSandbox: %v", err)
		}
		cfg := e.containerConfig("c", "sh", "-c", "echo soak; exec sleep 1000")
		id, err := e.d.Runtime.CreateContainer(ctx, podID, cfg, podCfg)
		if err != nil {
			b.Fatalf("CreateContainer: %v", err)
		}
		if err := e.d.Runtime.StartContainer(ctx, id); err != nil {
			b.Fatalf("StartContainer: %v", err)
		}
		if _, _, err := e.d.Runtime.ExecSync(ctx, id, []string{"true"}, 10*time.Second); err != nil {
			b.Fatalf("ExecSync: %v", err)
		}
		if err := e.d.Runtime.StopPodSandbox(ctx, podID); err != nil {
			b.Fatalf("StopPodSandbox: %v", err)
		}
		if err := e.d.Runtime.RemovePodSandbox(ctx, podID); err != nil {
			b.Fatalf("RemovePodSandbox: %v", err)
		}
	}
	// Warm up pools and caches before the first reading.
	for i := range 5 {
		cycle(-1 - i)
	}
	time.Sleep(time.Second) // let exit watchers and stream goroutines end
	before := usageOf(b, e.d, metricsAddr)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cycle(i)
	}
	b.StopTimer()
	time.Sleep(time.Second)
	after := usageOf(b, e.d, metricsAddr)
	b.Logf("%d cycles: before %v; after %v", b.N, before, after)
	b.ReportMetric(float64(before.rssKiB), "rss-start-KiB")
	b.ReportMetric(float64(after.rssKiB), "rss-end-KiB")
	b.ReportMetric(float64(before.fds), "fds-start")
	b.ReportMetric(float64(after.fds), "fds-end")
	b.ReportMetric(float64(before.goroutines), "goroutines-start")
	b.ReportMetric(float64(after.goroutines), "goroutines-end")
	leaks := e.leaks()
	b.ReportMetric(float64(len(leaks)), "leaks")
	if len(leaks) > 0 {
		b.Errorf("leaks after %d cycles: %v", b.N, leaks)
	}
	if after.fds > before.fds || after.goroutines > before.goroutines {
		b.Errorf("berthd grew over %d cycles: before %v; after %v", b.N, before, after)
	}
}

// BenchmarkRestartWithPods measures how long a crashed berthd takes to
// serve again (reconciliation included) with many pods, each with a
// running container: BERTH_BENCH_PODS of them (default 50; the issue's
// figure is 200).
func BenchmarkRestartWithPods(b *testing.B) {
	n := 50
	if v, err := strconv.Atoi(os.Getenv("BERTH_BENCH_PODS")); err == nil && v > 0 {
		n = v
	}
	e := startIsolatedPodEnv(b, harness.Options{})
	ctx := context.Background()
	ids := make([]string, 0, n)
	for i := range n {
		podCfg := podConfig(b, fmt.Sprintf("many-%d", i))
		podID, err := e.d.Runtime.RunPodSandbox(ctx, podCfg, "")
		if err != nil {
			b.Fatalf("RunPodSandbox %d: %v", i, err)
		}
		ids = append(ids, podID)
		id, err := e.d.Runtime.CreateContainer(ctx, podID, e.containerConfig("c", "sleep", "1000"), podCfg)
		if err != nil {
			b.Fatalf("CreateContainer %d: %v", i, err)
		}
		if err := e.d.Runtime.StartContainer(ctx, id); err != nil {
			b.Fatalf("StartContainer %d: %v", i, err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.d.Restart(b, true) // returns once the new berthd answers the CRI
	}
	b.StopTimer()
	b.ReportMetric(float64(n), "pods")
	pods, err := e.d.Runtime.ListPodSandbox(ctx, nil)
	if err != nil || len(pods) != n {
		b.Fatalf("pods after the restarts: %d %v", len(pods), err)
	}
	for _, id := range ids {
		if err := e.d.Runtime.StopPodSandbox(ctx, id); err != nil {
			b.Fatal(err)
		}
		if err := e.d.Runtime.RemovePodSandbox(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
	assertNoLeaks(b, e)
}
