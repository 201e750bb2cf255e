package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseCRILine(t *testing.T) {
	ts, stderr, partial, content, err := parseCRILine([]byte("2016-10-06T00:17:09.669794202Z stderr P some text here"))
	if err != nil || !stderr || !partial || string(content) != "some text here" || ts.Nanosecond() != 669794202 {
		t.Errorf("parse: %v %v %v %q %v", ts, stderr, partial, content, err)
	}
	if _, _, _, content, err := parseCRILine([]byte("2016-10-06T00:17:09Z stdout F")); err != nil || len(content) != 0 {
		t.Errorf("empty line: %q %v", content, err)
	}
	for _, bad := range []string{"", "nots a line", "2016-10-06T00:17:09Z stdin F x", "2016-10-06T00:17:09Z stdout X x", "yesterday stdout F x"} {
		if _, _, _, _, err := parseCRILine([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

const logSample = "" +
	"2026-01-01T00:00:01.000000000Z stdout F first\n" +
	"2026-01-01T00:00:02.000000000Z stdout P par\n" +
	"2026-01-01T00:00:02.500000000Z stderr F err line\n" +
	"2026-01-01T00:00:03.000000000Z stdout P ti\n" +
	"2026-01-01T00:00:03.100000000Z stdout F al\n" +
	"2026-01-01T00:00:04.000000000Z stdout F last\n"

func writeLog(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.log")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLogsReadJoinsPartials(t *testing.T) {
	p := writeLog(t, logSample)
	for _, tc := range []struct {
		o            logOptions
		stdout, errs string
	}{
		{logOptions{tail: -1}, "first\npartial\nlast\n", "err line\n"},
		{logOptions{tail: 2}, "partial\nlast\n", ""},
		{logOptions{tail: 0}, "", ""},
		{logOptions{tail: -1, since: time.Date(2026, 1, 1, 0, 0, 2, 0, time.UTC)}, "partial\nlast\n", "err line\n"},
		{logOptions{tail: 1, timestamps: true}, "2026-01-01T00:00:04Z last\n", ""},
	} {
		var out, errb bytes.Buffer
		lf := &logFollower{path: p}
		if err := lf.follow(context.Background(), tc.o, &out, &errb); err != nil {
			t.Fatal(err)
		}
		if out.String() != tc.stdout || errb.String() != tc.errs {
			t.Errorf("%+v: stdout %q stderr %q; want %q %q", tc.o, out.String(), errb.String(), tc.stdout, tc.errs)
		}
	}
}

// syncBuffer is a bytes.Buffer safe to read while a follower writes it.
type syncBuffer struct {
	ch chan string
}

func (s *syncBuffer) Write(p []byte) (int, error) { s.ch <- string(p); return len(p), nil }

// A follower keeps reading as the file grows, across a rotation (rename,
// new file), and stops when the context ends.
func TestLogsFollowAcrossRotation(t *testing.T) {
	p := writeLog(t, "2026-01-01T00:00:01Z stdout F one\n")
	out := &syncBuffer{ch: make(chan string, 16)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		lf := &logFollower{path: p, pollEvery: 5 * time.Millisecond}
		done <- lf.follow(ctx, logOptions{follow: true, tail: -1}, out, out)
	}()
	expect := func(want string) {
		t.Helper()
		select {
		case got := <-out.ch:
			if got != want {
				t.Fatalf("followed %q, want %q", got, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no %q from the follower", want)
		}
	}
	expect("one\n")
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A line written in two pieces comes out once, whole.
	f.WriteString("2026-01-01T00:00:02Z stdout F tw")
	f.Sync()
	f.WriteString("o\n")
	f.Close()
	expect("two\n")
	if err := os.Rename(p, p+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("2026-01-01T00:00:03Z stderr F three\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	expect("three\n")
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("follower ended with %v", err)
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"10m":                  now.Add(-10 * time.Minute),
		"2026-01-01T11:00:00Z": time.Date(2026, 1, 1, 11, 0, 0, 0, time.UTC),
		"1767268800":           time.Unix(1767268800, 0),
	} {
		got, err := parseSince(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseSince(%q) = %v %v, want %v", in, got, err, want)
		}
	}
	if _, err := parseSince("yesterday", now); err == nil || !strings.Contains(err.Error(), "since") {
		t.Errorf("bad --since accepted: %v", err)
	}
}
