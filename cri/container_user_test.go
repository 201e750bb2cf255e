package cri

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/errdefs"
)

// A running container can replace /etc/passwd with anything. berthd reads
// it for exec -u: a FIFO must not block it, a device node must not be read,
// and a huge file is read only so far.
func TestReadImageFileOnlyRegularFiles(t *testing.T) {
	rootfs := t.TempDir()
	etc := filepath.Join(rootfs, "etc")
	if err := os.Mkdir(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(etc, "passwd"), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := readImageFile(rootfs, "etc/passwd")
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("a FIFO /etc/passwd: %v, want InvalidArgument", err)
		}
	case <-time.After(30 * time.Second):
		// Opened for reading, a FIFO waits for a writer: forever.
		t.Fatal("reading a FIFO /etc/passwd blocked")
	}
	if os.Geteuid() == 0 {
		// /dev/null's numbers: reading it would return at once, but it
		// must not be read at all.
		if err := unix.Mknod(filepath.Join(etc, "group"), unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3))); err != nil {
			t.Fatal(err)
		}
		if _, err := readImageFile(rootfs, "etc/group"); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("a device node /etc/group: %v, want InvalidArgument", err)
		}
	}
	big := make([]byte, 0, 2*maxImageFileSize)
	for len(big) < 2*maxImageFileSize {
		big = append(big, "u:x:1:1::/:/bin/sh\n"...)
	}
	if err := os.WriteFile(filepath.Join(etc, "shadow"), big, 0o600); err != nil {
		t.Fatal(err)
	}
	lines, err := readImageFile(rootfs, "etc/shadow")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(lines) * len("u:x:1:1::/:/bin/sh\n"); n > maxImageFileSize+100 {
		t.Errorf("read %d bytes of a %d-byte file, want at most %d", n, len(big), maxImageFileSize)
	}
}
