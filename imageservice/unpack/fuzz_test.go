package unpack_test

import (
	"archive/tar"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/test/testimages"
)

// FuzzApplyConfined builds layers from a vocabulary of hostile names and
// link targets and checks that extraction never touches anything outside
// the root. Seeds run as a normal test; `go test -fuzz FuzzApplyConfined`
// explores further.
func FuzzApplyConfined(f *testing.F) {
	f.Add([]byte{2, 4, 3, 0, 0, 5, 0, 0})
	f.Add([]byte{2, 4, 7, 0, 0, 6, 0, 0})
	f.Add([]byte{3, 9, 8, 0})
	f.Add([]byte{2, 4, 0, 0, 1, 4, 0, 0, 0, 10, 0, 0, 0, 11, 0, 0})
	f.Add([]byte{1, 0, 0, 0, 2, 0, 3, 0, 0, 1, 0, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		if os.Geteuid() != 0 {
			t.Skip("needs root")
		}
		base := t.TempDir()
		sentinel := filepath.Join(base, "sentinel")
		root := filepath.Join(base, "root")
		for _, d := range []string{sentinel, root} {
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(sentinel, "secret"), []byte("s"), 0o644); err != nil {
			t.Fatal(err)
		}
		names := []string{"a", "a/b", "../x", "/abs/x", "l", "l/x", "l/.wh.secret", "l/.wh..wh..opq",
			"a/../../x", "h", "./a/c", "a/.wh.b", "l/y/z", sentinel[1:] + "/x", ".wh.l", "a/../l/w"}
		links := []string{"/", "..", "../..", sentinel, "a", "l", "/etc/passwd", "../sentinel/secret",
			"l/secret", sentinel + "/secret", "a/b", "../../../.." + sentinel}
		types := []byte{tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo, tar.TypeChar}
		var files []testimages.File
		for i := 0; i+3 < len(ops) && len(files) < 32; i += 4 {
			files = append(files, testimages.File{
				Type:     types[int(ops[i])%len(types)],
				Name:     names[int(ops[i+1])%len(names)],
				Linkname: links[int(ops[i+2])%len(links)],
				Mode:     0o644,
				Content:  []byte{ops[i+3]},
			})
		}
		_ = apply(t, root, files) // errors are fine; escapes are not

		ents, err := os.ReadDir(base)
		if err != nil || len(ents) != 2 {
			t.Fatalf("base dir now has %d entries (%v)", len(ents), err)
		}
		sents, _ := os.ReadDir(sentinel)
		b, err := os.ReadFile(filepath.Join(sentinel, "secret"))
		if len(sents) != 1 || err != nil || string(b) != "s" {
			t.Fatalf("sentinel changed: %d entries, secret %q %v", len(sents), b, err)
		}
		if fi, err := os.Stat(filepath.Join(sentinel, "secret")); err == nil && fi.Sys() != nil {
			if n := fi.Sys().(*syscallStat).Nlink; n != 1 {
				t.Fatalf("sentinel secret has %d links", n)
			}
		}
		for _, p := range []string{"/abs", "/x", filepath.Join(filepath.Dir(base), "x")} {
			if _, err := os.Lstat(p); err == nil {
				t.Fatalf("%s was created", p)
			}
		}
	})
}
