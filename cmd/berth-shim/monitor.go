package main

// monitorCommands returns the pod monitor's subcommands (owned by runtime/monitor).
func monitorCommands() map[string]func(args []string) int {
	return nil
}
