package container

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/runtime/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// shim is the berth-shim binary built by TestMain.
var shim string

func TestMain(m *testing.M) {
	if os.Getuid() != 0 {
		fmt.Println("skipping: the container tests need root")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "berth-test-shim")
	if err != nil {
		panic(err)
	}
	shim = filepath.Join(dir, "berth-shim")
	out, err := exec.Command("go", "build", "-o", shim, "github.com/berth-dev/berth/cmd/berth-shim").CombinedOutput()
	if err != nil {
		fmt.Printf("build berth-shim: %v\n%s", err, out)
		os.Exit(1)
	}
	// Like the monitor: the container process is a grandchild and must be
	// re-parented to us when init's first stage exits.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// busyboxRootfs makes a rootfs with static busybox and its applets.
func busyboxRootfs(t testing.TB) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "rootfs")
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp", "root"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("busybox-static is not installed: %v", err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin/busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	list, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range strings.Fields(string(list)) {
		if name != "busybox" {
			os.Symlink("busybox", filepath.Join(root, "bin", name))
		}
	}
	write := func(p, s string) {
		if err := os.WriteFile(filepath.Join(root, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\nuser:x:1000:1000:user:/tmp:/bin/sh\n")
	write("etc/group", "root:x:0:\nnobody:x:65534:\nuser:x:1000:\nextra:x:2000:\n")
	return root
}

var defaultCaps = seccomp.DockerDefaultCapabilities

// testSpec is close to what containerd's CRI plugin builds for a pod
// container with the RuntimeDefault seccomp profile.
func testSpec(rootfs string, args ...string) *specs.Spec {
	caps := append([]string(nil), defaultCaps...)
	return &specs.Spec{
		Version:  specs.Version,
		Root:     &specs.Root{Path: rootfs},
		Hostname: "berth-test-host",
		Process: &specs.Process{
			Args:            args,
			Env:             []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"},
			Cwd:             "/",
			NoNewPrivileges: true,
			Capabilities: &specs.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			Rlimits: []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 1024, Hard: 1024}},
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace},
			},
			Seccomp: seccomp.DefaultProfile(),
			MaskedPaths: []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/sys/devices/virtual/powercap", "/proc/scsi"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
}

// ctr is a container started the way the monitor starts one.
type ctr struct {
	t      testing.TB
	bundle string
	pid    int
	stdout *os.File
	sync   *bufio.Reader
	out    bytes.Buffer
	done   bool
	status unix.WaitStatus
}

// create runs `berth-shim init` and waits for "created" (or an error).
func create(t testing.TB, spec *specs.Spec, opts ...func(*exec.Cmd)) (*ctr, error) {
	t.Helper()
	bundle := t.TempDir()
	b, _ := json.Marshal(spec)
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(bundle, ExecFifo), 0o600); err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	syncR, syncW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(shim, "init", "--bundle", bundle)
	cmd.Stdout, cmd.Stderr = outW, outW
	cmd.ExtraFiles = []*os.File{syncW}
	for _, o := range opts {
		o(cmd)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	outW.Close()
	syncW.Close()
	c := &ctr{t: t, bundle: bundle, stdout: outR, sync: bufio.NewReader(syncR)}
	t.Cleanup(c.kill)
	var result error
	for {
		m, err := c.next()
		if err != nil {
			result = fmt.Errorf("sync pipe: %w", err)
			break
		}
		if m.Type == "pid" {
			c.pid = m.Pid
			continue
		}
		if m.Type == "error" {
			result = &syncError{m}
		}
		break
	}
	werr := cmd.Wait()
	if result == nil && werr != nil {
		result = fmt.Errorf("init exited: %w", werr)
	}
	return c, result
}

type syncError struct{ m SyncMessage }

func (e *syncError) Error() string { return fmt.Sprintf("%s (code %d)", e.m.Message, e.m.Code) }

func (c *ctr) next() (SyncMessage, error) {
	line, err := c.sync.ReadBytes('\n')
	if err != nil {
		return SyncMessage{}, err
	}
	var m SyncMessage
	err = json.Unmarshal(line, &m)
	return m, err
}

// start opens the FIFO for reading, releasing the container process.
func (c *ctr) start() {
	c.t.Helper()
	f, err := os.OpenFile(filepath.Join(c.bundle, ExecFifo), os.O_RDONLY, 0)
	if err != nil {
		c.t.Fatal(err)
	}
	io.ReadAll(f)
	f.Close()
}

// wait collects the container's output until it exits.
func (c *ctr) wait() (string, unix.WaitStatus) {
	c.t.Helper()
	io.Copy(&c.out, c.stdout)
	if _, err := unix.Wait4(c.pid, &c.status, 0, nil); err != nil {
		c.t.Fatalf("wait4 %d: %v", c.pid, err)
	}
	c.done = true
	return c.out.String(), c.status
}

// run is create + start + wait, failing the test on a create error.
func run(t *testing.T, spec *specs.Spec) string {
	t.Helper()
	c, err := create(t, spec)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	c.start()
	out, st := c.wait()
	if st.ExitStatus() != 0 {
		t.Fatalf("container exited with %v; output:\n%s", st, out)
	}
	return out
}

func (c *ctr) kill() {
	if c.pid > 0 && !c.done {
		unix.Kill(c.pid, unix.SIGKILL)
		unix.Wait4(c.pid, &c.status, 0, nil)
		c.done = true
	}
	c.stdout.Close()
}
