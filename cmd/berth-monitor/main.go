// Command berth-monitor is the per-pod monitor alone, built without cgo.
// berth-shim holds the monitor too, but its cgo constructor (for joining a
// mount namespace before the Go runtime starts) links libc and libseccomp,
// and its container code more packages, which one process per pod would
// pay for. This binary links only runtime/monitor/server (not
// runtime/monitor, berthd's client side), so it stays about as small as a
// Go program can (runtime's BenchmarkMonitorMemory). berthd uses it when it
// sits beside berth-shim.
package main

import (
	"os"

	"github.com/berth-dev/berth/runtime/monitor/server"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "monitor" {
		os.Stderr.WriteString("usage: berth-monitor monitor --dir DIR --shim SHIM\nberth-monitor is started by berthd; it is not meant to be run by hand.\n")
		os.Exit(2)
	}
	os.Exit(server.Main(os.Args[2:]))
}
