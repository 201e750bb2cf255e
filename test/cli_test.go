package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/berth-dev/berth/test/harness"
)

// These tests drive the built berth binary against a real berthd, as a
// user at a shell would.

// cliResult is one berth invocation's outcome.
type cliResult struct {
	stdout, stderr string
	code           int
}

// berthCmd prepares berth against d; its pods' log directories go under a
// temporary dir (BERTH_LOG_ROOT) rather than /var/log/berth.
func berthCmd(t *testing.T, d *harness.Daemon, logRoot string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bins.Berth, args...)
	cmd.Env = append(os.Environ(), "BERTH_HOST="+d.Endpoint(), "BERTH_LOG_ROOT="+logRoot)
	return cmd
}

// berthRun runs berth to completion. A hung berth fails the test after a
// minute rather than hanging it.
func berthRun(t *testing.T, d *harness.Daemon, logRoot string, args ...string) cliResult {
	t.Helper()
	cmd := berthCmd(t, d, logRoot, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("berth %v hung; stdout %q stderr %q", args, out.String(), errb.String())
	}
	r := cliResult{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("berth %v: %v", args, err)
	}
	return r
}

// mustBerth runs berth and fails the test unless it exits 0.
func mustBerth(t *testing.T, d *harness.Daemon, logRoot string, args ...string) string {
	t.Helper()
	r := berthRun(t, d, logRoot, args...)
	if r.code != 0 {
		t.Fatalf("berth %v: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func TestCLINoSuchContainer(t *testing.T) {
	d := harness.Start(t, bins, harness.Options{})
	ctx := context.Background()
	if _, err := d.Runtime.ListContainers(ctx, nil); status.Code(err) == codes.Unimplemented {
		t.Skip("needs berthd's ListContainers")
	}
	logRoot := t.TempDir()
	for _, args := range [][]string{
		{"logs", "nosuch"}, {"stop", "nosuch"}, {"rm", "nosuch"}, {"start", "nosuch"},
		{"restart", "nosuch"}, {"top", "nosuch"}, {"exec", "nosuch", "true"},
		{"inspect", "--type", "container", "nosuch"}, {"cp", "nosuch:/etc/passwd", t.TempDir()},
	} {
		r := berthRun(t, d, logRoot, args...)
		if r.code != 1 || strings.TrimSpace(r.stderr) != "Error: No such container: nosuch" {
			t.Errorf("berth %v: exit %d, stderr %q; want 1 and docker's message", args, r.code, r.stderr)
		}
	}
	// inspect of something that is neither a container nor an image.
	r := berthRun(t, d, logRoot, "inspect", "nosuch")
	if r.code != 1 || !strings.Contains(r.stderr, "Error: No such object: nosuch") || strings.TrimSpace(r.stdout) != "[]" {
		t.Errorf("inspect nosuch: %+v", r)
	}
	// Listing with nothing there prints docker's headers.
	out := mustBerth(t, d, logRoot, "ps", "-a")
	if !regexp.MustCompile(`^CONTAINER ID +IMAGE +COMMAND +CREATED +STATUS +PORTS +NAMES\n$`).MatchString(out) {
		t.Errorf("empty ps -a = %q", out)
	}
	if _, err := d.ImageService(t).ListImages(ctx, nil); status.Code(err) != codes.Unimplemented {
		out = mustBerth(t, d, logRoot, "images")
		if !regexp.MustCompile(`^REPOSITORY +TAG +IMAGE ID +CREATED +SIZE\n$`).MatchString(out) {
			t.Errorf("empty images = %q", out)
		}
	}
	// A bad flag is berth's own failure: 125, as docker.
	if r := berthRun(t, d, logRoot, "run", "-m", "lots", "busybox"); r.code != 125 || !strings.Contains(r.stderr, "invalid size") {
		t.Errorf("run -m lots: %+v", r)
	}
	if r := berthRun(t, d, logRoot, "run", "-p", "notaport", "busybox"); r.code != 125 {
		t.Errorf("run -p notaport: %+v", r)
	}
}

// cliEnv is a berthd with a pod network and busybox pulled, for the CLI.
type cliEnv struct {
	*podEnv
	logRoot string
}

// startCLIEnv starts the environment, or skips the test while berthd cannot
// run pods yet: the tests below then start running by themselves once it
// can.
func startCLIEnv(t *testing.T) *cliEnv {
	t.Helper()
	e := startPodEnv(t)
	probe := podConfig(t, "cli-probe")
	id, err := e.d.Runtime.RunPodSandbox(context.Background(), probe, "")
	if status.Code(err) == codes.Unimplemented {
		t.Skip("needs berthd's RunPodSandbox")
	}
	if err != nil {
		t.Fatalf("RunPodSandbox probe: %v", err)
	}
	_ = e.d.Runtime.StopPodSandbox(context.Background(), id)
	_ = e.d.Runtime.RemovePodSandbox(context.Background(), id)
	ce := &cliEnv{podEnv: e, logRoot: t.TempDir()}
	// Remove whatever a failing test left running, before the daemon goes.
	t.Cleanup(func() {
		if e.d.Runtime == nil {
			return
		}
		out := berthRun(t, e.d, ce.logRoot, "ps", "-aq", "--no-trunc").stdout
		for _, id := range strings.Fields(out) {
			berthRun(t, e.d, ce.logRoot, "rm", "-f", id)
		}
	})
	return ce
}

func (e *cliEnv) berth(t *testing.T, args ...string) cliResult {
	t.Helper()
	return berthRun(t, e.d, e.logRoot, args...)
}

func (e *cliEnv) must(t *testing.T, args ...string) string {
	t.Helper()
	return mustBerth(t, e.d, e.logRoot, args...)
}

// waitFor runs berth until its output satisfies ok, failing after a minute.
func (e *cliEnv) waitFor(t *testing.T, ok func(string) bool, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		r := e.berth(t, args...)
		if ok(r.stdout) {
			return r.stdout
		}
		if time.Now().After(deadline) {
			t.Fatalf("berth %v never gave the expected output; last: exit %d\n%s\nstderr: %s\nps -a: %s", args, r.code, r.stdout, r.stderr, e.berth(t, "ps", "-a").stdout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var fullID = regexp.MustCompile(`^[0-9a-f]{64}$`)

func TestCLIRunDetachedLogsStop(t *testing.T) {
	e := startCLIEnv(t)
	id := strings.TrimSpace(e.must(t, "run", "-d", "--name", "ticker", e.busybox,
		"sh", "-c", "echo hello; echo oops >&2; i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"))
	if !fullID.MatchString(id) {
		t.Fatalf("run -d printed %q, want a full ID", id)
	}
	ps := e.must(t, "ps")
	row := regexp.MustCompile(`(?m)^` + id[:12] + ` +` + regexp.QuoteMeta(strings.TrimPrefix(e.busybox, "docker.io/")) + ` +"sh -c 'echo hello; …" +(Less than a second|\d+ seconds?) ago +Up .+ +ticker$`)
	if !row.MatchString(ps) {
		t.Errorf("ps row for ticker not as docker lays it out:\n%s", ps)
	}

	// logs -f by name, by ID prefix: both reach the container.
	cmd := berthCmd(t, e.d, e.logRoot, "logs", "-f", id[:8])
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var got bytes.Buffer
	go func() {
		sc := bufio.NewScanner(stdout)
		stopped := false
		for sc.Scan() {
			got.WriteString(sc.Text() + "\n")
			if sc.Text() == "tick 3" && !stopped {
				stopped = true
				go func() { e.must(t, "stop", "-t", "1", "ticker") }()
			}
		}
		done <- cmd.Wait()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("logs -f: %v (stderr %q)", err, stderr.String())
		}
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("logs -f did not end when the container stopped; got %q", got.String())
	}
	if !strings.HasPrefix(got.String(), "hello\ntick 0\ntick 1\n") || !strings.Contains(stderr.String(), "oops") {
		t.Errorf("logs -f: stdout %q stderr %q", got.String(), stderr.String())
	}
	if out := e.must(t, "logs", "--tail", "1", "ticker"); !regexp.MustCompile(`^tick \d+\n$`).MatchString(out) {
		t.Errorf("logs --tail 1 = %q", out)
	}
	if out := e.must(t, "logs", "-t", "ticker"); !regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\dT\S+Z hello$`).MatchString(out) {
		t.Errorf("logs -t = %q", out)
	}
	ps = e.must(t, "ps", "-a", "--format", "{{.Names}} {{.Status}}")
	if !regexp.MustCompile(`(?m)^ticker Exited \((137|143)\) .* ago$`).MatchString(ps) {
		t.Errorf("ps -a after stop: %q", ps)
	}
	if ps := e.must(t, "ps", "-q"); strings.TrimSpace(ps) != "" {
		t.Errorf("ps (running only) still lists: %q", ps)
	}
	e.must(t, "rm", "ticker")
	if ps := e.must(t, "ps", "-aq"); strings.TrimSpace(ps) != "" {
		t.Errorf("ps -a after rm: %q", ps)
	}
}

func TestCLIRunExitCodes(t *testing.T) {
	e := startCLIEnv(t)
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"sh", "-c", "exit 0"}, 0},
		{[]string{"sh", "-c", "exit 1"}, 1},
		{[]string{"sh", "-c", "exit 42"}, 42},
		{[]string{"/no/such/program"}, 127},
		{[]string{"nosuchprogram"}, 127},
		{[]string{"/etc/passwd"}, 126},
	} {
		r := e.berth(t, append([]string{"run", "--rm", e.busybox}, tc.args...)...)
		if r.code != tc.code {
			t.Errorf("run %v: exit %d, want %d (stderr %q)", tc.args, r.code, tc.code, r.stderr)
		}
	}
	if r := e.berth(t, "run", "--rm", "--bogus", e.busybox); r.code != 125 {
		t.Errorf("run --bogus: exit %d, want 125", r.code)
	}
	if r := e.berth(t, "run", "--rm", "127.0.0.1:1/none:latest"); r.code != 125 {
		t.Errorf("run of an image that cannot be pulled: exit %d, want 125 (%q)", r.code, r.stderr)
	}
	// Output and exit code of an attached run.
	r := e.berth(t, "run", "--rm", "-e", "GREETING=hi there", e.busybox, "sh", "-c", `echo "$GREETING"; echo err >&2; exit 3`)
	if r.code != 3 || r.stdout != "hi there\n" || r.stderr != "err\n" {
		t.Errorf("attached run: %+v", r)
	}
	// -it needs a terminal, as docker says.
	if r := e.berth(t, "run", "--rm", "-it", e.busybox, "true"); r.code != 125 || !strings.Contains(r.stderr, "the input device is not a TTY") {
		t.Errorf("run -it without a terminal: %+v", r)
	}
	// --rm removed them all.
	if ps := e.must(t, "ps", "-aq"); strings.TrimSpace(ps) != "" {
		t.Errorf("--rm left containers: %q", ps)
	}

	// 137: killed while berth waits on it.
	cmd := berthCmd(t, e.d, e.logRoot, "run", "--name", "victim", e.busybox, "sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.waitFor(t, func(s string) bool { return strings.Contains(s, "victim") }, "ps", "--format", "{{.Names}}")
	e.must(t, "kill", "victim")
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 137 {
		t.Errorf("run of a killed container: %v, want exit 137", err)
	}
}

// openPty opens a pseudo-terminal pair with x/sys/unix (posix_openpt,
// unlockpt, ptsname).
func openPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	var unlock int32
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, m.Fd(), unix.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); errno != 0 {
		t.Fatal(errno)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_ = unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 100})
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// ptyReader collects everything berth writes to the terminal, draining it
// all the time so that berth never blocks on a full terminal.
type ptyReader struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	closed bool
	notify chan struct{}
}

func newPtyReader(m *os.File) *ptyReader {
	r := &ptyReader{notify: make(chan struct{}, 1)}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := m.Read(b)
			r.mu.Lock()
			r.buf.Write(b[:n])
			if err != nil {
				r.closed = true
			}
			r.mu.Unlock()
			select {
			case r.notify <- struct{}{}:
			default:
			}
			if err != nil {
				return
			}
		}
	}()
	return r
}

func (r *ptyReader) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.buf.String()
}

// waitFor reads until the output so far matches re, or fails after a minute.
func (r *ptyReader) waitFor(t *testing.T, re *regexp.Regexp) {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		r.mu.Lock()
		ok, closed := re.Match(r.buf.Bytes()), r.closed
		r.mu.Unlock()
		if ok {
			return
		}
		if closed {
			t.Fatalf("terminal closed before %v; got %q", re, r.String())
		}
		select {
		case <-r.notify:
		case <-timeout:
			t.Fatalf("no %v on the terminal; got %q", re, r.String())
		}
	}
}

// waitExit waits for berth to exit; a berth that hangs is made to dump its
// goroutines (SIGQUIT) into the failure message.
func waitExit(t *testing.T, cmd *exec.Cmd, out *ptyReader) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		<-done
		t.Fatalf("berth %v did not exit; terminal:\n%s", cmd.Args[1:], out.String())
		return nil
	}
}

// startInPty starts berth with a pty as its controlling terminal.
func (e *cliEnv) startInPty(t *testing.T, args ...string) (*exec.Cmd, *os.File, *ptyReader) {
	t.Helper()
	m, s := openPty(t)
	cmd := berthCmd(t, e.d, e.logRoot, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s, s, s
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_, _ = cmd.Process.Wait()
		}
	})
	return cmd, m, newPtyReader(m)
}

func TestCLIRunInteractiveTTY(t *testing.T) {
	e := startCLIEnv(t)
	cmd, m, out := e.startInPty(t, "run", "--rm", "-it", "--name", "shell", e.busybox, "sh")
	// The shell sees a terminal of the pty's size, and runs what is typed.
	fmt.Fprint(m, "stty size; echo $((6*7))\r")
	out.waitFor(t, regexp.MustCompile(`40 100\r?\n(.|\n)*42\r?\n`))
	fmt.Fprint(m, "exit 5\r")
	err := waitExit(t, cmd, out)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 5 {
		t.Fatalf("run -it: %v, want exit 5; terminal: %q", err, out.String())
	}
	if ps := e.must(t, "ps", "-aq"); strings.TrimSpace(ps) != "" {
		t.Errorf("--rm -it left a container: %q", ps)
	}

	// Ctrl-P Ctrl-Q detaches and leaves the container running; exec -it
	// gets a shell in it.
	cmd, m, out = e.startInPty(t, "run", "-it", "--name", "detachme", e.busybox, "sh")
	// The output, not the typed line (which the terminal may echo before
	// berth makes it raw), says the shell is there.
	fmt.Fprint(m, "echo rea\"\"dy\r")
	out.waitFor(t, regexp.MustCompile(`(?m)^ready\r?$`))
	m.Write([]byte{0x10, 0x11})
	if err := waitExit(t, cmd, out); err != nil {
		t.Fatalf("detach: %v; terminal %q", err, out.String())
	}
	if ps := e.must(t, "ps", "--format", "{{.Names}} {{.State}}"); !strings.Contains(ps, "detachme running") {
		t.Fatalf("after detach: %q", ps)
	}
	cmd, m, out = e.startInPty(t, "exec", "-it", "detachme", "sh")
	fmt.Fprint(m, "echo in-exec-$((1+1)); exit 7\r")
	out.waitFor(t, regexp.MustCompile(`in-exec-2`))
	err = waitExit(t, cmd, out)
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Errorf("exec -it: %v, want exit 7", err)
	}
	if r := e.berth(t, "exec", "detachme", "sh", "-c", "exit 9"); r.code != 9 {
		t.Errorf("exec exit code: %+v", r)
	}
	if out := e.must(t, "exec", "-e", "A=b", "-w", "/etc", "detachme", "sh", "-c", `echo $A $(pwd)`); out != "b /etc\n" {
		t.Errorf("exec -e -w: %q", out)
	}
	e.must(t, "rm", "-f", "detachme")
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestCLIPublishAndVolume(t *testing.T) {
	e := startCLIEnv(t)
	host := t.TempDir()
	if err := os.WriteFile(filepath.Join(host, "index.html"), []byte("served from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ro := t.TempDir()
	port := freePort(t)
	e.must(t, "run", "-d", "--name", "web", "-p", fmt.Sprintf("%d:8080", port), "-v", host+":/www", "-v", ro+":/ro:ro",
		e.busybox, "httpd", "-f", "-p", "8080", "-h", "/www")
	ps := e.must(t, "ps", "--format", "{{.Ports}}")
	if strings.TrimSpace(ps) != fmt.Sprintf("0.0.0.0:%d->8080/tcp", port) {
		t.Errorf("PORTS = %q", ps)
	}
	// The port is published on the host.
	var body string
	deadline := time.Now().Add(time.Minute)
	for {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			fmt.Fprintf(conn, "GET /index.html HTTP/1.0\r\n\r\n")
			b, _ := io.ReadAll(conn)
			conn.Close()
			body = string(b)
			if strings.Contains(body, "served from the host") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET through the published port: %v %q", err, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The volume is the host dir, both ways; :ro refuses writes.
	e.must(t, "exec", "web", "sh", "-c", "echo from-container > /www/back")
	if b, err := os.ReadFile(filepath.Join(host, "back")); err != nil || string(b) != "from-container\n" {
		t.Errorf("write through -v: %q %v", b, err)
	}
	if r := e.berth(t, "exec", "web", "touch", "/ro/x"); r.code == 0 {
		t.Errorf("write into a :ro volume succeeded")
	}
	// inspect: docker's layout.
	var insp []map[string]any
	if err := json.Unmarshal([]byte(e.must(t, "inspect", "web")), &insp); err != nil || len(insp) != 1 {
		t.Fatalf("inspect: %v", err)
	}
	st, _ := insp[0]["State"].(map[string]any)
	if insp[0]["Name"] != "/web" || st["Status"] != "running" || st["Running"] != true {
		t.Errorf("inspect: Name %v State %v", insp[0]["Name"], st)
	}
	if out := e.must(t, "inspect", "-f", "{{.State.Status}} {{.Name}}", "web"); out != "running /web\n" {
		t.Errorf("inspect -f = %q", out)
	}
	e.must(t, "rm", "-f", "web")
}

func TestCLIImagesInspectAndPull(t *testing.T) {
	e := startCLIEnv(t)
	out := e.must(t, "images")
	repo := strings.TrimSuffix(e.busybox, ":latest")
	row := regexp.MustCompile(`(?m)^REPOSITORY +TAG +IMAGE ID +CREATED +SIZE\n` + regexp.QuoteMeta(repo) + ` +latest +[0-9a-f]{12} +(\S+ )*ago +[0-9.]+[kM]B$`)
	if !row.MatchString(out) {
		t.Errorf("images:\n%s", out)
	}
	ids := strings.Fields(e.must(t, "images", "-q"))
	if len(ids) != 1 || len(ids[0]) != 12 {
		t.Fatalf("images -q = %v", ids)
	}
	var insp []map[string]any
	if err := json.Unmarshal([]byte(e.must(t, "inspect", e.busybox)), &insp); err != nil || len(insp) != 1 {
		t.Fatalf("image inspect: %v", err)
	}
	if !strings.HasPrefix(fmt.Sprint(insp[0]["Id"]), "sha256:"+ids[0]) {
		t.Errorf("image inspect Id %v, images -q %s", insp[0]["Id"], ids[0])
	}
	// rmi, then pull through a terminal draws progress.
	if r := e.berth(t, "rmi", ids[0]); r.code != 0 || !strings.Contains(r.stdout, "Deleted: sha256:"+ids[0]) {
		t.Fatalf("rmi: %+v", r)
	}
	if r := e.berth(t, "rmi", "nosuchimage"); r.code != 1 || !strings.Contains(r.stderr, "Error: No such image: nosuchimage") {
		t.Errorf("rmi nosuchimage: %+v", r)
	}
	cmd, _, term := e.startInPty(t, "pull", e.busybox)
	// A bar per layer, named by its short digest, as docker draws them.
	term.waitFor(t, regexp.MustCompile(`(?s)latest: Pulling from .*[0-9a-f]{12}: .*Pull complete.*Status: Downloaded newer image for `+regexp.QuoteMeta(e.busybox)))
	if err := waitExit(t, cmd, term); err != nil {
		t.Fatalf("pull: %v\n%s", err, term.String())
	}
	// Layers only: the config blob (whose digest is the image ID) has no
	// bar, as in docker.
	if strings.Contains(term.String(), ids[0]+": ") {
		t.Errorf("pull drew a bar for the config blob %s:\n%s", ids[0], term.String())
	}
	if ids2 := strings.Fields(e.must(t, "images", "-q")); len(ids2) != 1 || ids2[0] != ids[0] {
		t.Errorf("after pull: %v", ids2)
	}
	// Without a terminal: each layer's final line, as docker prints it.
	e.must(t, "rmi", ids[0])
	if out := e.must(t, "pull", e.busybox); !regexp.MustCompile(`(?m)^[0-9a-f]{12}: Pull complete$`).MatchString(out) {
		t.Errorf("pull without a terminal:\n%s", out)
	}
}

func TestCLICpStaysInTheContainer(t *testing.T) {
	e := startCLIEnv(t)
	hostSecret := t.TempDir()
	if err := os.WriteFile(filepath.Join(hostSecret, "secret"), []byte("host secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The container plants links at the host's directory: absolute and
	// climbing with "..".
	climb := strings.Repeat("../", 20) + strings.TrimPrefix(hostSecret, "/")
	e.must(t, "run", "-d", "--name", "cp", e.busybox, "sh", "-c",
		fmt.Sprintf("echo inside > /tmp/in; ln -s %s /abs; ln -s %s /rel; exec sleep 1000", hostSecret, climb))
	e.waitFor(t, func(s string) bool { return s == "links\n" }, "exec", "cp", "sh", "-c", "test -L /abs && test -L /rel && echo links")

	work := t.TempDir()
	// Both directions work for plain paths.
	e.must(t, "cp", "cp:/tmp/in", work)
	if b, _ := os.ReadFile(filepath.Join(work, "in")); string(b) != "inside\n" {
		t.Errorf("cp out: %q", b)
	}
	if err := os.WriteFile(filepath.Join(work, "up"), []byte("from host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.must(t, "cp", filepath.Join(work, "up"), "cp:/tmp/")
	if out := e.must(t, "exec", "cp", "cat", "/tmp/up"); out != "from host\n" {
		t.Errorf("cp in: %q", out)
	}
	// Writes through the links are refused and land nowhere on the host.
	for _, dest := range []string{"cp:/abs/pwned", "cp:/rel/pwned", "cp:/abs/"} {
		r := e.berth(t, "cp", filepath.Join(work, "up"), dest)
		if r.code == 0 {
			t.Errorf("cp into %s succeeded", dest)
		}
		for _, n := range []string{"pwned", "up"} {
			if _, err := os.Stat(filepath.Join(hostSecret, n)); err == nil {
				t.Fatalf("cp into %s wrote %s on the host", dest, filepath.Join(hostSecret, n))
			}
		}
	}
	// Reads through them do not reach the host's files either.
	for _, src := range []string{"cp:/abs/secret", "cp:/rel/secret"} {
		r := e.berth(t, "cp", src, work)
		if r.code == 0 {
			t.Errorf("cp out of %s succeeded", src)
		}
		if _, err := os.Stat(filepath.Join(work, "secret")); err == nil {
			t.Fatalf("cp out of %s copied the host's secret", src)
		}
	}
	// Copying the link itself copies a link, not what it points at.
	e.must(t, "cp", "cp:/abs", work)
	if l, err := os.Readlink(filepath.Join(work, "abs")); err != nil || l != hostSecret {
		t.Errorf("cp of a link: %q %v", l, err)
	}
	// "-": a tar archive on stdout, and one from stdin into a directory;
	// an archive entry through the planted link is refused.
	out := e.must(t, "cp", "cp:/tmp/in", "-")
	tr := tar.NewReader(strings.NewReader(out))
	if hdr, err := tr.Next(); err != nil || hdr.Name != "in" {
		t.Errorf("cp to -: first entry %+v, %v", hdr, err)
	} else if b, _ := io.ReadAll(tr); string(b) != "inside\n" {
		t.Errorf("cp to -: %q", b)
	}
	tarOf := func(name, body string) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))})
		tw.Write([]byte(body))
		tw.Close()
		return b.Bytes()
	}
	for _, tc := range []struct {
		name string
		ok   bool
	}{{"from-tar", true}, {"abs/pwned", false}, {"rel/pwned", false}} {
		cmd := berthCmd(t, e.d, e.logRoot, "cp", "-", "cp:/")
		cmd.Stdin = bytes.NewReader(tarOf(tc.name, "tarred\n"))
		if err := cmd.Run(); (err == nil) != tc.ok {
			t.Errorf("cp - of %s: %v, want success %v", tc.name, err, tc.ok)
		}
	}
	if out := e.must(t, "exec", "cp", "cat", "/from-tar"); out != "tarred\n" {
		t.Errorf("cp from -: %q", out)
	}
	if _, err := os.Stat(filepath.Join(hostSecret, "pwned")); err == nil {
		t.Fatal("cp - wrote through a link onto the host")
	}
	e.must(t, "rm", "-f", "cp")
}

func TestCLIPsFiltersAndFormat(t *testing.T) {
	e := startCLIEnv(t)
	a := strings.TrimSpace(e.must(t, "run", "-d", "--name", "alpha", "-l", "tier=front", e.busybox, "sleep", "1000"))
	e.must(t, "run", "-d", "--name", "beta", e.busybox, "true")
	e.waitFor(t, func(s string) bool { return strings.Contains(s, "beta exited") }, "ps", "-a", "--format", "{{.Names}} {{.State}}")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ps", "--format", "{{.Names}}"}, "alpha\n"},
		{[]string{"ps", "-a", "--filter", "status=exited", "--format", "{{.Names}}"}, "beta\n"},
		{[]string{"ps", "-a", "--filter", "label=tier=front", "--format", "{{.Names}}"}, "alpha\n"},
		{[]string{"ps", "-a", "--filter", "name=bet", "--format", "{{.Names}}"}, "beta\n"},
		{[]string{"ps", "-a", "--filter", "id=" + a[:6], "-q"}, a[:12] + "\n"},
		{[]string{"ps", "-q", "--no-trunc"}, a + "\n"},
		{[]string{"ps", "--format", `{{.Label "tier"}}`}, "front\n"},
	} {
		if out := e.must(t, tc.args...); out != tc.want {
			t.Errorf("berth %v = %q, want %q", tc.args, out, tc.want)
		}
	}
	// A second container may not take a used name: docker's conflict, 125.
	if r := e.berth(t, "run", "-d", "--name", "alpha", e.busybox, "true"); r.code != 125 || !strings.Contains(r.stderr, `The container name "/alpha" is already in use`) {
		t.Errorf("name conflict: %+v", r)
	}
	// Exited containers come back with start; -a shows this run's output
	// only, and logs keeps both runs'.
	e.must(t, "start", "beta")
	if out := e.must(t, "run", "--name", "echoer", e.busybox, "echo", "once"); out != "once\n" {
		t.Errorf("run echo = %q", out)
	}
	if r := e.berth(t, "start", "-a", "echoer"); r.code != 0 || r.stdout != "once\n" {
		t.Errorf("start -a: %+v", r)
	}
	if out := e.must(t, "logs", "echoer"); out != "once\nonce\n" {
		t.Errorf("logs after two runs = %q", out)
	}
	e.must(t, "container", "prune", "-f")
	e.must(t, "rm", "-f", "alpha")
}

// Containers kubelet made (no berth label) stay out of `berth ps` unless
// --all-namespaces is given.
func TestCLIHidesKubeletContainers(t *testing.T) {
	e := startCLIEnv(t)
	podCfg := podConfig(t, "kubepod")
	podID := e.runPod(t, podCfg)
	id := e.startContainer(t, podID, podCfg, e.containerConfig("kubectr", "sleep", "1000"))
	if out := e.must(t, "ps", "-aq", "--no-trunc"); strings.Contains(out, id) {
		t.Errorf("ps lists a kubelet container: %q", out)
	}
	if out := e.must(t, "ps", "-aq", "--no-trunc", "--all-namespaces"); !strings.Contains(out, id) {
		t.Errorf("ps --all-namespaces misses it: %q", out)
	}
	// It can still be named by ID.
	if out := e.must(t, "exec", id[:12], "echo", "hi"); out != "hi\n" {
		t.Errorf("exec into a kubelet container: %q", out)
	}
}

func TestCLIRunOptionsTopStats(t *testing.T) {
	e := startCLIEnv(t)
	// User, workdir, hostname, read-only root, env file and labels reach
	// the container.
	envFile := filepath.Join(t.TempDir(), "env")
	if err := os.WriteFile(envFile, []byte("# settings\nFROM_FILE=yes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.berth(t, "run", "--rm", "-u", "1000:1000", "-w", "/tmp", "--hostname", "hh", "--read-only", "--env-file", envFile,
		e.busybox, "sh", "-c", `echo $(id -u):$(id -g) $(pwd) $(hostname) $FROM_FILE; touch /x 2>/dev/null && echo rw || echo ro`)
	if r.code != 0 || r.stdout != "1000:1000 /tmp hh yes\nro\n" {
		t.Errorf("run options: %+v", r)
	}
	// --init: the command is not pid 1; an init that reaps is.
	r = e.berth(t, "run", "--rm", "--init", e.busybox, "sh", "-c", `echo $$; tr '\0' ' ' < /proc/1/cmdline`)
	if lines := strings.Split(r.stdout, "\n"); r.code != 0 || len(lines) < 2 || lines[0] == "1" || strings.HasPrefix(lines[1], "sh") {
		t.Errorf("run --init: %+v", r)
	}
	// Limits go into the container's cgroup: read back through inspect.
	e.must(t, "run", "-d", "--name", "limited", "-m", "64m", "--cpus", "0.5", "--pids-limit", "50", e.busybox, "sh", "-c", "yes > /dev/null & exec sleep 1000")
	out := e.must(t, "inspect", "-f", "{{.State.Pid}} {{.State.Status}}", "limited")
	var pid int
	var state string
	if _, err := fmt.Sscanf(out, "%d %s", &pid, &state); err != nil || pid <= 0 || state != "running" {
		t.Fatalf("inspect pid: %q %v", out, err)
	}
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	var memPath, pidsPath, cpuPath string
	for _, l := range strings.Split(string(cg), "\n") {
		if f := strings.SplitN(l, ":", 3); len(f) == 3 {
			for _, c := range strings.Split(f[1], ",") {
				switch c {
				case "memory":
					memPath = f[2]
				case "pids":
					pidsPath = f[2]
				case "cpu":
					cpuPath = f[2]
				}
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/pids", pidsPath, "pids.max")); err != nil || strings.TrimSpace(string(b)) != "50" {
		t.Errorf("pids limit in %s: %q %v", pidsPath, b, err)
	}
	if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/cpu", cpuPath, "cpu.cfs_quota_us")); err != nil || strings.TrimSpace(string(b)) != "50000" {
		t.Errorf("cpu quota in %s: %q %v", cpuPath, b, err)
	}
	if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", memPath, "memory.limit_in_bytes")); err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(64<<20) {
		t.Errorf("memory limit in %s: %q %v", memPath, b, err)
	}
	// top lists the container's processes from the host's ps.
	top := e.must(t, "top", "limited")
	if !strings.HasPrefix(top, "UID") || !strings.Contains(top, "sleep 1000") || !strings.Contains(top, "yes") || strings.Contains(top, "berthd") {
		t.Errorf("top:\n%s", top)
	}
	// stats shows one row for it, with CPU and memory filled in.
	stats := e.must(t, "stats", "--no-stream", "--format", "{{.Name}} {{.CPUPerc}} {{.MemUsage}}")
	if !regexp.MustCompile(`^limited \d+\.\d\d% [0-9.]+[KMG]?i?B / 64MiB\n$`).MatchString(stats) {
		t.Errorf("stats = %q", stats)
	}
	// restart brings it back running; info counts it.
	e.must(t, "restart", "-t", "0", "limited")
	if ps := e.must(t, "ps", "--format", "{{.Names}} {{.State}}"); ps != "limited running\n" {
		t.Errorf("after restart: %q", ps)
	}
	if info := e.must(t, "info"); !strings.Contains(info, " Containers: 1\n  Running: 1\n") || !strings.Contains(info, " Images: 1\n") {
		t.Errorf("info:\n%s", info)
	}
	e.must(t, "rm", "-f", "limited")
}

// run -d --rm: berthd removes the container and its pod when it exits, as
// dockerd does, with no client left to do it.
func TestCLIRunDetachedAutoRemove(t *testing.T) {
	e := startCLIEnv(t)
	id := strings.TrimSpace(e.must(t, "run", "-d", "--rm", "--name", "brief", e.busybox, "sh", "-c", "sleep 0.3"))
	if !fullID.MatchString(id) {
		t.Fatalf("run -d --rm printed %q", id)
	}
	// berthd removes the container, then its pod: wait for both.
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := e.must(t, "ps", "-aq", "--no-trunc")
		pods, err := e.d.Runtime.ListPodSandbox(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, id) && len(pods) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s or its pod still there after it exited:\n%s\npods: %v", id[:12], e.must(t, "ps", "-a"), pods)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
