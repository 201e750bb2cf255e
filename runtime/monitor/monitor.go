// Package monitor is berthd's side of the per-pod monitor: the client of its
// socket protocol, its state files, and the protocol's types. The monitor
// process itself is package runtime/monitor/server, kept apart so that the
// binary which runs once per pod links none of what this side uses
// (encoding/json, net, fmt); this package re-exports the server's types and
// functions under their old names.
package monitor

import (
	"io"
	"os"

	"github.com/berth-dev/berth/runtime/monitor/server"
)

// Main is `berth-shim monitor --dir DIR [--share-pid] [--shim PATH]`: the
// monitor process (server.Main).
func Main(args []string) int { return server.Main(args) }

// PidNSName is where a pod's shared pid namespace is pinned in its state dir.
const PidNSName = server.PidNSName

// ReadyMessage is what the monitor writes on fd 3 once it serves its socket
// (or fails to), as one JSON line.
type ReadyMessage = server.ReadyMessage

// ErrMonitorRunning is the start error of a monitor whose pod dir already
// has a live monitor.
var ErrMonitorRunning = server.ErrMonitorRunning

// The protocol (see server/proto.go).
const (
	SocketName = server.SocketName

	OpInfo     = server.OpInfo
	OpCreate   = server.OpCreate
	OpStart    = server.OpStart
	OpKill     = server.OpKill
	OpState    = server.OpState
	OpWait     = server.OpWait
	OpReopen   = server.OpReopen
	OpResize   = server.OpResize
	OpAttach   = server.OpAttach
	OpDelete   = server.OpDelete
	OpShutdown = server.OpShutdown

	FrameStdin    = server.FrameStdin
	FrameStdout   = server.FrameStdout
	FrameStderr   = server.FrameStderr
	FrameResize   = server.FrameResize
	FrameStdinEOF = server.FrameStdinEOF
	FrameExit     = server.FrameExit
)

type (
	// Request is one client request.
	Request = server.Request
	// Response is the monitor's answer (Response.Err gives its error).
	Response = server.Response
	// OCIRuntime is an OCI runtime binary driven through its command line.
	OCIRuntime = server.OCIRuntime
	// State is what the monitor knows about one container.
	State = server.State
)

// Container statuses, as in the OCI runtime spec's state.
const (
	StatusCreated = server.StatusCreated
	StatusRunning = server.StatusRunning
	StatusStopped = server.StatusStopped
)

// StateFileName is the name of the per-container state file, in the
// container's bundle directory.
const StateFileName = server.StateFileName

// WriteFrame writes one attach frame to w.
func WriteFrame(w io.Writer, typ byte, payload []byte) error {
	return server.WriteFrame(w, typ, payload)
}

// ReadFrame reads one attach frame; buf is reused when large enough.
func ReadFrame(r io.Reader, buf []byte) (typ byte, payload []byte, err error) {
	return server.ReadFrame(r, buf)
}

// SocketPath returns the monitor socket of a pod state directory.
func SocketPath(dir string) string { return server.SocketPath(dir) }

// WriteStateFile replaces dir/state.json atomically (see
// server.WriteStateFile).
func WriteStateFile(dir string, st *State) error { return server.WriteStateFile(dir, st) }

// OpenPTY allocates a pseudo-terminal pair (see server.OpenPTY).
func OpenPTY() (master, slave *os.File, err error) { return server.OpenPTY() }

// SetWinsize sets a terminal's window size.
func SetWinsize(f *os.File, width, height uint16) error { return server.SetWinsize(f, width, height) }

// ErrorFromLog returns the last error message in an OCI runtime's JSON log.
func ErrorFromLog(logPath string) string { return server.ErrorFromLog(logPath) }

// PidStart returns the start time of pid in clock ticks since boot, which
// tells a recorded container process from a later process with the same
// pid (0 if there is no such process).
func PidStart(pid int) uint64 { return server.PidStart(pid) }

// CRI-format log files.
type (
	// LogFile is a CRI-format log file shared by a container's stdout and stderr.
	LogFile = server.LogFile
	// LineWriter turns one output stream into CRI log records.
	LineWriter = server.LineWriter
)

// MaxLogLine is the longest line written as one CRI log record.
const MaxLogLine = server.MaxLogLine

// OpenLogFile opens (creating if needed) the log file at path for appending.
func OpenLogFile(path string) (*LogFile, error) { return server.OpenLogFile(path) }

// NewLineWriter returns a writer of stream ("stdout" or "stderr") records into l.
func NewLineWriter(l *LogFile, stream string) *LineWriter { return server.NewLineWriter(l, stream) }
