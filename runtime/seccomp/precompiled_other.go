//go:build !amd64

package seccomp

// defaultProgram is only precompiled for amd64; elsewhere Compile runs.
var defaultProgram []byte
