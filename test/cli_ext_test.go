package e2e

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests cover the CLI commands that need berthd's berth.v1.Containers
// extension (exec options, kill with a signal, rename) and the ones built
// on the CRI alone (wait, attach).

func TestCLIExecUserEnvWorkdirDetach(t *testing.T) {
	e := startCLIEnv(t)
	e.must(t, "run", "-d", "--name", "ex", "-e", "KEEP=container", "-e", "OVER=container", e.busybox, "sleep", "1000")

	// -u by name, uid[:gid] and a uid the image does not know, resolved in
	// the container's /etc/passwd and /etc/group.
	for _, tc := range []struct{ user, want string }{
		{"user", "uid=1000(user) gid=1000(user)"},
		{"nobody:user", "uid=65534(nobody) gid=1000(user)"},
		{"1000:65534", "uid=1000(user) gid=65534(nobody)"},
		{"4242", "uid=4242 gid=0(root)"},
	} {
		if out := e.must(t, "exec", "-u", tc.user, "ex", "id"); !strings.HasPrefix(out, tc.want) {
			t.Errorf("exec -u %s id = %q, want %q…", tc.user, out, tc.want)
		}
	}
	// Without -u: the container's user.
	if out := e.must(t, "exec", "ex", "id", "-u"); out != "0\n" {
		t.Errorf("exec id -u = %q", out)
	}
	// Unknown user or group: docker's message, 126.
	if r := e.berth(t, "exec", "-u", "nosuch", "ex", "true"); r.code != 126 || !strings.Contains(r.stderr, "unable to find user nosuch: no matching entries in passwd file") {
		t.Errorf("exec -u nosuch: %+v", r)
	}
	if r := e.berth(t, "exec", "-u", "user:nogroup", "ex", "true"); r.code != 126 || !strings.Contains(r.stderr, "unable to find group nogroup: no matching entries in group file") {
		t.Errorf("exec -u user:nogroup: %+v", r)
	}

	// -e adds to and overrides the container's env; -w sets the cwd.
	env := e.must(t, "exec", "-e", "OVER=exec", "-e", "NEW=1", "ex", "env")
	for _, want := range []string{"KEEP=container", "OVER=exec", "NEW=1"} {
		if !regexp.MustCompile(`(?m)^` + want + `$`).MatchString(env) {
			t.Errorf("exec -e: env has no %s:\n%s", want, env)
		}
	}
	if strings.Contains(env, "OVER=container") {
		t.Errorf("exec -e did not override OVER:\n%s", env)
	}
	if out := e.must(t, "exec", "-w", "/etc", "ex", "pwd"); out != "/etc\n" {
		t.Errorf("exec -w /etc pwd = %q", out)
	}
	if r := e.berth(t, "exec", "-w", "etc", "ex", "pwd"); r.code != 126 || !strings.Contains(r.stderr, "needs to be an absolute path") {
		t.Errorf("exec -w etc: %+v", r)
	}
	if r := e.berth(t, "exec", "-w", "/nonexistent", "ex", "pwd"); r.code == 0 {
		t.Errorf("exec -w /nonexistent succeeded: %+v", r)
	}

	// -i without a terminal: stdin reaches the command, stdout and stderr
	// stay apart.
	in := berthCmd(t, e.d, e.logRoot, "exec", "-i", "-u", "user", "ex", "sh", "-c", `read x; echo "got $x as $(id -un)"; echo err >&2; exit 9`)
	var inOut, inErr bytes.Buffer
	in.Stdin, in.Stdout, in.Stderr = strings.NewReader("hello\n"), &inOut, &inErr
	if err := in.Start(); err != nil {
		t.Fatal(err)
	}
	err := waitCmd(t, in)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 9 || inOut.String() != "got hello as user\n" || inErr.String() != "err\n" {
		t.Errorf("exec -i: %v, stdout %q stderr %q; want exit 9", err, inOut.String(), inErr.String())
	}

	// -d: berth returns while the command still waits for /tmp/go (so
	// without waiting for it), prints nothing, and the command goes on
	// after berth has exited.
	r := e.berth(t, "exec", "-d", "-u", "user", "ex", "sh", "-c",
		`id -un > /tmp/started; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo finished > /tmp/finished`)
	if r.code != 0 || r.stdout != "" || r.stderr != "" {
		t.Fatalf("exec -d: %+v", r)
	}
	e.waitFor(t, func(s string) bool { return s == "user\n" }, "exec", "ex", "cat", "/tmp/started")
	e.must(t, "exec", "ex", "touch", "/tmp/go")
	e.waitFor(t, func(s string) bool { return s == "finished\n" }, "exec", "ex", "cat", "/tmp/finished")
	// A detached exec that cannot start says so, as docker's does, since
	// nobody reads its output.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"exec", "-d", "ex", "no-such-program"}, `exec: "no-such-program": executable file not found in $PATH`},
		{[]string{"exec", "-d", "-w", "/no/such/dir", "ex", "true"}, `chdir to cwd ("/no/such/dir") set in config.json failed`},
		{[]string{"exec", "-d", "ex", "/etc/passwd"}, "permission denied"},
	} {
		if r := e.berth(t, tc.args...); r.code != 126 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("berth %v: exit %d, stderr %q; want 126 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}

	// With a terminal: -it -u through a pty.
	cmd, m, term := e.startInPty(t, "exec", "-it", "-u", "user", "-w", "/tmp", "ex", "sh")
	if _, err := m.Write([]byte("echo \"me=$(id -un) in=$(pwd) tty=$(tty)\"\n")); err != nil {
		t.Fatal(err)
	}
	term.waitFor(t, regexp.MustCompile(`me=user in=/tmp tty=/dev/pts/\d+`))
	if _, err := m.Write([]byte("exit 7\n")); err != nil {
		t.Fatal(err)
	}
	err = waitExit(t, cmd, term)
	if !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Errorf("exec -it: %v, want exit 7; terminal:\n%s", err, term.String())
	}
}

func TestCLIKillWaitRename(t *testing.T) {
	e := startCLIEnv(t)
	// --init: the command is not the pid namespace's init, so a signal
	// without a handler kills it as on any process.
	e.must(t, "run", "-d", "--init", "--name", "term", e.busybox, "sleep", "1000")
	e.must(t, "run", "-d", "--name", "usr1", e.busybox, "sh", "-c",
		`trap 'echo got usr1; exit 3' USR1; echo ready; while :; do sleep 0.1; done`)

	// wait started before the kills, on both: the exit codes in order.
	wait := berthCmd(t, e.d, e.logRoot, "wait", "term", "usr1")
	var waitOut, waitErr bytes.Buffer
	wait.Stdout, wait.Stderr = &waitOut, &waitErr
	if err := wait.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if wait.ProcessState == nil {
			_ = wait.Process.Kill()
			_ = wait.Wait()
		}
	})

	if out := e.must(t, "kill", "-s", "TERM", "term"); out != "term\n" {
		t.Errorf("kill prints %q, want the argument", out)
	}
	e.waitFor(t, func(s string) bool { return strings.Contains(s, "ready") }, "logs", "usr1")
	e.must(t, "kill", "--signal", "SIGUSR1", "usr1")
	if err := waitCmd(t, wait); err != nil {
		t.Fatalf("wait: %v (stderr %q)", err, waitErr.String())
	}
	if waitOut.String() != "143\n3\n" {
		t.Errorf("wait printed %q, want 143 and 3", waitOut.String())
	}
	if out := e.must(t, "logs", "usr1"); !strings.Contains(out, "got usr1") {
		t.Errorf("usr1's trap did not run: %q", out)
	}
	ps := e.must(t, "ps", "-a", "--format", "{{.Names}} {{.Status}}")
	if !regexp.MustCompile(`(?m)^term Exited \(143\) `).MatchString(ps) || !regexp.MustCompile(`(?m)^usr1 Exited \(3\) `).MatchString(ps) {
		t.Errorf("ps -a after the kills:\n%s", ps)
	}
	// wait on an exited container answers at once.
	if out := e.must(t, "wait", "term"); out != "143\n" {
		t.Errorf("wait on exited = %q", out)
	}
	if r := e.berth(t, "kill", "term"); r.code != 1 || !strings.Contains(r.stderr, "is not running") {
		t.Errorf("kill of an exited container: %+v", r)
	}
	if r := e.berth(t, "kill", "-s", "NOSUCH", "term"); r.code == 0 || !strings.Contains(r.stderr, "invalid signal") {
		t.Errorf("kill -s NOSUCH: %+v", r)
	}
	if r := e.berth(t, "wait", "nosuch"); r.code != 1 || !strings.Contains(r.stderr, "No such container: nosuch") {
		t.Errorf("wait nosuch: %+v", r)
	}

	// rename: the new name works everywhere, the old one is gone, a name
	// in use is refused, and it survives a restart (a re-created
	// container).
	e.must(t, "run", "-d", "--name", "before", e.busybox, "sleep", "1000")
	e.must(t, "rename", "before", "after")
	if out := e.must(t, "exec", "after", "echo", "ok"); out != "ok\n" {
		t.Errorf("exec by the new name = %q", out)
	}
	if r := e.berth(t, "exec", "before", "true"); r.code != 1 || !strings.Contains(r.stderr, "No such container: before") {
		t.Errorf("the old name still resolves: %+v", r)
	}
	if r := e.berth(t, "rename", "after", "term"); r.code != 1 || !strings.Contains(r.stderr, `Conflict. The container name "/term" is already in use`) {
		t.Errorf("rename to a name in use: %+v", r)
	}
	if r := e.berth(t, "rename", "after", "bad/name"); r.code == 0 {
		t.Errorf("rename to an invalid name: %+v", r)
	}
	e.must(t, "restart", "-t", "1", "after")
	names := strings.Fields(e.must(t, "ps", "--format", "{{.Names}}"))
	if len(names) != 1 || names[0] != "after" {
		t.Errorf("running after the restart: %v, want [after]", names)
	}
}

func TestCLIAttach(t *testing.T) {
	e := startCLIEnv(t)
	e.must(t, "run", "-dit", "--name", "at", e.busybox, "sh")

	// Attach, run a command, detach with Ctrl-P Ctrl-Q: berth exits 0 and
	// the container runs on.
	cmd, m, term := e.startInPty(t, "attach", "at")
	if _, err := m.Write([]byte("echo sum=$((40+2))\n")); err != nil {
		t.Fatal(err)
	}
	term.waitFor(t, regexp.MustCompile(`sum=42`))
	if _, err := m.Write([]byte{0x10, 0x11}); err != nil {
		t.Fatal(err)
	}
	if err := waitExit(t, cmd, term); err != nil {
		t.Fatalf("attach after detach: %v\n%s", err, term.String())
	}
	if ps := e.must(t, "ps", "--format", "{{.Names}}"); ps != "at\n" {
		t.Fatalf("after detach ps = %q", ps)
	}
	// Attach again; the shell's exit is attach's exit code.
	cmd, m, term = e.startInPty(t, "attach", "at")
	if _, err := m.Write([]byte("echo again=$((1+1))\n")); err != nil {
		t.Fatal(err)
	}
	term.waitFor(t, regexp.MustCompile(`again=2`))
	if _, err := m.Write([]byte("exit 5\n")); err != nil {
		t.Fatal(err)
	}
	err := waitExit(t, cmd, term)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 5 {
		t.Errorf("attach to an exiting shell: %v, want exit 5\n%s", err, term.String())
	}
	if r := e.berth(t, "attach", "at"); r.code != 1 || !strings.Contains(r.stderr, "You cannot attach to a stopped container, start it first") {
		t.Errorf("attach to a stopped container: %+v", r)
	}

	// Without a terminal: stdin reaches the container only once attach is
	// connected, so all the output below comes after that; then the exit
	// code.
	e.must(t, "run", "-d", "-i", "--name", "plain", e.busybox, "sh", "-c",
		`read x; echo "got $x"; echo bye-err >&2; exit 4`)
	att := berthCmd(t, e.d, e.logRoot, "attach", "plain")
	var out, errb bytes.Buffer
	att.Stdin, att.Stdout, att.Stderr = strings.NewReader("hello\n"), &out, &errb
	if err := att.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if att.ProcessState == nil {
			_ = att.Process.Kill()
			_ = att.Wait()
		}
	})
	err = waitCmd(t, att)
	if !errors.As(err, &ee) || ee.ExitCode() != 4 || out.String() != "got hello\n" || errb.String() != "bye-err\n" {
		t.Errorf("attach without a tty: %v, stdout %q stderr %q; want exit 4, got hello, bye-err", err, out.String(), errb.String())
	}
}

// waitCmd waits for a started berth; one that hangs is killed after a
// minute and fails the test.
func waitCmd(t *testing.T, cmd *exec.Cmd) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("berth %v hung", cmd.Args[1:])
		return nil
	}
}

// Without a tty, signals berth gets are passed on to the container, as
// docker's signal proxy does: Ctrl-C (SIGINT) reaches a trap in the
// container instead of stopping it.
func TestCLIRunProxiesSignals(t *testing.T) {
	e := startCLIEnv(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := berthCmd(t, e.d, e.logRoot, "run", "--rm", "--name", "sigproxy", e.busybox, "sh", "-c",
		`trap 'echo got-TERM' TERM; trap 'echo got-INT; exit 3' INT; echo ready; while :; do sleep 0.1; done`)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	out := newPtyReader(r)
	out.waitFor(t, regexp.MustCompile(`ready\n`))
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, regexp.MustCompile(`got-TERM\n`))
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err = waitCmd(t, cmd) // not waitExit: its SIGQUIT would go to the container
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(out.String(), "got-INT\n") {
		t.Errorf("run after SIGTERM and SIGINT: %v, output %q; want the traps' output and exit 3", err, out.String())
	}

	// --sig-proxy=false: Ctrl-C ends berth, not the container.
	r2, w2, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	cmd = berthCmd(t, e.d, e.logRoot, "run", "--sig-proxy=false", "--name", "noproxy", e.busybox, "sh", "-c",
		`trap 'echo got-INT' INT; echo ready; while :; do sleep 0.1; done`)
	cmd.Stdout, cmd.Stderr = w2, w2
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w2.Close()
	out = newPtyReader(r2)
	out.waitFor(t, regexp.MustCompile(`ready\n`))
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := waitCmd(t, cmd); err == nil {
		t.Errorf("berth run --sig-proxy=false ended by SIGINT exited 0")
	}
	if ps := e.must(t, "ps", "--filter", "name=noproxy", "--format", "{{.Status}}"); !strings.HasPrefix(ps, "Up ") {
		t.Errorf("the container after berth got SIGINT: %q, want it running", ps)
	}
	if logs := e.must(t, "logs", "noproxy"); strings.Contains(logs, "got-INT") {
		t.Errorf("the container got the SIGINT without the signal proxy: %q", logs)
	}
	e.must(t, "rm", "-f", "noproxy")
}

// pause freezes the container's cgroup (as the kernel shows it), ps and
// inspect say so, exec is refused; unpause resumes it; stop and rm -f end
// a paused container.
func TestCLIPauseUnpause(t *testing.T) {
	e := startCLIEnv(t)
	e.must(t, "run", "-d", "--name", "frozen", e.busybox, "sh", "-c", "while :; do date +%s%N > /tmp/tick; sleep 0.05; done")
	cgroup := strings.TrimSpace(e.must(t, "inspect", "-f", "{{.CRI.info.cgroupsPath}}", "frozen"))
	if cgroup == "" {
		t.Fatal("inspect shows no cgroup")
	}
	state := filepath.Join("/sys/fs/cgroup/freezer", cgroup, "freezer.state")
	// The loop runs (its program exec'd) before it is paused.
	e.waitFor(t, func(s string) bool { return s != "" }, "exec", "frozen", "cat", "/tmp/tick")
	if out := e.must(t, "pause", "frozen"); out != "frozen\n" {
		t.Errorf("pause printed %q", out)
	}
	if b, err := os.ReadFile(state); err != nil || strings.TrimSpace(string(b)) != "FROZEN" {
		t.Errorf("%s after pause: %q, %v", state, b, err)
	}
	if ps := e.must(t, "ps", "--filter", "name=frozen", "--format", "{{.Status}}"); !strings.HasSuffix(strings.TrimSpace(ps), "(Paused)") {
		t.Errorf("ps status of a paused container: %q", ps)
	}
	if out := e.must(t, "inspect", "-f", "{{.State.Paused}} {{.State.Status}}", "frozen"); out != "true paused\n" {
		t.Errorf("inspect of a paused container: %q", out)
	}
	if r := e.berth(t, "exec", "frozen", "true"); r.code == 0 || !strings.Contains(r.stderr, "is paused") {
		t.Errorf("exec in a paused container: %+v", r)
	}
	if r := e.berth(t, "pause", "frozen"); r.code != 1 {
		t.Errorf("pause of a paused container: %+v", r)
	}
	e.must(t, "unpause", "frozen")
	if b, _ := os.ReadFile(state); strings.TrimSpace(string(b)) != "THAWED" {
		t.Errorf("%s after unpause: %q", state, b)
	}
	if r := e.berth(t, "unpause", "frozen"); r.code != 1 || !strings.Contains(r.stderr, "not paused") {
		t.Errorf("unpause of a running container: %+v", r)
	}
	e.must(t, "exec", "frozen", "true")
	// A paused container still stops: the stop thaws it.
	e.must(t, "pause", "frozen")
	e.must(t, "stop", "-t", "1", "frozen")
	if ps := e.must(t, "ps", "-a", "--filter", "name=frozen", "--format", "{{.Status}}"); !strings.HasPrefix(ps, "Exited") {
		t.Errorf("a paused container after stop: %q", ps)
	}
	e.must(t, "start", "frozen")
	e.must(t, "pause", "frozen")
	e.must(t, "rm", "-f", "frozen")
}
