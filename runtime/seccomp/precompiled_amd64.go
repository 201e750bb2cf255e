package seccomp

import _ "embed"

// defaultProgram is DefaultProfile() compiled by libseccomp for amd64
// (x86_64, x86 and x32). Regenerate with
// `go test ./runtime/seccomp -run TestPrecompiledDefault -update`.
//
//go:embed default_amd64.bpf
var defaultProgram []byte
