// Command berth-shim is the small per-pod and per-container binary: the pod
// monitor, the container init and the exec entry. It imports no gRPC,
// protobuf, Kubernetes or registry packages, because its start-up cost is paid
// once per pod and once per container (DESIGN.md, decision 3).
package main

import (
	"fmt"
	"os"
	"sort"
)

func main() {
	cmds := map[string]func(args []string) int{}
	for name, fn := range monitorCommands() {
		cmds[name] = fn
	}
	for name, fn := range containerCommands() {
		cmds[name] = fn
	}
	if len(os.Args) < 2 || cmds[os.Args[1]] == nil {
		names := make([]string, 0, len(cmds))
		for n := range cmds {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(os.Stderr, "usage: berth-shim COMMAND [ARGS...]\ncommands: %v\nberth-shim is started by berthd; it is not meant to be run by hand.\n", names)
		os.Exit(2)
	}
	os.Exit(cmds[os.Args[1]](os.Args[2:]))
}
