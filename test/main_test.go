// Package e2e holds berth's end-to-end tests: each starts a real berthd built
// from the tree and drives it over its socket with k8s.io/cri-client, the
// kubelet's own client.
package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/berth-dev/berth/test/harness"
)

// bins are built once for the whole test binary.
var bins harness.Binaries

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Println("e2e tests need root; skipping")
		return 0
	}
	dir, err := os.MkdirTemp("", "berth-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bins, err = harness.Build(ctx, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}
