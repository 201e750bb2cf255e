package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/berth-dev/berth/test/harness"
)

func condition(st *runtimeapi.RuntimeStatus, typ string) *runtimeapi.RuntimeCondition {
	for _, c := range st.GetConditions() {
		if c.Type == typ {
			return c
		}
	}
	return nil
}

func TestVersionAndStatus(t *testing.T) {
	d := harness.Start(t, bins, harness.Options{})
	ctx := context.Background()

	v, err := d.Runtime.Version(ctx, "v1")
	if err != nil {
		t.Fatalf("Version: %v", err)
	}
	if v.RuntimeName != "berth" || v.RuntimeApiVersion != "v1" || v.RuntimeVersion == "" {
		t.Fatalf("Version = %+v", v)
	}

	st, err := d.Runtime.Status(ctx, true)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if c := condition(st.Status, runtimeapi.RuntimeReady); c == nil || !c.Status {
		t.Fatalf("RuntimeReady = %+v", c)
	}
	// The test daemon's CNI conf dir is empty: the network is not ready and
	// kubelet must be told why.
	if c := condition(st.Status, runtimeapi.NetworkReady); c == nil || c.Status || c.Reason == "" || c.Message == "" {
		t.Fatalf("NetworkReady with no CNI config = %+v", c)
	}

	// crictl info shows the config from the verbose info.
	if !strings.Contains(st.Info["config"], d.CNIConfDir) {
		t.Errorf("verbose Status info lacks the config: %v", st.Info)
	}

	// The root dir is private; the state dir is searchable but not
	// listable, as containerd's is, so that a user-namespace container's
	// root (an unprivileged host uid) reaches its rootfs.
	for dir, want := range map[string]os.FileMode{d.Root: 0o700, d.State: 0o711} {
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", dir, fi.Mode().Perm(), want)
		}
	}
	fi, err := os.Stat(d.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket mode %v, want socket 0660", fi.Mode())
	}
}

// Checkpointing is not built: the CRI call says so with Unimplemented.
func TestCheckpointIsUnimplemented(t *testing.T) {
	d := harness.Start(t, bins, harness.Options{})
	err := d.Runtime.CheckpointContainer(context.Background(), &runtimeapi.CheckpointContainerRequest{ContainerId: "x"})
	if err == nil || !strings.Contains(err.Error(), "Unimplemented") || !strings.Contains(err.Error(), "checkpoint") {
		t.Fatalf("Checkpoint: want Unimplemented with a reason, got %v", err)
	}
}

func TestSecondDaemonOnLiveSocketRefused(t *testing.T) {
	d := harness.Start(t, bins, harness.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, d.Bins.Berthd, "--config", d.ConfigPath, "--root", d.Root, "--state", d.State, "--socket", d.Socket).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "served by a running berthd") {
		t.Fatalf("second berthd on a live socket: err=%v out=%s", err, out)
	}
	// The first one still answers.
	if _, err := d.Runtime.Version(ctx, "v1"); err != nil {
		t.Fatalf("first berthd stopped answering: %v", err)
	}
}

func TestStaleSocketReplacedAndRestart(t *testing.T) {
	d := harness.Start(t, bins, harness.Options{})
	// A crash leaves the socket file behind; the next start must replace it.
	d.Restart(t, true)
	if _, err := os.Stat(d.Socket); err != nil {
		t.Fatalf("socket after restart: %v", err)
	}
	if _, err := d.Runtime.Version(context.Background(), "v1"); err != nil {
		t.Fatalf("Version after crash restart: %v", err)
	}
}

func TestDefaultConfigRoundTrip(t *testing.T) {
	out, err := exec.Command(bins.Berthd, "config", "default").Output()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.toml")
	// Point the printed default at temporary dirs, changing nothing else.
	cfg := strings.NewReplacer("/var/lib/berth", filepath.Join(filepath.Dir(path), "root"), "/run/berth", filepath.Join(filepath.Dir(path), "run")).Replace(string(out))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bins.Berthd, "--config", path)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	sock := filepath.Join(filepath.Dir(path), "run", "berth.sock")
	ok := false
	for i := 0; i < 300 && !ok; i++ {
		if _, err := os.Stat(sock); err == nil {
			ok = true
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !ok {
		t.Fatalf("berthd with the printed default config did not create its socket")
	}
	if out, err := exec.Command(bins.Berth, "--host", "unix://"+sock, "version").CombinedOutput(); err != nil || !strings.Contains(string(out), "Server: berth") {
		t.Fatalf("berth version against it: %v\n%s", err, out)
	}
}

func TestUnknownConfigKeyRejected(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(path, []byte("[cni]\nbin_dir = []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bins.Berthd, "--config", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "cni.bin_dir") {
		t.Fatalf("unknown key: err=%v out=%s", err, out)
	}
}

func TestCLIVersionAndMissingDaemon(t *testing.T) {
	d := harness.Start(t, bins, harness.Options{})
	// BERTH_HOST picks the socket.
	cmd := exec.Command(bins.Berth, "version")
	cmd.Env = append(os.Environ(), "BERTH_HOST="+d.Endpoint())
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Server: berth") || !strings.Contains(string(out), "Client:") {
		t.Fatalf("berth version via BERTH_HOST: %v\n%s", err, out)
	}
	missing := filepath.Join(t.TempDir(), "none.sock")
	out, err = exec.Command(bins.Berth, "--host", "unix://"+missing, "version").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Is berthd running?") {
		t.Fatalf("missing daemon: err=%v\n%s", err, out)
	}
}

func TestNetworkReadyFollowsCNIConfig(t *testing.T) {
	d := harness.Start(t, bins, harness.Options{})
	ctx := context.Background()
	networkReady := func() *runtimeapi.RuntimeCondition {
		t.Helper()
		st, err := d.Runtime.Status(ctx, false)
		if err != nil {
			t.Fatalf("Status: %v", err)
		}
		return condition(st.Status, runtimeapi.NetworkReady)
	}
	if c := networkReady(); c.Status {
		t.Fatalf("NetworkReady before any config: %+v", c)
	}
	out, err := exec.Command(bins.Berthd, "config", "cni-default").Output()
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(d.CNIConfDir, "10-berth.conflist")
	if err := os.WriteFile(conf, out, 0o644); err != nil {
		t.Fatal(err)
	}
	if c := networkReady(); !c.Status {
		t.Fatalf("NetworkReady after the default conflist appeared: %+v", c)
	}
	if err := os.Remove(conf); err != nil {
		t.Fatal(err)
	}
	if c := networkReady(); c.Status {
		t.Fatalf("NetworkReady after the config went: %+v", c)
	}
}
