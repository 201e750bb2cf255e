package runtime

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/errdefs"
)

// Pause freezes the container's cgroup (as the kernel's freezer shows it);
// exec is refused while paused; Resume thaws it; a kill of a paused
// container still ends it (the freezer holds signals until thawed).
func TestPauseResume(t *testing.T) {
	p := startTestPod(t, true, false)
	ctx := context.Background()
	cgroup := testCgroup("paused")
	state := filepath.Join("/sys/fs/cgroup/freezer", cgroup, "freezer.state")
	if !dirExists("/sys/fs/cgroup/freezer") {
		t.Skip("no v1 freezer hierarchy")
	}
	p.create("paused", testSpec("sleep", "1000"), CreateOptions{CgroupPath: cgroup})
	if err := p.r.Pause(ctx, "paused"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Pause of a created container: %v, want FailedPrecondition", err)
	}
	if err := p.r.Start(ctx, "paused"); err != nil {
		t.Fatal(err)
	}
	if err := p.r.Resume(ctx, "paused"); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Resume of a running container: %v, want FailedPrecondition", err)
	}
	// Pause the program, not berth's init on its way to exec it.
	st, err := p.r.State(ctx, "paused")
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		if comm, _ := os.ReadFile("/proc/" + itoa(st.Pid) + "/comm"); strings.TrimSpace(string(comm)) == "sleep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the container never exec'd sleep")
		}
	}
	if err := p.r.Pause(ctx, "paused"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(state); err != nil || strings.TrimSpace(string(b)) != "FROZEN" {
		t.Errorf("freezer.state after Pause: %q, %v", b, err)
	}
	if paused, err := p.r.Paused(ctx, "paused"); err != nil || !paused {
		t.Errorf("Paused = %v, %v", paused, err)
	}
	if _, err := p.r.Exec(ctx, "paused", ExecOptions{Process: &specs.Process{Args: []string{"true"}, Cwd: "/"}}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Exec in a paused container: %v, want FailedPrecondition", err)
	}
	if err := p.r.Resume(ctx, "paused"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(state); strings.TrimSpace(string(b)) != "THAWED" {
		t.Errorf("freezer.state after Resume: %q", b)
	}
	if code, err := p.r.Exec(ctx, "paused", ExecOptions{Process: &specs.Process{Args: []string{"true"}, Cwd: "/"}}); err != nil || code != 0 {
		t.Errorf("Exec after Resume = %d, %v", code, err)
	}
	if err := p.r.Pause(ctx, "paused"); err != nil {
		t.Fatal(err)
	}
	if err := p.r.Kill(ctx, "paused", syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, err = p.r.Wait(wctx, "paused")
	if err != nil || st.Status != StatusStopped || st.Signal != int(syscall.SIGKILL) {
		t.Errorf("Wait after killing the paused container: %+v, %v", st, err)
	}
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
