package cgroupmgr

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"os"
	"testing"
)

// helperEnv makes the test binary act as a small workload when re-executed
// by a test. Each mode first reads a line from stdin, so that the test can
// move the process into a cgroup before the work starts.
const helperEnv = "BERTH_CGROUPMGR_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "alloc":
		// Allocate and touch memory without end: only the OOM killer stops it.
		waitGo()
		var keep [][]byte
		for {
			b := make([]byte, 1<<20)
			for i := range b {
				b[i] = byte(i)
			}
			keep = append(keep, b)
		}
	case "hold":
		// Allocate and touch 32 MiB, burn some CPU, say ready, then wait.
		waitGo()
		b := make([]byte, 32<<20)
		for i := range b {
			b[i] = byte(i)
		}
		for i := 0; i < 50; i++ {
			s := sha256.Sum256(b[:1<<20])
			b[i] = s[0]
		}
		fmt.Println("ready")
		waitGo()
		fmt.Println(len(b))
		os.Exit(0)
	default:
		os.Exit(2)
	}
}

func waitGo() {
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		os.Exit(3)
	}
}
