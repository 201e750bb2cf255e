package runtime

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// testUserns maps container ids 0-65535 to host ids 100000-165535.
var testUserns = UsernsMapping{
	UID: specs.LinuxIDMapping{ContainerID: 0, HostID: 100000, Size: 65536},
	GID: specs.LinuxIDMapping{ContainerID: 0, HostID: 100000, Size: 65536},
}

// TestPinUserns: a pod's user namespace is pinned with its mappings and
// owns the pod's other namespaces; the uts one has the pod's hostname.
func TestPinUserns(t *testing.T) {
	needRoot(t)
	r := newTestRuntime(t, t.TempDir(), false)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "ns")
	t.Cleanup(func() { r.UnpinNamespaces(ctx, dir) })
	paths, err := r.PinNamespacesUserns(ctx, dir, []string{"user", "net", "ipc", "uts"}, "userns-pod", testUserns)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nsenter", "--user="+paths["user"], "--uts="+paths["uts"], "sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; hostname").CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter: %v: %s", err, out)
	}
	if f := strings.Fields(string(out)); strings.Join(f, " ") != "0 100000 65536 0 100000 65536 userns-pod" {
		t.Errorf("maps and hostname %q", out)
	}
	var user unix.Stat_t
	if err := unix.Stat(paths["user"], &user); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"net", "ipc", "uts"} {
		fd, err := unix.Open(paths[k], unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		// NS_GET_USERNS: the owning user namespace.
		ofd, err := unix.IoctlRetInt(fd, 0xb701)
		unix.Close(fd)
		if err != nil {
			t.Fatalf("%s: NS_GET_USERNS: %v", k, err)
		}
		var st unix.Stat_t
		unix.Fstat(ofd, &st)
		unix.Close(ofd)
		if st.Ino != user.Ino {
			t.Errorf("%s namespace is not owned by the pod's user namespace", k)
		}
	}
	if err := r.UnpinNamespaces(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(paths["user"]); !os.IsNotExist(err) {
		t.Errorf("user pin left: %v", err)
	}
	if _, err := r.PinNamespaces(ctx, dir, []string{"user"}); err == nil {
		t.Error("a user namespace pinned without mappings")
	}
}
