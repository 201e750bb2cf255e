package monitor

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/berth-dev/berth/errdefs"
	"golang.org/x/sys/unix"
)

// The monitor's protocol. A client connects to SocketName in the pod state
// directory and writes one Request as a JSON line; the monitor answers with
// one Response JSON line. Ops "wait" and "create" answer only when done; a
// client that gives up closes the connection, which cancels them. After a
// successful "attach" response the connection carries frames (see below).
const SocketName = "monitor.sock"

// Ops.
const (
	OpInfo     = "info"     // -> Pid, PidNS
	OpCreate   = "create"   // ID, Bundle, LogPath, Stdin, StdinOnce, Tty, Runtime -> State
	OpStart    = "start"    // ID -> State
	OpKill     = "kill"     // ID, Signal
	OpState    = "state"    // ID -> State
	OpWait     = "wait"     // ID -> State, when stopped
	OpReopen   = "reopen"   // ID: reopen the log file
	OpResize   = "resize"   // ID, Width, Height
	OpAttach   = "attach"   // ID, Stdin/Stdout/Stderr flags, then frames
	OpDelete   = "delete"   // ID: kill if needed, wait, forget
	OpShutdown = "shutdown" // kill all, clean up, exit
)

// Request is one client request.
type Request struct {
	Op        string `json:"op"`
	ID        string `json:"id,omitempty"`
	Bundle    string `json:"bundle,omitempty"`
	LogPath   string `json:"log_path,omitempty"`
	Stdin     bool   `json:"stdin,omitempty"`
	StdinOnce bool   `json:"stdin_once,omitempty"`
	Tty       bool   `json:"tty,omitempty"`
	Stdout    bool   `json:"stdout,omitempty"` // attach
	Stderr    bool   `json:"stderr,omitempty"` // attach
	Signal    int    `json:"signal,omitempty"`
	Width     uint16 `json:"width,omitempty"`
	Height    uint16 `json:"height,omitempty"`
	// Runtime, for create, runs the container through an OCI runtime's
	// command line instead of berth's own init.
	Runtime *OCIRuntime `json:"runtime,omitempty"`
}

// Response is the monitor's answer. Error is empty on success; Kind then
// names the errdefs kind of the failure.
type Response struct {
	Error string `json:"error,omitempty"`
	Kind  string `json:"kind,omitempty"`
	State *State `json:"state,omitempty"`
	Pid   int    `json:"pid,omitempty"`
	PidNS string `json:"pidns,omitempty"`
}

// Error kinds on the wire.
const (
	kindNotFound           = "not_found"
	kindFailedPrecondition = "failed_precondition"
	kindAlreadyExists      = "already_exists"
	kindInvalidArgument    = "invalid_argument"
)

func kindOf(err error) string {
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		return kindNotFound
	case errors.Is(err, errdefs.ErrFailedPrecondition):
		return kindFailedPrecondition
	case errors.Is(err, errdefs.ErrAlreadyExists):
		return kindAlreadyExists
	case errors.Is(err, errdefs.ErrInvalidArgument):
		return kindInvalidArgument
	}
	return ""
}

// Err turns a failed Response back into an error of the right errdefs kind.
func (r *Response) Err() error {
	if r.Error == "" {
		return nil
	}
	var kind error
	switch r.Kind {
	case kindNotFound:
		kind = errdefs.ErrNotFound
	case kindFailedPrecondition:
		kind = errdefs.ErrFailedPrecondition
	case kindAlreadyExists:
		kind = errdefs.ErrAlreadyExists
	case kindInvalidArgument:
		kind = errdefs.ErrInvalidArgument
	default:
		return errors.New(r.Error)
	}
	return &kindError{msg: r.Error, kind: kind}
}

type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

// Attach frames: 1 byte type, 4 bytes big-endian length, payload.
const (
	FrameStdin    = 0 // client -> monitor: stdin data
	FrameStdout   = 1 // monitor -> client
	FrameStderr   = 2 // monitor -> client
	FrameResize   = 3 // client -> monitor: 2 bytes width, 2 bytes height
	FrameStdinEOF = 4 // client -> monitor: no more stdin
	FrameExit     = 5 // monitor -> client: the container exited; payload is its State as JSON
)

// maxFrame bounds a frame's payload so a broken peer cannot make the other
// side allocate without limit.
const maxFrame = 1 << 20

// WriteFrame writes one frame to w.
func WriteFrame(w io.Writer, typ byte, payload []byte) error {
	var hdr [5]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	if len(payload) == 0 {
		_, err := w.Write(hdr[:])
		return err
	}
	// One write per frame keeps frames whole when writers share a conn.
	buf := make([]byte, 0, 5+len(payload))
	buf = append(append(buf, hdr[:]...), payload...)
	_, err := w.Write(buf)
	return err
}

// ReadFrame reads one frame; buf is reused when large enough.
func ReadFrame(r io.Reader, buf []byte) (typ byte, payload []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxFrame {
		return 0, nil, fmt.Errorf("attach frame of %d bytes is too large", n)
	}
	if uint32(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, err
	}
	return hdr[0], buf, nil
}

// SocketPath returns the monitor socket of a pod state directory.
func SocketPath(dir string) string { return filepath.Join(dir, SocketName) }

// maxSunPath is the size of sockaddr_un.sun_path, less the terminating NUL.
const maxSunPath = 107

// withShortPath calls fn with a path to name in dir that fits sockaddr_un: the
// path itself if short enough, else one through /proc/self/fd of an O_PATH
// descriptor of dir (deep state dirs and 64-character pod IDs overflow
// sun_path). The socket stays path-based either way, never abstract.
func withShortPath(dir, name string, fn func(string) error) error {
	p := filepath.Join(dir, name)
	if len(p) <= maxSunPath {
		return fn(p)
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	return fn("/proc/self/fd/" + strconv.Itoa(fd) + "/" + name)
}

// Dial connects to the monitor of the pod state directory dir. A monitor that
// is not there (no socket, or nobody listening) gives an error of kind
// errdefs.ErrUnavailable.
func Dial(ctx context.Context, dir string) (*net.UnixConn, error) {
	var conn net.Conn
	err := withShortPath(dir, SocketName, func(p string) error {
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
