package imageservice_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/imageservice"
	"github.com/berth-dev/berth/test/testimages"
	"github.com/berth-dev/berth/test/testregistry"
)

func requireRoot(t testing.TB) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (mknod, chown, overlay mounts)")
	}
}

func newService(t testing.TB, cfg imageservice.Config) *imageservice.Service {
	t.Helper()
	requireRoot(t)
	if cfg.Root == "" {
		cfg.Root = filepath.Join(t.TempDir(), "images")
	}
	s, err := imageservice.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func busybox(t testing.TB) v1.Image {
	t.Helper()
	img, err := testimages.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func configDigest(t testing.TB, img v1.Image) string {
	t.Helper()
	h, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

func TestPullByTagDigestAndIndex(t *testing.T) {
	ctx := context.Background()
	reg := testregistry.Start(t, testregistry.Options{})
	s := newService(t, imageservice.Config{})
	bb := busybox(t)
	want := configDigest(t, bb)
	byDigest := reg.MustPush(t, "test/busybox:latest", bb)

	var mu sync.Mutex
	var events []imageservice.Progress
	img, err := s.Pull(ctx, reg.Ref("test/busybox"), nil, func(p imageservice.Progress) {
		mu.Lock()
		events = append(events, p)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if img.ID != want {
		t.Fatalf("ID %s, want %s", img.ID, want)
	}
	if len(img.RepoTags) != 1 || img.RepoTags[0] != reg.Ref("test/busybox:latest") {
		t.Errorf("RepoTags %v", img.RepoTags)
	}
	if len(img.RepoDigests) != 1 || img.RepoDigests[0] != byDigest {
		t.Errorf("RepoDigests %v, want %s", img.RepoDigests, byDigest)
	}
	if len(img.Config.Cmd) != 1 || img.Config.Cmd[0] != "sh" || img.Config.Env[0] != testimages.DefaultPath {
		t.Errorf("config %+v", img.Config)
	}
	layers, _ := bb.Layers()
	ld, _ := layers[0].Digest()
	var sawBytes bool
	for _, e := range events {
		if e.Digest == ld.String() && e.Status == imageservice.ProgressDownloading && e.Done > 0 {
			sawBytes = true
		}
	}
	if !sawBytes {
		t.Errorf("no download progress for layer %s in %d events", ld, len(events))
	}

	// The same image by ID, prefix, tag and digest.
	for _, key := range []string{img.ID, strings.TrimPrefix(img.ID, "sha256:")[:12], reg.Ref("test/busybox:latest"), byDigest} {
		got, err := s.Get(ctx, key)
		if err != nil || got.ID != want {
			t.Errorf("Get(%s): %v %v", key, got, err)
		}
	}
	if _, err := s.Get(ctx, "nothere:latest"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Get absent: %v", err)
	}

	// By digest, into a fresh store.
	s2 := newService(t, imageservice.Config{})
	img2, err := s2.Pull(ctx, byDigest, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if img2.ID != want || len(img2.RepoTags) != 0 {
		t.Errorf("by digest: %s tags %v", img2.ID, img2.RepoTags)
	}

	// Through an index whose first entry is another platform's.
	idx, err := testimages.Index(bb)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.PushIndex(ctx, "test/multiarch:v1", idx); err != nil {
		t.Fatal(err)
	}
	s3 := newService(t, imageservice.Config{})
	img3, err := s3.Pull(ctx, reg.Ref("test/multiarch:v1"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if img3.ID != want {
		t.Errorf("index pull picked %s, want %s", img3.ID, want)
	}
	idxDigest, _ := idx.Digest()
	if img3.RepoDigests[0] != reg.Ref("test/multiarch@"+idxDigest.String()) {
		t.Errorf("index repo digest %v", img3.RepoDigests)
	}

	// Docker schema 2 media types.
	dk, err := testimages.Docker(bb)
	if err != nil {
		t.Fatal(err)
	}
	reg.MustPush(t, "test/docker:v2", dk)
	img4, err := s3.Pull(ctx, reg.Ref("test/docker:v2"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if img4.ID != configDigest(t, dk) {
		t.Errorf("docker pull ID %s", img4.ID)
	}
}

func TestPullBasicAuth(t *testing.T) {
	ctx := context.Background()
	reg := testregistry.Start(t, testregistry.Options{Username: "berth", Password: "s3cret"})
	s := newService(t, imageservice.Config{})
	reg.MustPush(t, "test/private:latest", busybox(t))

	if _, err := s.Pull(ctx, reg.Ref("test/private:latest"), nil, nil); err == nil {
		t.Fatal("pull without credentials succeeded")
	}
	if _, err := s.Pull(ctx, reg.Ref("test/private:latest"), &imageservice.Auth{Username: "berth", Password: "wrong"}, nil); err == nil {
		t.Fatal("pull with a wrong password succeeded")
	}
	img, err := s.Pull(ctx, reg.Ref("test/private:latest"), &imageservice.Auth{Username: "berth", Password: "s3cret"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if img.ID != configDigest(t, busybox(t)) {
		t.Errorf("ID %s", img.ID)
	}
}

// writeHosts writes <dir>/<upstream>/hosts.toml with the mirrors in order.
func writeHosts(t *testing.T, upstream string, mirrors ...string) string {
	t.Helper()
	dir := t.TempDir()
	var b strings.Builder
	fmt.Fprintf(&b, "server = \"http://%s\"\n", upstream)
	for _, m := range mirrors {
		fmt.Fprintf(&b, "\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", m)
	}
	if err := os.MkdirAll(filepath.Join(dir, upstream), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, upstream, "hosts.toml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestMirrorFallback(t *testing.T) {
	ctx := context.Background()
	upstream := testregistry.Start(t, testregistry.Options{})
	mirror1 := testregistry.Start(t, testregistry.Options{}) // lacks the image
	mirror2 := testregistry.Start(t, testregistry.Options{}) // has it
	bb := busybox(t)
	upstream.MustPush(t, "test/busybox:latest", bb)
	mirror2.MustPush(t, "test/busybox:latest", bb)
	upstream.ResetCounts()
	mirror2.ResetCounts()

	dir := writeHosts(t, upstream.Host, mirror1.Host, mirror2.Host)
	s := newService(t, imageservice.Config{RegistryConfigPath: dir})
	img, err := s.Pull(ctx, upstream.Ref("test/busybox:latest"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if img.ID != configDigest(t, bb) {
		t.Errorf("ID %s", img.ID)
	}
	layers, _ := bb.Layers()
	ld, _ := layers[0].Digest()
	if n := mirror2.BlobGets(ld.String()); n != 1 {
		t.Errorf("second mirror served the layer %d times, want 1", n)
	}
	if n := mirror1.Count("GET", "/v2/test/busybox/manifests/latest"); n != 1 {
		t.Errorf("first mirror asked %d times, want 1", n)
	}
	if c := upstream.Counts(); len(c) != 0 {
		t.Errorf("upstream was asked although a mirror had it: %v", c)
	}

	// A dead mirror and an empty one: the upstream serves.
	dead := "127.0.0.1:1"
	dir2 := writeHosts(t, upstream.Host, dead, mirror1.Host)
	s2 := newService(t, imageservice.Config{RegistryConfigPath: dir2})
	if _, err := s2.Pull(ctx, upstream.Ref("test/busybox:latest"), nil, nil); err != nil {
		t.Fatal(err)
	}
	if n := upstream.BlobGets(ld.String()); n != 1 {
		t.Errorf("upstream served the layer %d times, want 1", n)
	}
}

func TestStalledRegistry(t *testing.T) {
	ctx := context.Background()
	stalled := testregistry.Start(t, testregistry.Options{})
	good := testregistry.Start(t, testregistry.Options{})
	bb := busybox(t)
	stalled.MustPush(t, "test/busybox:latest", bb)
	good.MustPush(t, "test/busybox:latest", bb)
	stalled.SetStall(true)

	// Alone, the stalled host fails the pull, and the error names it.
	s := newService(t, imageservice.Config{PullProgressTimeout: 300 * time.Millisecond})
	_, err := s.Pull(ctx, stalled.Ref("test/busybox:latest"), nil, nil)
	if err == nil {
		t.Fatal("pull from a stalled registry succeeded")
	}
	if !strings.Contains(err.Error(), stalled.Host) || !errors.Is(err, errdefs.ErrDeadlineExceeded) {
		t.Fatalf("error does not name the stalled host %s as stalled: %v", stalled.Host, err)
	}
	t.Logf("stalled: %v", err)

	// Stalled in the middle of a layer, while it is being unpacked.
	layers, _ := bb.Layers()
	ld, _ := layers[0].Digest()
	stalled.StallBlobs(100<<10, ld.String())
	_, err = s.Pull(ctx, stalled.Ref("test/busybox:latest"), nil, nil)
	if err == nil || !strings.Contains(err.Error(), stalled.Host) || !errors.Is(err, errdefs.ErrDeadlineExceeded) {
		t.Fatalf("mid-layer stall: %v", err)
	}
	t.Logf("stalled mid-layer: %v", err)
	stalled.SetStall(true)

	// As a mirror, the stalled host is abandoned for the upstream.
	dir := writeHosts(t, good.Host, stalled.Host)
	s2 := newService(t, imageservice.Config{RegistryConfigPath: dir, PullProgressTimeout: 300 * time.Millisecond})
	img, err := s2.Pull(ctx, good.Ref("test/busybox:latest"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if img.ID != configDigest(t, bb) {
		t.Errorf("ID %s", img.ID)
	}
}

func TestConcurrentPullsFetchEachBlobOnce(t *testing.T) {
	ctx := context.Background()
	reg := testregistry.Start(t, testregistry.Options{})
	img, _, err := testimages.MultiLayer()
	if err != nil {
		t.Fatal(err)
	}
	reg.MustPush(t, "test/multi:latest", img)
	reg.ResetCounts()
	s := newService(t, imageservice.Config{})

	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.Pull(ctx, reg.Ref("test/multi:latest"), nil, nil)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	m, _ := img.Manifest()
	blobs := []string{m.Config.Digest.String()}
	for _, l := range m.Layers {
		blobs = append(blobs, l.Digest.String())
	}
	for _, b := range blobs {
		if n := reg.BlobGets(b); n != 1 {
			t.Errorf("blob %s fetched %d times, want 1", b, n)
		}
	}
}

func TestRemoveAndTags(t *testing.T) {
	ctx := context.Background()
	reg := testregistry.Start(t, testregistry.Options{})
	s := newService(t, imageservice.Config{})
	bb := busybox(t)
	other, err := testimages.WithConfig(bb, func(c *v1.Config) { c.User = "1000"; c.Entrypoint = []string{"/bin/echo"} })
	if err != nil {
		t.Fatal(err)
	}
	reg.MustPush(t, "test/a:v1", bb)
	reg.MustPush(t, "test/a:v2", bb)
	if _, err := s.Pull(ctx, reg.Ref("test/a:v1"), nil, nil); err != nil {
		t.Fatal(err)
	}
	img, err := s.Pull(ctx, reg.Ref("test/a:v2"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(img.RepoTags) != 2 {
		t.Fatalf("tags %v", img.RepoTags)
	}
	// The tag v1 moves to a newly pulled image.
	reg.MustPush(t, "test/a:v1", other)
	moved, err := s.Pull(ctx, reg.Ref("test/a:v1"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if moved.Config.User != "1000" || moved.ID == img.ID {
		t.Fatalf("moved image %+v", moved)
	}
	old, err := s.Get(ctx, img.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(old.RepoTags) != 1 || old.RepoTags[0] != reg.Ref("test/a:v2") {
		t.Errorf("old image tags %v", old.RepoTags)
	}
	all, _ := s.List(ctx, "")
	if len(all) != 2 {
		t.Errorf("List: %d images", len(all))
	}
	if l, _ := s.List(ctx, reg.Ref("test/a:v1")); len(l) != 1 || l[0].ID != moved.ID {
		t.Errorf("List filter: %v", l)
	}
	// Remove by tag untags; by ID removes; absent is fine.
	if err := s.Remove(ctx, reg.Ref("test/a:v2")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, img.ID); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("last tag removed, image still there: %v", err)
	}
	if err := s.Remove(ctx, moved.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, moved.ID); err != nil {
		t.Errorf("removing an absent image: %v", err)
	}
	if all, _ := s.List(ctx, ""); len(all) != 0 {
		t.Errorf("%d images left", len(all))
	}
}

func TestFsInfoGrowsAndShrinks(t *testing.T) {
	ctx := context.Background()
	reg := testregistry.Start(t, testregistry.Options{})
	s := newService(t, imageservice.Config{})
	img, _, err := testimages.MultiLayer()
	if err != nil {
		t.Fatal(err)
	}
	reg.MustPush(t, "test/multi:latest", img)
	before, err := s.FsInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := s.Pull(ctx, reg.Ref("test/multi:latest"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	after, err := s.FsInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.UsedBytes < before.UsedBytes+2<<20 || after.InodesUsed < before.InodesUsed+300 {
		t.Errorf("usage after pull: %+v, before %+v", after, before)
	}
	if err := s.Remove(ctx, pulled.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	gone, err := s.FsInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if gone.UsedBytes != before.UsedBytes || gone.InodesUsed != before.InodesUsed {
		t.Errorf("usage after remove+gc: %+v, before pull %+v", gone, before)
	}
}

func TestCrashLeftoversCleaned(t *testing.T) {
	root := filepath.Join(t.TempDir(), "images")
	s := newService(t, imageservice.Config{Root: root})
	s.Close()
	// What a kill -9 mid-pull leaves: partial blob and snapshot in tmp/, and
	// a finished snapshot no image record references yet.
	junk := []string{
		filepath.Join(root, "tmp", "blob-123"),
		filepath.Join(root, "tmp", "snap-456", "file"),
		filepath.Join(root, "snapshots", strings.Repeat("ab", 32), "file"),
		filepath.Join(root, "blobs", "sha256", strings.Repeat("cd", 32)),
	}
	for _, j := range junk {
		if err := os.MkdirAll(filepath.Dir(j), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(j, []byte("partial"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	newService(t, imageservice.Config{Root: root})
	for _, j := range junk {
		if _, err := os.Stat(j); !os.IsNotExist(err) {
			t.Errorf("%s survived a restart: %v", j, err)
		}
	}
}

func TestMaliciousLayerPull(t *testing.T) {
	ctx := context.Background()
	reg := testregistry.Start(t, testregistry.Options{})
	s := newService(t, imageservice.Config{})
	base := t.TempDir()
	sentinel := filepath.Join(base, "sentinel")
	if err := os.Mkdir(sentinel, 0o755); err != nil {
		t.Fatal(err)
	}
	corpus := map[string][]testimages.File{
		"dotdot":        {{Name: "../../../../../../../../" + sentinel + "/pwned", Mode: 0o644, Content: []byte("x")}},
		"symlink-write": {{Name: "evil", Type: tar.TypeSymlink, Linkname: sentinel}, {Name: "evil/pwned", Mode: 0o644, Content: []byte("x")}},
		"hardlink":      {{Name: "hl", Type: tar.TypeLink, Linkname: "/etc/passwd"}},
		"whiteout":      {{Name: "wd", Type: tar.TypeSymlink, Linkname: sentinel}, {Name: "wd/.wh.pwned", Mode: 0o644}},
	}
	for name, files := range corpus {
		l, err := testimages.Layer(files, testimages.Gzip)
		if err != nil {
			t.Fatal(err)
		}
		img, err := testimages.NewImage([]v1.Layer{l}, v1.Config{})
		if err != nil {
			t.Fatal(err)
		}
		reg.MustPush(t, "test/evil-"+name+":latest", img)
		_, err = s.Pull(ctx, reg.Ref("test/evil-"+name+":latest"), nil, nil)
		t.Logf("%s: %v", name, err)
		if err == nil {
			t.Errorf("%s: malicious layer pulled without error", name)
		}
		if ents, _ := os.ReadDir(sentinel); len(ents) != 0 {
			t.Errorf("%s: wrote %d entries outside the root", name, len(ents))
		}
	}
}

func TestPrepareRootfsMultiLayer(t *testing.T) {
	ctx := context.Background()
	reg := testregistry.Start(t, testregistry.Options{})
	s := newService(t, imageservice.Config{})
	img, tree, err := testimages.MultiLayer()
	if err != nil {
		t.Fatal(err)
	}
	reg.MustPush(t, "test/multi:latest", img)
	pulled, err := s.Pull(ctx, reg.Ref("test/multi:latest"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	const id = "berth-test-ctr1"
	t.Cleanup(func() { s.RemoveRootfs(context.Background(), id) })
	rootfs, err := s.PrepareRootfs(ctx, id, pulled.ID)
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.PrepareRootfs(ctx, id, pulled.ID)
	if err != nil || again != rootfs {
		t.Fatalf("second PrepareRootfs: %s %v", again, err)
	}
	checkTree(t, rootfs, tree)

	// A write goes to the upper dir, not to the shared layer.
	if err := os.WriteFile(filepath.Join(rootfs, "data/keep.txt"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	upper := filepath.Join(filepath.Dir(rootfs), "upper", "data", "keep.txt")
	if b, err := os.ReadFile(upper); err != nil || string(b) != "changed\n" {
		t.Errorf("upper copy: %q %v", b, err)
	}
	// A second container sees the image unchanged.
	rootfs2, err := s.PrepareRootfs(ctx, "berth-test-ctr2", pulled.ID)
	t.Cleanup(func() { s.RemoveRootfs(context.Background(), "berth-test-ctr2") })
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(rootfs2, "data/keep.txt")); string(b) != "keep\n" {
		t.Errorf("second container sees %q", b)
	}

	// GC while mounted keeps the layers, even with the image gone.
	if err := s.Remove(ctx, pulled.ID); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(rootfs2, "opq/new")); err != nil || string(b) != "new\n" {
		t.Errorf("after image removal: %q %v", b, err)
	}

	for _, c := range []string{id, "berth-test-ctr2"} {
		if err := s.RemoveRootfs(ctx, c); err != nil {
			t.Fatal(err)
		}
		p, mounted, err := s.MountedRootfs(ctx, c)
		if err != nil || mounted {
			t.Errorf("%s still mounted (%v)", p, err)
		}
		if _, err := os.Stat(filepath.Dir(p)); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", filepath.Dir(p), err)
		}
		if err := s.RemoveRootfs(ctx, c); err != nil {
			t.Errorf("second RemoveRootfs: %v", err)
		}
	}
	if err := s.GC(ctx); err != nil {
		t.Fatal(err)
	}
	if u, _ := s.FsInfo(ctx); u.InodesUsed > 5 {
		t.Errorf("after removing everything %d inodes remain", u.InodesUsed)
	}
}

func checkTree(t *testing.T, root string, tree *testimages.Tree) {
	t.Helper()
	for name, f := range tree.Files {
		p := filepath.Join(root, name)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		switch f.Type {
		case tar.TypeDir:
			if !fi.IsDir() {
				t.Errorf("%s: not a dir", name)
			}
		case tar.TypeSymlink:
			if l, err := os.Readlink(p); err != nil || l != f.Linkname {
				t.Errorf("%s: symlink %q %v, want %q", name, l, err, f.Linkname)
			}
			continue
		case tar.TypeChar:
			if fi.Mode()&os.ModeCharDevice == 0 {
				t.Errorf("%s: not a char device: %v", name, fi.Mode())
			}
		case tar.TypeReg, tar.TypeLink:
			if !fi.Mode().IsRegular() {
				t.Errorf("%s: not a regular file: %v", name, fi.Mode())
				continue
			}
			if f.Content != nil {
				if b, _ := os.ReadFile(p); !bytes.Equal(b, f.Content) {
					t.Errorf("%s: content %q, want %q", name, b, f.Content)
				}
			}
			if f.Type == tar.TypeLink {
				other, err := os.Lstat(filepath.Join(root, f.Linkname))
				if err != nil || !os.SameFile(fi, other) {
					t.Errorf("%s: not a hardlink of %s", name, f.Linkname)
				}
			}
		}
		if f.Mode != 0 && uint32(fi.Mode().Perm())|setBits(fi.Mode()) != uint32(f.Mode) {
			t.Errorf("%s: mode %o, want %o", name, uint32(fi.Mode().Perm())|setBits(fi.Mode()), f.Mode)
		}
		st := fi.Sys().(*syscallStat)
		if int(st.Uid) != f.UID || int(st.Gid) != f.GID {
			t.Errorf("%s: owner %d:%d, want %d:%d", name, st.Uid, st.Gid, f.UID, f.GID)
		}
	}
	for _, name := range tree.Absent {
		if _, err := os.Lstat(filepath.Join(root, name)); !os.IsNotExist(err) {
			t.Errorf("%s: present (%v), want whited out", name, err)
		}
	}
}

func setBits(m os.FileMode) uint32 {
	var b uint32
	if m&os.ModeSetuid != 0 {
		b |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		b |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		b |= 0o1000
	}
	return b
}

// TestManyLayers mounts an image whose lower dir paths add up to more than
// a page, which a single "lowerdir=" option string could not hold.
func TestManyLayers(t *testing.T) {
	ctx := context.Background()
	reg := testregistry.Start(t, testregistry.Options{})
	s := newService(t, imageservice.Config{MaxConcurrentDownloads: 8})
	layers := []v1.Layer{}
	bbl, _ := busybox(t).Layers()
	layers = append(layers, bbl...)
	const n = 60
	for i := range n {
		l, err := testimages.Layer([]testimages.File{
			{Name: "layers/", Type: tar.TypeDir, Mode: 0o755},
			{Name: fmt.Sprintf("layers/%02d", i), Mode: 0o644, Content: []byte(fmt.Sprint(i))},
			{Name: "layers/top", Mode: 0o644, Content: []byte(fmt.Sprint(i))},
		}, testimages.Gzip)
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	img, err := testimages.NewImage(layers, v1.Config{Cmd: []string{"sh"}})
	if err != nil {
		t.Fatal(err)
	}
	reg.MustPush(t, "test/many:latest", img)
	pulled, err := s.Pull(ctx, reg.Ref("test/many:latest"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.RemoveRootfs(context.Background(), "berth-test-many") })
	rootfs, err := s.PrepareRootfs(ctx, "berth-test-many", pulled.ID)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(filepath.Join(rootfs, "layers"))
	if err != nil || len(ents) != n+1 {
		t.Fatalf("%d entries in /layers (%v), want %d", len(ents), err, n+1)
	}
	if b, _ := os.ReadFile(filepath.Join(rootfs, "layers/top")); string(b) != fmt.Sprint(n-1) {
		t.Errorf("top layer's file says %q, want %d (layer order)", b, n-1)
	}
	if _, err := os.Stat(filepath.Join(rootfs, "bin/busybox")); err != nil {
		t.Error(err)
	}
	if len(rootfs)*n < 4096 {
		t.Fatalf("test too small: lower dirs fit in a page")
	}
	if err := s.RemoveRootfs(ctx, "berth-test-many"); err != nil {
		t.Fatal(err)
	}
}

func TestPullTokenAuth(t *testing.T) {
	ctx := context.Background()
	reg := testregistry.Start(t, testregistry.Options{Token: true, Username: "berth", Password: "pw", IdentityToken: "refresh-me"})
	reg.MustPush(t, "test/tok:latest", busybox(t))
	want := configDigest(t, busybox(t))
	for name, auth := range map[string]*imageservice.Auth{
		"password":       {Username: "berth", Password: "pw"},
		"identity token": {IdentityToken: "refresh-me"},
		"registry token": {RegistryToken: reg.Token()},
		"server address": {Username: "berth", Password: "pw", ServerAddress: "http://" + reg.Host + "/v2/"},
	} {
		s := newService(t, imageservice.Config{})
		img, err := s.Pull(ctx, reg.Ref("test/tok:latest"), auth, nil)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if img.ID != want {
			t.Errorf("%s: ID %s", name, img.ID)
		}
	}
	for name, auth := range map[string]*imageservice.Auth{
		"anonymous":      nil,
		"wrong identity": {IdentityToken: "nope"},
		"other server":   {Username: "berth", Password: "pw", ServerAddress: "registry.example.com"},
	} {
		s := newService(t, imageservice.Config{})
		if _, err := s.Pull(ctx, reg.Ref("test/tok:latest"), auth, nil); err == nil {
			t.Errorf("%s: pull succeeded", name)
		}
	}
}

func TestHostsTLS(t *testing.T) {
	ctx := context.Background()
	reg := testregistry.Start(t, testregistry.Options{TLS: true})
	reg.MustPush(t, "test/tls:latest", busybox(t))
	write := func(body string) string {
		dir := t.TempDir()
		hd := filepath.Join(dir, reg.Host)
		if err := os.MkdirAll(hd, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(hd, "ca.pem"), reg.CACertPEM(), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(hd, "hosts.toml"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	server := fmt.Sprintf("server = %q\n", reg.URL())
	for name, tc := range map[string]struct {
		hosts string
		ok    bool
	}{
		"ca":               {server + "ca = \"ca.pem\"\n", true},
		"skip_verify":      {server + "skip_verify = true\n", true},
		"untrusted":        {server, false},
		"mirror ca list":   {"server = \"http://127.0.0.1:1\"\n[host.\"" + reg.URL() + "\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = [\"ca.pem\"]\n", true},
		"mirror pull only": {"server = \"http://127.0.0.1:1\"\n[host.\"" + reg.URL() + "\"]\n  capabilities = [\"pull\"]\n  skip_verify = true\n", false},
	} {
		s := newService(t, imageservice.Config{RegistryConfigPath: write(tc.hosts)})
		_, err := s.Pull(ctx, reg.Ref("test/tls:latest"), nil, nil)
		if tc.ok && err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if !tc.ok && err == nil {
			t.Errorf("%s: pull succeeded", name)
		}
		if err != nil {
			t.Logf("%s: %v", name, err)
		}
	}
}

// TestGCDuringPulls runs GC over and over while images are pulled and
// removed; every image that ends up recorded must have all its layers.
func TestGCDuringPulls(t *testing.T) {
	ctx := context.Background()
	reg := testregistry.Start(t, testregistry.Options{})
	s := newService(t, imageservice.Config{})
	multi, _, err := testimages.MultiLayer()
	if err != nil {
		t.Fatal(err)
	}
	reg.MustPush(t, "test/multi:latest", multi)
	reg.MustPush(t, "test/bb:latest", busybox(t))

	stop := make(chan struct{})
	gcDone := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				gcDone <- nil
				return
			default:
			}
			if err := s.GC(ctx); err != nil {
				gcDone <- err
				return
			}
		}
	}()
	for i := range 10 {
		ref := reg.Ref("test/multi:latest")
		if i%2 == 1 {
			ref = reg.Ref("test/bb:latest")
		}
		img, err := s.Pull(ctx, ref, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprintf("berth-test-gc%d", i)
		rootfs, err := s.PrepareRootfs(ctx, id, img.ID)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if _, err := os.Stat(filepath.Join(rootfs, "bin/busybox")); err != nil {
			t.Errorf("round %d: %v", i, err)
		}
		if err := s.RemoveRootfs(ctx, id); err != nil {
			t.Fatal(err)
		}
		if err := s.Remove(ctx, img.ID); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	if err := <-gcDone; err != nil {
		t.Fatal(err)
	}
}
