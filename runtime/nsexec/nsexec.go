// Package nsexec holds the part of berth-shim that must run before the Go
// runtime starts: a C constructor that, for `berth-shim exec`, joins a running
// container's namespaces and cgroups while the process is still
// single-threaded, and that makes `init` and `exec` run from a sealed memfd
// copy of the binary. Importing this package links the constructor in; for
// any other argv[1] it does nothing.
package nsexec

// #include "nsexec.h"
import "C"

// ExecJoined reports whether the constructor has joined a container for
// `berth-shim exec`; the caller is then the forked child inside it.
func ExecJoined() bool { return C.berth_exec_joined != 0 }

// ExecProcessFD is the descriptor of the --process file, opened before the
// mount namespace was switched (its host path no longer resolves); -1 if none.
func ExecProcessFD() int { return int(C.berth_exec_process_fd) }

// ExecConfigFD is the descriptor of the config.json in the --process file's
// directory (the container's bundle), opened with the process file; -1 if
// there is none.
func ExecConfigFD() int { return int(C.berth_exec_config_fd) }
