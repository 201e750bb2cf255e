package server

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"

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
		return 0, nil, errors.New("attach frame of " + strconv.FormatUint(uint64(n), 10) + " bytes is too large")
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

// WithShortPath calls fn with a path to name in dir that fits sockaddr_un: the
// path itself if short enough, else one through /proc/self/fd of an O_PATH
// descriptor of dir (deep state dirs and 64-character pod IDs overflow
// sun_path). The socket stays path-based either way, never abstract.
func WithShortPath(dir, name string, fn func(string) error) error {
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

// decodeRequest parses a request line (as encoding/json would into a
// Request; unknown keys are ignored).
func decodeRequest(b []byte, req *Request) error {
	return decodeJSON(b, func(r *jsonReader, k string) {
		switch k {
		case "op":
			req.Op = r.str()
		case "id":
			req.ID = r.str()
		case "bundle":
			req.Bundle = r.str()
		case "log_path":
			req.LogPath = r.str()
		case "stdin":
			req.Stdin = r.bool()
		case "stdin_once":
			req.StdinOnce = r.bool()
		case "tty":
			req.Tty = r.bool()
		case "stdout":
			req.Stdout = r.bool()
		case "stderr":
			req.Stderr = r.bool()
		case "signal":
			req.Signal = int(r.int(0))
		case "width":
			req.Width = uint16(r.uint(16))
		case "height":
			req.Height = uint16(r.uint(16))
		case "runtime":
			if r.literal("null") {
				req.Runtime = nil
				return
			}
			rt := &OCIRuntime{}
			r.object(func(k string) {
				switch k {
				case "path":
					rt.Path = r.str()
				case "root":
					rt.Root = r.str()
				case "args":
					rt.Args = rt.Args[:0]
					r.array(func() { rt.Args = append(rt.Args, r.str()) })
				default:
					r.skip()
				}
			})
			req.Runtime = rt
		default:
			r.skip()
		}
	})
}

// appendJSON appends resp as encoding/json would encode it.
func (resp *Response) appendJSON(b []byte) []byte {
	w := jsonWriter{b: b}
	w.begin()
	w.str("error", resp.Error, true)
	w.str("kind", resp.Kind, true)
	if resp.State != nil {
		w.key("state")
		w.b = resp.State.appendJSON(w.b)
	}
	w.int("pid", int64(resp.Pid), true)
	w.str("pidns", resp.PidNS, true)
	w.end()
	return w.b
}
