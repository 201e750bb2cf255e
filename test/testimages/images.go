package testimages

import (
	"archive/tar"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// BusyboxPath is where Debian's busybox-static installs its binary.
const BusyboxPath = "/bin/busybox"

// DefaultPath is the PATH of every image built here.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// The users and groups in the busybox image's /etc/passwd and /etc/group.
const (
	UserName = "user"
	UserUID  = 1000
	UserGID  = 1000
	NobodyID = 65534
)

// Memoized images. They are test-only caches of immutable values, built at
// most once per process (building the busybox layer reads and compresses a 2
// MB binary; Large images take seconds).
var (
	busyboxOnce    = sync.OnceValues(buildBusybox)
	multiLayerOnce = sync.OnceValues(func() (multi, error) {
		img, tree, err := buildMultiLayer()
		return multi{img, tree}, err
	})
	largeMu    sync.Mutex
	largeCache = map[[2]int]v1.Image{}
)

type multi struct {
	img  v1.Image
	tree *Tree
}

// NewImage returns a linux OCI image (OCI manifest and config media types) for
// the host's architecture with the given layers and config.
func NewImage(layers []v1.Layer, cfg v1.Config) (v1.Image, error) {
	return newImage(layers, cfg, runtime.GOARCH)
}

func newImage(layers []v1.Layer, cfg v1.Config, arch string) (v1.Image, error) {
	cf := &v1.ConfigFile{
		Architecture: arch,
		OS:           "linux",
		Created:      v1.Time{Time: Epoch()},
		Config:       cfg,
		RootFS:       v1.RootFS{Type: "layers"},
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	return mutate.AppendLayers(img, layers...)
}

// Busybox returns the busybox image: /bin/busybox with a symlink in /bin for
// every applet, /etc/passwd and /etc/group with root (0), nobody (65534) and
// user (1000), a 1777 /tmp, Env PATH and Cmd ["sh"]. One gzip layer.
func Busybox() (v1.Image, error) { return busyboxOnce() }

func busyboxFiles() ([]File, error) {
	bin, err := os.ReadFile(BusyboxPath)
	if err != nil {
		return nil, fmt.Errorf("reading busybox (apt-get install busybox-static): %w", err)
	}
	out, err := exec.Command(BusyboxPath, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list: %w", err)
	}
	applets := strings.Fields(string(out))
	sort.Strings(applets)

	dir := func(name string, mode int64) File { return File{Name: name, Type: tar.TypeDir, Mode: mode} }
	reg := func(name string, mode int64, content string) File {
		return File{Name: name, Type: tar.TypeReg, Mode: mode, Content: []byte(content)}
	}
	files := []File{
		dir("bin/", 0o755),
		{Name: "bin/busybox", Type: tar.TypeReg, Mode: 0o755, Content: bin},
	}
	for _, a := range applets {
		if a == "busybox" {
			continue
		}
		files = append(files, File{Name: "bin/" + a, Type: tar.TypeSymlink, Mode: 0o777, Linkname: "busybox"})
	}
	files = append(files,
		dir("dev/", 0o755),
		dir("etc/", 0o755),
		reg("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n"+
			"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"+
			"user:x:1000:1000:user:/home/user:/bin/sh\n"),
		reg("etc/group", 0o644, "root:x:0:\nnobody:x:65534:\nuser:x:1000:\n"),
		reg("etc/hosts", 0o644, "127.0.0.1\tlocalhost\n"),
		reg("etc/hostname", 0o644, ""),
		reg("etc/resolv.conf", 0o644, ""),
		dir("home/", 0o755),
		File{Name: "home/user/", Type: tar.TypeDir, Mode: 0o755, UID: UserUID, GID: UserGID},
		dir("proc/", 0o555),
		dir("root/", 0o700),
		dir("sys/", 0o555),
		dir("tmp/", 0o1777),
		dir("usr/", 0o755),
		dir("var/", 0o755),
	)
	return files, nil
}

func busyboxConfig() v1.Config {
	return v1.Config{Env: []string{DefaultPath}, Cmd: []string{"sh"}}
}

func buildBusybox() (v1.Image, error) {
	files, err := busyboxFiles()
	if err != nil {
		return nil, err
	}
	l, err := Layer(files, Gzip)
	if err != nil {
		return nil, err
	}
	return NewImage([]v1.Layer{l}, busyboxConfig())
}

// WithConfig returns base with its config changed by fn (USER, ENTRYPOINT,
// CMD, ENV, WORKDIR, ...). The layers are shared with base.
func WithConfig(base v1.Image, fn func(*v1.Config)) (v1.Image, error) {
	cf, err := base.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	fn(&cf.Config)
	return mutate.ConfigFile(base, cf)
}

// Docker returns img with Docker schema 2 media types (manifest, config and
// gzip layers) instead of OCI ones. Every layer of img must be gzip.
func Docker(img v1.Image) (v1.Image, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.RootFS.DiffIDs = nil
	cf.History = nil
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	out := mutate.MediaType(empty.Image, types.DockerManifestSchema2)
	out = mutate.ConfigMediaType(out, types.DockerConfigJSON)
	if out, err = mutate.ConfigFile(out, cf); err != nil {
		return nil, err
	}
	for _, l := range layers {
		mt, err := l.MediaType()
		if err != nil {
			return nil, err
		}
		if mt != types.OCILayer && mt != types.DockerLayer {
			return nil, fmt.Errorf("layer media type %s has no Docker schema 2 equivalent", mt)
		}
		if out, err = mutate.Append(out, mutate.Addendum{Layer: l, MediaType: types.DockerLayer}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// OtherArch is an architecture that is not the host's, for decoy manifests.
func OtherArch() string {
	if runtime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

// Index returns an OCI image index holding first a decoy image for linux/
// OtherArch() (one layer with the file /decoy) and then img for the host's
// linux/GOARCH, so a puller that ignores the platform picks the wrong one.
func Index(img v1.Image) (v1.ImageIndex, error) {
	dl, err := Layer([]File{{Name: "decoy", Mode: 0o644, Content: []byte("wrong platform\n")}}, Gzip)
	if err != nil {
		return nil, err
	}
	decoy, err := newImage([]v1.Layer{dl}, busyboxConfig(), OtherArch())
	if err != nil {
		return nil, err
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	idx = mutate.AppendManifests(idx,
		mutate.IndexAddendum{Add: decoy, Descriptor: v1.Descriptor{
			MediaType: types.OCIManifestSchema1,
			Platform:  &v1.Platform{OS: "linux", Architecture: OtherArch()},
		}},
		mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH},
		}},
	)
	return idx, nil
}

// Tree is the expected merged filesystem of an image, for assertions.
type Tree struct {
	// Files maps a path relative to the root ("data/keep.txt") to what must be
	// there. Name repeats the key. Type tar.TypeLink means "a regular file that
	// is the same inode as Linkname" (a hardlink); its Content is Linkname's.
	Files map[string]File
	// Absent lists paths that must not exist (whited out).
	Absent []string
}

// MultiLayer returns a four-layer image (busybox, then gzip, zstd and
// uncompressed layers) with file whiteouts (.wh.X), a directory whiteout, an
// opaque directory (.wh..wh..opq), a hardlink, symlinks, an xattr, a device
// node, owners, modes (setuid, 0600) and an overwritten file, and the tree the
// union of its layers must show.
func MultiLayer() (v1.Image, *Tree, error) {
	m, err := multiLayerOnce()
	return m.img, m.tree, err
}

func buildMultiLayer() (v1.Image, *Tree, error) {
	bb, err := Busybox()
	if err != nil {
		return nil, nil, err
	}
	base, err := bb.Layers()
	if err != nil {
		return nil, nil, err
	}
	d := func(name string) File { return File{Name: name, Type: tar.TypeDir, Mode: 0o755} }
	f := func(name, content string) File {
		return File{Name: name, Type: tar.TypeReg, Mode: 0o644, Content: []byte(content)}
	}
	l2 := []File{
		d("data/"),
		f("data/keep.txt", "keep\n"),
		{Name: "data/hard", Type: tar.TypeLink, Linkname: "data/keep.txt"},
		{Name: "data/link", Type: tar.TypeSymlink, Mode: 0o777, Linkname: "keep.txt"},
		f("data/remove.txt", "remove me\n"),
		{Name: "data/owned.txt", Type: tar.TypeReg, Mode: 0o600, UID: UserUID, GID: UserGID, Content: []byte("owned\n")},
		{Name: "data/xattr.txt", Type: tar.TypeReg, Mode: 0o644, Content: []byte("x\n"), Xattrs: map[string]string{"user.berth.test": "yes"}},
		{Name: "data/null", Type: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 3},
		d("gone/"),
		f("gone/file", "gone\n"),
		d("opq/"),
		f("opq/old1", "old1\n"),
		d("opq/sub/"),
		f("opq/sub/old2", "old2\n"),
		d("etc/"),
		f("etc/motd", "layer2\n"),
	}
	l3 := []File{
		d("data/"),
		{Name: "data/.wh.remove.txt", Type: tar.TypeReg},
		f("data/added", "added in layer 3\n"),
		{Name: ".wh.gone", Type: tar.TypeReg},
		d("opq/"),
		{Name: "opq/.wh..wh..opq", Type: tar.TypeReg},
		f("opq/new", "new\n"),
		d("etc/"),
		f("etc/motd", "layer3\n"),
	}
	l4 := []File{
		d("data/"),
		{Name: "data/setuid", Type: tar.TypeReg, Mode: 0o4755, Content: []byte("#!/bin/sh\n")},
		{Name: "data/dir2/", Type: tar.TypeDir, Mode: 0o750, UID: UserUID, GID: UserGID},
		f("data/dir2/nested", "nested\n"),
	}
	var layers []v1.Layer
	layers = append(layers, base...)
	for i, spec := range []struct {
		files []File
		c     Compression
	}{{l2, Gzip}, {l3, Zstd}, {l4, Uncompressed}} {
		l, err := Layer(spec.files, spec.c)
		if err != nil {
			return nil, nil, fmt.Errorf("layer %d: %w", i+2, err)
		}
		layers = append(layers, l)
	}
	img, err := NewImage(layers, busyboxConfig())
	if err != nil {
		return nil, nil, err
	}

	tree := &Tree{Files: map[string]File{}, Absent: []string{
		"data/remove.txt", "data/.wh.remove.txt", "gone", "gone/file", ".wh.gone",
		"opq/old1", "opq/sub", "opq/sub/old2", "opq/.wh..wh..opq",
	}}
	add := func(fl File) {
		fl.Name = strings.TrimSuffix(fl.Name, "/")
		tree.Files[fl.Name] = fl
	}
	add(File{Name: "bin/busybox", Type: tar.TypeReg, Mode: 0o755})
	add(File{Name: "bin/sh", Type: tar.TypeSymlink, Linkname: "busybox"})
	add(d("data"))
	add(f("data/keep.txt", "keep\n"))
	add(File{Name: "data/hard", Type: tar.TypeLink, Linkname: "data/keep.txt", Mode: 0o644, Content: []byte("keep\n")})
	add(File{Name: "data/link", Type: tar.TypeSymlink, Linkname: "keep.txt"})
	add(l2[5])
	add(l2[6])
	add(l2[7])
	add(d("opq"))
	add(f("opq/new", "new\n"))
	add(f("etc/motd", "layer3\n"))
	add(f("data/added", "added in layer 3\n"))
	add(l4[1])
	add(l4[2])
	add(l4[3])
	return img, tree, nil
}

// Large returns an image of about sizeMB MiB (uncompressed) in the given
// number of gzip layers, half incompressible random bytes and half
// compressible text, for benchmarks. Memoized per (sizeMB, layers).
func Large(sizeMB, layers int) (v1.Image, error) {
	if sizeMB <= 0 || layers <= 0 {
		return nil, fmt.Errorf("Large(%d, %d): size and layers must be positive", sizeMB, layers)
	}
	largeMu.Lock()
	defer largeMu.Unlock()
	key := [2]int{sizeMB, layers}
	if img, ok := largeCache[key]; ok {
		return img, nil
	}
	perLayer := sizeMB << 20 / layers
	const fileSize = 1 << 20
	var ls []v1.Layer
	for li := 0; li < layers; li++ {
		rng := rand.New(rand.NewChaCha8([32]byte{byte(li), byte(li >> 8), 'b', 'e', 'r', 't', 'h'}))
		files := []File{{Name: fmt.Sprintf("layer%d/", li), Type: tar.TypeDir, Mode: 0o755}}
		for n, fi := 0, 0; n < perLayer; fi++ {
			size := min(fileSize, perLayer-n)
			buf := make([]byte, size)
			if fi%2 == 0 {
				for i := 0; i+8 <= len(buf); i += 8 {
					v := rng.Uint64()
					for j := range 8 {
						buf[i+j] = byte(v >> (8 * j))
					}
				}
			} else {
				var b bytes.Buffer
				for line := 0; b.Len() < size; line++ {
					fmt.Fprintf(&b, "layer %d file %d line %d: %d the quick brown fox jumps over the lazy dog\n", li, fi, line, rng.IntN(1000))
				}
				copy(buf, b.Bytes())
			}
			files = append(files, File{Name: fmt.Sprintf("layer%d/f%03d", li, fi), Mode: 0o644, Content: buf})
			n += size
		}
		l, err := Layer(files, Gzip)
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
	}
	img, err := NewImage(ls, busyboxConfig())
	if err != nil {
		return nil, err
	}
	largeCache[key] = img
	return img, nil
}
