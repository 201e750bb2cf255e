package server

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// The test binary runs as a monitor when asked to (startMonitor).
func TestMain(m *testing.M) {
	if os.Getenv("BERTH_TEST_MONITOR_MAIN") == "1" {
		os.Exit(Main(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// startMonitor runs Main in a child process for a fresh pod dir (no
// containers: --shim is never run) and returns it once it reported ready.
func startMonitor(t *testing.T) (*exec.Cmd, string) {
	t.Helper()
	dir := t.TempDir()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer readyR.Close()
	cmd := exec.Command(os.Args[0], "--dir", dir, "--shim", "/bin/false")
	cmd.Env = append(os.Environ(), "BERTH_TEST_MONITOR_MAIN=1")
	cmd.Stderr = os.Stderr
	cmd.ExtraFiles = []*os.File{readyW}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readyW.Close()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	line, err := bufio.NewReader(readyR).ReadBytes('\n')
	if err != nil {
		t.Fatalf("ready message: %v", err)
	}
	var ready ReadyMessage
	if err := json.Unmarshal(line, &ready); err != nil || ready.Pid != cmd.Process.Pid || ready.Error != "" {
		t.Fatalf("ready message %q: %+v, %v", line, ready, err)
	}
	return cmd, dir
}

// call sends one request as berthd does (encoding/json over net) and
// decodes the answer the same way.
func call(t *testing.T, dir string, req *Request) *Response {
	t.Helper()
	conn, err := net.Dial("unix", SocketPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	b, _ := json.Marshal(req)
	if _, err := conn.Write(append(b, '\n')); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil {
		t.Fatalf("%s: %v", req.Op, err)
	}
	resp := &Response{}
	if err := json.Unmarshal(line, resp); err != nil {
		t.Fatalf("%s: response %q: %v", req.Op, line, err)
	}
	return resp
}

func TestMonitorServesAndShutsDown(t *testing.T) {
	for _, how := range []string{"request", "SIGTERM"} {
		t.Run(how, func(t *testing.T) {
			cmd, dir := startMonitor(t)
			if resp := call(t, dir, &Request{Op: OpInfo}); resp.Err() != nil || resp.Pid != cmd.Process.Pid {
				t.Fatalf("info: %+v", resp)
			}
			resp := call(t, dir, &Request{Op: OpState, ID: "nope"})
			if err := resp.Err(); err == nil || resp.Kind != kindNotFound {
				t.Fatalf("state of an unknown container: %+v", resp)
			}
			if resp := call(t, dir, &Request{Op: "bogus"}); resp.Kind != kindInvalidArgument {
				t.Fatalf("unknown op: %+v", resp)
			}
			if how == "request" {
				if resp := call(t, dir, &Request{Op: OpShutdown}); resp.Err() != nil {
					t.Fatalf("shutdown: %+v", resp)
				}
			} else if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("monitor exit: %v", err)
			}
			// The socket goes before the process does.
			if _, err := os.Stat(SocketPath(dir)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket after shutdown: %v", err)
			}
			if _, err := os.Stat(filepath.Join(dir, "monitor.lock")); err != nil {
				t.Errorf("lock file: %v", err)
			}
		})
	}
}

func TestMonitorRefusesSecond(t *testing.T) {
	_, dir := startMonitor(t)
	cmd := exec.Command(os.Args[0], "--dir", dir, "--shim", "/bin/false")
	cmd.Env = append(os.Environ(), "BERTH_TEST_MONITOR_MAIN=1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("second monitor: %v, %s", err, out)
	}
	if resp := call(t, dir, &Request{Op: OpInfo}); resp.Err() != nil {
		t.Fatalf("the first monitor after the second's attempt: %+v", resp)
	}
}

// --userns is the user namespace of --share-pid's pod init, by absolute
// path; anything else is a usage error, before any process starts.
func TestUsernsFlag(t *testing.T) {
	for _, args := range [][]string{
		{"--userns", "/proc/self/ns/user"},
		{"--share-pid", "--userns", "proc/self/ns/user"},
		{"--share-pid", "--userns"},
	} {
		cmd := exec.Command(os.Args[0], append([]string{"--dir", t.TempDir(), "--shim", "/bin/false"}, args...)...)
		cmd.Env = append(os.Environ(), "BERTH_TEST_MONITOR_MAIN=1")
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("monitor %q: %v, want exit status 2", args, err)
		}
	}
}
