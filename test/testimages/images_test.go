package testimages_test

import (
	"archive/tar"
	"io"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/test/testimages"
)

func tarNames(t *testing.T, l v1.Layer) map[string]*tar.Header {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	out := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = h
	}
}

func TestBusybox(t *testing.T) {
	img, err := testimages.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	again, _ := testimages.Busybox()
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Fatalf("not memoized: %s != %s", d1, d2)
	}
	layers, _ := img.Layers()
	names := tarNames(t, layers[0])
	for _, n := range []string{"bin/busybox", "bin/sh", "bin/ls", "etc/passwd", "etc/group", "tmp/"} {
		if names[n] == nil {
			t.Errorf("missing %s", n)
		}
	}
	if h := names["tmp/"]; h != nil && h.Mode != 0o1777 {
		t.Errorf("tmp mode %o", h.Mode)
	}
	cf, _ := img.ConfigFile()
	if len(cf.Config.Cmd) != 1 || cf.Config.Cmd[0] != "sh" || cf.Config.Env[0] != testimages.DefaultPath {
		t.Errorf("config %+v", cf.Config)
	}
	u, err := testimages.WithConfig(img, func(c *v1.Config) { c.User = "1000"; c.WorkingDir = "/tmp" })
	if err != nil {
		t.Fatal(err)
	}
	ucf, _ := u.ConfigFile()
	if ucf.Config.User != "1000" || cf.Config.User != "" {
		t.Errorf("WithConfig: %q base %q", ucf.Config.User, cf.Config.User)
	}
	dk, err := testimages.Docker(img)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := dk.Manifest()
	if m.MediaType != types.DockerManifestSchema2 || m.Layers[0].MediaType != types.DockerLayer {
		t.Errorf("docker media types %s %s", m.MediaType, m.Layers[0].MediaType)
	}
}

func TestMultiLayer(t *testing.T) {
	img, tree, err := testimages.MultiLayer()
	if err != nil {
		t.Fatal(err)
	}
	m, _ := img.Manifest()
	want := []types.MediaType{types.OCILayer, types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer}
	if len(m.Layers) != len(want) {
		t.Fatalf("%d layers", len(m.Layers))
	}
	for i, l := range m.Layers {
		if l.MediaType != want[i] {
			t.Errorf("layer %d media type %s, want %s", i, l.MediaType, want[i])
		}
	}
	layers, _ := img.Layers()
	if tarNames(t, layers[2])["opq/.wh..wh..opq"] == nil {
		t.Error("no opaque marker in layer 3")
	}
	if tree.Files["data/hard"].Type != tar.TypeLink {
		t.Error("tree lacks the hardlink")
	}
}

func TestLarge(t *testing.T) {
	img, err := testimages.Large(8, 2)
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	var total int64
	for _, l := range layers {
		n, _ := l.Size()
		total += n
	}
	if len(layers) != 2 || total < 4<<20 || total > 7<<20 {
		t.Fatalf("%d layers, %d compressed bytes", len(layers), total)
	}
}
