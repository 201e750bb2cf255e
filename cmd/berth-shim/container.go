package main

// containerCommands returns the container init, exec entry and namespace
// subcommands (owned by the container-setup packages under runtime/).
func containerCommands() map[string]func(args []string) int {
	return nil
}
