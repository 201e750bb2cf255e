package imageservice

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
)

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func (s *Service) blobPath(dgst string) string {
	return filepath.Join(s.blobDir(), strings.TrimPrefix(dgst, "sha256:"))
}

func (s *Service) hasBlob(dgst string) bool {
	_, err := os.Lstat(s.blobPath(dgst))
	return err == nil
}

// blobWriter streams a blob into a temporary file under tmp/, hashing as it
// goes; commit renames it into place only when digest and size match, so a
// partial or corrupt blob is never visible under blobs/.
type blobWriter struct {
	s      *Service
	dgst   string
	size   int64 // expected, or -1
	f      *os.File
	h      hash.Hash
	n      int64
	closed bool
}

func (s *Service) newBlobWriter(dgst string, size int64) (*blobWriter, error) {
	if !digestRE.MatchString(dgst) {
		return nil, fmt.Errorf("unsupported digest %q", dgst)
	}
	f, err := os.CreateTemp(s.tmpDir(), "blob-")
	if err != nil {
		return nil, err
	}
	return &blobWriter{s: s, dgst: dgst, size: size, f: f, h: sha256.New()}, nil
}

func (w *blobWriter) Write(p []byte) (int, error) {
	w.h.Write(p)
	w.n += int64(len(p))
	if w.size >= 0 && w.n > w.size {
		return 0, fmt.Errorf("blob %s larger than its descriptor's %d bytes", w.dgst, w.size)
	}
	return w.f.Write(p)
}

// commit verifies and moves the blob into place. The data is made durable by
// the syncfs that ends every pull step, not by an fsync here.
func (w *blobWriter) commit() error {
	got := "sha256:" + hex.EncodeToString(w.h.Sum(nil))
	if got != w.dgst {
		w.abort()
		return fmt.Errorf("blob digest mismatch: got %s, want %s", got, w.dgst)
	}
	if w.size >= 0 && w.n != w.size {
		w.abort()
		return fmt.Errorf("blob %s: got %d bytes, want %d", w.dgst, w.n, w.size)
	}
	if err := w.f.Close(); err != nil {
		w.abort()
		return err
	}
	w.closed = true
	if err := os.Rename(w.f.Name(), w.s.blobPath(w.dgst)); err != nil {
		os.Remove(w.f.Name())
		return err
	}
	return nil
}

func (w *blobWriter) abort() {
	if !w.closed {
		w.f.Close()
		w.closed = true
	}
	os.Remove(w.f.Name())
}

// writeBlob stores small verified content (manifests) in the blob store.
func (s *Service) writeBlob(dgst string, b []byte) error {
	if s.hasBlob(dgst) {
		return nil
	}
	w, err := s.newBlobWriter(dgst, int64(len(b)))
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		w.abort()
		return err
	}
	return w.commit()
}

// readBlob reads a small blob (config, manifest) from the store.
func (s *Service) readBlob(dgst string) ([]byte, error) {
	return os.ReadFile(s.blobPath(dgst))
}

// progressReader counts bytes and reports them, at most every 256 KiB.
type progressReader struct {
	r        io.Reader
	report   func(Progress)
	p        Progress
	lastSent int64
}

func (pr *progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	pr.p.Done += int64(n)
	if pr.report != nil && (pr.p.Done-pr.lastSent >= 256<<10 || err == io.EOF) && pr.p.Done != pr.lastSent {
		pr.lastSent = pr.p.Done
		pr.report(pr.p)
	}
	return n, err
}

// acquire takes a download slot.
func (s *Service) acquire(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Service) release() { <-s.sem }
