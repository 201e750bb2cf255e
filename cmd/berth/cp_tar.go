package main

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
)

// berth cp with "-" streams a tar archive, as docker cp does: from the
// container to stdout, or from stdin into a directory of the container.
// Both sides go through the container's os.Root, as the other copies do.

// tarOut writes cpath of the container's root to w as a tar archive whose
// entries are named after cpath's last element ("SRC/.": its contents).
func tarOut(ctrRoot *os.Root, cpath string, w io.Writer, warn io.Writer) error {
	sname := inRoot(cpath)
	if _, err := ctrRoot.Lstat(sname); err != nil {
		return fmt.Errorf("could not find the file %s in container: %w", cpath, escapeError(err))
	}
	prefix := path.Base(sname)
	if strings.HasSuffix(cpath, "/.") || sname == "." {
		prefix = "."
	}
	tw := tar.NewWriter(w)
	if err := tarTree(ctrRoot, sname, prefix, tw, warn); err != nil {
		return err
	}
	return tw.Close()
}

// tarTree adds sname (and, for a directory, what is below it) as name.
func tarTree(src *os.Root, sname, name string, tw *tar.Writer, warn io.Writer) error {
	fi, err := src.Lstat(sname)
	if err != nil {
		return escapeError(err)
	}
	link := ""
	if fi.Mode()&fs.ModeSymlink != 0 {
		if link, err = src.Readlink(sname); err != nil {
			return escapeError(err)
		}
	} else if !fi.IsDir() && !fi.Mode().IsRegular() {
		fmt.Fprintf(warn, "berth cp: skipping %s: not a regular file, directory or link\n", sname)
		return nil
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return err
	}
	hdr.Name = name
	if fi.IsDir() {
		hdr.Name += "/"
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
	}
	hdr.Uname, hdr.Gname = "", ""
	if name != "." {
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
	}
	switch {
	case fi.IsDir():
		d, err := src.Open(sname)
		if err != nil {
			return escapeError(err)
		}
		entries, err := d.ReadDir(-1)
		d.Close()
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := tarTree(src, path.Join(sname, e.Name()), path.Join(name, e.Name()), tw, warn); err != nil {
				return err
			}
		}
	case fi.Mode().IsRegular():
		f, err := src.Open(sname)
		if err != nil {
			return escapeError(err)
		}
		defer f.Close()
		// The entry may have been swapped since the Lstat.
		if ffi, err := f.Stat(); err != nil || !ffi.Mode().IsRegular() || ffi.Size() != fi.Size() {
			return fmt.Errorf("%s changed while being copied", sname)
		}
		if _, err := io.CopyN(tw, f, fi.Size()); err != nil {
			return err
		}
	}
	return nil
}

// untarIn extracts the tar archive r into cdest, a directory of the
// container. Entry names are cleaned to stay below cdest, and every write
// is resolved inside the container's root: a link in the archive or in the
// container cannot take a write out of it.
func untarIn(r io.Reader, ctrRoot *os.Root, cdest string, warn io.Writer) error {
	base := inRoot(cdest)
	if fi, err := ctrRoot.Stat(base); err != nil || !fi.IsDir() {
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return escapeError(err)
		}
		return fmt.Errorf("destination %s must be a directory when copying from stdin", cdest)
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the archive: %w", err)
		}
		rel := strings.TrimLeft(path.Clean("/"+hdr.Name), "/")
		if rel == "" {
			continue
		}
		name := path.Join(base, rel)
		mode := hdr.FileInfo().Mode().Perm()
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := ctrRoot.MkdirAll(name, mode); err != nil {
				return escapeError(err)
			}
		case tar.TypeReg:
			f, err := ctrRoot.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
			if err != nil {
				return escapeError(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				f.Close()
				return err
			}
			if err := f.Chmod(mode); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := ctrRoot.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return escapeError(err)
			}
			if err := ctrRoot.Symlink(hdr.Linkname, name); err != nil {
				return escapeError(err)
			}
		case tar.TypeLink:
			target := path.Join(base, strings.TrimLeft(path.Clean("/"+hdr.Linkname), "/"))
			if err := ctrRoot.Link(target, name); err != nil {
				return escapeError(err)
			}
		default:
			fmt.Fprintf(warn, "berth cp: skipping %s: not a regular file, directory or link\n", hdr.Name)
		}
	}
}
