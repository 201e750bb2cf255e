package server

import "strconv"

// wrapError is what fmt.Errorf("MSG: %w", err) makes. The monitor builds
// its messages by concatenation instead of with fmt, whose printing (and
// reflection) code would otherwise be linked into every pod's monitor.
type wrapError struct {
	msg string
	err error
}

func (e *wrapError) Error() string {
	if e.err == nil {
		return e.msg
	}
	return e.msg + ": " + e.err.Error()
}

func (e *wrapError) Unwrap() error { return e.err }

// wrap returns an error reading "msg: err" that wraps err.
func wrap(msg string, err error) error { return &wrapError{msg: msg, err: err} }

// quote is fmt's %q of a string.
func quote(s string) string { return strconv.Quote(s) }
