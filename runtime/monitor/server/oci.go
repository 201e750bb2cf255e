package server

import (
	"bytes"
	"os"
	"strings"
)

// OCIRuntime is an OCI runtime binary (runc, crun, runsc) driven through the
// OCI runtime command line: `PATH [ARGS...] --root ROOT COMMAND ...`.
type OCIRuntime struct {
	// Path is the runtime binary.
	Path string `json:"path"`
	// Root is the runtime's own state directory (--root), one per handler.
	Root string `json:"root"`
	// Args are global options placed before the command (e.g. --debug).
	Args []string `json:"args,omitempty"`
}

// Command returns the argv of `runtime COMMAND ARGS...`, without a log file.
func (r *OCIRuntime) Command(args ...string) []string {
	return r.CommandLog("", args...)
}

// CommandLog is Command with the runtime's log (its errors, and those of its
// container init) written as JSON lines to logPath; ErrorFromLog reads them.
// runc, crun and runsc all take --log and --log-format json.
func (r *OCIRuntime) CommandLog(logPath string, args ...string) []string {
	argv := append([]string{r.Path}, r.Args...)
	if logPath != "" {
		argv = append(argv, "--log", logPath, "--log-format", "json")
	}
	argv = append(argv, "--root", r.Root)
	return append(argv, args...)
}

// ErrorFromLog returns the last error message in an OCI runtime's JSON log
// ("" if there is none).
func ErrorFromLog(logPath string) string {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return ""
	}
	msg := ""
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		var level, m string
		err := decodeJSON(line, func(r *jsonReader, k string) {
			switch k {
			case "level":
				level = r.str()
			case "msg":
				m = r.str()
			default:
				r.skip()
			}
		})
		if err == nil && (level == "error" || level == "fatal") && m != "" {
			msg = m
		}
	}
	return strings.TrimSpace(msg)
}
