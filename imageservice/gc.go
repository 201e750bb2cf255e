package imageservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// GC removes blobs and layer snapshots that no image, no container rootfs
// and no pull in progress references.
func (s *Service) GC(ctx context.Context) error {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	victims, err := s.gcCollect(ctx)
	// Victims were moved into tmp/ under the lease lock; deleting them
	// (possibly big trees) happens without it.
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, v := range victims {
		if err := os.RemoveAll(v); err != nil {
			errs = append(errs, err)
		}
	}
	if len(victims) > 0 {
		klog.V(2).InfoS("Image garbage collection", "removed", len(victims))
	}
	return errors.Join(errs...)
}

// gcCollect decides what is garbage and moves it into tmp/, holding
// leaseMu throughout: a pull either leased a key before (kept) or leases it
// after the move (and then finds it absent and fetches it again).
func (s *Service) gcCollect(ctx context.Context) ([]string, error) {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	keepBlobs := map[string]bool{}
	keepSnaps := map[string]bool{}
	err := s.db.View(func(tx *bolt.Tx) error {
		images, err := loadImagesTx(tx)
		if err != nil {
			return err
		}
		for _, img := range images {
			keepBlobs[img.ID] = true
			keepBlobs[img.ManifestDigest] = true
			for _, d := range img.RepoDigests {
				if _, dg, ok := strings.Cut(d, "@"); ok {
					keepBlobs[dg] = true
				}
			}
			for _, l := range img.Layers {
				keepBlobs[l.Digest] = true
				keepSnaps[l.DiffID] = true
			}
		}
		return tx.Bucket([]byte(bucketRootfs)).ForEach(func(k, v []byte) error {
			var rec rootfsRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("rootfs record %s: %w", k, err)
			}
			for _, d := range rec.DiffIDs {
				keepSnaps[d] = true
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("image gc: %w", err)
	}

	var errs []error
	var victims []string
	for _, spec := range []struct {
		dir, kind string
		keep      map[string]bool
	}{{s.blobDir(), "blob", keepBlobs}, {s.snapshotsDir(), "snap", keepSnaps}} {
		entries, err := os.ReadDir(spec.dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return victims, err
			}
			key := "sha256:" + e.Name()
			if spec.keep[key] || s.leased[key] > 0 {
				continue
			}
			// Snapshots are only ever lower dirs, never mount points, so
			// removing one cannot reach through a mount.
			// An uncompressed layer's blob and snapshot share a name.
			v := filepath.Join(s.tmpDir(), "gc-"+spec.kind+"-"+e.Name())
			if err := os.Rename(filepath.Join(spec.dir, e.Name()), v); err != nil {
				errs = append(errs, err)
				continue
			}
			victims = append(victims, v)
		}
	}
	return victims, errors.Join(errs...)
}

// FsUsage is the space the image store uses.
type FsUsage struct {
	Mountpoint string // Root
	UsedBytes  uint64 // allocated blocks of blobs and snapshots
	InodesUsed uint64
	Timestamp  time.Time
}

// FsInfo measures the blobs and layer snapshots (containers' upper dirs are
// the containers' own writable layers and not counted).
func (s *Service) FsInfo(ctx context.Context) (FsUsage, error) {
	u := FsUsage{Mountpoint: s.cfg.Root, Timestamp: time.Now()}
	type inode struct{ dev, ino uint64 }
	seen := map[inode]bool{}
	for _, dir := range []string{s.blobDir(), s.snapshotsDir()} {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // removed while we walk
				}
				return err
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				if errors.Is(err, unix.ENOENT) {
					return nil
				}
				return err
			}
			k := inode{st.Dev, st.Ino}
			if seen[k] {
				return nil
			}
			seen[k] = true
			u.InodesUsed++
			u.UsedBytes += uint64(st.Blocks) * 512
			return nil
		})
		if err != nil {
			return FsUsage{}, fmt.Errorf("image fs usage: %w", err)
		}
	}
	return u, nil
}
