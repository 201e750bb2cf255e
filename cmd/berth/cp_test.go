package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeRootfs makes a container root with links that point out of it.
func fakeRootfs(t *testing.T, outside string) string {
	t.Helper()
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	must(os.MkdirAll(filepath.Join(root, "data", "sub"), 0o755))
	must(os.WriteFile(filepath.Join(root, "etc", "hostname"), []byte("box\n"), 0o644))
	must(os.WriteFile(filepath.Join(root, "data", "a"), []byte("A"), 0o600))
	must(os.WriteFile(filepath.Join(root, "data", "sub", "b"), []byte("B"), 0o755))
	must(os.Symlink("../etc/hostname", filepath.Join(root, "data", "rel-in")))
	must(os.Symlink(outside, filepath.Join(root, "abs-out")))
	must(os.Symlink(strings.Repeat("../", 10)+strings.TrimPrefix(outside, "/"), filepath.Join(root, "rel-out")))
	must(os.Symlink("/etc/hostname", filepath.Join(root, "abs-in")))
	return root
}

func TestSplitCpArg(t *testing.T) {
	for in, want := range map[string][2]string{
		"web:/etc/passwd": {"web", "/etc/passwd"},
		"/tmp/x":          {"", "/tmp/x"},
		"./a:b":           {"", "./a:b"},
		"dir/a:b":         {"", "dir/a:b"},
		"file":            {"", "file"},
	} {
		c, p := splitCpArg(in)
		if c != want[0] || p != want[1] {
			t.Errorf("splitCpArg(%q) = %q %q", in, c, p)
		}
	}
}

func TestCopyOutAndIn(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("host"), 0o600); err != nil {
		t.Fatal(err)
	}
	rootDir := fakeRootfs(t, outside)
	root, err := os.OpenRoot(rootDir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	var warn bytes.Buffer

	// A tree comes out with modes and links as links.
	dest := t.TempDir()
	if err := copyOut(root, "/data", dest, &warn); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "data", "sub", "b")); string(b) != "B" {
		t.Errorf("data/sub/b = %q", b)
	}
	if fi, _ := os.Stat(filepath.Join(dest, "data", "a")); fi == nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("data/a mode %v", fi)
	}
	if l, _ := os.Readlink(filepath.Join(dest, "data", "rel-in")); l != "../etc/hostname" {
		t.Errorf("link copied as %q", l)
	}
	// A file to a new name, and a directory's contents with "/.".
	if err := copyOut(root, "/etc/hostname", filepath.Join(dest, "hn"), &warn); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "hn")); string(b) != "box\n" {
		t.Errorf("hn = %q", b)
	}
	contents := t.TempDir()
	if err := copyOut(root, "/data/sub/.", contents, &warn); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(contents, "b")); err != nil {
		t.Errorf("contents copy: %v", err)
	}

	// Reads through links out of the root fail and copy nothing.
	for _, src := range []string{"/abs-out/secret", "/rel-out/secret", "/../../../" + strings.TrimPrefix(outside, "/") + "/secret"} {
		d := t.TempDir()
		if err := copyOut(root, src, d, &warn); err == nil {
			t.Errorf("copyOut %s succeeded", src)
		}
		if _, err := os.Stat(filepath.Join(d, "secret")); err == nil {
			t.Errorf("copyOut %s copied the host file", src)
		}
	}

	// In: plain copies work, including through a link that stays inside.
	src := filepath.Join(t.TempDir(), "up")
	if err := os.WriteFile(src, []byte("up"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := copyIn(src, root, "/data/sub/", &warn); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(rootDir, "data", "sub", "up")); string(b) != "up" {
		t.Errorf("copyIn: %q", b)
	}
	if err := copyIn(src, root, "/data/rel-in", &warn); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(rootDir, "etc", "hostname")); string(b) != "up" {
		t.Errorf("copyIn through an inside link: %q", b)
	}
	// Writes through links out of the root are refused and land nowhere.
	for _, dst := range []string{"/abs-out/pwned", "/rel-out/pwned", "/abs-out", "/rel-out/", "/../../pwned"} {
		err := copyIn(src, root, dst, &warn)
		if dst == "/../../pwned" {
			// ".." is clamped at the root: this lands inside.
			if err != nil {
				t.Errorf("copyIn %s: %v", dst, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("copyIn %s succeeded", dst)
		}
	}
	entries, _ := os.ReadDir(outside)
	if len(entries) != 1 {
		t.Errorf("the host dir now holds %d entries", len(entries))
	}
	if b, _ := os.ReadFile(filepath.Join(outside, "secret")); string(b) != "host" {
		t.Errorf("host file changed: %q", b)
	}
	// Copying a directory over a file is refused.
	if err := copyIn(filepath.Dir(src), root, "/etc/hostname", &warn); err == nil {
		t.Error("directory over a file accepted")
	}
}

// cp with "-": a tar of a container path, and a tar extracted into one,
// round trip; entries that try to leave the container's root are refused
// or kept inside it, and nothing is written outside.
func TestCpTarStreams(t *testing.T) {
	outside := t.TempDir()
	src, err := os.OpenRoot(fakeRootfs(t, outside))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var archive, warn bytes.Buffer
	if err := tarOut(src, "/data", &archive, &warn); err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	tr := tar.NewReader(bytes.NewReader(archive.Bytes()))
	for {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		body, _ := io.ReadAll(tr)
		names[hdr.Name] = string(body) + hdr.Linkname
	}
	want := map[string]string{"data/": "", "data/a": "A", "data/sub/": "", "data/sub/b": "B", "data/rel-in": "../etc/hostname"}
	if len(names) != len(want) {
		t.Errorf("archive entries %v, want %v", names, want)
	}
	for n, v := range want {
		if names[n] != v {
			t.Errorf("entry %s = %q, want %q", n, names[n], v)
		}
	}

	dstDir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dstDir, "in"), 0o755); err != nil {
		t.Fatal(err)
	}
	dst, err := os.OpenRoot(dstDir)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := untarIn(bytes.NewReader(archive.Bytes()), dst, "/in", &warn); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dstDir, "in", "data", "sub", "b")); err != nil || string(b) != "B" {
		t.Errorf("extracted data/sub/b: %q, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(dstDir, "in", "data", "a")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("extracted data/a: %v, %v", fi, err)
	}
	if err := untarIn(bytes.NewReader(archive.Bytes()), dst, "/nodir", &warn); err == nil {
		t.Error("extracting into a missing directory succeeded")
	}

	// Hostile archives: a "../" name stays below the destination; writes
	// through a link to / or up out of the root are refused.
	for name, entries := range map[string][]tar.Header{
		"dotdot":        {{Name: "../../../dotdot", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1}},
		"absolute link": {{Name: "esc", Typeflag: tar.TypeSymlink, Linkname: outside}, {Name: "esc/pwned", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1}},
		"relative link": {{Name: "up", Typeflag: tar.TypeSymlink, Linkname: strings.Repeat("../", 12) + strings.TrimPrefix(outside, "/")}, {Name: "up/pwned", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1}},
		"hardlink out":  {{Name: "hl", Typeflag: tar.TypeLink, Linkname: "../../../../../../etc/passwd"}},
	} {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, h := range entries {
			if err := tw.WriteHeader(&h); err != nil {
				t.Fatal(err)
			}
			if h.Size > 0 {
				tw.Write([]byte("x"))
			}
		}
		tw.Close()
		if err := untarIn(&b, dst, "/in", &warn); (name == "dotdot") != (err == nil) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("the archives wrote outside the container: %v", ents)
	}
	if _, err := os.Stat(filepath.Join(dstDir, "in", "dotdot")); err != nil {
		t.Errorf("a ../ entry was not kept below the destination: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dstDir, "in", "hl")); err == nil {
		t.Error("a hard link to a file outside the destination was made")
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dstDir), "dotdot")); err == nil {
		t.Error("a ../ entry was written above the root")
	}
}
