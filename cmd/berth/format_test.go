package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestStatusStrings(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ago := func(d time.Duration) int64 { return now.Add(-d).UnixNano() }
	for _, tc := range []struct {
		st   *runtimeapi.ContainerStatus
		want string
	}{
		{&runtimeapi.ContainerStatus{State: runtimeapi.ContainerState_CONTAINER_CREATED}, "Created"},
		{&runtimeapi.ContainerStatus{State: runtimeapi.ContainerState_CONTAINER_RUNNING, StartedAt: ago(5 * time.Minute)}, "Up 5 minutes"},
		{&runtimeapi.ContainerStatus{State: runtimeapi.ContainerState_CONTAINER_RUNNING, StartedAt: ago(90 * time.Second)}, "Up About a minute"},
		{&runtimeapi.ContainerStatus{State: runtimeapi.ContainerState_CONTAINER_RUNNING, StartedAt: ago(200 * time.Millisecond)}, "Up Less than a second"},
		{&runtimeapi.ContainerStatus{State: runtimeapi.ContainerState_CONTAINER_EXITED, ExitCode: 0, FinishedAt: ago(2 * time.Second)}, "Exited (0) 2 seconds ago"},
		{&runtimeapi.ContainerStatus{State: runtimeapi.ContainerState_CONTAINER_EXITED, ExitCode: 137, FinishedAt: ago(3 * time.Hour)}, "Exited (137) 3 hours ago"},
		{&runtimeapi.ContainerStatus{State: runtimeapi.ContainerState_CONTAINER_UNKNOWN}, "Unknown"},
	} {
		if got := statusString(tc.st, now); got != tc.want {
			t.Errorf("statusString(%v) = %q, want %q", tc.st, got, tc.want)
		}
	}
	if got := since(now, now.Add(-2*time.Minute)) + " ago"; got != "2 minutes ago" {
		t.Errorf("CREATED = %q", got)
	}
}

func TestSizesAndNames(t *testing.T) {
	for n, want := range map[uint64]string{0: "0B", 999: "999B", 1000: "1kB", 4261000: "4.26MB", 1234567890: "1.23GB"} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
	if got := shortImageName("docker.io/library/busybox:latest"); got != "busybox:latest" {
		t.Errorf("shortImageName = %q", got)
	}
	if r, tag := splitRepoTag("127.0.0.1:5000/library/busybox:1.36"); r != "127.0.0.1:5000/library/busybox" || tag != "1.36" {
		t.Errorf("splitRepoTag = %q %q", r, tag)
	}
	if r, tag := splitRepoTag("127.0.0.1:5000/busybox"); r != "127.0.0.1:5000/busybox" || tag != "<none>" {
		t.Errorf("splitRepoTag without tag = %q %q", r, tag)
	}
	if got := truncID("sha256:0123456789abcdef0123"); got != "0123456789ab" {
		t.Errorf("truncID = %q", got)
	}
}

func TestDisplayCommand(t *testing.T) {
	for _, tc := range []struct {
		argv  []string
		trunc bool
		want  string
	}{
		{[]string{"sh"}, true, `"sh"`},
		{[]string{"sh", "-c", "echo hello; sleep 10"}, true, `"sh -c 'echo hello; …"`},
		{[]string{"sh", "-c", "echo hello; sleep 10"}, false, `"sh -c 'echo hello; sleep 10'"`},
		{[]string{"/docker-entrypoint.sh", "nginx"}, true, `"/docker-entrypoint.…"`},
		{[]string{"echo", `a"b`}, false, `"echo a\"b"`},
	} {
		if got := displayCommand(tc.argv, tc.trunc); got != tc.want {
			t.Errorf("displayCommand(%q, %v) = %s, want %s", tc.argv, tc.trunc, got, tc.want)
		}
	}
}

func TestTableFormats(t *testing.T) {
	rows := []any{
		psRow{ID: "0123456789ab", Image: "busybox", Command: `"sh"`, RunningFor: "2 minutes ago", Status: "Up 2 minutes", Names: "brave_turing", labels: map[string]string{"tier": "front"}},
		psRow{ID: "ba9876543210", Image: "nginx:latest", Command: `"nginx -g 'daemon …"`, RunningFor: "3 hours ago", Status: "Exited (0) 1 hour ago", Ports: "0.0.0.0:8080->80/tcp", Names: "web"},
	}
	var b bytes.Buffer
	if err := (table{format: psDefaultFormat, headers: psHeaders}).write(&b, rows); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"CONTAINER ID   IMAGE          COMMAND                CREATED         STATUS                  PORTS                  NAMES\n" +
		"0123456789ab   busybox        \"sh\"                   2 minutes ago   Up 2 minutes                                   brave_turing\n" +
		"ba9876543210   nginx:latest   \"nginx -g 'daemon …\"   3 hours ago     Exited (0) 1 hour ago   0.0.0.0:8080->80/tcp   web\n"
	if b.String() != want {
		t.Errorf("ps table:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	if err := (table{format: `{{.ID}}\t{{.Names}} {{.Label "tier"}}`, headers: psHeaders}).write(&b, rows); err != nil {
		t.Fatal(err)
	}
	if b.String() != "0123456789ab\tbrave_turing front\nba9876543210\tweb \n" {
		t.Errorf("--format = %q", b.String())
	}
	b.Reset()
	if err := (table{format: "table {{.Names}}\t{{upper .Image}}", headers: psHeaders}).write(&b, rows); err != nil {
		t.Fatal(err)
	}
	if b.String() != "NAMES          IMAGE\nbrave_turing   BUSYBOX\nweb            NGINX:LATEST\n" {
		t.Errorf("table format = %q", b.String())
	}
	b.Reset()
	if err := (table{format: "json", headers: psHeaders}).write(&b, rows[:1]); err != nil || !strings.HasPrefix(b.String(), `{"ID":"0123456789ab",`) {
		t.Errorf("json = %q %v", b.String(), err)
	}
	if err := (table{format: "{{.Nope", headers: psHeaders}).write(&b, rows); err == nil {
		t.Error("bad template accepted")
	}
}

func TestGeneratedNames(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 50; i++ {
		n := generateName()
		adj, sur, ok := strings.Cut(n, "_")
		if !ok || !validName.MatchString(n) || !contains(nameAdjectives, adj) || !contains(nameSurnames, sur) {
			t.Fatalf("generated name %q", n)
		}
		seen[n] = true
	}
	if len(seen) < 10 {
		t.Errorf("50 generated names have only %d distinct values", len(seen))
	}
	for _, bad := range []string{"", "-x", "a b", "a/b", "_x"} {
		if validName.MatchString(bad) {
			t.Errorf("name %q accepted", bad)
		}
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
