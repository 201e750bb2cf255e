package server

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkHandleState measures one state request as the monitor serves it
// (from its accepted connection to the reply). Its B/op is the garbage that
// each of kubelet's status polls leaves until the next trim.
func BenchmarkHandleState(b *testing.B) {
	s := &server{ctrs: map[string]*ctr{"c1": {id: "c1", st: State{ID: "c1", Status: StatusRunning, Pid: 42}}}}
	req := []byte(`{"op":"state","id":"c1"}` + "\n")
	buf := make([]byte, 4096)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := unix.Write(fds[1], req); err != nil {
			b.Fatal(err)
		}
		if err := unix.SetNonblock(fds[0], true); err != nil {
			b.Fatal(err)
		}
		s.handle(os.NewFile(uintptr(fds[0]), "monitor-conn"))
		n, _ := unix.Read(fds[1], buf)
		unix.Close(fds[1])
		if !strings.Contains(string(buf[:n]), `"status":"running"`) {
			b.Fatalf("reply %q", buf[:n])
		}
	}
}
