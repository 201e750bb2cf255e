package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// logMsg is one whole line of a container's output.
type logMsg struct {
	ts      time.Time
	stderr  bool
	content []byte // without the newline
}

// parseCRILine parses one line of the CRI log format (kubelet's
// "TIMESTAMP STREAM TAG CONTENT", TAG being P for a partial line and F for
// the full end of one).
func parseCRILine(line []byte) (ts time.Time, stderr, partial bool, content []byte, err error) {
	fields := bytes.SplitN(line, []byte(" "), 4)
	if len(fields) < 3 {
		return ts, false, false, nil, fmt.Errorf("malformed CRI log line %q", line)
	}
	ts, err = time.Parse(time.RFC3339Nano, string(fields[0]))
	if err != nil {
		return ts, false, false, nil, fmt.Errorf("malformed CRI log timestamp %q: %w", fields[0], err)
	}
	switch string(fields[1]) {
	case "stdout":
	case "stderr":
		stderr = true
	default:
		return ts, false, false, nil, fmt.Errorf("malformed CRI log stream %q", fields[1])
	}
	switch string(fields[2]) {
	case "P":
		partial = true
	case "F":
	default:
		return ts, false, false, nil, fmt.Errorf("malformed CRI log tag %q", fields[2])
	}
	if len(fields) == 4 {
		content = fields[3]
	}
	return ts, stderr, partial, content, nil
}

// assembler joins P partial lines into whole ones, per stream.
type assembler struct {
	partial [2][]byte
	first   [2]time.Time
}

// add takes one CRI log line and returns a whole message when the line
// finished one.
func (a *assembler) add(line []byte) (logMsg, bool, error) {
	ts, stderr, partial, content, err := parseCRILine(line)
	if err != nil {
		return logMsg{}, false, err
	}
	i := 0
	if stderr {
		i = 1
	}
	if len(a.partial[i]) == 0 && a.first[i].IsZero() {
		a.first[i] = ts
	}
	a.partial[i] = append(a.partial[i], content...)
	if partial {
		return logMsg{}, false, nil
	}
	m := logMsg{ts: a.first[i], stderr: stderr, content: a.partial[i]}
	a.partial[i], a.first[i] = nil, time.Time{}
	return m, true, nil
}

type logOptions struct {
	follow     bool
	tail       int // -1: all
	timestamps bool
	since      time.Time
}

// logFollower reads a container's CRI log file. berth runs as root on the
// node, so it reads the file kubelet would, at ContainerStatus.LogPath,
// rather than asking berthd to stream it.
type logFollower struct {
	rt   runtimeapi.RuntimeServiceClient
	id   string
	path string
	// offset is where reading starts.
	offset int64
	// pollEvery is how often a follower looks for new output; a file has no
	// way to wake a reader that waits at its end short of inotify.
	pollEvery time.Duration
}

func (lf *logFollower) write(o logOptions, m logMsg, stdout, stderr io.Writer) error {
	if !o.since.IsZero() && m.ts.Before(o.since) {
		return nil
	}
	w := stdout
	if m.stderr {
		w = stderr
	}
	var b []byte
	if o.timestamps {
		b = append(b, m.ts.UTC().Format(time.RFC3339Nano)...)
		b = append(b, ' ')
	}
	b = append(b, m.content...)
	b = append(b, '\n')
	_, err := w.Write(b)
	return err
}

// follow copies the log to stdout and stderr. With o.follow it keeps
// reading as the file grows, reopens it after kubelet-style rotation
// (rename and a new file), and stops once the container has exited and the
// file is drained.
func (lf *logFollower) follow(ctx context.Context, o logOptions, stdout, stderr io.Writer) error {
	every := lf.pollEvery
	if every == 0 {
		every = 100 * time.Millisecond
	}
	tick := time.NewTicker(every)
	defer tick.Stop()

	f, err := os.Open(lf.path)
	for err != nil {
		// The file appears when the container starts.
		if !errors.Is(err, os.ErrNotExist) || !o.follow {
			return fmt.Errorf("open log: %w", err)
		}
		if exited, serr := lf.exited(ctx); serr != nil || exited {
			return serr
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
		f, err = os.Open(lf.path)
	}
	defer func() { f.Close() }()
	if lf.offset > 0 {
		if _, err := f.Seek(lf.offset, io.SeekStart); err != nil {
			return fmt.Errorf("seek log: %w", err)
		}
	}

	var (
		asm     assembler
		pending []byte
		buf     = make([]byte, 64<<10)
		ring    []logMsg
		initial = true
		final   = false
	)
	emit := func(m logMsg) error {
		if initial && o.tail >= 0 {
			if o.tail == 0 {
				return nil
			}
			// Copy: the assembler reuses nothing, but pending does.
			m.content = append([]byte(nil), m.content...)
			ring = append(ring, m)
			if len(ring) > o.tail {
				ring = ring[1:]
			}
			return nil
		}
		return lf.write(o, m, stdout, stderr)
	}
	for {
		n, rerr := f.Read(buf)
		if n > 0 {
			pending = append(pending, buf[:n]...)
			for {
				nl := bytes.IndexByte(pending, '\n')
				if nl < 0 {
					break
				}
				line := pending[:nl]
				if m, ok, err := asm.add(line); err != nil {
					return err
				} else if ok {
					m.content = append([]byte(nil), m.content...)
					if err := emit(m); err != nil {
						return err
					}
				}
				pending = pending[nl+1:]
			}
			// Keep the rest (a line still being written) in a fresh slice.
			pending = append([]byte(nil), pending...)
		}
		if rerr == nil {
			continue
		}
		if !errors.Is(rerr, io.EOF) {
			return fmt.Errorf("read log: %w", rerr)
		}
		if initial {
			initial = false
			for _, m := range ring {
				if err := lf.write(o, m, stdout, stderr); err != nil {
					return err
				}
			}
			ring = nil
		}
		if !o.follow || final {
			return nil
		}
		if nf, rotated := lf.reopenIfRotated(f); rotated {
			f.Close()
			f = nf
			pending = nil
			continue
		}
		exited, err := lf.exited(ctx)
		if err != nil {
			return err
		}
		if exited {
			// One more pass reads what was written before the exit.
			final = true
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// reopenIfRotated opens the file now at the log path when it is not the one
// being read (rotation renames the old one away) or when the one being read
// was truncated.
func (lf *logFollower) reopenIfRotated(f *os.File) (*os.File, bool) {
	cur, err := f.Stat()
	if err != nil {
		return nil, false
	}
	now, err := os.Stat(lf.path)
	if err != nil {
		return nil, false
	}
	a, aok := cur.Sys().(*syscall.Stat_t)
	b, bok := now.Sys().(*syscall.Stat_t)
	off, _ := f.Seek(0, io.SeekCurrent)
	if aok && bok && (a.Ino != b.Ino || a.Dev != b.Dev) {
		nf, err := os.Open(lf.path)
		if err != nil {
			return nil, false
		}
		return nf, true
	}
	if cur.Size() < off {
		// Truncated in place (copytruncate): read it again from the start.
		_, _ = f.Seek(0, io.SeekStart)
	}
	return nil, false
}

func (lf *logFollower) exited(ctx context.Context) (bool, error) {
	if lf.rt == nil {
		return false, nil
	}
	st, err := lf.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: lf.id})
	if isNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, rpcError("ContainerStatus", err)
	}
	return st.GetStatus().GetState() == runtimeapi.ContainerState_CONTAINER_EXITED, nil
}

// parseSince accepts what docker's --since does: an RFC 3339 time, a Unix
// timestamp, or a duration back from now ("10m").
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, time.RFC3339, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		sec := int64(f)
		return time.Unix(sec, int64((f-float64(sec))*1e9)), nil
	}
	return time.Time{}, invalid("invalid value for \"since\": %q", s)
}

func newLogsCommand(c *cli) *cobra.Command {
	var follow, timestamps bool
	var tail, sinceS string
	cmd := &cobra.Command{
		Use:   "logs [OPTIONS] CONTAINER",
		Short: "Fetch the logs of a container",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			o := logOptions{follow: follow, timestamps: timestamps, tail: -1}
			if tail != "all" && tail != "" {
				n, err := strconv.Atoi(tail)
				if err != nil {
					return invalid("invalid value for \"tail\": %q", tail)
				}
				o.tail = n
			}
			since, err := parseSince(sinceS, time.Now())
			if err != nil {
				return err
			}
			o.since = since
			rt, err := c.runtime(ctx)
			if err != nil {
				return err
			}
			ct, err := lister{rt: rt}.resolve(ctx, args[0])
			if err != nil {
				return err
			}
			path := ct.status.GetLogPath()
			if path == "" {
				return fmt.Errorf("container %s has no log file", args[0])
			}
			lf := &logFollower{rt: rt, id: ct.ID, path: path}
			return lf.follow(ctx, o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "Follow log output")
	cmd.Flags().BoolVarP(&timestamps, "timestamps", "t", false, "Show timestamps")
	cmd.Flags().StringVarP(&tail, "tail", "n", "all", "Number of lines to show from the end of the logs")
	cmd.Flags().StringVar(&sinceS, "since", "", "Show logs since timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m for 42 minutes)")
	return cmd
}
