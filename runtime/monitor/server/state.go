package server

import (
	"os"
	"path/filepath"
	"time"
)

// Container statuses, as in the OCI runtime spec's state.
const (
	StatusCreated = "created"
	StatusRunning = "running"
	StatusStopped = "stopped"
)

// StateFileName is the name of the per-container state file, in the
// container's bundle directory.
const StateFileName = "state.json"

// State is what the monitor knows about one container. It is written to the
// bundle's state file on every change, so berthd reads the last word even
// when the monitor is gone.
type State struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	// Pid is the host pid of the container's process; PidStart is its start
	// time in clock ticks since boot (/proc/PID/stat field 22), so that a
	// reader can tell the process from a later one that reuses the pid.
	Pid      int    `json:"pid,omitempty"`
	PidStart uint64 `json:"pid_start,omitempty"`
	// ExitCode is the exit status, or 128+signal when a signal killed it.
	ExitCode int `json:"exit_code"`
	// Signal is the signal that killed the process, 0 if it exited.
	Signal int `json:"signal,omitempty"`
	// Reason is set only by berthd, for an exit the monitor could not
	// record (it died); otherwise berthd derives it.
	Reason     string    `json:"reason,omitempty"`
	Message    string    `json:"message,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
}

// WriteStateFile replaces dir/state.json atomically: a reader sees either the
// old or the new content, and after a crash of the writer or of the machine
// the file is never torn (write to a temporary file, fsync, rename, fsync the
// directory).
func WriteStateFile(dir string, st *State) error {
	return writeFileAtomic(dir, StateFileName, st.appendJSON(nil))
}

func writeFileAtomic(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, "."+name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return wrap("write "+filepath.Join(dir, name), err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// appendJSON appends st as encoding/json would encode it.
func (st *State) appendJSON(b []byte) []byte {
	w := jsonWriter{b: b}
	w.begin()
	w.str("id", st.ID, false)
	w.str("status", st.Status, false)
	w.int("pid", int64(st.Pid), true)
	w.uint("pid_start", st.PidStart, true)
	w.int("exit_code", int64(st.ExitCode), false)
	w.int("signal", int64(st.Signal), true)
	w.str("reason", st.Reason, true)
	w.str("message", st.Message, true)
	w.time("created_at", st.CreatedAt)
	w.time("started_at", st.StartedAt)
	w.time("finished_at", st.FinishedAt)
	w.end()
	return w.b
}
