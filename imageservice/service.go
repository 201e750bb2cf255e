// Package imageservice pulls OCI images from registries into a
// content-addressed blob store, unpacks each layer once into a read-only
// snapshot directory, keeps image metadata in bbolt, and mounts container
// root filesystems as overlayfs over those snapshots. It speaks plain Go and
// OCI image-spec types; cri/ translates to the CRI.
//
// On-disk layout under Config.Root:
//
//	blobs/sha256/<hex>     verified blobs (manifests, configs, layers)
//	snapshots/<hex>/       one unpacked layer, named by its diff ID
//	tmp/                   downloads and unpacks in progress (wiped by New)
//	containers/<id>/       upper, work and the rootfs mount point
//
// Layer snapshots are keyed by diff ID rather than chain ID: with overlayfs
// every layer is its own lower dir, independent of the layers below it, so
// one unpacked copy serves the layer at any position in any image.
package imageservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/failpoint"
)

// Config configures a Service.
type Config struct {
	// Root holds blobs, snapshots and container rootfs dirs
	// (berthd: <root>/images).
	Root string
	// DB is the shared embedded store; the service owns the buckets whose
	// names start with "images". When nil, New opens Root/images.db.
	DB *bolt.DB
	// RegistryConfigPath is a containerd-style hosts.toml directory
	// (<dir>/<host>/hosts.toml). Empty means no mirrors.
	RegistryConfigPath string
	// PullProgressTimeout cancels a request to a registry host that makes
	// no progress for this long; the next host is tried. Zero: 5 minutes.
	PullProgressTimeout time.Duration
	// MaxConcurrentDownloads bounds parallel layer downloads. Zero: 3.
	MaxConcurrentDownloads int
	// Failpoints crash berthd between steps, for crash tests; nil in
	// production.
	Failpoints *failpoint.Set
}

// DefaultPullProgressTimeout is used when Config.PullProgressTimeout is zero.
const DefaultPullProgressTimeout = 5 * time.Minute

// Layer is one layer of an image.
type Layer struct {
	Digest    string // of the blob as stored in the registry
	DiffID    string // of the uncompressed tar
	MediaType string
	Size      int64 // of the blob
}

// Image is a pulled image.
type Image struct {
	ID             string // the config digest, "sha256:..."
	RepoTags       []string
	RepoDigests    []string
	ManifestDigest string // the platform manifest
	Size           uint64 // config + layer blobs, as the registry stores them
	Config         ocispec.ImageConfig
	Layers         []Layer
	CreatedAt      time.Time // from the image config
	PulledAt       time.Time
	Pinned         bool
}

// ChainIDs returns the OCI chain IDs of the image's layers, bottom first.
func (img *Image) ChainIDs() []string {
	out := make([]string, len(img.Layers))
	for i, l := range img.Layers {
		if i == 0 {
			out[i] = l.DiffID
			continue
		}
		out[i] = digestOf([]byte(out[i-1] + " " + l.DiffID))
	}
	return out
}

// Progress reports a pull's progress, per layer (and the config blob).
type Progress struct {
	Ref    string
	Digest string
	Status ProgressStatus
	Total  int64 // bytes of the blob, when known
	Done   int64 // bytes downloaded so far
}

// ProgressStatus is the state of one blob of a pull.
type ProgressStatus string

const (
	ProgressResolving   ProgressStatus = "resolving"
	ProgressWaiting     ProgressStatus = "waiting"
	ProgressDownloading ProgressStatus = "downloading"
	ProgressExists      ProgressStatus = "exists"
	ProgressDone        ProgressStatus = "done"
)

const (
	bucketImages = "images"
	bucketRootfs = "images.rootfs"
)

// Service manages images. Its methods are safe for concurrent use.
type Service struct {
	cfg       Config
	db        *bolt.DB
	ownDB     bool
	transport *http.Transport // plain HTTP and system-trusted HTTPS

	transportsMu sync.Mutex
	transports   map[string]*http.Transport // custom TLS settings → transport
	sem          chan struct{}              // bounds concurrent layer downloads
	flights      flightGroup

	// Leases protect what pulls and rootfs preparations use before the
	// metadata references it (blob digests, diff IDs) from GC, without a
	// global lock: GC holds leaseMu only to decide and to move its victims
	// aside, never while it deletes.
	leaseMu sync.Mutex
	leased  map[string]int
	gcMu    sync.Mutex // one GC at a time
	// metaMu serializes read-modify-write of image records.
	metaMu sync.Mutex
}

// New opens the image service, creating its directories, and cleans what a
// crash left: partial downloads and unpacks, and snapshots and blobs no
// image references.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.Root == "" {
		return nil, fmt.Errorf("imageservice: Root is required: %w", errdefs.ErrInvalidArgument)
	}
	if cfg.PullProgressTimeout == 0 {
		cfg.PullProgressTimeout = DefaultPullProgressTimeout
	}
	if cfg.MaxConcurrentDownloads <= 0 {
		cfg.MaxConcurrentDownloads = 3
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, err
	}
	cfg.Root = root
	s := &Service{
		cfg:       cfg,
		db:        cfg.DB,
		transport: newTransport(),
		sem:       make(chan struct{}, cfg.MaxConcurrentDownloads),
	}
	s.flights.m = map[string]*flight{}
	s.leased = map[string]int{}
	s.transports = map[string]*http.Transport{}
	// A crash can leave tmp/ with partial files and dirs; nothing is ever
	// mounted there, so removing it is safe.
	if err := os.RemoveAll(s.tmpDir()); err != nil {
		return nil, fmt.Errorf("cleaning partial pulls: %w", err)
	}
	for _, d := range []string{s.cfg.Root, s.blobDir(), s.snapshotsDir(), s.tmpDir(), s.containersDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	if s.db == nil {
		s.db, err = bolt.Open(filepath.Join(s.cfg.Root, "images.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
		if err != nil {
			return nil, fmt.Errorf("opening image metadata: %w", err)
		}
		s.ownDB = true
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{bucketImages, bucketRootfs} {
			if _, err := tx.CreateBucketIfNotExists([]byte(b)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("image metadata buckets: %w", err)
	}
	if err := s.GC(ctx); err != nil {
		klog.ErrorS(err, "Image garbage collection at start failed")
	}
	return s, nil
}

// Close releases idle registry connections, and the metadata store if the
// service opened it.
func (s *Service) Close() error {
	s.transport.CloseIdleConnections()
	s.transportsMu.Lock()
	for _, tr := range s.transports {
		tr.CloseIdleConnections()
	}
	s.transportsMu.Unlock()
	if s.ownDB {
		return s.db.Close()
	}
	return nil
}

func (s *Service) blobDir() string       { return filepath.Join(s.cfg.Root, "blobs", "sha256") }
func (s *Service) snapshotsDir() string  { return filepath.Join(s.cfg.Root, "snapshots") }
func (s *Service) tmpDir() string        { return filepath.Join(s.cfg.Root, "tmp") }
func (s *Service) containersDir() string { return filepath.Join(s.cfg.Root, "containers") }

func (s *Service) snapshotDir(diffID string) string {
	return filepath.Join(s.snapshotsDir(), strings.TrimPrefix(diffID, "sha256:"))
}

func (s *Service) snapshotExists(diffID string) bool {
	fi, err := os.Lstat(s.snapshotDir(diffID))
	return err == nil && fi.IsDir()
}

// loadImages returns all image records.
func (s *Service) loadImages() ([]*Image, error) {
	var out []*Image
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte(bucketImages)).ForEach(func(k, v []byte) error {
			img := &Image{}
			if err := json.Unmarshal(v, img); err != nil {
				return fmt.Errorf("image record %s: %w", k, err)
			}
			out = append(out, img)
			return nil
		})
	})
	return out, err
}

func putImage(tx *bolt.Tx, img *Image) error {
	b, err := json.Marshal(img)
	if err != nil {
		return err
	}
	return tx.Bucket([]byte(bucketImages)).Put([]byte(img.ID), b)
}

// match says how a lookup string names an image.
type match int

const (
	noMatch match = iota
	byID
	byTag
	byDigest
)

// find resolves an ID ("sha256:<hex>" or "<hex>"), a unique ID prefix, a
// tag or a repo digest reference to an image.
func (s *Service) find(images []*Image, key string) (*Image, match, string, error) {
	key = strings.TrimSpace(key)
	if key == "" {
		return nil, noMatch, "", fmt.Errorf("empty image reference: %w", errdefs.ErrInvalidArgument)
	}
	id := strings.TrimPrefix(key, "sha256:")
	if hexRE.MatchString(id) {
		if len(id) == 64 {
			for _, img := range images {
				if img.ID == "sha256:"+id {
					return img, byID, img.ID, nil
				}
			}
		}
	}
	if r, err := ParseReference(key); err == nil {
		if r.Digest != "" {
			want := r.Name() + "@" + r.Digest
			for _, img := range images {
				if slices.Contains(img.RepoDigests, want) {
					return img, byDigest, want, nil
				}
			}
		} else {
			want := r.String()
			for _, img := range images {
				if slices.Contains(img.RepoTags, want) {
					return img, byTag, want, nil
				}
			}
		}
	}
	if hexRE.MatchString(id) && len(id) < 64 {
		var found *Image
		for _, img := range images {
			if strings.HasPrefix(img.ID, "sha256:"+id) {
				if found != nil {
					return nil, noMatch, "", fmt.Errorf("image ID prefix %q is ambiguous: %w", key, errdefs.ErrInvalidArgument)
				}
				found = img
			}
		}
		if found != nil {
			return found, byID, found.ID, nil
		}
	}
	return nil, noMatch, "", fmt.Errorf("image %q: %w", key, errdefs.ErrNotFound)
}

// Get returns the image named by an ID, an ID prefix, a tag or a repo digest
// reference; errdefs.ErrNotFound when there is none.
func (s *Service) Get(ctx context.Context, ref string) (*Image, error) {
	images, err := s.loadImages()
	if err != nil {
		return nil, err
	}
	img, _, _, err := s.find(images, ref)
	return img, err
}

// List returns all images, or with a non-empty filter (a reference or ID)
// the image it names, if any.
func (s *Service) List(ctx context.Context, filter string) ([]*Image, error) {
	images, err := s.loadImages()
	if err != nil {
		return nil, err
	}
	if filter == "" {
		slices.SortFunc(images, func(a, b *Image) int { return strings.Compare(a.ID, b.ID) })
		return images, nil
	}
	img, _, _, err := s.find(images, filter)
	if errors.Is(err, errdefs.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return []*Image{img}, nil
}

// Remove removes an image. By ID it removes the image with all its names.
// By tag it removes that tag, and the image once no tag is left; by repo
// digest likewise for that digest. An absent image is not an error (CRI:
// "This call is idempotent"). Blobs and snapshots no longer referenced are
// garbage collected before it returns.
func (s *Service) Remove(ctx context.Context, ref string) error {
	s.metaMu.Lock()
	deleted := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		images, err := loadImagesTx(tx)
		if err != nil {
			return err
		}
		img, how, name, err := s.find(images, ref)
		if errors.Is(err, errdefs.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		switch how {
		case byTag:
			img.RepoTags = slices.DeleteFunc(img.RepoTags, func(t string) bool { return t == name })
			if len(img.RepoTags) > 0 {
				return putImage(tx, img)
			}
		case byDigest:
			img.RepoDigests = slices.DeleteFunc(img.RepoDigests, func(d string) bool { return d == name })
			if len(img.RepoTags) > 0 || len(img.RepoDigests) > 0 {
				return putImage(tx, img)
			}
		}
		deleted = true
		return tx.Bucket([]byte(bucketImages)).Delete([]byte(img.ID))
	})
	s.metaMu.Unlock()
	if err != nil {
		return fmt.Errorf("removing image %q: %w", ref, err)
	}
	if deleted {
		return s.GC(ctx)
	}
	return nil
}

func loadImagesTx(tx *bolt.Tx) ([]*Image, error) {
	var out []*Image
	err := tx.Bucket([]byte(bucketImages)).ForEach(func(k, v []byte) error {
		img := &Image{}
		if err := json.Unmarshal(v, img); err != nil {
			return fmt.Errorf("image record %s: %w", k, err)
		}
		out = append(out, img)
		return nil
	})
	return out, err
}

// lease marks keys (digests, diff IDs) in use until release is called.
func (s *Service) lease(keys ...string) (release func()) {
	s.leaseMu.Lock()
	for _, k := range keys {
		s.leased[k]++
	}
	s.leaseMu.Unlock()
	return func() {
		s.leaseMu.Lock()
		for _, k := range keys {
			if s.leased[k]--; s.leased[k] <= 0 {
				delete(s.leased, k)
			}
		}
		s.leaseMu.Unlock()
	}
}
