package unpack_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/imageservice/unpack"
	"github.com/berth-dev/berth/test/testimages"
)

func requireRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (mknod, chown, trusted xattrs)")
	}
}

func apply(t *testing.T, dir string, files []testimages.File) error {
	t.Helper()
	raw, err := testimages.TarBytes(files)
	if err != nil {
		t.Fatal(err)
	}
	_, err = unpack.Apply(context.Background(), dir, bytes.NewReader(raw))
	return err
}

func TestMultiLayerLayers(t *testing.T) {
	requireRoot(t)
	img, _, err := testimages.MultiLayer()
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	dirs := make([]string, len(layers))
	for i, l := range layers {
		dirs[i] = t.TempDir()
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		_, err = unpack.Apply(context.Background(), dirs[i], rc)
		rc.Close()
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
	}
	var st, st2 unix.Stat_t
	// layer 2: hardlink, symlink, owner, xattr, device
	must(t, unix.Lstat(filepath.Join(dirs[1], "data/keep.txt"), &st))
	must(t, unix.Lstat(filepath.Join(dirs[1], "data/hard"), &st2))
	if st.Ino != st2.Ino || st.Nlink != 2 {
		t.Errorf("hardlink: inodes %d %d nlink %d", st.Ino, st2.Ino, st.Nlink)
	}
	if l, _ := os.Readlink(filepath.Join(dirs[1], "data/link")); l != "keep.txt" {
		t.Errorf("symlink target %q", l)
	}
	must(t, unix.Lstat(filepath.Join(dirs[1], "data/owned.txt"), &st))
	if st.Uid != 1000 || st.Gid != 1000 || st.Mode&0o7777 != 0o600 {
		t.Errorf("owned.txt uid %d gid %d mode %o", st.Uid, st.Gid, st.Mode&0o7777)
	}
	buf := make([]byte, 16)
	if n, err := unix.Lgetxattr(filepath.Join(dirs[1], "data/xattr.txt"), "user.berth.test", buf); err != nil || string(buf[:n]) != "yes" {
		t.Errorf("xattr: %q %v", buf[:n], err)
	}
	must(t, unix.Lstat(filepath.Join(dirs[1], "data/null"), &st))
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3 {
		t.Errorf("device node mode %o rdev %d:%d", st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	if fi, err := os.Stat(filepath.Join(dirs[1], "data/keep.txt")); err != nil || !fi.ModTime().Equal(testimages.Epoch()) {
		t.Errorf("mtime %v %v", fi.ModTime(), err)
	}
	// layer 3: whiteouts and opaque dir
	for _, w := range []string{"data/remove.txt", "gone"} {
		must(t, unix.Lstat(filepath.Join(dirs[2], w), &st))
		if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
			t.Errorf("whiteout %s: mode %o rdev %d", w, st.Mode, st.Rdev)
		}
	}
	if n, err := unix.Lgetxattr(filepath.Join(dirs[2], "opq"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("opaque xattr %q %v", buf[:n], err)
	}
	if _, err := os.Lstat(filepath.Join(dirs[2], "opq/.wh..wh..opq")); !os.IsNotExist(err) {
		t.Errorf("opaque marker file was written: %v", err)
	}
	// layer 4: setuid kept after chown
	must(t, unix.Lstat(filepath.Join(dirs[3], "data/setuid"), &st))
	if st.Mode&0o7777 != 0o4755 {
		t.Errorf("setuid mode %o", st.Mode&0o7777)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestMaliciousLayers applies crafted layers and checks that nothing outside
// the root changed: a sentinel dir next to the root, and /etc/passwd.
func TestMaliciousLayers(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	sentinel := filepath.Join(base, "sentinel")
	must(t, os.Mkdir(sentinel, 0o755))
	must(t, os.WriteFile(filepath.Join(sentinel, "secret"), []byte("secret\n"), 0o644))
	var passwd unix.Stat_t
	must(t, unix.Stat("/etc/passwd", &passwd))

	reg := func(name, content string) testimages.File {
		return testimages.File{Name: name, Type: tar.TypeReg, Mode: 0o644, Content: []byte(content)}
	}
	sym := func(name, target string) testimages.File {
		return testimages.File{Name: name, Type: tar.TypeSymlink, Mode: 0o777, Linkname: target}
	}
	hard := func(name, target string) testimages.File {
		return testimages.File{Name: name, Type: tar.TypeLink, Linkname: target}
	}
	cases := []struct {
		name    string
		files   []testimages.File
		wantErr bool
		inRoot  string // a path that must exist inside the root afterwards
	}{
		{"dotdot", []testimages.File{reg("../sentinel/pwned", "x")}, true, ""},
		{"dotdot-deep", []testimages.File{reg("a/../../sentinel/pwned", "x")}, true, ""},
		{"absolute", []testimages.File{reg(filepath.Join(sentinel, "pwned"), "x")}, false, filepath.Join(sentinel, "pwned")},
		{"symlink-rel-then-write", []testimages.File{sym("evil", "../../../.."+sentinel), reg("evil/pwned", "x")}, true, ""},
		{"symlink-abs-then-write", []testimages.File{sym("evil", sentinel), reg("evil/pwned", "x")}, true, ""},
		{"symlink-then-overwrite", []testimages.File{sym("f", filepath.Join(sentinel, "secret")), reg("f", "overwritten")}, false, "f"},
		{"symlink-dir-confined", []testimages.File{
			{Name: filepath.Join(sentinel[1:]) + "/", Type: tar.TypeDir, Mode: 0o755},
			sym("evil", sentinel), reg("evil/pwned", "x")}, false, filepath.Join(sentinel, "pwned")},
		{"hardlink-dotdot", []testimages.File{hard("hl", "../sentinel/secret")}, true, ""},
		{"hardlink-etc-passwd", []testimages.File{hard("hl", "/etc/passwd")}, true, ""},
		{"hardlink-through-symlink", []testimages.File{sym("s", "/etc"), hard("hl", "s/passwd")}, true, ""},
		{"hardlink-to-abs-symlink", []testimages.File{sym("s", "/etc/passwd"), hard("hl", "s"), reg("hl", "x")}, false, "hl"},
		{"whiteout-through-symlink", []testimages.File{sym("wd", sentinel), reg("wd/.wh.secret", "")}, true, ""},
		{"opaque-through-symlink", []testimages.File{sym("wd", sentinel), reg("wd/.wh..wh..opq", "")}, true, ""},
		{"whiteout-dotdot", []testimages.File{reg("../sentinel/.wh.secret", "")}, true, ""},
		{"overlay-xattr-dropped", []testimages.File{{Name: "d/", Type: tar.TypeDir, Mode: 0o755,
			Xattrs: map[string]string{"trusted.overlay.redirect": "/etc"}}}, false, "d"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := filepath.Join(base, "root-"+tc.name)
			must(t, os.Mkdir(root, 0o755))
			err := apply(t, root, tc.files)
			if tc.wantErr && err == nil {
				t.Errorf("no error")
			}
			if !tc.wantErr && err != nil {
				t.Errorf("error: %v", err)
			}
			if err != nil && errors.Is(err, unpack.ErrUnsafeEntry) {
				t.Logf("rejected: %v", err)
			}
			if tc.inRoot != "" {
				if _, err := os.Lstat(filepath.Join(root, tc.inRoot)); err != nil {
					t.Errorf("expected %s inside the root: %v", tc.inRoot, err)
				}
			}
			ents, _ := os.ReadDir(sentinel)
			if len(ents) != 1 {
				t.Errorf("sentinel dir has %d entries, want 1", len(ents))
			}
			b, err := os.ReadFile(filepath.Join(sentinel, "secret"))
			if err != nil || string(b) != "secret\n" {
				t.Errorf("sentinel secret changed: %q %v", b, err)
			}
			var st unix.Stat_t
			must(t, unix.Stat("/etc/passwd", &st))
			if st.Nlink != passwd.Nlink || st.Size != passwd.Size {
				t.Errorf("/etc/passwd changed: nlink %d size %d", st.Nlink, st.Size)
			}
			buf := make([]byte, 64)
			if n, err := unix.Lgetxattr(filepath.Join(root, "d"), "trusted.overlay.redirect", buf); err == nil {
				t.Errorf("overlay xattr from the layer was applied: %q", buf[:n])
			}
		})
	}
	if entries, _ := os.ReadDir(base); len(entries) != len(cases)+1 {
		t.Errorf("%d entries in the base dir, want %d", len(entries), len(cases)+1)
	}
}

func TestAufsMetadataSkipped(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	err := apply(t, dir, []testimages.File{
		{Name: ".wh..wh.plnk/", Type: tar.TypeDir, Mode: 0o700},
		{Name: ".wh..wh.plnk/123.456", Type: tar.TypeReg, Mode: 0o644},
		{Name: "a/.wh..wh.aufs", Type: tar.TypeReg, Mode: 0o644},
		{Name: "a/f", Type: tar.TypeReg, Mode: 0o644, Content: []byte("f")},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{".wh..wh.plnk", ".wh.plnk", "a/.wh.aufs", "a/.wh..wh.aufs"} {
		if _, err := os.Lstat(filepath.Join(dir, p)); !os.IsNotExist(err) {
			t.Errorf("%s exists: %v", p, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "a/f")); err != nil || string(b) != "f" {
		t.Errorf("a/f: %q %v", b, err)
	}
}

// TestReplaceWithinLayer: later entries replace earlier ones of another type.
func TestReplaceWithinLayer(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	err := apply(t, dir, []testimages.File{
		{Name: "d/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "d/sub/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "d/sub/f", Mode: 0o644, Content: []byte("f")},
		{Name: "d/sub", Mode: 0o644, Content: []byte("now a file")}, // dir → file
		{Name: "d/x", Mode: 0o644, Content: []byte("x")},
		{Name: "d/x/", Type: tar.TypeDir, Mode: 0o700}, // file → dir
		{Name: "d/x/in", Mode: 0o644, Content: []byte("in")},
		{Name: "l", Type: tar.TypeSymlink, Linkname: "d"},
		{Name: "l/", Type: tar.TypeDir, Mode: 0o755}, // symlink → dir
		{Name: "l/own", Mode: 0o644, Content: []byte("own")},
	})
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"d/sub": "now a file", "d/x/in": "in", "l/own": "own"} {
		if b, err := os.ReadFile(filepath.Join(dir, p)); err != nil || string(b) != want {
			t.Errorf("%s: %q %v, want %q", p, b, err, want)
		}
	}
	if fi, err := os.Lstat(filepath.Join(dir, "l")); err != nil || !fi.IsDir() {
		t.Errorf("l: %v %v", fi, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "d/own")); !os.IsNotExist(err) {
		t.Errorf("l/own went through the old symlink: %v", err)
	}
}
