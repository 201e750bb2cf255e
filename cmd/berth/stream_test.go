package main

import (
	"bytes"
	"io"
	"testing"
	"time"
)

func TestParseDetachKeys(t *testing.T) {
	for in, want := range map[string][]byte{
		"ctrl-p,ctrl-q": {0x10, 0x11},
		"ctrl-a,x":      {0x01, 'x'},
		"ctrl-@":        {0},
		"ctrl-[":        {27},
	} {
		got, err := parseDetachKeys(in)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("parseDetachKeys(%q) = %v %v, want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"ctrl-", "ctrl-pp", "xy", "ctrl-1"} {
		if _, err := parseDetachKeys(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// chunkReader returns its chunks one Read at a time.
type chunkReader struct{ chunks [][]byte }

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	c.chunks = c.chunks[1:]
	return n, nil
}

func TestDetachReader(t *testing.T) {
	// A Ctrl-P not followed by Ctrl-Q is passed on, with what follows.
	r := newDetachReader(&chunkReader{chunks: [][]byte{[]byte("ab\x10"), []byte("c\x10\x10d")}}, []byte{0x10, 0x11})
	got, err := io.ReadAll(r)
	if err != nil || string(got) != "ab\x10c\x10\x10d" {
		t.Errorf("passed through %q %v", got, err)
	}
	select {
	case <-r.detached:
		t.Error("detached without the sequence")
	default:
	}

	// The sequence split over two reads detaches; what came before it is
	// delivered and nothing after it is read.
	r = newDetachReader(&chunkReader{chunks: [][]byte{[]byte("ls\r\x10"), []byte("\x11more")}}, []byte{0x10, 0x11})
	buf := make([]byte, 64)
	n, err := r.Read(buf)
	if err != nil || string(buf[:n]) != "ls\r" {
		t.Fatalf("first read %q %v", buf[:n], err)
	}
	reads := make(chan int, 1)
	go func() {
		n, _ := r.Read(buf)
		reads <- n
	}()
	select {
	case <-r.detached:
	case <-time.After(30 * time.Second):
		t.Fatal("no detach")
	}
	// The reader blocks after a detach instead of reporting EOF, which
	// would close the container's stdin.
	select {
	case n := <-reads:
		t.Errorf("read after detach returned %d bytes", n)
	default:
	}
}
