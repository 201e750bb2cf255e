package main

import "github.com/berth-dev/berth/runtime/monitor"

// monitorCommands returns the pod monitor's subcommands (owned by runtime/monitor).
func monitorCommands() map[string]func(args []string) int {
	return map[string]func(args []string) int{
		"monitor": monitor.Main,
	}
}
