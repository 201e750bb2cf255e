// Package server is berth's per-pod monitor process: the parent and
// subreaper of a pod's containers. It starts each container's init, reaps
// the containers, records exits in per-container state files, copies output
// into CRI-format log files, keeps stdin and the terminal for attach, and
// answers berthd on a unix socket in the pod state directory (protocol in
// proto.go).
//
// One runs per pod, so its resident size counts per pod (DESIGN.md 3), and
// on this kernel the whole binary stays resident: every package linked in
// costs memory in every pod. This package therefore links no fmt, no
// encoding/json and no net (see json.go, sock.go and errors.go for what
// stands in for them), nor anything else that berthd's side needs: the
// client, which berthd uses, is the parent package runtime/monitor, which
// also re-exports the protocol's types. cmd/berth-monitor links this
// package alone.
package server

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// PidNSName is where a pod's shared pid namespace is pinned in its state dir.
const PidNSName = "pidns"

// ReadyMessage is what the monitor writes on fd 3 once it serves its socket
// (or fails to), as one JSON line.
type ReadyMessage struct {
	Pid   int    `json:"pid,omitempty"`
	PidNS string `json:"pidns,omitempty"`
	Error string `json:"error,omitempty"`
}

func (m *ReadyMessage) appendJSON(b []byte) []byte {
	w := jsonWriter{b: b}
	w.begin()
	w.int("pid", int64(m.Pid), true)
	w.str("pidns", m.PidNS, true)
	w.str("error", m.Error, true)
	w.end()
	return w.b
}

const usage = "usage: monitor --dir DIR [--share-pid [--userns PATH]] [--shim PATH]"

// options are the monitor's command-line flags.
type options struct {
	dir      string // pod state directory (socket, pinned pid namespace)
	sharePID bool   // start a pod init in a new pid namespace for the pod's containers
	shim     string // berth-shim binary for container init and podinit (default: this binary)
	userns   string // the pod's user namespace, which owns the shared pid namespace
}

// parseArgs reads the flags as package flag would (-x or --x, a value as
// the next argument or after =, parsing up to the first non-flag argument),
// without linking package flag, whose default FlagSet alone pulls in fmt.
func parseArgs(args []string) (options, error) {
	var o options
	for len(args) > 0 {
		a := args[0]
		if len(a) < 2 || a[0] != '-' {
			break
		}
		args = args[1:]
		if a == "--" {
			break
		}
		name := strings.TrimPrefix(a[1:], "-")
		name, val, hasVal := strings.Cut(name, "=")
		switch name {
		case "share-pid":
			v, err := strconv.ParseBool(val)
			if !hasVal {
				v, err = true, nil
			}
			if err != nil {
				return o, errors.New("invalid boolean value " + quote(val) + " for -share-pid")
			}
			o.sharePID = v
		case "dir", "shim", "userns":
			if !hasVal {
				if len(args) == 0 {
					return o, errors.New("flag needs an argument: --" + name)
				}
				val, args = args[0], args[1:]
			}
			switch name {
			case "dir":
				o.dir = val
			case "shim":
				o.shim = val
			default:
				o.userns = val
			}
		default:
			return o, errors.New("flag provided but not defined: " + a)
		}
	}
	return o, nil
}

// Main is `berth-shim monitor --dir DIR [--share-pid [--userns PATH]]
// [--shim PATH]`. It can also be linked into a binary of its own
// (cmd/berth-monitor, see runtime.Config.MonitorPath): --shim then names the
// berth-shim that
// provides init and podinit.
func Main(args []string) int {
	o, err := parseArgs(args)
	if err != nil {
		logf(err.Error() + "\n" + usage)
		return 2
	}
	if o.dir == "" || !filepath.IsAbs(o.dir) {
		logf("--dir must be an absolute path")
		return 2
	}
	if o.userns != "" && (!o.sharePID || !filepath.IsAbs(o.userns)) {
		logf("--userns must be an absolute path, with --share-pid")
		return 2
	}
	// GC: the runtime's default pacing, plus trims (trim.go). Measured
	// (BenchmarkMonitorMemory), a lower GOGC made the monitor bigger: each
	// GC touches runtime metadata (some 250 KiB at the first) that a
	// monitor which never collects does not.

	ready := os.NewFile(3, "ready")
	if _, err := unix.FcntlInt(3, unix.F_GETFD, 0); err != nil {
		ready = nil
	}
	s, err := newServer(o.dir, o.shim, o.sharePID, o.userns)
	if err != nil {
		logf(err.Error())
		sendReady(ready, &ReadyMessage{Error: err.Error()})
		return 1
	}
	sendReady(ready, &ReadyMessage{Pid: os.Getpid(), PidNS: s.pidns})
	s.serve() // returns never: shutdown exits the process
	return 0
}

func sendReady(f *os.File, m *ReadyMessage) {
	if f == nil {
		return
	}
	f.Write(append(m.appendJSON(nil), '\n'))
	f.Close()
}

// logf writes one line to the monitor's stderr (its log file in the pod
// state directory).
func logf(msg string) {
	os.Stderr.WriteString("monitor: " + msg + "\n")
}
