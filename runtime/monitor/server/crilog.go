package server

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// MaxLogLine is the longest line written as one CRI log record; longer lines
// are split into partial (P) records of this size. 16 KiB is what containerd
// and CRI-O use, so log readers see the same record sizes with berth.
const MaxLogLine = 16 * 1024

// CRI log tags: F marks the last (or only) record of a line, P a record that
// the next record of the same stream continues.
const (
	tagFull    = "F"
	tagPartial = "P"
)

// LogFile is a CRI-format log file shared by a container's stdout and stderr.
// Each record goes to the file in a single write, so records of the two
// streams never interleave inside a line.
type LogFile struct {
	mu   sync.Mutex
	path string
	f    *os.File // nil when no log path was given or the last open failed
	buf  []byte   // scratch for one record, reused under mu
	now  func() time.Time
}

// OpenLogFile opens (creating if needed) the log file at path for appending.
// An empty path gives a LogFile that discards everything.
func OpenLogFile(path string) (*LogFile, error) {
	l := &LogFile{path: path, now: time.Now}
	if path == "" {
		return l, nil
	}
	f, err := openLog(path)
	if err != nil {
		return nil, err
	}
	l.f = f
	return l, nil
}

func openLog(path string) (*os.File, error) {
	// kubelet makes the pod log directory, but a container log path may name
	// a sub-directory of it (containerd and CRI-O create it too).
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	// O_NOFOLLOW: the log file itself is never a symlink that kubelet made,
	// so refusing one keeps a planted link from redirecting our writes.
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o640)
}

// Reopen closes the file and opens the same path again. kubelet rotates logs
// by renaming the file and then asking the runtime to reopen it.
func (l *LogFile) Reopen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.path == "" {
		return nil
	}
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	f, err := openLog(l.path)
	if err != nil {
		return err
	}
	l.f = f
	return nil
}

// Close closes the file; later writes are dropped.
func (l *LogFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var err error
	if l.f != nil {
		err = l.f.Close()
		l.f = nil
	}
	l.path = ""
	return err
}

// record writes one CRI log record: "TIMESTAMP STREAM TAG CONTENT\n".
func (l *LogFile) record(stream, tag string, content []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return
	}
	b := l.now().AppendFormat(l.buf[:0], time.RFC3339Nano)
	b = append(b, ' ')
	b = append(b, stream...)
	b = append(b, ' ')
	b = append(b, tag...)
	b = append(b, ' ')
	b = append(b, content...)
	b = append(b, '\n')
	// A failed write (disk full, file removed) loses this record only; the
	// container must keep running, and the next Reopen may fix it.
	l.f.Write(b)
	if cap(b) <= 2*MaxLogLine {
		l.buf = b
	}
}

// LineWriter turns one output stream into CRI log records. It is an
// io.Writer; call Flush at end of stream.
type LineWriter struct {
	log    *LogFile
	stream string // "stdout" or "stderr"
	line   []byte // bytes of a line not yet written, always < MaxLogLine
}

// NewLineWriter returns a writer of stream ("stdout" or "stderr") records into l.
func NewLineWriter(l *LogFile, stream string) *LineWriter {
	return &LineWriter{log: l, stream: stream}
}

// Write splits p into lines. Complete lines become F records; a line that
// reaches MaxLogLine bytes without a newline is written as P records of
// MaxLogLine bytes, and its remainder stays buffered.
func (w *LineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i >= 0 && len(w.line)+i <= MaxLogLine {
			if len(w.line) == 0 {
				w.log.record(w.stream, tagFull, p[:i])
			} else {
				w.line = append(w.line, p[:i]...)
				w.log.record(w.stream, tagFull, w.line)
				w.line = w.line[:0]
			}
			p = p[i+1:]
			continue
		}
		// No newline within reach: fill the line up to MaxLogLine.
		take := MaxLogLine - len(w.line)
		if take > len(p) {
			take = len(p)
		}
		if len(w.line) == 0 && take == MaxLogLine {
			w.log.record(w.stream, tagPartial, p[:take])
		} else {
			w.line = append(w.line, p[:take]...)
			if len(w.line) < MaxLogLine {
				break // wait for more data
			}
			w.log.record(w.stream, tagPartial, w.line)
			w.line = w.line[:0]
		}
		p = p[take:]
	}
	w.shrink()
	return n, nil
}

// Flush writes a buffered unterminated line as a P record: the stream ended
// (or the container exited) without a final newline.
func (w *LineWriter) Flush() {
	if len(w.line) > 0 {
		w.log.record(w.stream, tagPartial, w.line)
		w.line = w.line[:0]
	}
	w.shrink()
}

// shrink drops a large line buffer once it is empty: one long line must not
// pin 16 KiB per stream in every pod's monitor for the container's lifetime.
func (w *LineWriter) shrink() {
	if len(w.line) == 0 && cap(w.line) > 512 {
		w.line = nil
	}
}
