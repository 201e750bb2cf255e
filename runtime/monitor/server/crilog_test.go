package server

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type record struct {
	ts     time.Time
	stream string
	tag    string
	text   string
}

// readRecords parses a CRI log file strictly: every line must be
// "RFC3339Nano STREAM TAG CONTENT".
func readRecords(t *testing.T, path string) []record {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 64*1024)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), " ", 4)
		if len(parts) != 4 {
			t.Fatalf("malformed record %q", sc.Text())
		}
		ts, err := time.Parse(time.RFC3339Nano, parts[0])
		if err != nil {
			t.Fatalf("timestamp of %q: %v", sc.Text(), err)
		}
		if parts[1] != "stdout" && parts[1] != "stderr" {
			t.Fatalf("stream of %q", sc.Text())
		}
		if parts[2] != "F" && parts[2] != "P" {
			t.Fatalf("tag of %q", sc.Text())
		}
		out = append(out, record{ts, parts[1], parts[2], parts[3]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestLineWriter(t *testing.T) {
	long := strings.Repeat("x", 2*MaxLogLine+100)
	for _, tc := range []struct {
		name   string
		writes []string
		want   []string // "TAG text"
	}{
		{"lines", []string{"a\nbb\n"}, []string{"F a", "F bb"}},
		{"split across writes", []string{"he", "llo\nwor", "ld\n"}, []string{"F hello", "F world"}},
		{"empty line", []string{"\n"}, []string{"F "}},
		{"unterminated at EOF is partial", []string{"a\nno newline"}, []string{"F a", "P no newline"}},
		{"long line is split", []string{long + "\n"}, []string{
			"P " + long[:MaxLogLine], "P " + long[MaxLogLine:2*MaxLogLine], "F " + long[2*MaxLogLine:]}},
		{"long line in small writes", chunks(long+"\nend\n", 1000), []string{
			"P " + long[:MaxLogLine], "P " + long[MaxLogLine:2*MaxLogLine], "F " + long[2*MaxLogLine:], "F end"}},
		{"exactly max", []string{long[:MaxLogLine] + "\n"}, []string{"F " + long[:MaxLogLine]}},
		{"max without newline then EOF", []string{long[:MaxLogLine]}, []string{"P " + long[:MaxLogLine]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sub", "c.log")
			l, err := OpenLogFile(path)
			if err != nil {
				t.Fatal(err)
			}
			before := time.Now()
			w := NewLineWriter(l, "stderr")
			for _, s := range tc.writes {
				if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			w.Flush()
			l.Close()
			recs := readRecords(t, path)
			var got []string
			for _, r := range recs {
				if r.stream != "stderr" {
					t.Errorf("stream %q", r.stream)
				}
				if r.ts.Before(before.Add(-time.Second)) || r.ts.After(time.Now().Add(time.Second)) {
					t.Errorf("timestamp %v is not now", r.ts)
				}
				got = append(got, r.tag+" "+r.text)
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("records:\n%.200q\nwant:\n%.200q", got, tc.want)
			}
		})
	}
}

func chunks(s string, n int) []string {
	var out []string
	for len(s) > n {
		out = append(out, s[:n])
		s = s[n:]
	}
	return append(out, s)
}

func TestLogFileReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.log")
	l, err := OpenLogFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	w := NewLineWriter(l, "stdout")
	w.Write([]byte("one\n"))
	// kubelet's rotation: rename, then ask for a reopen.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("two\n"))
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("three\n"))
	old := readRecords(t, path+".1")
	cur := readRecords(t, path)
	if len(old) != 2 || old[0].text != "one" || old[1].text != "two" {
		t.Errorf("rotated file: %+v", old)
	}
	if len(cur) != 1 || cur[0].text != "three" || cur[0].tag != "F" {
		t.Errorf("new file: %+v", cur)
	}
}

func TestLogFileRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "c.log")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenLogFile(link); err == nil {
		t.Fatal("OpenLogFile followed a symlink")
	}
}
