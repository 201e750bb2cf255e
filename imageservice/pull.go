package imageservice

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/failpoint"
	"github.com/berth-dev/berth/imageservice/unpack"
)

const maxConfigSize = 64 << 20

// Pull fetches an image and unpacks its layers, and returns it. Short names
// are normalized (busybox → docker.io/library/busybox:latest). Hosts are
// tried in order (mirrors from hosts.toml, then upstream); a host that makes
// no progress for PullProgressTimeout is abandoned for the next one. The
// progress func, if any, is called from one goroutine at a time.
func (s *Service) Pull(ctx context.Context, ref string, auth *Auth, progress func(Progress)) (*Image, error) {
	r, err := ParseReference(ref)
	if err != nil {
		return nil, err
	}
	hosts, err := s.registryHosts(r.Domain)
	if err != nil {
		return nil, err
	}
	var repos, pullRepos []*remoteRepo
	for _, h := range hosts {
		rr := newRemoteRepo(h, r.Domain, r.Path, auth, s.cfg.PullProgressTimeout)
		repos = append(repos, rr)
		if h.pull {
			pullRepos = append(pullRepos, rr)
		}
	}
	var pmu sync.Mutex
	report := func(p Progress) {
		if progress == nil {
			return
		}
		p.Ref = r.String()
		pmu.Lock()
		defer pmu.Unlock()
		progress(p)
	}
	start := time.Now()

	// Everything this pull uses is leased against GC until it is recorded.
	var releases []func()
	defer func() {
		for _, r := range releases {
			r()
		}
	}()
	lease := func(keys ...string) { releases = append(releases, s.lease(keys...)) }

	// Resolve the reference to a manifest.
	report(Progress{Status: ProgressResolving})
	var (
		mb       []byte
		mt, mdg  string
		errs     []error
		resolved bool
	)
	for _, rr := range repos {
		key := r.Tag
		if r.Digest != "" {
			if !rr.host.pull {
				continue
			}
			key = r.Digest
		} else if !rr.host.resolve {
			continue
		}
		mb, mt, mdg, err = rr.fetchManifest(ctx, key)
		if err == nil {
			resolved = true
			break
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("pulling %s: %w", r, err)
		}
		errs = append(errs, err)
	}
	if !resolved {
		if len(errs) == 0 {
			return nil, fmt.Errorf("pulling %s: no registry host may resolve it: %w", r, errdefs.ErrFailedPrecondition)
		}
		return nil, fmt.Errorf("pulling %s: %w", r, errors.Join(errs...))
	}
	topDigest := mdg
	lease(mdg)
	if err := s.writeBlob(mdg, mb); err != nil {
		return nil, err
	}

	if mt == mtOCIIndex || mt == mtDockerList {
		var idx ocispec.Index
		if err := json.Unmarshal(mb, &idx); err != nil {
			return nil, fmt.Errorf("pulling %s: index: %w", r, err)
		}
		desc, err := selectPlatform(idx.Manifests)
		if err != nil {
			return nil, fmt.Errorf("pulling %s: %w", r, err)
		}
		mb, mt, err = s.fetchManifestByDigest(ctx, pullRepos, desc.Digest.String())
		if err != nil {
			return nil, fmt.Errorf("pulling %s: %w", r, err)
		}
		mdg = desc.Digest.String()
		lease(mdg)
		if err := s.writeBlob(mdg, mb); err != nil {
			return nil, err
		}
	}
	if mt != mtOCIManifest && mt != mtDockerSchema2 {
		return nil, fmt.Errorf("pulling %s: manifest media type %q is not supported: %w", r, mt, errdefs.ErrNotImplemented)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return nil, fmt.Errorf("pulling %s: manifest: %w", r, err)
	}

	lease(m.Config.Digest.String())
	cb, err := s.fetchSmallBlob(ctx, pullRepos, m.Config, report)
	if err != nil {
		return nil, fmt.Errorf("pulling %s: config: %w", r, err)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(cb, &cfg); err != nil {
		return nil, fmt.Errorf("pulling %s: config: %w", r, err)
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("pulling %s: %d layers but %d diff IDs in the config", r, len(m.Layers), len(cfg.RootFS.DiffIDs))
	}

	// Layers: downloaded in parallel (bounded by the semaphore), each
	// decompressed and unpacked as it streams in.
	for i, l := range m.Layers {
		lease(l.Digest.String(), cfg.RootFS.DiffIDs[i].String())
	}
	layerErrs := make([]error, len(m.Layers))
	var wg sync.WaitGroup
	for i, desc := range m.Layers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			layerErrs[i] = s.ensureLayer(ctx, pullRepos, desc, cfg.RootFS.DiffIDs[i].String(), report)
		}()
	}
	wg.Wait()
	if err := errors.Join(layerErrs...); err != nil {
		return nil, fmt.Errorf("pulling %s: %w", r, err)
	}

	img := &Image{
		ID:             m.Config.Digest.String(),
		ManifestDigest: mdg,
		Size:           uint64(m.Config.Size),
		Config:         cfg.Config,
		PulledAt:       time.Now().UTC(),
		RepoDigests:    []string{r.Name() + "@" + topDigest},
	}
	if r.Tag != "" {
		img.RepoTags = []string{r.Name() + ":" + r.Tag}
	}
	if cfg.Created != nil {
		img.CreatedAt = *cfg.Created
	}
	for i, l := range m.Layers {
		img.Size += uint64(l.Size)
		img.Layers = append(img.Layers, Layer{Digest: l.Digest.String(), DiffID: cfg.RootFS.DiffIDs[i].String(), MediaType: l.MediaType, Size: l.Size})
	}
	s.cfg.Failpoints.Hit(failpoint.PullBeforeMetadata)
	if err := s.record(img); err != nil {
		return nil, fmt.Errorf("pulling %s: recording: %w", r, err)
	}
	klog.InfoS("Pulled image", "ref", r.String(), "id", img.ID, "size", img.Size, "duration", time.Since(start))
	return s.Get(ctx, img.ID)
}

// record stores img, merging names with an existing record of the same ID,
// and moves its tags away from other images.
func (s *Service) record(img *Image) error {
	s.metaMu.Lock()
	defer s.metaMu.Unlock()
	return s.db.Update(func(tx *bolt.Tx) error {
		images, err := loadImagesTx(tx)
		if err != nil {
			return err
		}
		for _, other := range images {
			if other.ID == img.ID {
				for _, t := range other.RepoTags {
					if !slices.Contains(img.RepoTags, t) {
						img.RepoTags = append(img.RepoTags, t)
					}
				}
				for _, d := range other.RepoDigests {
					if !slices.Contains(img.RepoDigests, d) {
						img.RepoDigests = append(img.RepoDigests, d)
					}
				}
				img.Pinned = other.Pinned
				continue
			}
			n := len(other.RepoTags)
			other.RepoTags = slices.DeleteFunc(other.RepoTags, func(t string) bool { return slices.Contains(img.RepoTags, t) })
			if len(other.RepoTags) == n {
				continue
			}
			// A moved tag leaves the old image reachable by digest, as
			// in containerd; with no name left at all, it goes.
			if len(other.RepoTags) == 0 && len(other.RepoDigests) == 0 {
				if err := tx.Bucket([]byte(bucketImages)).Delete([]byte(other.ID)); err != nil {
					return err
				}
				continue
			}
			if err := putImage(tx, other); err != nil {
				return err
			}
		}
		slices.Sort(img.RepoTags)
		slices.Sort(img.RepoDigests)
		return putImage(tx, img)
	})
}

// selectPlatform picks the host's linux/GOARCH[/variant] manifest of an index.
func selectPlatform(descs []ocispec.Descriptor) (ocispec.Descriptor, error) {
	var fallback *ocispec.Descriptor
	for i, d := range descs {
		p := d.Platform
		if p == nil || p.OS != runtime.GOOS || p.Architecture != runtime.GOARCH {
			continue
		}
		if d.MediaType != "" && d.MediaType != mtOCIManifest && d.MediaType != mtDockerSchema2 {
			continue
		}
		switch {
		case p.Variant == "" || (runtime.GOARCH == "arm64" && p.Variant == "v8"):
			return d, nil
		case fallback == nil:
			fallback = &descs[i]
		}
	}
	if fallback != nil {
		return *fallback, nil
	}
	return ocispec.Descriptor{}, fmt.Errorf("no manifest for platform %s/%s in the index: %w", runtime.GOOS, runtime.GOARCH, errdefs.ErrNotFound)
}

func (s *Service) fetchManifestByDigest(ctx context.Context, repos []*remoteRepo, dgst string) ([]byte, string, error) {
	var errs []error
	for _, rr := range repos {
		b, mt, _, err := rr.fetchManifest(ctx, dgst)
		if err == nil {
			return b, mt, nil
		}
		if ctx.Err() != nil {
			return nil, "", err
		}
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		return nil, "", fmt.Errorf("no registry host may pull: %w", errdefs.ErrFailedPrecondition)
	}
	return nil, "", errors.Join(errs...)
}

// fetchSmallBlob returns a blob (the config) from the store, downloading it
// first if needed; concurrent pulls share the download.
func (s *Service) fetchSmallBlob(ctx context.Context, repos []*remoteRepo, desc ocispec.Descriptor, report func(Progress)) ([]byte, error) {
	dgst := desc.Digest.String()
	if !digestRE.MatchString(dgst) || desc.Size < 0 || desc.Size > maxConfigSize {
		return nil, fmt.Errorf("bad blob descriptor %s (%d bytes): %w", dgst, desc.Size, errdefs.ErrInvalidArgument)
	}
	if !s.hasBlob(dgst) {
		err := s.flights.do(ctx, "blob:"+dgst, report, func(ctx context.Context, report func(Progress)) error {
			if s.hasBlob(dgst) {
				return nil
			}
			var errs []error
			for _, rr := range repos {
				err := s.download(ctx, rr, dgst, desc.Size, nil, report)
				if err == nil {
					return nil
				}
				if ctx.Err() != nil {
					return err
				}
				errs = append(errs, err)
			}
			return errors.Join(errs...)
		})
		if err != nil {
			return nil, err
		}
	}
	return s.readBlob(dgst)
}

// download fetches one blob from one host into the store. With sink set,
// the blob is also streamed through sink (to unpack it) while it arrives;
// sink must consume all it is given.
func (s *Service) download(ctx context.Context, rr *remoteRepo, dgst string, size int64, sink func(io.Reader) error, report func(Progress)) error {
	rc, err := rr.openBlob(ctx, dgst)
	if err != nil {
		return err
	}
	defer rc.Close()
	w, err := s.newBlobWriter(dgst, size)
	if err != nil {
		return err
	}
	pr := &progressReader{r: rc, report: report, p: Progress{Digest: dgst, Status: ProgressDownloading, Total: size}}
	src := io.TeeReader(pr, w)
	if sink != nil {
		err = sink(src)
	}
	if err == nil {
		_, err = io.Copy(io.Discard, src) // the rest, past the end of the tar
	}
	if err != nil {
		w.abort()
		return fmt.Errorf("blob %s from %s: %w", dgst, rr.host.name, err)
	}
	if err := w.commit(); err != nil {
		return fmt.Errorf("blob %s from %s: %w", dgst, rr.host.name, err)
	}
	return nil
}

// ensureLayer makes sure the layer's snapshot exists: from a stored blob, or
// downloaded from the first host that serves it, unpacked while streaming.
func (s *Service) ensureLayer(ctx context.Context, repos []*remoteRepo, desc ocispec.Descriptor, diffID string, report func(Progress)) error {
	dgst := desc.Digest.String()
	if !digestRE.MatchString(dgst) || !digestRE.MatchString(diffID) {
		return fmt.Errorf("layer %s: unsupported digest or diff ID %s: %w", dgst, diffID, errdefs.ErrInvalidArgument)
	}
	if s.snapshotExists(diffID) {
		report(Progress{Digest: dgst, Status: ProgressExists, Total: desc.Size, Done: desc.Size})
		return nil
	}
	report(Progress{Digest: dgst, Status: ProgressWaiting, Total: desc.Size})
	return s.flights.do(ctx, "layer:"+diffID, report, func(ctx context.Context, report func(Progress)) error {
		if s.snapshotExists(diffID) {
			return nil
		}
		if err := s.acquire(ctx); err != nil {
			return err
		}
		defer s.release()

		tmp, err := os.MkdirTemp(s.tmpDir(), "snap-")
		if err != nil {
			return err
		}
		committed := false
		defer func() {
			if !committed {
				os.RemoveAll(tmp)
			}
		}()
		sink := func(r io.Reader) error { return unpackLayer(ctx, r, tmp, diffID) }
		// A fresh, empty dir for every attempt: a failed host may have
		// left half a layer.
		reset := func() error {
			if err := os.RemoveAll(tmp); err != nil {
				return err
			}
			return os.Mkdir(tmp, 0o755)
		}
		if err := os.Chmod(tmp, 0o755); err != nil {
			return err
		}

		var errs []error
		done := false
		if s.hasBlob(dgst) {
			f, err := os.Open(s.blobPath(dgst))
			if err == nil {
				err = sink(f)
				f.Close()
			}
			if err == nil {
				done = true
			} else {
				errs = append(errs, fmt.Errorf("stored blob %s: %w", dgst, err))
				if err := reset(); err != nil {
					return err
				}
			}
		}
		for _, rr := range repos {
			if done {
				break
			}
			err := s.download(ctx, rr, dgst, desc.Size, sink, report)
			if err == nil {
				done = true
				break
			}
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
			if err := reset(); err != nil {
				return err
			}
		}
		if !done {
			if len(errs) == 0 {
				return fmt.Errorf("layer %s: no registry host may pull: %w", dgst, errdefs.ErrFailedPrecondition)
			}
			return errors.Join(errs...)
		}
		s.cfg.Failpoints.Hit(failpoint.PullMidLayer)
		// One syncfs for the whole layer instead of an fsync per file;
		// the snapshot becomes visible only after its data is durable.
		if err := syncfs(s.cfg.Root); err != nil {
			return err
		}
		if err := os.Rename(tmp, s.snapshotDir(diffID)); err != nil {
			return fmt.Errorf("layer %s: %w", dgst, err)
		}
		committed = true
		report(Progress{Digest: dgst, Status: ProgressDone, Total: desc.Size, Done: desc.Size})
		return nil
	})
}

// unpackLayer decompresses (gzip, zstd or none, told by magic bytes) and
// unpacks a layer stream into dir, and checks the uncompressed digest.
func unpackLayer(ctx context.Context, r io.Reader, dir, diffID string) error {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, _ := br.Peek(4)
	var tarStream io.Reader = br
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		tarStream = zr
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		tarStream = zr
	}
	h := sha256.New()
	tee := io.TeeReader(tarStream, h)
	if _, err := unpack.Apply(ctx, dir, tee); err != nil {
		return err
	}
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != diffID {
		return fmt.Errorf("layer diff ID mismatch: got %s, want %s", got, diffID)
	}
	return nil
}

func syncfs(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}
