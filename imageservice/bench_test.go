package imageservice_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/imageservice"
	"github.com/berth-dev/berth/test/testimages"
	"github.com/berth-dev/berth/test/testregistry"
)

// BenchmarkPullUnpack pulls a ~200 MiB, 6-layer gzip image (half random,
// half text) from a registry on loopback into an empty store: download,
// verify, decompress, unpack and syncfs. DESIGN.md's reference points on
// this machine: containerd 2.1 s, floor 1.0 s.
func BenchmarkPullUnpack(b *testing.B) {
	requireRoot(b)
	img, err := testimages.Large(200, 6)
	if err != nil {
		b.Fatal(err)
	}
	reg := testregistry.Start(b, testregistry.Options{})
	reg.MustPush(b, "bench/large:latest", img)
	size, _ := img.Size()
	layers, _ := img.Layers()
	var total int64
	for _, l := range layers {
		n, _ := l.Size()
		total += n
	}
	b.SetBytes(total)
	b.Logf("image: %d layers, %d MiB compressed (manifest %d bytes)", len(layers), total>>20, size)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		root := filepath.Join(b.TempDir(), "images")
		s, err := imageservice.New(ctx, imageservice.Config{Root: root, MaxConcurrentDownloads: 6})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := s.Pull(ctx, reg.Ref("bench/large:latest"), nil, nil); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
}
