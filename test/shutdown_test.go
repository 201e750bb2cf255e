package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	criclient "k8s.io/cri-client/pkg"

	"github.com/berth-dev/berth/test/harness"
)

// SIGTERM: a call in flight finishes (or fails with a status, never
// hangs), berthd exits, and the pod's containers keep running; the next
// berthd finds them as they were.
func TestGracefulShutdownKeepsContainers(t *testing.T) {
	e := startIsolatedPodEnv(t, harness.Options{})
	ctx := context.Background()
	podCfg := podConfig(t, "term")
	podID := e.runPod(t, podCfg)
	id := e.startContainer(t, podID, podCfg, e.containerConfig("c", "sh", "-c", "echo up; exec sleep 1000"))
	waitLog(t, logPathOf(t, e, id), "up")
	pid := containerPid(t, e, id)

	// Its own connection: the harness closes its clients before it signals.
	client, err := criclient.NewRemoteRuntimeService(ctx, e.d.Endpoint(), time.Minute, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		out []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, _, err := client.ExecSync(ctx, id, []string{"sh", "-c", "touch /tmp/inflight; sleep 1; echo finished"}, 30*time.Second)
		done <- result{out, err}
	}()
	marker := fmt.Sprintf("/proc/%d/root/tmp/inflight", pid)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the exec never started")
		}
	}
	e.d.Stop(t) // SIGTERM, and waits for berthd to exit
	select {
	case r := <-done:
		if r.err == nil && string(r.out) != "finished\n" {
			t.Errorf("in-flight exec returned %q", r.out)
		}
		t.Logf("in-flight exec across SIGTERM: out %q err %v", r.out, r.err)
	case <-time.After(time.Minute):
		t.Fatal("the in-flight exec hangs after berthd exited")
	}
	client.Close(ctx)

	// The container and its monitor outlive berthd.
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("container process %d after berthd's exit: %v", pid, err)
	}
	if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(st), ") Z ") {
		t.Fatalf("container process %d is a zombie", pid)
	}
	monitorPid(t, e, podID)

	e.d.Restart(t, false)
	e.checkContainerWorks(t, id, "up")
	if got := containerPid(t, e, id); got != pid {
		t.Errorf("container pid after the restart %d, want %d", got, pid)
	}
	e.removePodChecked(t, podID)
}

// A read-only record dir and a full disk make the create fail with the
// system's error, roll the create back, and leave no record, whole or
// half; once the disk is writable again the same create works.
func TestReadOnlyAndFullStateDir(t *testing.T) {
	e := startIsolatedPodEnv(t, harness.Options{})
	ctx := context.Background()
	podCfg := podConfig(t, "rofull")
	podID := e.runPod(t, podCfg)
	recDir := filepath.Join(e.d.Root, "containers")
	cfg := e.containerConfig("c", "sh", "-c", "echo alive; exec sleep 1000")

	createWorks := func() {
		t.Helper()
		id, err := e.d.Runtime.CreateContainer(ctx, podID, cfg, podCfg)
		if err != nil {
			t.Fatalf("CreateContainer on a writable disk: %v", err)
		}
		if err := e.d.Runtime.StartContainer(ctx, id); err != nil {
			t.Fatal(err)
		}
		e.checkContainerWorks(t, id, "alive")
		if err := e.d.Runtime.RemoveContainer(ctx, id); err != nil {
			t.Fatal(err)
		}
		assertNoContainerLeaks(t, e)
	}

	t.Run("read-only", func(t *testing.T) {
		unmount := mountOver(t, recDir, func() error {
			if err := syscall.Mount(recDir, recDir, "", syscall.MS_BIND, ""); err != nil {
				return err
			}
			return syscall.Mount("", recDir, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, "")
		})
		_, err := e.d.Runtime.CreateContainer(ctx, podID, cfg, podCfg)
		if err == nil || !strings.Contains(err.Error(), "read-only file system") {
			t.Fatalf("CreateContainer with a read-only record dir: %v", err)
		}
		assertNoContainerLeaks(t, e)
		unmount()
		createWorks()
	})

	t.Run("full", func(t *testing.T) {
		unmount := mountOver(t, recDir, func() error {
			return syscall.Mount("tmpfs", recDir, "tmpfs", 0, "size=64k,mode=0700")
		})
		filler := filepath.Join(recDir, "filler")
		fillDisk(t, filler)
		_, err := e.d.Runtime.CreateContainer(ctx, podID, cfg, podCfg)
		if err == nil || !strings.Contains(err.Error(), "no space left on device") {
			t.Fatalf("CreateContainer on a full disk: %v", err)
		}
		if ents, _ := os.ReadDir(recDir); len(ents) != 1 {
			t.Fatalf("a failed write left %v beside the filler", ents)
		}
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		assertNoContainerLeaks(t, e)
		createWorks()
		unmount()
	})

	t.Run("pod records read-only", func(t *testing.T) {
		podDir := filepath.Join(e.d.Root, "pods")
		unmount := mountOver(t, podDir, func() error {
			if err := syscall.Mount(podDir, podDir, "", syscall.MS_BIND, ""); err != nil {
				return err
			}
			return syscall.Mount("", podDir, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, "")
		})
		other := podConfig(t, "rofull2")
		if _, err := e.d.Runtime.RunPodSandbox(ctx, other, ""); err == nil || !strings.Contains(err.Error(), "read-only file system") {
			t.Fatalf("RunPodSandbox with a read-only record dir: %v", err)
		}
		if pods := e.podsWithUID(t, other.Metadata.Uid); len(pods) != 0 {
			t.Fatalf("a failed RunPodSandbox left %+v", pods)
		}
		unmount()
	})

	// The store reloads whole after a crash: the pod is there, and only it.
	e.d.Restart(t, true)
	pods, err := e.d.Runtime.ListPodSandbox(ctx, nil)
	if err != nil || len(pods) != 1 || pods[0].Id != podID {
		t.Fatalf("pods after the restart: %+v %v", pods, err)
	}
	if cs := e.containersOf(t, podID); len(cs) != 0 {
		t.Fatalf("containers after the restart: %+v", cs)
	}
	e.removePodChecked(t, podID)
}

// mountOver runs mount (which mounts something on dir) and returns a func
// that unmounts it; the unmount also runs at cleanup if the test fails
// before.
func mountOver(t *testing.T, dir string, mount func() error) (unmount func()) {
	t.Helper()
	if err := mount(); err != nil {
		t.Fatalf("mount over %s: %v", dir, err)
	}
	done := false
	unmount = func() {
		if done {
			return
		}
		done = true
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	}
	t.Cleanup(unmount)
	return unmount
}

// fillDisk writes path until its file system is full.
func fillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", path, err)
			}
			return
		}
	}
}
