package monitor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"

	"github.com/berth-dev/berth/errdefs"
	"github.com/berth-dev/berth/runtime/monitor/server"
)

// Dial connects to the monitor of the pod state directory dir. A monitor that
// is not there (no socket, or nobody listening) gives an error of kind
// errdefs.ErrUnavailable.
func Dial(ctx context.Context, dir string) (*net.UnixConn, error) {
	var conn net.Conn
	err := server.WithShortPath(dir, SocketName, func(p string) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", p)
		conn = c
		return err
	})
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("pod monitor in %s: %w: %v", dir, errdefs.ErrUnavailable, err)
		}
		return nil, fmt.Errorf("pod monitor in %s: %w", dir, err)
	}
	return conn.(*net.UnixConn), nil
}

// Client talks to one pod's monitor, one connection per request.
type Client struct {
	Dir string // the pod state directory
}

// Call sends req and returns the monitor's response. Closing the connection
// when ctx ends cancels a pending create or wait in the monitor.
func (c *Client) Call(ctx context.Context, req *Request) (*Response, error) {
	conn, err := Dial(ctx, c.Dir)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	resp, _, err := roundTrip(ctx, conn, req)
	return resp, err
}

// roundTrip writes req on conn and reads one response. It returns the
// buffered reader for callers that go on reading frames.
func roundTrip(ctx context.Context, conn *net.UnixConn, req *Request) (*Response, *bufio.Reader, error) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	b, err := json.Marshal(req)
	if err != nil {
		return nil, nil, err
	}
	if _, err := conn.Write(append(b, '\n')); err != nil {
		return nil, nil, ctxErr(ctx, connErr(req.Op, err))
	}
	br := bufio.NewReader(conn)
	line, err := br.ReadBytes('\n')
	if err != nil {
		return nil, nil, ctxErr(ctx, connErr(req.Op, err))
	}
	resp := &Response{}
	if err := json.Unmarshal(line, resp); err != nil {
		return nil, nil, fmt.Errorf("pod monitor %s: bad response: %w", req.Op, err)
	}
	return resp, br, nil
}

// connErr classifies a broken connection: a monitor that closed it without
// answering died (or is exiting), which callers see as ErrUnavailable.
func connErr(op string, err error) error {
	if err == io.EOF || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return fmt.Errorf("pod monitor %s: connection closed: %w (%v)", op, errdefs.ErrUnavailable, err)
	}
	return fmt.Errorf("pod monitor %s: %w", op, err)
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// Do is Call plus Response.Err.
func (c *Client) Do(ctx context.Context, req *Request) (*Response, error) {
	resp, err := c.Call(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp, resp.Err()
}

// Attach opens an attach session. It returns the connection positioned at the
// first frame (reads go through the returned reader).
func (c *Client) Attach(ctx context.Context, req *Request) (*net.UnixConn, *bufio.Reader, error) {
	req.Op = OpAttach
	conn, err := Dial(ctx, c.Dir)
	if err != nil {
		return nil, nil, err
	}
	// Only the handshake is bounded by ctx here; the caller watches ctx for
	// the rest of the session.
	resp, br, err := roundTrip(ctx, conn, req)
	if err == nil {
		err = resp.Err()
	}
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, br, nil
}

// ReadStateFile reads dir/state.json. A missing file gives an error for which
// os.IsNotExist / errors.Is(err, fs.ErrNotExist) holds.
func ReadStateFile(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFileName))
	if err != nil {
		return nil, err
	}
	st := &State{}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("parse %s: %w", filepath.Join(dir, StateFileName), err)
	}
	return st, nil
}
