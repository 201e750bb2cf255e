package cri

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/berth-dev/berth/atomicfile"
	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/idprefix"
)

// containerRecord is what berth remembers of a container beyond what the
// runtime knows of its process: the CRI metadata kubelet asks back for.
// It is one JSON file under the root dir, so it outlives restarts and
// reboots, as kubelet expects exited containers to.
type containerRecord struct {
	ID          string            `json:"id"`
	PodID       string            `json:"podID"`
	Name        string            `json:"name"`
	Attempt     uint32            `json:"attempt"`
	Image       string            `json:"image"`
	ImageRef    string            `json:"imageRef"`
	ImageID     string            `json:"imageID"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	LogPath     string            `json:"logPath,omitempty"`
	Rootfs      string            `json:"rootfs"`
	StopSignal  string            `json:"stopSignal,omitempty"`
	CgroupPath  string            `json:"cgroupPath"`
	// ImageVolumes are the image-service keys of its image volumes.
	ImageVolumes []string `json:"imageVolumes,omitempty"`
	// Process is the container's process spec; exec starts from it.
	Process   *processSpec `json:"process"`
	CreatedAt time.Time    `json:"createdAt"`
	// Config is the CRI ContainerConfig, protobuf-encoded, for the mounts
	// and resources ContainerStatus reports.
	Config []byte `json:"config"`
}

// nameKey identifies a container's name within its pod, as kubelet makes
// names unique: pod, name and attempt.
func (r *containerRecord) nameKey() string {
	return fmt.Sprintf("%s/%s/%d", r.PodID, r.Name, r.Attempt)
}

type containerEntry struct {
	// mu serialises operations on one container (create/start/stop/remove);
	// different containers proceed in parallel.
	mu      sync.Mutex
	rec     *containerRecord
	removed bool
}

// containerStore keeps container records in memory and on disk.
type containerStore struct {
	dir string

	mu    sync.Mutex
	byID  map[string]*containerEntry
	names map[string]string // nameKey → id, reserved from the start of create
}

func newContainerStore(dir string) (*containerStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("container store: %w", err)
	}
	s := &containerStore{dir: dir, byID: map[string]*containerEntry{}, names: map[string]string{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("container store: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			// A temp file of a write that a crash interrupted.
			_ = os.Remove(filepath.Join(dir, name))
			continue
		}
		if !strings.HasSuffix(name, ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("container store: %w", err)
		}
		var rec containerRecord
		if err := json.Unmarshal(data, &rec); err != nil || rec.ID+".json" != name {
			klog.ErrorS(err, "Skipping unreadable container record", "file", name)
			continue
		}
		s.byID[rec.ID] = &containerEntry{rec: &rec}
		s.names[rec.nameKey()] = rec.ID
	}
	return s, nil
}

func (s *containerStore) path(id string) string { return filepath.Join(s.dir, id+".json") }

// reserve claims rec's name in its pod and takes the new entry's lock. The
// caller must call commit or release, then unlock.
func (s *containerStore) reserve(rec *containerRecord) (*containerEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if other, ok := s.names[rec.nameKey()]; ok {
		return nil, fmt.Errorf("container name %q (attempt %d) is already in use by %s in pod %s: %w", rec.Name, rec.Attempt, other, rec.PodID, errdefs.ErrAlreadyExists)
	}
	e := &containerEntry{rec: rec}
	e.mu.Lock()
	s.names[rec.nameKey()] = rec.ID
	return e, nil
}

// release gives a reserved name back after a failed create.
func (s *containerStore) release(rec *containerRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.names[rec.nameKey()] == rec.ID {
		delete(s.names, rec.nameKey())
	}
}

// commit persists a reserved entry and makes it visible.
func (s *containerStore) commit(e *containerEntry) error {
	data, err := json.Marshal(e.rec)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(s.path(e.rec.ID), data, 0o600); err != nil {
		return fmt.Errorf("save container %s: %w", e.rec.ID, err)
	}
	s.mu.Lock()
	s.byID[e.rec.ID] = e
	s.mu.Unlock()
	return nil
}

// replace persists a changed copy of a committed record whose lock the
// caller holds. Records are never changed in place: list hands them out.
func (s *containerStore) replace(e *containerEntry, rec *containerRecord) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(s.path(rec.ID), data, 0o600); err != nil {
		return fmt.Errorf("save container %s: %w", rec.ID, err)
	}
	s.mu.Lock()
	e.rec = rec
	s.mu.Unlock()
	return nil
}

// record finds a container by full ID or unique prefix and returns its
// record as it is now. Records are replaced, never changed in place, so
// the caller may read it without the store's lock.
func (s *containerStore) record(idOrPrefix string) (*containerRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, err := idprefix.Find(s.byID, idOrPrefix, "container")
	if err != nil {
		return nil, err
	}
	return e.rec, nil
}

// lookup finds a container by full ID or unique prefix.
func (s *containerStore) lookup(idOrPrefix string) (*containerEntry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return idprefix.Find(s.byID, idOrPrefix, "container")
}

// acquire looks a container up and locks it. It fails with NotFound when a
// Remove finished while this call waited.
func (s *containerStore) acquire(idOrPrefix string) (*containerEntry, error) {
	e, err := s.lookup(idOrPrefix)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	if e.removed {
		e.mu.Unlock()
		return nil, fmt.Errorf("container %q: %w", idOrPrefix, errdefs.ErrNotFound)
	}
	return e, nil
}

// delete forgets a container whose lock the caller holds.
func (s *containerStore) delete(e *containerEntry) error {
	if err := os.Remove(s.path(e.rec.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove container record %s: %w", e.rec.ID, err)
	}
	e.removed = true
	s.mu.Lock()
	delete(s.byID, e.rec.ID)
	if s.names[e.rec.nameKey()] == e.rec.ID {
		delete(s.names, e.rec.nameKey())
	}
	s.mu.Unlock()
	return nil
}

// list returns the records, oldest first. Records are never changed after
// commit, so sharing them is safe.
func (s *containerStore) list() []*containerRecord {
	s.mu.Lock()
	out := make([]*containerRecord, 0, len(s.byID))
	for _, e := range s.byID {
		out = append(out, e.rec)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}
