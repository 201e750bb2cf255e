// Package version reports berth's version, taken from the Go build info so
// that a tagged module build needs no extra linker flags.
package version

import "runtime/debug"

// Name is the runtime name reported over the CRI.
const Name = "berth"

// Version returns the module version of the running binary, or "dev" for a
// build from a work tree.
func Version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok || info.Main.Version == "" || info.Main.Version == "(devel)" {
		return "dev"
	}
	return info.Main.Version
}
