package main

import "github.com/berth-dev/berth/runtime/container"

// containerCommands returns the container init, exec entry and namespace
// subcommands (owned by the container-setup packages under runtime/).
func containerCommands() map[string]func(args []string) int {
	return map[string]func(args []string) int{
		"init":    container.InitMain,
		"exec":    container.ExecMain,
		"pin":     container.PinMain,
		"unpin":   container.UnpinMain,
		"podinit": container.PodInitMain,
	}
}
