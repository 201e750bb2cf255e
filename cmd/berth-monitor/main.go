// Command berth-monitor is the per-pod monitor alone, built without cgo.
// berth-shim holds the monitor too, but its cgo constructor (for joining a
// mount namespace before the Go runtime starts) links libc and libseccomp,
// which one process per pod would pay for: this binary has about a third
// less resident memory (runtime's BenchmarkMonitorMemory). berthd uses it
// when it sits beside berth-shim.
package main

import (
	"fmt"
	"os"

	"github.com/berth-dev/berth/runtime/monitor"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "monitor" {
		fmt.Fprintln(os.Stderr, "usage: berth-monitor monitor --dir DIR --shim SHIM\nberth-monitor is started by berthd; it is not meant to be run by hand.")
		os.Exit(2)
	}
	os.Exit(monitor.Main(os.Args[2:]))
}
