package imageservice_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/imageservice"
	"github.com/berth-dev/berth/test/testimages"
	"github.com/berth-dev/berth/test/testregistry"
)

// TestKillMidPull kills (SIGKILL) a process in the middle of a pull, with
// some layers unpacked and one half downloaded, and checks that the next New
// leaves nothing behind: no temp files, no unreferenced snapshots or blobs.
func TestKillMidPull(t *testing.T) {
	if root := os.Getenv("BERTH_TEST_CHILD_ROOT"); root != "" {
		// The child: pull until killed.
		s, err := imageservice.New(context.Background(), imageservice.Config{Root: root})
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Pull(context.Background(), os.Getenv("BERTH_TEST_CHILD_REF"), nil, nil)
		t.Fatalf("pull returned: %v", err)
	}
	requireRoot(t)
	reg := testregistry.Start(t, testregistry.Options{})
	img, _, err := testimages.MultiLayer()
	if err != nil {
		t.Fatal(err)
	}
	reg.MustPush(t, "test/multi:latest", img)
	layers, _ := img.Layers()
	big, _ := layers[0].Digest() // busybox: stall it half way
	reg.StallBlobs(200<<10, big.String())

	root := filepath.Join(t.TempDir(), "images")
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillMidPull$", "-test.v")
	cmd.Env = append(os.Environ(), "BERTH_TEST_CHILD_ROOT="+root, "BERTH_TEST_CHILD_REF="+reg.Ref("test/multi:latest"))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })

	// Wait until the three small layers are unpacked and the big one is
	// partly on disk.
	ready := func() bool {
		snaps, _ := os.ReadDir(filepath.Join(root, "snapshots"))
		tmp, _ := os.ReadDir(filepath.Join(root, "tmp"))
		partial := false
		for _, e := range tmp {
			if fi, err := e.Info(); err == nil && strings.HasPrefix(e.Name(), "blob-") && fi.Size() > 0 {
				partial = true
			}
		}
		return len(snaps) == 3 && partial
	}
	for !ready() {
		select {
		case err := <-exited:
			t.Fatalf("child exited early: %v\n%s", err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := cmd.Process.Signal(os.Kill); err != nil {
		t.Fatal(err)
	}
	<-exited

	s := newService(t, imageservice.Config{Root: root})
	for _, d := range []string{"tmp", "snapshots", "blobs/sha256"} {
		ents, err := os.ReadDir(filepath.Join(root, d))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 0 {
			t.Errorf("%s: %d entries left after restart", d, len(ents))
		}
	}
	// And the pull works now.
	reg.SetStall(false)
	if _, err := s.Pull(context.Background(), reg.Ref("test/multi:latest"), nil, nil); err != nil {
		t.Fatal(err)
	}
}
