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

// GC removes blobs and layer snapshots that no image and no container rootfs
// references. It waits for pulls and rootfs preparations in progress.
func (s *Service) GC(ctx context.Context) error {
	s.gcLock.Lock()
	defer s.gcLock.Unlock()
	return s.gcLocked(ctx)
}

// tryGC collects garbage unless a pull or rootfs preparation is running, in
// which case it leaves the garbage for the next GC rather than wait.
func (s *Service) tryGC(ctx context.Context) error {
	if !s.gcLock.TryLock() {
		return nil
	}
	defer s.gcLock.Unlock()
	return s.gcLocked(ctx)
}

func (s *Service) gcLocked(ctx context.Context) error {
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
		return fmt.Errorf("image gc: %w", err)
	}

	var errs []error
	removed := 0
	for _, spec := range []struct {
		dir  string
		keep map[string]bool
	}{{s.blobDir(), keepBlobs}, {s.snapshotsDir(), keepSnaps}} {
		entries, err := os.ReadDir(spec.dir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return err
			}
			if spec.keep["sha256:"+e.Name()] {
				continue
			}
			// Snapshots are only ever lower dirs, never mount points, so
			// removing one cannot reach through a mount.
			if err := os.RemoveAll(filepath.Join(spec.dir, e.Name())); err != nil {
				errs = append(errs, err)
				continue
			}
			removed++
		}
	}
	if removed > 0 {
		klog.V(2).InfoS("Image garbage collection", "removed", removed)
	}
	return errors.Join(errs...)
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
