package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	utilexec "k8s.io/utils/exec"

	"github.com/berth-dev/berth/test/harness"
)

const runcPath = "/usr/sbin/runc"

// runcState is what `runc --root ROOT state ID` says ("" if runc does not
// know the container).
func runcState(t *testing.T, root, id string) (status string, pid int) {
	t.Helper()
	out, err := exec.Command(runcPath, "--root", root, "state", id).Output()
	if err != nil {
		return "", 0
	}
	var st struct {
		Status string `json:"status"`
		Pid    int    `json:"pid"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("runc state: %v: %s", err, out)
	}
	return st.Status, st.Pid
}

// The container flows of the other e2e tests, in a pod whose RuntimeClass
// handler is Debian's runc: run, logs, exit codes, exec with and without a
// tty, attach, stop, remove, and a berthd crash in between.
func TestRuncHandler(t *testing.T) {
	if _, err := os.Stat(runcPath); err != nil {
		t.Skip("no runc (apt-get install runc)")
	}
	root := t.TempDir()
	bridge, subnet := testNetwork(t)
	e := startPodEnvNet(t, harness.Options{Config: fmt.Sprintf("[runtime.handlers.runc]\npath = %q\nroot = %q\n", runcPath, root)}, bridge, subnet)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rt := e.d.Runtime

	st, err := rt.Status(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range st.RuntimeHandlers {
		names = append(names, h.Name)
	}
	if strings.Join(names, ",") != ",runc" {
		t.Errorf("Status lists handlers %q, want the default and runc", names)
	}

	podCfg := podConfig(t, "runc")
	podID := e.runPodOn(t, podCfg, "runc")
	if _, err := rt.RunPodSandbox(ctx, podConfig(t, "nohandler"), "no-such-handler"); err == nil {
		t.Error("RunPodSandbox with an unknown handler succeeded")
	}

	// Run to completion: logs and exit code.
	short := e.startContainer(t, podID, podCfg, e.containerConfig("short", "sh", "-c", "echo out; echo err >&2; exit 3"))
	cs := e.waitExited(t, short)
	if cs.ExitCode != 3 || cs.Reason != "Error" {
		t.Errorf("exit: %+v", cs)
	}
	log, err := os.ReadFile(cs.LogPath)
	if err != nil || !strings.Contains(string(log), " stdout F out\n") || !strings.Contains(string(log), " stderr F err\n") {
		t.Errorf("log %q, %v", log, err)
	}
	if status, _ := runcState(t, root, short); status != "stopped" {
		t.Errorf("runc says %q of the exited container, want stopped", status)
	}

	// A long-running one is really runc's: runc knows it running, with the
	// pid berth reports.
	long := e.startContainer(t, podID, podCfg, e.containerConfig("long", "sh", "-c", "echo first; exec sleep 1000"))
	cfg := e.containerConfig("reader", "sh", "-c", "read line; echo got:$line")
	cfg.Stdin, cfg.StdinOnce = true, true
	reader := e.startContainer(t, podID, podCfg, cfg)
	status, pid := runcState(t, root, long)
	if status != "running" || pid != containerPid(t, e, long) {
		t.Fatalf("runc state of the running container: %q pid %d, berth says pid %d", status, pid, containerPid(t, e, long))
	}
	if out := e.execOut(t, long, "sh", "-c", "echo $((6*7))"); out != "42\n" {
		t.Errorf("ExecSync output %q", out)
	}
	if _, _, err := rt.ExecSync(ctx, long, []string{"sh", "-c", "exit 9"}, 30*time.Second); err == nil || !strings.Contains(err.Error(), "9") {
		t.Errorf("ExecSync exit 9: %v", err)
	}
	t.Run("streaming exec", func(t *testing.T) {
		resp, err := rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: long, Cmd: []string{"sh", "-c", "tr a-z A-Z; echo err >&2; exit 5"}, Stdin: true, Stdout: true, Stderr: true})
		if err != nil {
			t.Fatal(err)
		}
		out, errOut, err := streamExec(ctx, t, resp.Url, strings.NewReader("hello\n"), false)
		var ee utilexec.ExitError
		if out != "HELLO\n" || errOut != "err\n" || !errors.As(err, &ee) || ee.ExitStatus() != 5 {
			t.Errorf("exec: out %q err %q: %v", out, errOut, err)
		}
		resp, err = rt.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: long, Cmd: []string{"sh", "-c", "test -t 0 && test -t 1 && echo is-a-tty"}, Stdout: true, Tty: true})
		if err != nil {
			t.Fatal(err)
		}
		out, _, err = streamExec(ctx, t, resp.Url, nil, true)
		if err != nil || strings.TrimSpace(out) != "is-a-tty" {
			t.Errorf("tty exec: %q %v", out, err)
		}
	})

	// berthd crashes and comes back: the container still runs under runc,
	// and exec, attach, stop and remove work.
	e.d.Restart(t, true)
	rt = e.d.Runtime
	if status, _ := runcState(t, root, long); status != "running" {
		t.Fatalf("runc state after the berthd crash: %q", status)
	}
	if out := e.execOut(t, long, "echo", "alive"); out != "alive\n" {
		t.Errorf("exec after restart: %q", out)
	}
	t.Run("attach", func(t *testing.T) {
		resp, err := rt.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: reader, Stdin: true, Stdout: true, Stderr: true})
		if err != nil {
			t.Fatal(err)
		}
		// The container exits after answering, which ends the session.
		out, _, _ := streamExec(ctx, t, resp.Url, strings.NewReader("ping\n"), false)
		if !strings.Contains(out, "got:ping") {
			t.Errorf("attach output %q", out)
		}
		if cs := e.waitExited(t, reader); cs.ExitCode != 0 {
			t.Errorf("reader: %+v", cs)
		}
	})
	// sleep, as pid 1, ignores SIGTERM: the stop ends with SIGKILL.
	if err := rt.StopContainer(ctx, long, 1); err != nil {
		t.Fatal(err)
	}
	cs = e.waitExited(t, long)
	if cs.ExitCode != 137 {
		t.Errorf("stopped container: %+v", cs)
	}
	log, err = os.ReadFile(cs.LogPath)
	if err != nil || !strings.Contains(string(log), " stdout F first\n") {
		t.Errorf("log of long %q, %v", log, err)
	}
	for _, id := range []string{short, long, reader} {
		if err := rt.RemoveContainer(ctx, id); err != nil {
			t.Fatalf("RemoveContainer: %v", err)
		}
		if status, _ := runcState(t, root, id); status != "" {
			t.Errorf("runc still knows removed container %s (%s)", id, status)
		}
	}
}
