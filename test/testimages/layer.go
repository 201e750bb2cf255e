// Package testimages builds OCI test images offline, from Debian's
// busybox-static (apt-get install busybox-static), for the tests of every part
// of berth. Images are built in memory and memoized per process: building is
// deterministic, so the same call returns the same digests every time.
package testimages

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"time"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Compression selects how a layer blob is compressed.
type Compression int

const (
	Gzip Compression = iota
	Zstd
	Uncompressed
)

func (c Compression) String() string {
	switch c {
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	case Uncompressed:
		return "uncompressed"
	}
	return fmt.Sprintf("Compression(%d)", int(c))
}

// Epoch returns the modification time of every entry the builders write
// (unless a File says otherwise), so that images are reproducible.
func Epoch() time.Time { return time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC) }

// File is one tar entry of a layer. Name is written verbatim (no cleaning), so
// malicious entries ("../x", "/etc/x") can be expressed.
type File struct {
	Name     string
	Type     byte  // tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeChar, ...
	Mode     int64 // permission bits (and setuid/setgid/sticky)
	UID, GID int
	Linkname string // symlink target, or hardlink source (a path in the layer)
	Content  []byte
	Xattrs   map[string]string
	Devmajor int64
	Devminor int64
	ModTime  time.Time // zero means Epoch
}

// TarBytes returns the uncompressed tar stream of files.
func TarBytes(files []File) ([]byte, error) {
	var buf bytes.Buffer
	if err := writeTar(&buf, files); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeTar(w io.Writer, files []File) error {
	tw := tar.NewWriter(w)
	for _, f := range files {
		mt := f.ModTime
		if mt.IsZero() {
			mt = Epoch()
		}
		typ := f.Type
		if typ == 0 {
			typ = tar.TypeReg
		}
		hdr := &tar.Header{
			Typeflag: typ,
			Name:     f.Name,
			Linkname: f.Linkname,
			Mode:     f.Mode,
			Uid:      f.UID,
			Gid:      f.GID,
			ModTime:  mt,
			Devmajor: f.Devmajor,
			Devminor: f.Devminor,
			Format:   tar.FormatPAX,
		}
		if typ == tar.TypeReg {
			hdr.Size = int64(len(f.Content))
		}
		if len(f.Xattrs) > 0 {
			hdr.PAXRecords = map[string]string{}
			for k, v := range f.Xattrs {
				hdr.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("tar header %q: %w", f.Name, err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write(f.Content); err != nil {
				return fmt.Errorf("tar content %q: %w", f.Name, err)
			}
		}
	}
	return tw.Close()
}

// Compress compresses an uncompressed tar stream.
func Compress(raw []byte, c Compression) ([]byte, error) {
	var buf bytes.Buffer
	switch c {
	case Uncompressed:
		return raw, nil
	case Gzip:
		zw := gzip.NewWriter(&buf)
		if _, err := zw.Write(raw); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
	case Zstd:
		zw, err := zstd.NewWriter(&buf)
		if err != nil {
			return nil, err
		}
		if _, err := zw.Write(raw); err != nil {
			return nil, err
		}
		if err := zw.Close(); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown compression %v", c)
	}
	return buf.Bytes(), nil
}

// Layer builds an OCI layer from files.
func Layer(files []File, c Compression) (v1.Layer, error) {
	raw, err := TarBytes(files)
	if err != nil {
		return nil, err
	}
	return LayerFromTar(raw, c)
}

// LayerFromTar builds an OCI layer from an uncompressed tar stream.
func LayerFromTar(raw []byte, c Compression) (v1.Layer, error) {
	blob, err := Compress(raw, c)
	if err != nil {
		return nil, err
	}
	switch c {
	case Uncompressed:
		// For an uncompressed layer the digest is the diff ID, which is
		// exactly what static.NewLayer reports.
		return static.NewLayer(blob, types.OCIUncompressedLayer), nil
	case Zstd:
		return tarball.LayerFromOpener(opener(blob), tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd))
	default:
		return tarball.LayerFromOpener(opener(blob), tarball.WithMediaType(types.OCILayer))
	}
}

func opener(b []byte) tarball.Opener {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}
